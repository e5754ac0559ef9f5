"""Triton model configuration (``config.pbtxt``): the subset modeldeploy writes and checks.

:class:`ModelConfig` renders through the jinja2 template ``config.pbtxt.j2`` and is read back with
:func:`parse_config`, which reports every problem it finds (unknown fields, bad enum values, bad
dims...) as :class:`ConfigProblem` naming the file, instead of stopping at the first.
"""

from __future__ import annotations

import functools
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import jinja2

from modeldeploy_runtime import __version__
from modeldeploy_runtime.pbtxt import Message, PbtxtError, loads

CONFIG_FILE = "config.pbtxt"

#: Triton data types and their numpy names.
TRITON_DTYPES: dict[str, str] = {
    "TYPE_BOOL": "bool",
    "TYPE_UINT8": "uint8",
    "TYPE_UINT16": "uint16",
    "TYPE_UINT32": "uint32",
    "TYPE_UINT64": "uint64",
    "TYPE_INT8": "int8",
    "TYPE_INT16": "int16",
    "TYPE_INT32": "int32",
    "TYPE_INT64": "int64",
    "TYPE_FP16": "float16",
    "TYPE_FP32": "float32",
    "TYPE_FP64": "float64",
    "TYPE_BF16": "bfloat16",
    "TYPE_STRING": "object",
}
#: torch dtype name (str(torch.float32) without "torch.") -> Triton data type
TORCH_TO_TRITON: dict[str, str] = {
    "bool": "TYPE_BOOL",
    "uint8": "TYPE_UINT8",
    "int8": "TYPE_INT8",
    "int16": "TYPE_INT16",
    "int32": "TYPE_INT32",
    "int64": "TYPE_INT64",
    "float16": "TYPE_FP16",
    "float32": "TYPE_FP32",
    "float64": "TYPE_FP64",
    "bfloat16": "TYPE_BF16",
}
#: platform/backend -> the artifact Triton looks for in a version folder
DEFAULT_ARTIFACT: dict[str, str] = {
    "pytorch_libtorch": "model.pt",
    "pytorch": "model.pt",
    "onnxruntime_onnx": "model.onnx",
    "onnxruntime": "model.onnx",
    "tensorrt_plan": "model.plan",
    "tensorrt": "model.plan",
    "python": "model.py",
    "vllm": "model.json",  # Triton's vLLM backend: the engine arguments
    "tensorrtllm": "engine",  # the TensorRT-LLM backend: the prebuilt engine folder (gpt_model_path)
}
PLATFORM_BACKEND = {
    "pytorch_libtorch": "pytorch",
    "onnxruntime_onnx": "onnxruntime",
    "tensorrt_plan": "tensorrt",
}
INSTANCE_KINDS = ("KIND_AUTO", "KIND_CPU", "KIND_GPU", "KIND_MODEL")
KNOWN_TOP_LEVEL = {
    "name", "platform", "backend", "runtime", "max_batch_size", "input", "output", "batch_input",
    "batch_output", "dynamic_batching", "sequence_batching", "ensemble_scheduling", "instance_group",
    "version_policy", "default_model_filename", "cc_model_filenames", "metric_tags", "parameters",
    "model_warmup", "model_operations", "model_transaction_policy", "model_repository_agents",
    "response_cache", "optimization", "model_metrics",
}  # fmt: skip


@dataclass
class TensorSpec:
    name: str
    data_type: str
    dims: list[int]
    optional: bool = False  # the request may omit it (Triton >= 23.03)

    @property
    def numpy_dtype(self) -> str:
        return TRITON_DTYPES[self.data_type]


@dataclass
class DynamicBatching:
    preferred_batch_size: list[int] = field(default_factory=list)
    max_queue_delay_microseconds: int = 0


@dataclass
class InstanceGroup:
    count: int = 1
    kind: str = "KIND_AUTO"


@dataclass
class VersionPolicy:
    kind: str = "latest"  # latest | all | specific
    num_versions: int = 1
    versions: list[int] = field(default_factory=list)

    @classmethod
    def specific(cls, versions: list[int]) -> VersionPolicy:
        return cls(kind="specific", versions=sorted(versions))

    def select(self, available: list[int]) -> list[int]:
        from modeldeploy_runtime.manifest import select_versions

        return select_versions(
            available,
            latest=self.num_versions,
            all=self.kind == "all",
            specific=self.versions if self.kind == "specific" else None,
        )


@dataclass
class ModelConfig:
    name: str
    platform: str = ""
    backend: str = ""
    max_batch_size: int = 0
    inputs: list[TensorSpec] = field(default_factory=list)
    outputs: list[TensorSpec] = field(default_factory=list)
    dynamic_batching: DynamicBatching | None = None
    instance_groups: list[InstanceGroup] = field(default_factory=list)
    version_policy: VersionPolicy | None = None
    parameters: dict[str, str] = field(default_factory=dict)
    default_model_filename: str = ""
    #: ``model_transaction_policy { decoupled: true }``: a request may get any number of responses
    #: (token streaming); such models are served with max_batch_size 0 and no dynamic batching.
    decoupled: bool = False

    @property
    def backend_name(self) -> str:
        return self.backend or PLATFORM_BACKEND.get(self.platform, self.platform)

    @property
    def artifact(self) -> str:
        if self.default_model_filename:
            return self.default_model_filename
        return DEFAULT_ARTIFACT.get(self.platform or self.backend, "")

    def render(self) -> str:
        return _template().render(c=self, generator_version=__version__)

    def write(self, model_dir: Path) -> Path:
        path = model_dir / CONFIG_FILE
        tmp = path.with_name(f".{CONFIG_FILE}.tmp")
        tmp.write_text(self.render())
        tmp.replace(path)
        return path

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelConfig:
        d = dict(d)
        d["inputs"] = [TensorSpec(**t) for t in d.get("inputs", [])]
        d["outputs"] = [TensorSpec(**t) for t in d.get("outputs", [])]
        if d.get("dynamic_batching") is not None:
            d["dynamic_batching"] = DynamicBatching(**d["dynamic_batching"])
        d["instance_groups"] = [InstanceGroup(**g) for g in d.get("instance_groups", [])]
        if d.get("version_policy") is not None:
            d["version_policy"] = VersionPolicy(**d["version_policy"])
        return cls(**d)

    def io_signature(self) -> tuple[Any, ...]:
        return (
            self.max_batch_size,
            tuple((t.name, t.data_type, tuple(t.dims)) for t in self.inputs),
            tuple((t.name, t.data_type, tuple(t.dims)) for t in self.outputs),
        )


@functools.cache
def _template() -> jinja2.Template:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(Path(__file__).parent)),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        autoescape=False,
    )
    return env.get_template("config.pbtxt.j2")


class ConfigProblem(ValueError):
    """One problem in a config.pbtxt; ``str()`` names the file."""


def _one(msg: Message, key: str, kind: type | tuple[type, ...], where: str, problems: list[str]) -> Any:
    vals = msg.get(key)
    if not vals:
        return None
    if len(vals) > 1:
        problems.append(f"{where}{key}: set {len(vals)} times (expected once)")
    v = vals[-1]
    if not isinstance(v, kind) or (kind is int and isinstance(v, bool)):
        problems.append(f"{where}{key}: expected {getattr(kind, '__name__', kind)}, got {v!r}")
        return None
    return v


def _tensors(msg: Message, key: str, problems: list[str]) -> list[TensorSpec]:
    out: list[TensorSpec] = []
    for i, t in enumerate(msg.get(key, [])):
        where = f"{key}[{i}]."
        if not isinstance(t, dict):
            problems.append(f"{key}[{i}]: expected a message {{ ... }}")
            continue
        unknown = set(t) - {"name", "data_type", "dims", "format", "reshape", "optional", "is_shape_tensor",
                            "allow_ragged_batch", "label_filename", "is_non_linear_format_io"}  # fmt: skip
        for u in sorted(unknown):
            problems.append(f"{where}{u}: unknown field")
        name = _one(t, "name", str, where, problems)
        if not name:
            problems.append(f"{where}name: missing")
        dt = _one(t, "data_type", str, where, problems)
        if dt is None:
            problems.append(f"{where}data_type: missing")
        elif dt not in TRITON_DTYPES:
            problems.append(f"{where}data_type: unknown data type {dt!r}")
        dims = t.get("dims", [])
        if not dims and "dims" not in t:
            problems.append(f"{where}dims: missing")
        for d in dims:
            if not isinstance(d, int) or isinstance(d, bool) or d == 0 or d < -1:
                problems.append(f"{where}dims: invalid dimension {d!r} (must be -1 or > 0)")
        optional = bool(_one(t, "optional", bool, where, problems))
        out.append(TensorSpec(name or "", dt or "", [d for d in dims if isinstance(d, int)], optional))
    names = [t.name for t in out if t.name]
    for dup in sorted({n for n in names if names.count(n) > 1}):
        problems.append(f"{key}: duplicate tensor name {dup!r}")
    return out


def _transaction_policy(msg: Message, cfg: ModelConfig, problems: list[str]) -> None:
    tp = _one(msg, "model_transaction_policy", dict, "", problems)
    if tp is None:
        return
    for key in sorted(set(tp) - {"decoupled"}):
        problems.append(f"model_transaction_policy.{key}: unknown field")
    cfg.decoupled = bool(_one(tp, "decoupled", bool, "model_transaction_policy.", problems))
    if cfg.decoupled and cfg.dynamic_batching is not None:
        problems.append(
            "dynamic_batching: a decoupled model (model_transaction_policy.decoupled) streams responses "
            "per request; dynamic batching does not apply"
        )


def config_from_message(msg: Message) -> tuple[ModelConfig, list[str]]:
    """Interpret a parsed config; returns the config and the list of problems (empty when valid)."""
    problems: list[str] = []
    for key in sorted(set(msg) - KNOWN_TOP_LEVEL):
        problems.append(f"{key}: unknown field")
    name = _one(msg, "name", str, "", problems) or ""
    platform = _one(msg, "platform", str, "", problems) or ""
    backend = _one(msg, "backend", str, "", problems) or ""
    mbs = _one(msg, "max_batch_size", int, "", problems) or 0
    if mbs < 0:
        problems.append(f"max_batch_size: must be >= 0, got {mbs}")
    cfg = ModelConfig(name=name, platform=platform, backend=backend, max_batch_size=mbs)
    cfg.default_model_filename = _one(msg, "default_model_filename", str, "", problems) or ""
    cfg.inputs = _tensors(msg, "input", problems)
    cfg.outputs = _tensors(msg, "output", problems)
    db = _one(msg, "dynamic_batching", dict, "", problems)
    if db is not None:
        pref = [p for p in db.get("preferred_batch_size", []) if isinstance(p, int)]
        delay = _one(db, "max_queue_delay_microseconds", int, "dynamic_batching.", problems) or 0
        cfg.dynamic_batching = DynamicBatching(pref, delay)
        if mbs == 0:
            problems.append("dynamic_batching: requires max_batch_size > 0")
        for size in pref:
            if size <= 0 or (mbs and size > mbs):
                problems.append(
                    f"dynamic_batching.preferred_batch_size: {size} outside 1..max_batch_size ({mbs})"
                )
    for i, g in enumerate(msg.get("instance_group", [])):
        if not isinstance(g, dict):
            problems.append(f"instance_group[{i}]: expected a message")
            continue
        count = _one(g, "count", int, f"instance_group[{i}].", problems)
        kind = _one(g, "kind", str, f"instance_group[{i}].", problems) or "KIND_AUTO"
        if count is not None and count < 1:
            problems.append(f"instance_group[{i}].count: must be >= 1, got {count}")
        if kind not in INSTANCE_KINDS:
            problems.append(
                f"instance_group[{i}].kind: unknown kind {kind!r} (one of {', '.join(INSTANCE_KINDS)})"
            )
        cfg.instance_groups.append(InstanceGroup(count if count is not None else 1, kind))
    _transaction_policy(msg, cfg, problems)
    vp = _one(msg, "version_policy", dict, "", problems)
    if vp is not None:
        kinds = [k for k in ("latest", "all", "specific") if k in vp]
        if len(kinds) != 1:
            problems.append(
                f"version_policy: exactly one of latest/all/specific must be set, got {kinds or 'none'}"
            )
        elif kinds[0] == "all":
            cfg.version_policy = VersionPolicy(kind="all")
        elif kinds[0] == "latest":
            sub = vp["latest"][-1]
            n = sub.get("num_versions", [1])[-1] if isinstance(sub, dict) else None
            if not isinstance(n, int) or n < 1:
                problems.append(f"version_policy.latest.num_versions: must be >= 1, got {n!r}")
                n = 1
            cfg.version_policy = VersionPolicy(kind="latest", num_versions=n)
        else:
            sub = vp["specific"][-1]
            vs = sub.get("versions", []) if isinstance(sub, dict) else []
            bad = [v for v in vs if not isinstance(v, int) or v < 0]
            if bad or not vs:
                problems.append(
                    f"version_policy.specific.versions: expected a non-empty list of versions, got {vs!r}"
                )
            cfg.version_policy = VersionPolicy.specific([v for v in vs if isinstance(v, int)])
    for p in msg.get("parameters", []):
        if isinstance(p, dict):
            key = p.get("key", [""])[-1]
            val = p.get("value", [{}])[-1]
            sv = val.get("string_value", [""])[-1] if isinstance(val, dict) else ""
            cfg.parameters[str(key)] = str(sv)
    if not platform and not backend:
        problems.append(
            'platform/backend: neither is set (e.g. backend: "python" or platform: "pytorch_libtorch")'
        )
    elif (
        platform
        and platform not in PLATFORM_BACKEND
        and platform not in ("ensemble", "tensorflow_savedmodel", "tensorflow_graphdef")
    ):
        problems.append(f"platform: unknown platform {platform!r}")
    if backend and platform and PLATFORM_BACKEND.get(platform, backend) != backend:
        problems.append(f"backend: {backend!r} does not match platform {platform!r}")
    return cfg, problems


def parse_config(text: str, source: str = CONFIG_FILE) -> tuple[ModelConfig, list[str]]:
    """Parse config.pbtxt text; syntax errors raise :class:`PbtxtError` (with line:column)."""
    return config_from_message(loads(text, source))


def load_config(path: Path) -> ModelConfig:
    """Read a config.pbtxt and raise :class:`ConfigProblem` naming the file when it is invalid."""
    try:
        cfg, problems = parse_config(path.read_text(), str(path))
    except PbtxtError as exc:
        raise ConfigProblem(str(exc)) from exc
    if problems:
        raise ConfigProblem(f"{path}: " + "; ".join(problems))
    return cfg
