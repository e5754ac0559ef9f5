"""The files Triton's LLM backends read, generated from the packaged defaults and the manifest.

* ``vllm``: Triton's vLLM backend reads ``<model>/<version>/model.json``, a JSON object of vLLM
  engine arguments (``model`` = the weights' path, ``tensor_parallel_size``,
  ``gpu_memory_utilization``, ``max_model_len``, ``dtype``, ...), and a ``config.pbtxt`` with
  ``backend: "vllm"``, ``max_batch_size: 0`` (vLLM batches inside its engine), the decoupled
  transaction policy and one ``KIND_MODEL`` instance (the engine places itself on the GPUs).
  ``mdctl package --format vllm`` stores the packaged engine arguments in ``modeldeploy.json``
  (hashed with the version); the agent in the pod writes ``model.json`` from them, pointing
  ``model`` at the version's ``hf/`` folder and applying the manifest's resolved engine settings
  (the tensor-parallel size is the pod's GPU count unless ``llm.tensorParallelSize`` says
  otherwise). Because it is generated in the pod, ``model.json`` of such a version is not part of
  the version's content digest (see :func:`generated_files`).
* ``tensorrtllm``: two repository entries. ``<name>`` is the *text front*, a decoupled
  python-backend model (trtllm_text_backend.py, with the tokenizer in ``<version>/hf/``) with the
  same text tensors as the vLLM and transformers models; it tokenizes, streams the request through
  ``<name>-engine`` (BLS) and detokenizes. ``<name>-engine`` is the TensorRT-LLM backend's model
  (token ids in and out) over the prebuilt engine directory named by the ``gpt_model_path``
  parameter of its ``config.pbtxt``: the newest served version's ``engine/`` folder. Its one
  version folder holds ``engine.json``, which says so (:func:`write_engine_entry`).

Only the standard library here (the agent imports this module).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from modeldeploy_runtime.config import CONFIG_FILE, InstanceGroup, ModelConfig, TensorSpec
from modeldeploy_runtime.hf import HF_DIR, LLM_INPUTS, LLM_OUTPUTS
from modeldeploy_runtime.manifest import ManifestLLM

#: vLLM backend: the engine arguments file in a version folder.
ENGINE_ARGS_FILE = "model.json"
#: TensorRT-LLM backend: the folder of a packaged version holding the prebuilt engine.
ENGINE_DIR = "engine"
#: The packaging metadata file (package.PACKAGE_META; repeated to keep this module import-light).
_META = "modeldeploy.json"

#: The manifest's engine settings and the vLLM engine arguments they set.
_VLLM_ARGS: tuple[tuple[str, str], ...] = (
    ("tensorParallelSize", "tensor_parallel_size"),
    ("gpuMemoryUtilization", "gpu_memory_utilization"),
    ("maxModelLen", "max_model_len"),
    ("dtype", "dtype"),
)

#: The python-backend text front of a tensorrtllm model (copied as ``<version>/model.py``), and the
#: sampling/stop/sender helpers it shares with the transformers model (copied next to it).
TEXT_FRONT = Path(__file__).with_name("trtllm_text_backend.py")
TEXT_HELPERS = Path(__file__).with_name("transformers_backend.py")
TEXT_HELPERS_FILE = "textgen.py"
#: The repository entry of the TensorRT-LLM engine behind the text front ``<name>``.
ENGINE_SUFFIX = "-engine"
#: The file in the engine entry's version folder (``default_model_filename``): where the engine is.
ENGINE_POINTER = "engine.json"

#: Token-level tensors of the TensorRT-LLM backend (its inflight-batcher model; batch dim implicit).
TRTLLM_INPUTS = [
    TensorSpec("input_ids", "TYPE_INT32", [-1]),
    TensorSpec("input_lengths", "TYPE_INT32", [1]),
    TensorSpec("request_output_len", "TYPE_INT32", [1]),
    TensorSpec("end_id", "TYPE_INT32", [1], optional=True),
    TensorSpec("pad_id", "TYPE_INT32", [1], optional=True),
    TensorSpec("streaming", "TYPE_BOOL", [1], optional=True),
    TensorSpec("temperature", "TYPE_FP32", [1], optional=True),
    TensorSpec("runtime_top_k", "TYPE_INT32", [1], optional=True),
    TensorSpec("runtime_top_p", "TYPE_FP32", [1], optional=True),
    TensorSpec("random_seed", "TYPE_UINT64", [1], optional=True),
    TensorSpec("exclude_input_in_output", "TYPE_BOOL", [1], optional=True),
]
TRTLLM_OUTPUTS = [
    TensorSpec("output_ids", "TYPE_INT32", [-1, -1]),
    TensorSpec("sequence_length", "TYPE_INT32", [-1]),
]


def vllm_config(name: str) -> ModelConfig:
    """config.pbtxt of a vLLM-backend model: decoupled, batching left to the engine, one
    KIND_MODEL instance, and vLLM's own metrics (KV-cache usage...) reported on Triton's
    metrics port (``REPORT_CUSTOM_METRICS``, with ``disable_log_stats: false`` in model.json)."""
    return ModelConfig(
        name=name, backend="vllm", max_batch_size=0, inputs=list(LLM_INPUTS), outputs=list(LLM_OUTPUTS),
        instance_groups=[InstanceGroup(1, "KIND_MODEL")], decoupled=True,
        parameters={"REPORT_CUSTOM_METRICS": "true"},
    )  # fmt: skip


def tensorrtllm_config(name: str, max_batch_size: int, engine_path: str = "") -> ModelConfig:
    """config.pbtxt of a TensorRT-LLM-backend model over a prebuilt engine (inflight batching,
    decoupled for streaming); ``engine_path`` is ``gpt_model_path`` (set by the agent)."""
    params = {"gpt_model_type": "inflight_fused_batching", "FORCE_CPU_ONLY_INPUT_TENSORS": "no"}
    if engine_path:
        params["gpt_model_path"] = engine_path
    return ModelConfig(
        name=name, backend="tensorrtllm", max_batch_size=max_batch_size, inputs=list(TRTLLM_INPUTS),
        outputs=list(TRTLLM_OUTPUTS), instance_groups=[InstanceGroup(1, "KIND_CPU")], decoupled=True,
        parameters=params,
    )  # fmt: skip


def engine_model_name(name: str) -> str:
    """The repository entry of the TensorRT-LLM engine behind the text front ``name``."""
    return name + ENGINE_SUFFIX


def text_front_config(name: str, instance_count: int = 1) -> ModelConfig:
    """config.pbtxt of a tensorrtllm model's text front: a decoupled python-backend model with the
    text tensors of the other LLM formats, calling ``engine_model`` (its ``<name>-engine``)."""
    return ModelConfig(
        name=name, backend="python", max_batch_size=0, inputs=list(LLM_INPUTS), outputs=list(LLM_OUTPUTS),
        instance_groups=[InstanceGroup(instance_count, "KIND_CPU")], decoupled=True,
        parameters={"engine_model": engine_model_name(name)},
    )  # fmt: skip


def engine_batch_size(version_dir: Path) -> int:
    """The engine entry's max_batch_size packaged with a version (modeldeploy.json), else 0."""
    _, meta = _packaged_format(version_dir)
    mbs = meta.get("engine_max_batch_size")
    return mbs if isinstance(mbs, int) and mbs > 0 else 0


def has_text_front(version_dir: Path) -> bool:
    """Whether a tensorrtllm version was packaged with its text front (model.py + tokenizer)."""
    fmt, meta = _packaged_format(version_dir)
    return fmt == "tensorrtllm" and bool(meta.get("engine_model")) and (version_dir / "model.py").is_file()


def write_engine_entry(repository: Path, name: str, version_dir: Path, max_batch_size: int = 0) -> bool:
    """Write ``<repository>/<name>-engine``: the TensorRT-LLM backend's config.pbtxt with
    ``gpt_model_path`` = ``version_dir``'s ``engine/`` folder (absolute), ``max_batch_size`` (else
    the packaged one), and version ``1`` holding ``engine.json`` (which front version it serves).
    Returns whether anything changed."""
    engine = (version_dir / ENGINE_DIR).absolute()
    entry = repository / engine_model_name(name)
    mbs = max_batch_size if max_batch_size > 0 else engine_batch_size(version_dir)
    cfg = tensorrtllm_config(entry.name, mbs, str(engine))
    cfg.default_model_filename = ENGINE_POINTER
    pointer = json.dumps({"gpt_model_path": str(engine), "model": name, "version": int(version_dir.name)})
    changed = False
    for path, text in ((entry / "1" / ENGINE_POINTER, pointer + "\n"), (entry / CONFIG_FILE, cfg.render())):
        if path.is_file() and path.read_text() == text:
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(text)
        os.replace(tmp, path)
        changed = True
    return changed


def check_engine_dir(folder: Path) -> list[str]:
    """Problems of a prebuilt TensorRT-LLM engine directory (empty when it looks loadable): the
    ``*.engine`` file of each rank and the ``config.json`` the engine was built with."""
    if not folder.is_dir():
        return [f"{folder}: not a directory"]
    problems: list[str] = []
    if not any(folder.glob("*.engine")):
        problems.append(f"{folder}: no *.engine file (e.g. rank0.engine from trtllm-build)")
    cfg = folder / "config.json"
    if not cfg.is_file():
        problems.append(f"{cfg}: missing (the engine's build configuration)")
    else:
        try:
            json.loads(cfg.read_text())
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            problems.append(f"{cfg}: not valid JSON ({exc})")
    return problems


def engine_args(base: Mapping[str, Any], llm: ManifestLLM | None, weights: Path | None) -> dict[str, Any]:
    """vLLM engine arguments: the packaged ones, ``model`` = the weights folder (absolute: the
    backend runs with Triton's working directory), and the manifest's resolved settings on top."""
    args = dict(base)
    if weights is not None:
        args["model"] = str(weights.absolute())
    args.setdefault("disable_log_stats", False)  # the KV-cache gauge the autoscaler may follow
    if llm is not None:
        for field, arg in _VLLM_ARGS:
            value = getattr(llm, field)
            if value is not None:
                args[arg] = value
    return args


def _packaged_format(version_dir: Path) -> tuple[str, dict[str, Any]]:
    try:
        meta = json.loads((version_dir / _META).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return "", {}
    if not isinstance(meta, dict):
        return "", {}
    return str(meta.get("format", "")), meta


def generated_files(version_dir: Path) -> frozenset[str]:
    """Files of a version folder written in the pod rather than packaged: ``model.json`` of a
    version packaged as ``vllm`` (its engine arguments are in the hashed ``modeldeploy.json``)."""
    fmt, _ = _packaged_format(version_dir)
    return frozenset({ENGINE_ARGS_FILE}) if fmt == "vllm" else frozenset()


def write_engine_args(version_dir: Path, llm: ManifestLLM | None) -> bool:
    """Write ``model.json`` of a version packaged as ``vllm`` (returns whether it changed). A
    version without modeldeploy packaging keeps the ``model.json`` it was fetched with (it is
    part of its digest)."""
    fmt, meta = _packaged_format(version_dir)
    if fmt != "vllm":
        return False
    base = meta.get("engine_args")
    weights = version_dir / HF_DIR
    args = engine_args(base if isinstance(base, dict) else {}, llm, weights if weights.is_dir() else None)
    text = json.dumps(args, indent=2, sort_keys=True) + "\n"
    path = version_dir / ENGINE_ARGS_FILE
    if path.is_file() and path.read_text() == text:
        return False
    tmp = version_dir.parent / f".{ENGINE_ARGS_FILE}.{version_dir.name}.tmp"  # not in the version
    tmp.write_text(text)
    os.replace(tmp, path)
    return True


__all__ = [
    "ENGINE_ARGS_FILE",
    "ENGINE_DIR",
    "ENGINE_POINTER",
    "ENGINE_SUFFIX",
    "TEXT_FRONT",
    "TEXT_HELPERS",
    "TEXT_HELPERS_FILE",
    "TRTLLM_INPUTS",
    "TRTLLM_OUTPUTS",
    "check_engine_dir",
    "engine_args",
    "engine_batch_size",
    "engine_model_name",
    "generated_files",
    "has_text_front",
    "tensorrtllm_config",
    "text_front_config",
    "vllm_config",
    "write_engine_args",
    "write_engine_entry",
]
