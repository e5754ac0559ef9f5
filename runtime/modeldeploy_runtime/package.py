"""Package trained models as Triton model-repository entries.

Layout written (what Triton and ``mdctl lint`` expect)::

    <repository>/<model>/config.pbtxt            # rendered from config.pbtxt.j2
    <repository>/<model>/<version>/model.pt      # or model.onnx, or model.py (+ artifacts)
    <repository>/<model>/<version>/modeldeploy.json   # how it was packaged: format, backend, config
    <repository>/<model>/<version>/manifest.sha256    # sha256 of every file; its own sha256 is the
                                                      # version digest to pin in a ModelDeployment

A version is assembled in a temporary folder inside the model folder and renamed into place, so a
reader never sees half a version. Re-packaging identical content into an existing version is a
no-op; different content is an error (versions are immutable).

torch is imported lazily (only :func:`package_torch` needs it).
"""

from __future__ import annotations

import contextlib
import json
import re
import shutil
import tempfile
import time
import warnings
import zipfile
import zlib
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from modeldeploy_runtime import __version__
from modeldeploy_runtime.config import (
    CONFIG_FILE,
    TORCH_TO_TRITON,
    DynamicBatching,
    InstanceGroup,
    ModelConfig,
    TensorSpec,
)
from modeldeploy_runtime.digest import (
    SHA_MANIFEST,
    sha256_file,
    version_digest,
    version_files,
    write_sha_manifest,
)
from modeldeploy_runtime.manifest import TRITON_NAME_RE

PACKAGE_META = "modeldeploy.json"
#: The python-backend model (copied as ``model.py``) that serves model.pt / model.onnx on a Triton
#: with only the python backend.
PYTHON_WRAPPER = Path(__file__).with_name("python_backend_wrapper.py")
#: The python-backend model (copied as ``model.py``) that serves a Hugging Face causal LM (``hf/``).
TRANSFORMERS_MODEL = Path(__file__).with_name("transformers_backend.py")
TorchBackend = Literal["python", "libtorch"]
OnnxBackend = Literal["onnxruntime", "python"]


class PackageError(ValueError):
    """Packaging failed; the message says which model/file/input and why."""


@dataclass
class PackageResult:
    model: str
    version: int
    version_dir: Path
    config: ModelConfig
    digest: str  # sha256 of manifest.sha256
    files: dict[str, int] = field(default_factory=dict)  # relative path -> bytes
    seconds: float = 0.0
    unchanged: bool = False  # the version already existed with identical content

    def summary(self) -> str:
        size = sum(self.files.values())
        state = "unchanged" if self.unchanged else "written"
        return (
            f"{self.model} version {self.version} {state}: {self.version_dir} "
            f"({len(self.files)} files, {size / 1e6:.1f} MB, {self.seconds:.2f}s)\n"
            f"sha256 (manifest.sha256): {self.digest}"
        )


@dataclass
class BatchingOptions:
    max_batch_size: int = 8
    dynamic_batching: bool = True
    preferred_batch_sizes: list[int] = field(default_factory=list)
    max_queue_delay_microseconds: int = 100
    instance_count: int = 1
    instance_kind: str = "KIND_AUTO"

    def apply(self, cfg: ModelConfig) -> None:
        cfg.max_batch_size = self.max_batch_size
        if self.dynamic_batching and self.max_batch_size > 0:
            bad = [p for p in self.preferred_batch_sizes if p < 1 or p > self.max_batch_size]
            if bad:
                raise PackageError(
                    f"preferred batch sizes {bad} outside 1..max_batch_size ({self.max_batch_size})"
                )
            cfg.dynamic_batching = DynamicBatching(
                list(self.preferred_batch_sizes), self.max_queue_delay_microseconds
            )
        elif self.dynamic_batching and self.preferred_batch_sizes:
            raise PackageError("dynamic batching needs max_batch_size > 0")
        if self.instance_count < 1:
            raise PackageError(f"instance count must be >= 1, got {self.instance_count}")
        cfg.instance_groups = [InstanceGroup(self.instance_count, self.instance_kind)]


def _check_name(name: str) -> None:
    if not TRITON_NAME_RE.match(name):
        raise PackageError(
            f"invalid model name {name!r}: letters, digits, '_', '.', '-' (max 63), not starting with a symbol"
        )


def next_version(model_dir: Path) -> int:
    nums = (
        [int(p.name) for p in model_dir.iterdir() if p.is_dir() and p.name.isdigit()]
        if model_dir.is_dir()
        else []
    )
    return max(nums, default=0) + 1


def _finish(
    tmp: Path,
    repository: Path,
    cfg: ModelConfig,
    version: int,
    meta: dict[str, Any],
    known: dict[str, str],
    t0: float,
    progress: bool,
) -> PackageResult:
    """Write metadata + manifest.sha256 into ``tmp`` and move it to <repo>/<model>/<version>."""
    (tmp / PACKAGE_META).write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
    digest = write_sha_manifest(tmp, known, progress)
    model_dir = repository / cfg.name
    final = model_dir / str(version)
    files = {p.relative_to(tmp).as_posix(): p.stat().st_size for p in sorted(tmp.rglob("*")) if p.is_file()}
    if final.exists():
        existing = version_digest(final)
        same = existing == digest or _same_content(final, tmp)
        shutil.rmtree(tmp, ignore_errors=True)
        if not same:
            raise PackageError(
                f"{final}: version {version} of {cfg.name} already exists with different content "
                f"(sha256 {existing or 'unknown: no ' + SHA_MANIFEST} != {digest}); versions are immutable, "
                f"package into a new version"
            )
        return PackageResult(
            cfg.name, version, final, cfg, existing or digest, files, time.monotonic() - t0, unchanged=True
        )
    tmp.chmod(0o755)
    tmp.rename(final)
    cfg.write(model_dir)
    return PackageResult(cfg.name, version, final, cfg, digest, files, time.monotonic() - t0)


_MANGLE = re.compile(rb"\.?___torch_mangle_\d+")


def _zip_members(path: Path) -> dict[str, int] | None:
    """A TorchScript archive's content, normalised: torch writes a random ``.data/serialization_id``
    and mangles class names (``___torch_mangle_N``, also splitting code files differently) when a
    module is exported twice in one process. Tensors are compared by CRC, pickles with mangled names
    removed, code as the sorted multiset of its lines; debug info is ignored. None: not a zip."""
    if not zipfile.is_zipfile(path):
        return None
    out: dict[str, int] = {}
    code: list[bytes] = []
    with zipfile.ZipFile(path) as z:
        for i in z.infolist():
            name = i.filename.split("/", 1)[-1]
            if name.endswith((".data/serialization_id", ".debug_pkl")):
                continue
            if name.startswith("data/"):
                out[name] = i.CRC
            elif name.startswith("code/"):
                code.extend(_MANGLE.sub(b"", z.read(i)).splitlines())
            else:
                out[name] = zlib.crc32(_MANGLE.sub(b"", z.read(i)))
    out["code/"] = zlib.crc32(b"\n".join(sorted(line.strip() for line in code if line.strip())))
    return out


def _same_content(a: Path, b: Path) -> bool:
    """Whether two version folders hold the same model (TorchScript archives compared member by
    member, since torch writes a random serialization id into each)."""
    fa = {p.as_posix() for p in version_files(a)}
    fb = {p.as_posix() for p in version_files(b)}
    if fa != fb:
        return False
    for rel in sorted(fa):
        if sha256_file(a / rel) == sha256_file(b / rel):
            continue
        za, zb = _zip_members(a / rel), _zip_members(b / rel)
        if za is None or za != zb:
            return False
    return True


@contextlib.contextmanager
def _staging(repository: Path, name: str) -> Iterator[Path]:
    """A temporary folder inside the model folder to build a version in (``_finish`` moves it into
    place); removed afterwards unless it was moved, also when packaging fails."""
    model_dir = repository / name
    model_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".packaging-", dir=model_dir))
    try:
        yield tmp
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def _meta(fmt: str, cfg: ModelConfig, artifact: str, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    c = cfg.to_dict()
    c.pop("version_policy", None)
    return {
        "format": fmt,
        "artifact": artifact,
        "config": c,
        "generator": f"modeldeploy {__version__}",
        **(extra or {}),
    }


# --------------------------------------------------------------------------------------------- torch
def _as_tuple(example: Any, what: str) -> tuple[Any, ...]:
    import torch

    items = tuple(example) if isinstance(example, tuple | list) else (example,)
    if not items:
        raise PackageError(f"{what}: no example input given")
    for i, t in enumerate(items):
        if not isinstance(t, torch.Tensor):
            raise PackageError(f"{what}: example input {i} is a {type(t).__name__}, expected a torch.Tensor")
        if str(t.dtype).removeprefix("torch.") not in TORCH_TO_TRITON:
            raise PackageError(f"{what}: example input {i} has unsupported dtype {t.dtype}")
    return items


def _as_outputs(out: Any, what: str) -> tuple[Any, ...]:
    import torch

    items = tuple(out) if isinstance(out, tuple | list) else (out,)
    for i, t in enumerate(items):
        if not isinstance(t, torch.Tensor):
            raise PackageError(
                f"{what}: output {i} is a {type(t).__name__}; only a tensor or a tuple/list of tensors can be served"
            )
        if str(t.dtype).removeprefix("torch.") not in TORCH_TO_TRITON:
            raise PackageError(f"{what}: output {i} has unsupported dtype {t.dtype}")
    return items


def _specs(
    tensors: Sequence[Any], names: Sequence[str] | None, prefix: str, batching: bool, what: str
) -> list[TensorSpec]:
    names = list(names) if names else [f"{prefix}__{i}" for i in range(len(tensors))]
    if len(names) != len(tensors):
        raise PackageError(f"{what}: {len(names)} {prefix.lower()} names given for {len(tensors)} tensors")
    specs = []
    for n, t in zip(names, tensors, strict=True):
        shape = list(t.shape)
        if batching:
            if not shape:
                raise PackageError(
                    f"{what}: {n} is a scalar; with max_batch_size > 0 the first dimension is the batch"
                )
            shape = shape[1:]
        specs.append(TensorSpec(n, TORCH_TO_TRITON[str(t.dtype).removeprefix("torch.")], shape or [1]))
    return specs


def _outputs_match(a: tuple[Any, ...], b: tuple[Any, ...]) -> bool:
    import torch

    return len(a) == len(b) and all(
        x.shape == y.shape and torch.allclose(x.float(), y.float(), rtol=1e-4, atol=1e-5)
        for x, y in zip(a, b, strict=True)
    )


def package_torch(
    model: Any,
    repository: str | Path,
    name: str,
    *,
    example_inputs: Any = None,
    version: int | None = None,
    backend: TorchBackend = "python",
    batching: BatchingOptions | None = None,
    input_names: Sequence[str] | None = None,
    output_names: Sequence[str] | None = None,
    method: Literal["trace", "script"] = "trace",
    progress: bool = False,
) -> PackageResult:
    """Package a torch ``nn.Module`` (exported to TorchScript) or a TorchScript file.

    ``example_inputs`` (a tensor or tuple of tensors, first dimension = batch) drives tracing and
    the inference of input/output names, dtypes and shapes; the exported model is checked against
    the eager one on the example and on a batch of two. ``backend="python"`` adds the python-backend
    wrapper (model.py) so the model runs on a Triton with only the python backend;
    ``"libtorch"`` writes a ``pytorch_libtorch`` model.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit.* deprecation notices
        return _package_torch(
            model, Path(repository), name, example_inputs, version, backend, batching or BatchingOptions(),
            input_names, output_names, method, progress,
        )  # fmt: skip


def _package_torch(
    model: Any,
    repository: Path,
    name: str,
    example_inputs: Any,
    version: int | None,
    backend: TorchBackend,
    batching: BatchingOptions,
    input_names: Sequence[str] | None,
    output_names: Sequence[str] | None,
    method: str,
    progress: bool,
) -> PackageResult:
    import torch

    t0 = time.monotonic()
    _check_name(name)
    what = f"model {name}"
    if isinstance(model, str | Path):
        path = Path(model)
        if not path.is_file():
            raise PackageError(f"{path}: TorchScript file not found")
        try:
            scripted = torch.jit.load(str(path), map_location="cpu")
        except Exception as exc:
            raise PackageError(f"{path}: not a TorchScript file ({exc.__class__.__name__}: {exc})") from exc
        eager = scripted
        what = f"{path}"
    elif isinstance(model, torch.nn.Module):
        eager = model.eval()
        scripted = None
        what = f"model {name} ({type(model).__name__})"
    else:
        raise PackageError(
            f"model {name}: expected a torch.nn.Module or a TorchScript file path, got {type(model).__name__}"
        )
    if example_inputs is None:
        raise PackageError(
            f"{what}: example_inputs are required to infer input/output names, dtypes and shapes"
        )
    ex = _as_tuple(example_inputs, what)
    mbs = batching.max_batch_size
    try:
        with torch.inference_mode():
            ref = _as_outputs(eager(*ex), what)
    except PackageError:
        raise
    except Exception as exc:
        shapes = ", ".join(f"{tuple(t.shape)} {t.dtype}" for t in ex)
        raise PackageError(f"{what}: forward() failed on the example input(s) [{shapes}]: {exc}") from exc
    if scripted is None:
        try:
            with torch.no_grad():
                if method == "script":
                    scripted = torch.jit.script(eager)
                else:
                    scripted = torch.jit.trace(
                        eager, ex, check_trace=False, strict=False, _store_inputs=False
                    )
        except Exception as exc:
            raise PackageError(
                f"{what}: cannot export to TorchScript with torch.jit.{method} ({exc.__class__.__name__}: "
                f"{str(exc).splitlines()[0] if str(exc) else ''}); try method='script', or export it yourself"
            ) from exc
    with torch.inference_mode():
        got = _as_outputs(scripted(*ex), what)
        if not _outputs_match(ref, got):
            raise PackageError(
                f"{what}: the TorchScript export does not reproduce the eager outputs on the example input"
            )
        if mbs > 0:
            if any(t.dim() == 0 for t in ex):
                raise PackageError(f"{what}: example inputs need a batch dimension when max_batch_size > 0")
            ex2 = tuple(torch.cat([t, t], 0) for t in ex)
            try:
                got2 = _as_outputs(scripted(*ex2), what)
                ref2 = _as_outputs(eager(*ex2), what)
            except Exception as exc:
                raise PackageError(
                    f"{what}: the exported model fails on a batch of 2 ({exc.__class__.__name__}); the batch size "
                    f"seems fixed by tracing: use max_batch_size=0 or method='script'"
                ) from exc
            if not _outputs_match(ref2, got2) or any(
                o.shape[0] != 2 * r.shape[0] for o, r in zip(got2, ref, strict=True)
            ):
                raise PackageError(
                    f"{what}: the exported model is not batch-size independent (outputs differ on a batch of 2); "
                    f"use max_batch_size=0"
                )
    cfg = ModelConfig(name=name)
    batching.apply(cfg)
    cfg.inputs = _specs(ex, input_names, "INPUT", mbs > 0, what)
    cfg.outputs = _specs(ref, output_names, "OUTPUT", mbs > 0, what)
    if backend == "python":
        cfg.backend = "python"
    elif backend == "libtorch":
        cfg.platform = "pytorch_libtorch"
    else:
        raise PackageError(f"{what}: unknown backend {backend!r} (python or libtorch)")
    model_dir = repository / name
    version = version or next_version(model_dir)
    with _staging(repository, name) as tmp:
        torch.jit.save(scripted, str(tmp / "model.pt"))
        known = {"model.pt": sha256_file(tmp / "model.pt", progress)}
        if backend == "python":
            shutil.copyfile(PYTHON_WRAPPER, tmp / "model.py")
        meta = _meta(
            "pytorch",
            cfg,
            "model.pt",
            {"torch": torch.__version__, "export": method if scripted is not eager else "torchscript"},
        )
        return _finish(tmp, repository, cfg, version, meta, known, t0, progress)


# ---------------------------------------------------------------------------------------------- onnx
def package_onnx(
    path: str | Path,
    repository: str | Path,
    name: str,
    *,
    version: int | None = None,
    backend: OnnxBackend = "onnxruntime",
    batching: BatchingOptions | None = None,
    progress: bool = False,
) -> PackageResult:
    """Package an ONNX file; inputs/outputs are read from the graph. With max_batch_size > 0 the
    first dimension of every tensor must be the (dynamic) batch. ``backend="onnxruntime"`` writes
    an ``onnxruntime_onnx`` model; ``"python"`` adds the python-backend wrapper (model.py), which
    runs the file through onnxruntime inside Triton's python backend."""
    from modeldeploy_runtime.onnx_io import OnnxParseError, read_io

    t0 = time.monotonic()
    _check_name(name)
    src = Path(path)
    if not src.is_file():
        raise PackageError(f"{src}: ONNX file not found")
    try:
        ins, outs = read_io(src)
    except OnnxParseError as exc:
        raise PackageError(str(exc)) from exc
    batching = batching or BatchingOptions()
    if backend == "onnxruntime":
        cfg = ModelConfig(name=name, platform="onnxruntime_onnx")
    elif backend == "python":
        cfg = ModelConfig(name=name, backend="python")
    else:
        raise PackageError(f"{src}: unknown backend {backend!r} (onnxruntime or python)")
    batching.apply(cfg)

    def spec(t: Any) -> TensorSpec:
        dims = list(t.dims)
        if cfg.max_batch_size > 0:
            if not dims or dims[0] not in (-1, 0):
                raise PackageError(
                    f"{src}: tensor {t.name!r} has shape {dims}: with max_batch_size > 0 its first dimension must be "
                    f"a dynamic batch dimension (or package with max_batch_size=0)"
                )
            dims = dims[1:]
        return TensorSpec(t.name, t.data_type, [d if d > 0 else -1 for d in dims] or [1])

    cfg.inputs = [spec(t) for t in ins]
    cfg.outputs = [spec(t) for t in outs]
    repository = Path(repository)
    version = version or next_version(repository / name)
    with _staging(repository, name) as tmp:
        from modeldeploy_runtime.digest import copy_hashing

        with open(src, "rb") as fi, open(tmp / "model.onnx", "wb") as fo:
            digest, _ = copy_hashing(fi, fo, src.stat().st_size, f"copy {src.name}", progress)
        if backend == "python":
            shutil.copyfile(PYTHON_WRAPPER, tmp / "model.py")
        meta = _meta("onnx", cfg, "model.onnx")
        return _finish(tmp, repository, cfg, version, meta, {"model.onnx": digest}, t0, progress)


# -------------------------------------------------------------------------------------------- python
def package_python(
    model_py: str | Path,
    repository: str | Path,
    name: str,
    *,
    inputs: Sequence[TensorSpec],
    outputs: Sequence[TensorSpec],
    artifacts: Sequence[str | Path] = (),
    version: int | None = None,
    batching: BatchingOptions | None = None,
    progress: bool = False,
) -> PackageResult:
    """Package a python-backend model: ``model.py`` (defining ``TritonPythonModel``) plus artifact
    files/folders copied next to it. Inputs/outputs must be declared."""
    t0 = time.monotonic()
    _check_name(name)
    src = Path(model_py)
    if not src.is_file():
        raise PackageError(f"{src}: model.py not found")
    text = src.read_text()
    try:
        compile(text, str(src), "exec")
    except SyntaxError as exc:
        raise PackageError(f"{src}:{exc.lineno}: syntax error: {exc.msg}") from exc
    if "class TritonPythonModel" not in text:
        raise PackageError(
            f"{src}: does not define class TritonPythonModel (required by Triton's python backend)"
        )
    if not inputs or not outputs:
        raise PackageError(f"model {name}: a python model needs declared inputs and outputs")
    batching = batching or BatchingOptions()
    cfg = ModelConfig(name=name, backend="python", inputs=list(inputs), outputs=list(outputs))
    batching.apply(cfg)
    repository = Path(repository)
    version = version or next_version(repository / name)
    with _staging(repository, name) as tmp:
        shutil.copyfile(src, tmp / "model.py")
        for a in artifacts:
            ap = Path(a)
            if not ap.exists():
                raise PackageError(f"{ap}: artifact not found")
            if ap.name in ("model.py", PACKAGE_META, SHA_MANIFEST):
                raise PackageError(f"{ap}: artifact name {ap.name!r} is reserved")
            if ap.is_dir():
                shutil.copytree(ap, tmp / ap.name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
            else:
                shutil.copyfile(ap, tmp / ap.name)
        meta = _meta("python", cfg, "model.py")
        return _finish(tmp, repository, cfg, version, meta, {}, t0, progress)


# -------------------------------------------------------------------------------------- transformers
def package_transformers(
    model_dir: str | Path,
    repository: str | Path,
    name: str,
    *,
    version: int | None = None,
    instance_count: int = 1,
    instance_kind: str = "KIND_CPU",
    progress: bool = False,
) -> PackageResult:
    """Package a Hugging Face causal-LM directory (config.json, safetensors shards, tokenizer) as a
    decoupled python-backend model that generates with ``transformers`` and streams token by token.

    Every file is copied into ``<version>/hf/`` while being hashed (1 MiB chunks: a multi-gigabyte
    shard never sits in memory, and is read once), with a progress bar for large files."""
    from modeldeploy_runtime.hf import HF_DIR, LLM_INPUTS, LLM_OUTPUTS, check_hf_dir

    t0 = time.monotonic()
    _check_name(name)
    src = Path(model_dir)
    problems = check_hf_dir(src)
    if problems:
        raise PackageError(f"{src}: not a servable Hugging Face model directory: " + "; ".join(problems))
    if instance_count < 1:
        raise PackageError(f"instance count must be >= 1, got {instance_count}")
    cfg = ModelConfig(
        name=name, backend="python", inputs=list(LLM_INPUTS), outputs=list(LLM_OUTPUTS), decoupled=True,
        instance_groups=[InstanceGroup(instance_count, instance_kind)],
    )  # fmt: skip
    repository = Path(repository)
    version = version or next_version(repository / name)
    with _staging(repository, name) as tmp:
        known = _copy_hashing(src, tmp, HF_DIR, progress)
        shutil.copyfile(TRANSFORMERS_MODEL, tmp / "model.py")
        meta = _meta("transformers", cfg, HF_DIR, {"source": src.name})
        return _finish(tmp, repository, cfg, version, meta, known, t0, progress)


def _copy_files(src: Path, files: Iterable[Path], tmp: Path, folder: str, progress: bool) -> dict[str, str]:
    """Copy ``files`` (below ``src``) into ``tmp/folder``, keeping their paths relative to ``src``,
    while hashing them (1 MiB chunks: a multi-gigabyte shard never sits in memory and is read
    once); returns path -> sha256."""
    from modeldeploy_runtime.digest import copy_hashing

    known: dict[str, str] = {}
    for f in sorted(files):
        rel = f"{folder}/{f.relative_to(src).as_posix()}"
        (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
        with open(f, "rb") as fi, open(tmp / rel, "wb") as fo:
            known[rel], _ = copy_hashing(fi, fo, f.stat().st_size, f"copy {f.name}", progress)
    return known


def _copy_hashing(src: Path, tmp: Path, folder: str, progress: bool) -> dict[str, str]:
    """Copy every file of ``src`` (recursively, no ``__pycache__``) into ``tmp/folder`` while hashing."""
    files = (p for p in src.rglob("*") if p.is_file() and "__pycache__" not in p.parts)
    return _copy_files(src, files, tmp, folder, progress)


# ---------------------------------------------------------------------------------------------- vllm
def package_vllm(
    model_dir: str | Path,
    repository: str | Path,
    name: str,
    *,
    version: int | None = None,
    engine_args: dict[str, Any] | None = None,
    progress: bool = False,
) -> PackageResult:
    """Package a Hugging Face model directory for Triton's vLLM backend: the files go to
    ``<version>/hf/`` (streamed and hashed), the engine arguments to ``modeldeploy.json`` (hashed
    with the version). The agent in the pod writes ``<version>/model.json`` from them, with ``model``
    pointing at ``hf/`` and the ModelDeployment's engine settings (tensor parallelism from the pod's
    GPUs, gpu_memory_utilization, max_model_len, dtype) on top; the model's ``config.pbtxt`` is
    vLLM's (decoupled, ``KIND_MODEL``)."""
    from modeldeploy_runtime.hf import HF_DIR, check_hf_dir
    from modeldeploy_runtime.llm_engine import vllm_config

    t0 = time.monotonic()
    _check_name(name)
    src = Path(model_dir)
    problems = check_hf_dir(src)
    if problems:
        raise PackageError(f"{src}: not a servable Hugging Face model directory: " + "; ".join(problems))
    args = dict(engine_args or {})
    if "model" in args:
        raise PackageError("engine argument 'model' is set by the agent (the packaged hf/ folder)")
    cfg = vllm_config(name)
    repository = Path(repository)
    version = version or next_version(repository / name)
    with _staging(repository, name) as tmp:
        known = _copy_hashing(src, tmp, HF_DIR, progress)
        meta = _meta("vllm", cfg, HF_DIR, {"source": src.name, "engine_args": args})
        return _finish(tmp, repository, cfg, version, meta, known, t0, progress)


# --------------------------------------------------------------------------------------- tensorrtllm
def _engine_batch_size(src: Path) -> int | None:
    """max_batch_size the TensorRT-LLM engine was built with (its config.json), if it says."""
    try:
        cfg = json.loads((src / "config.json").read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    build = cfg.get("build_config") if isinstance(cfg, dict) else None
    mbs = build.get("max_batch_size") if isinstance(build, dict) else None
    return mbs if isinstance(mbs, int) and mbs > 0 else None


#: Files of a tokenizer folder that are not the tokenizer (weights): not copied into ``hf/``.
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".gguf", ".h5", ".msgpack", ".onnx", ".engine")


def _tokenizer_dir(engine_dir: Path, tokenizer: str | Path | None) -> Path:
    """The tokenizer folder for the text front: ``tokenizer``, else the engine folder when it holds
    a tokenizer; its problems are packaging errors."""
    from modeldeploy_runtime.hf import TOKENIZER_FILES, check_tokenizer

    if tokenizer is None:
        if not any((engine_dir / f).is_file() for f in TOKENIZER_FILES):
            raise PackageError(
                f"{engine_dir}: no tokenizer in the engine directory (none of {', '.join(TOKENIZER_FILES)}): "
                f"give the model's tokenizer folder (--tokenizer DIR)"
            )
        return engine_dir
    tok = Path(tokenizer)
    problems = check_tokenizer(tok)
    if problems:
        raise PackageError(f"{tok}: not a tokenizer folder: " + "; ".join(problems))
    return tok


def _copy_tokenizer(src: Path, tmp: Path, folder: str, progress: bool) -> dict[str, str]:
    """Copy the tokenizer files of ``src`` (not weights, not engine ranks) into ``tmp/folder``."""
    from modeldeploy_runtime.hf import SAFETENSORS_INDEX

    files = (
        p
        for p in src.iterdir()
        if p.is_file() and not p.name.endswith(_WEIGHT_SUFFIXES) and p.name != SAFETENSORS_INDEX
    )
    return _copy_files(src, files, tmp, folder, progress)


def package_tensorrtllm(
    engine_dir: str | Path,
    repository: str | Path,
    name: str,
    *,
    tokenizer: str | Path | None = None,
    version: int | None = None,
    max_batch_size: int | None = None,
    progress: bool = False,
) -> PackageResult:
    """Package a prebuilt TensorRT-LLM engine directory (``*.engine`` ranks + ``config.json``) with
    the model's tokenizer as two repository entries:

    * ``<name>``: the text front (trtllm_text_backend.py as ``model.py``, decoupled python backend,
      the text tensors of the other LLM formats); the version folder holds ``model.py``,
      ``textgen.py``, the tokenizer files in ``hf/`` and the engine in ``engine/`` (all streamed
      and hashed);
    * ``<name>-engine``: the TensorRT-LLM backend's model (inflight batching, decoupled) with
      ``gpt_model_path`` pointing at that ``engine/`` folder (the agent re-points it in the pod).

    ``tokenizer`` defaults to the engine directory when it holds tokenizer files (else packaging
    fails and says so). ``max_batch_size`` (the engine entry's) defaults to the engine's
    build_config.max_batch_size."""
    from modeldeploy_runtime.hf import HF_DIR
    from modeldeploy_runtime.llm_engine import (
        ENGINE_DIR,
        TEXT_FRONT,
        TEXT_HELPERS,
        TEXT_HELPERS_FILE,
        check_engine_dir,
        engine_model_name,
        text_front_config,
        write_engine_entry,
    )

    t0 = time.monotonic()
    _check_name(name)
    _check_name(engine_model_name(name))
    src = Path(engine_dir)
    problems = check_engine_dir(src)
    if problems:
        raise PackageError(f"{src}: not a TensorRT-LLM engine directory: " + "; ".join(problems))
    tok = _tokenizer_dir(src, tokenizer)
    built = _engine_batch_size(src)
    mbs = max_batch_size or built
    if mbs is None:
        raise PackageError(f"{src}/config.json has no build_config.max_batch_size: give max_batch_size")
    if built is not None and mbs > built:
        raise PackageError(f"max_batch_size {mbs} exceeds the engine's build_config.max_batch_size {built}")
    cfg = text_front_config(name)
    repository = Path(repository)
    version = version or next_version(repository / name)
    with _staging(repository, name) as tmp:
        known = _copy_hashing(src, tmp, ENGINE_DIR, progress)
        known.update(_copy_tokenizer(tok, tmp, HF_DIR, progress))
        shutil.copyfile(TEXT_FRONT, tmp / "model.py")
        shutil.copyfile(TEXT_HELPERS, tmp / TEXT_HELPERS_FILE)
        extra = {"source": src.name, "engine_model": engine_model_name(name), "engine_max_batch_size": mbs}
        meta = _meta("tensorrtllm", cfg, ENGINE_DIR, extra)
        res = _finish(tmp, repository, cfg, version, meta, known, t0, progress)
    newest = next_version(repository / name) - 1  # the engine entry serves the newest version's engine
    write_engine_entry(repository, name, repository / name / str(newest))
    return res


def read_package_meta(version_dir: Path) -> dict[str, Any] | None:
    p = version_dir / PACKAGE_META
    if not p.is_file():
        return None
    try:
        data = json.loads(p.read_text())
    except json.JSONDecodeError as exc:
        raise PackageError(f"{p}: invalid JSON: {exc}") from exc
    return data if isinstance(data, dict) else None


__all__ = [
    "CONFIG_FILE",
    "PACKAGE_META",
    "BatchingOptions",
    "PackageError",
    "PackageResult",
    "package_onnx",
    "package_python",
    "package_tensorrtllm",
    "package_torch",
    "package_transformers",
    "package_vllm",
    "read_package_meta",
]
