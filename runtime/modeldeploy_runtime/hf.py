"""Hugging Face model directories (config.json + safetensors shards + tokenizer files): the checks
``mdctl package --format transformers`` and ``mdctl lint`` share, and the Triton tensor interface of
the LLM models (the one of Triton's vLLM backend, also served by transformers_backend.py).

Only the standard library here: nothing is loaded, files are read as JSON or listed.
"""

from __future__ import annotations

import json
from pathlib import Path

from modeldeploy_runtime.config import TensorSpec

#: The folder of a packaged version that holds the Hugging Face model directory.
HF_DIR = "hf"
SAFETENSORS_INDEX = "model.safetensors.index.json"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json", "vocab.txt")

#: Triton tensors of a generation model (vLLM backend's names).
LLM_INPUTS = [
    TensorSpec("text_input", "TYPE_STRING", [1]),
    TensorSpec("stream", "TYPE_BOOL", [1], optional=True),
    TensorSpec("sampling_parameters", "TYPE_STRING", [1], optional=True),
    TensorSpec("exclude_input_in_output", "TYPE_BOOL", [1], optional=True),
]
LLM_OUTPUTS = [
    TensorSpec("text_output", "TYPE_STRING", [-1]),
    TensorSpec("num_input_tokens", "TYPE_INT32", [1]),
    TensorSpec("num_output_tokens", "TYPE_INT32", [1]),
    TensorSpec("finish_reason", "TYPE_STRING", [1]),
]


def _json(path: Path, problems: list[str]) -> object:
    try:
        return json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        problems.append(f"{path}: not valid JSON ({exc})")
        return None


def _check_weights(folder: Path, problems: list[str]) -> None:
    index = folder / SAFETENSORS_INDEX
    if index.is_file():
        data = _json(index, problems)
        wm = data.get("weight_map") if isinstance(data, dict) else None
        if not isinstance(wm, dict) or not wm:
            problems.append(f"{index}: no weight_map")
            return
        for shard in sorted(set(map(str, wm.values()))):
            if not (folder / shard).is_file():
                problems.append(f"{folder / shard}: shard listed in {SAFETENSORS_INDEX} is missing")
    elif not (folder / "model.safetensors").is_file():
        problems.append(f"{folder}: no model.safetensors nor {SAFETENSORS_INDEX} (safetensors weights)")


def _check_tokenizer(folder: Path, problems: list[str]) -> None:
    if not any((folder / f).is_file() for f in TOKENIZER_FILES):
        problems.append(f"{folder}: no tokenizer (none of {', '.join(TOKENIZER_FILES)})")
    cfg = folder / "tokenizer_config.json"
    if cfg.is_file():
        _json(cfg, problems)


def check_tokenizer(folder: Path) -> list[str]:
    """Problems of a tokenizer folder (empty when AutoTokenizer should load it)."""
    if not folder.is_dir():
        return [f"{folder}: not a directory"]
    problems: list[str] = []
    _check_tokenizer(folder, problems)
    return problems


def check_hf_dir(folder: Path) -> list[str]:
    """Problems of a Hugging Face causal-LM directory (empty when it looks servable)."""
    if not folder.is_dir():
        return [f"{folder}: not a directory"]
    problems: list[str] = []
    cfg_path = folder / "config.json"
    if not cfg_path.is_file():
        problems.append(f"{cfg_path}: missing (the model's transformers config)")
    else:
        cfg = _json(cfg_path, problems)
        if cfg is not None and not (isinstance(cfg, dict) and cfg.get("model_type")):
            problems.append(f"{cfg_path}: no model_type")
    _check_weights(folder, problems)
    _check_tokenizer(folder, problems)
    return problems


def context_length(folder: Path) -> int | None:
    """The model's context window (max_position_embeddings / n_positions) from config.json."""
    try:
        cfg = json.loads((folder / "config.json").read_text())
    except (OSError, json.JSONDecodeError):
        return None
    for key in ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length"):
        if isinstance(cfg.get(key), int):
            return int(cfg[key])
    return None
