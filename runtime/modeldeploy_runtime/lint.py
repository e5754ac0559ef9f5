"""``mdctl lint REPO``: check a Triton model repository before it is deployed.

It uses the same code as packaging and the agent (pbtxt reader, config model, sha256 manifest,
ONNX reader), and reports every problem with the file it is in. Checks: repository and model
folder layout, config.pbtxt syntax and content (fields, data types, dims, batching, instance
groups, version policy), name/folder agreement, numeric version folders, the artifact each
platform/backend needs, TorchScript/ONNX/python artifacts readable, inputs/outputs consistent with
the artifact (ONNX graph, packaging metadata), and ``manifest.sha256`` digests.
"""

from __future__ import annotations

import ast
import json
import zipfile
from dataclasses import dataclass
from pathlib import Path

from modeldeploy_runtime.config import CONFIG_FILE, ModelConfig, TensorSpec, config_from_message
from modeldeploy_runtime.digest import SHA_MANIFEST, DigestMismatch, verify_folder
from modeldeploy_runtime.llm_engine import ENGINE_DIR, check_engine_dir, generated_files
from modeldeploy_runtime.manifest import TRITON_NAME_RE
from modeldeploy_runtime.package import PACKAGE_META
from modeldeploy_runtime.pbtxt import PbtxtError, loads


@dataclass(frozen=True)
class Issue:
    path: str
    message: str
    severity: str = "error"  # error | warning

    def __str__(self) -> str:
        return f"{self.severity}: {self.path}: {self.message}"


def _check_torchscript(path: Path, issues: list[Issue]) -> None:
    if not zipfile.is_zipfile(path):
        issues.append(
            Issue(
                str(path),
                "not a TorchScript archive (not a zip file; was it saved with torch.save instead of torch.jit.save?)",
            )
        )
        return
    with zipfile.ZipFile(path) as z:
        names = z.namelist()
        bad = z.testzip()
    if bad:
        issues.append(Issue(str(path), f"corrupt archive member {bad}"))
    if not any(n.endswith("/data.pkl") for n in names) or not any("/code/" in n for n in names):
        issues.append(
            Issue(
                str(path),
                "not a TorchScript archive (no code/ or data.pkl: a state_dict or eager checkpoint?)",
            )
        )


def _check_python(path: Path, issues: list[Issue]) -> None:
    try:
        tree = ast.parse(path.read_text(), str(path))
    except SyntaxError as exc:
        issues.append(Issue(f"{path}:{exc.lineno}", f"syntax error: {exc.msg}"))
        return
    classes = {n.name: n for n in tree.body if isinstance(n, ast.ClassDef)}
    cls = classes.get("TritonPythonModel")
    if cls is None:
        issues.append(
            Issue(str(path), "does not define class TritonPythonModel (required by the python backend)")
        )
        return
    methods = {n.name for n in cls.body if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)}
    if "execute" not in methods:
        issues.append(Issue(str(path), "TritonPythonModel has no execute() method"))


def _tensor_sig(ts: list[TensorSpec]) -> list[tuple[str, str, tuple[int, ...]]]:
    return [(t.name, t.data_type, tuple(t.dims)) for t in ts]


def _check_onnx(path: Path, cfg: ModelConfig, cfg_path: Path, issues: list[Issue]) -> None:
    from modeldeploy_runtime.onnx_io import OnnxParseError, read_io

    try:
        ins, outs = read_io(path)
    except OnnxParseError as exc:
        issues.append(Issue(str(path), str(exc).removeprefix(f"{path}: ")))
        return
    for kind, graph, declared in (("input", ins, cfg.inputs), ("output", outs, cfg.outputs)):
        gmap = {t.name: t for t in graph}
        for t in declared:
            g = gmap.get(t.name)
            if g is None:
                issues.append(
                    Issue(
                        str(cfg_path),
                        f"{kind} {t.name!r} is not a graph {kind} of {path.name} (graph has {sorted(gmap)})",
                    )
                )
                continue
            if g.data_type != t.data_type:
                issues.append(
                    Issue(
                        str(cfg_path),
                        f"{kind} {t.name!r}: data_type {t.data_type} but {path.name} has {g.data_type}",
                    )
                )
            gd = g.dims[1:] if cfg.max_batch_size > 0 else g.dims
            if len(gd) != len(t.dims) or any(
                a > 0 and b > 0 and a != b for a, b in zip(gd, t.dims, strict=False)
            ):
                issues.append(
                    Issue(
                        str(cfg_path),
                        f"{kind} {t.name!r}: dims {t.dims} do not match {path.name} shape {g.dims}",
                    )
                )


def lint_model(model_dir: Path) -> list[Issue]:
    issues: list[Issue] = []
    name = model_dir.name
    if not TRITON_NAME_RE.match(name):
        issues.append(Issue(str(model_dir), f"invalid model folder name {name!r}"))
    cfg_path = model_dir / CONFIG_FILE
    cfg: ModelConfig | None = None
    if not cfg_path.is_file():
        issues.append(Issue(str(cfg_path), "missing (every model needs a config.pbtxt)"))
    else:
        try:
            cfg, problems = config_from_message(loads(cfg_path.read_text(), str(cfg_path)))
        except PbtxtError as exc:
            issues.append(Issue(f"{cfg_path}:{exc.line}:{exc.col}", str(exc).split(": ", 1)[1]))
        except UnicodeDecodeError:
            issues.append(Issue(str(cfg_path), "not UTF-8 text"))
        else:
            issues += [Issue(str(cfg_path), p) for p in problems]
            if cfg.name and cfg.name != name:
                issues.append(
                    Issue(str(cfg_path), f"name {cfg.name!r} does not match the model folder {name!r}")
                )
            if not cfg.inputs:
                issues.append(Issue(str(cfg_path), "no input declared"))
            if not cfg.outputs:
                issues.append(Issue(str(cfg_path), "no output declared"))
    versions: list[int] = []
    for entry in sorted(model_dir.iterdir()):
        if entry.name.startswith("."):
            if entry.name.startswith(".packaging-"):
                issues.append(
                    Issue(str(entry), "leftover temporary folder from an interrupted packaging", "warning")
                )
            continue
        if entry.name == CONFIG_FILE:
            continue
        if not entry.is_dir():
            if entry.suffix not in (".txt", ".md", ".json"):
                issues.append(
                    Issue(
                        str(entry),
                        "unexpected file in the model folder (artifacts go in a version folder)",
                        "warning",
                    )
                )
            continue
        if not entry.name.isdigit():
            issues.append(
                Issue(
                    str(entry),
                    f"not a version folder: {entry.name!r} (versions are positive integers, e.g. 1/)",
                )
            )
            continue
        if entry.name != str(int(entry.name)) or int(entry.name) == 0:
            issues.append(
                Issue(
                    str(entry),
                    f"invalid version folder {entry.name!r} (positive integer without leading zeros)",
                )
            )
            continue
        versions.append(int(entry.name))
        issues += lint_version(entry, cfg, cfg_path)
    if not versions:
        issues.append(Issue(str(model_dir), "no version folders (expected e.g. 1/ with the model artifact)"))
    if cfg is not None and cfg.version_policy is not None and cfg.version_policy.kind == "specific":
        for v in cfg.version_policy.versions:
            if v not in versions:
                issues.append(Issue(str(cfg_path), f"version_policy names version {v}, which has no folder"))
    return issues


def _check_engine_args(path: Path, issues: list[Issue]) -> None:
    """A vLLM ``model.json``: a JSON object of engine arguments naming the model."""
    try:
        args = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        issues.append(Issue(str(path), f"engine arguments are not valid JSON: {exc}"))
        return
    if not isinstance(args, dict):
        issues.append(Issue(str(path), "engine arguments must be a JSON object"))
    elif not isinstance(args.get("model"), str) or not args["model"]:
        issues.append(Issue(str(path), "engine arguments: 'model' (the weights' path or name) is missing"))
    else:
        for key in ("tensor_parallel_size", "max_model_len"):
            v = args.get(key)
            if v is not None and (not isinstance(v, int) or isinstance(v, bool) or v < 1):
                issues.append(
                    Issue(str(path), f"engine arguments: {key} must be a positive integer, got {v!r}")
                )
        v = args.get("gpu_memory_utilization")
        if v is not None and (not isinstance(v, int | float) or isinstance(v, bool) or not 0 < v <= 1):
            issues.append(
                Issue(str(path), f"engine arguments: gpu_memory_utilization must be in (0, 1], got {v!r}")
            )


def _check_llm(vdir: Path, meta: dict[str, object], issues: list[Issue]) -> None:
    """An LLM version: its Hugging Face directory (transformers, vllm: config, every shard of the
    safetensors index, tokenizer) or its TensorRT-LLM engine directory; vLLM's packaged engine args."""
    from modeldeploy_runtime.hf import HF_DIR, check_hf_dir, check_tokenizer

    problems: list[str] = []
    if meta.get("format") in ("transformers", "vllm"):
        problems = check_hf_dir(vdir / HF_DIR)
    elif meta.get("format") == "tensorrtllm":
        problems = check_engine_dir(vdir / ENGINE_DIR)
        if meta.get("engine_model"):  # packaged with its text front: the tokenizer it loads
            problems += check_tokenizer(vdir / HF_DIR)
    if meta.get("format") == "vllm":
        args = meta.get("engine_args", {})
        if not isinstance(args, dict):
            problems.append(f"{vdir / PACKAGE_META}: engine_args must be a JSON object")
    for problem in problems:
        path, _, rest = problem.partition(": ")
        issues.append(Issue(path, rest))


def _check_artifact(vdir: Path, cfg: ModelConfig, cfg_path: Path, issues: list[Issue]) -> None:
    """The artifact the config's platform/backend needs: present, non-empty, readable."""
    artifact = cfg.artifact
    if not artifact:
        issues.append(
            Issue(str(cfg_path), f"cannot tell which artifact backend {cfg.backend_name!r} needs", "warning")
        )
    else:
        apath = vdir / artifact
        if not apath.exists() and artifact in generated_files(vdir):
            return  # vLLM's model.json: the agent writes it in the pod from the packaged engine args
        if not apath.exists():
            have = ", ".join(sorted(p.name for p in vdir.iterdir())) or "nothing"
            issues.append(
                Issue(
                    str(apath),
                    f"missing: {cfg.platform or cfg.backend} needs {artifact} (folder has {have})",
                )
            )
        elif apath.is_file() and apath.stat().st_size == 0:
            issues.append(Issue(str(apath), "empty file"))
        elif artifact.endswith(".pt"):
            _check_torchscript(apath, issues)
        elif artifact.endswith(".onnx"):
            _check_onnx(apath, cfg, cfg_path, issues)
        elif artifact == "model.py":
            _check_python(apath, issues)
        elif artifact == "model.json":
            _check_engine_args(apath, issues)


def lint_version(vdir: Path, cfg: ModelConfig | None, cfg_path: Path) -> list[Issue]:
    issues: list[Issue] = []
    files = [p for p in vdir.rglob("*") if p.is_file()]
    if not files:
        return [Issue(str(vdir), "empty version folder")]
    if cfg is not None:
        _check_artifact(vdir, cfg, cfg_path, issues)
    meta_path = vdir / PACKAGE_META
    if meta_path.is_file():
        try:
            meta = json.loads(meta_path.read_text())
            mcfg = ModelConfig.from_dict(meta["config"])
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            issues.append(Issue(str(meta_path), f"unreadable packaging metadata: {exc}"))
        else:
            _check_llm(vdir, meta, issues)
            art = meta.get("artifact")
            if art and not (vdir / art).exists():
                issues.append(Issue(str(vdir / art), f"missing: {PACKAGE_META} says the model is {art}"))
            elif art and cfg is not None and cfg.artifact != art:  # e.g. the python-backend wrapper
                if art.endswith(".pt"):
                    _check_torchscript(vdir / art, issues)
                elif art.endswith(".onnx"):
                    _check_onnx(vdir / art, cfg, cfg_path, issues)
            if cfg is not None and mcfg.io_signature() != cfg.io_signature():
                diffs = []
                if mcfg.max_batch_size != cfg.max_batch_size:
                    diffs.append(f"max_batch_size {cfg.max_batch_size} vs packaged {mcfg.max_batch_size}")
                if _tensor_sig(mcfg.inputs) != _tensor_sig(cfg.inputs):
                    diffs.append(f"inputs {_tensor_sig(cfg.inputs)} vs packaged {_tensor_sig(mcfg.inputs)}")
                if _tensor_sig(mcfg.outputs) != _tensor_sig(cfg.outputs):
                    diffs.append(
                        f"outputs {_tensor_sig(cfg.outputs)} vs packaged {_tensor_sig(mcfg.outputs)}"
                    )
                issues.append(
                    Issue(
                        str(cfg_path),
                        f"does not match the artifact of version {vdir.name}: " + "; ".join(diffs),
                    )
                )
    if (vdir / SHA_MANIFEST).is_file():
        try:
            verify_folder(vdir)
        except DigestMismatch as exc:
            msg = str(exc)
            path, _, rest = msg.partition(": ")
            issues.append(Issue(path, rest))
    return issues


def lint_repository(repo: str | Path) -> list[Issue]:
    root = Path(repo)
    if not root.exists():
        return [Issue(str(root), "repository does not exist")]
    if not root.is_dir():
        return [Issue(str(root), "repository is not a folder")]
    issues: list[Issue] = []
    models = [p for p in sorted(root.iterdir()) if p.is_dir() and not p.name.startswith(".")]
    for p in sorted(root.iterdir()):
        if p.is_file() and not p.name.startswith("."):
            issues.append(
                Issue(str(p), "unexpected file at the repository root (each model is a folder)", "warning")
            )
    if not models:
        issues.append(Issue(str(root), "no model folders in the repository"))
    for m in models:
        issues += lint_model(m)
    return issues


def errors(issues: list[Issue]) -> list[Issue]:
    return [i for i in issues if i.severity == "error"]
