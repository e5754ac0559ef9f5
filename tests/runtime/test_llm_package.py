"""Issue #13: packaging Hugging Face causal-LM directories (``mdctl package --format transformers``)
and linting LLM entries. No Triton here: these run on the files."""

from __future__ import annotations

import hashlib
import json
import shutil
import tracemalloc
from pathlib import Path

import pytest

from modeldeploy_runtime.config import ModelConfig, TensorSpec, parse_config
from modeldeploy_runtime.digest import parse_sha_manifest
from modeldeploy_runtime.lint import errors, lint_repository
from modeldeploy_runtime.package import PackageError, package_transformers


@pytest.fixture(scope="module")
def tiny_hf(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from modeldeploy_runtime.tiny_lm import build_tiny_lm

    return build_tiny_lm(tmp_path_factory.mktemp("hf") / "tiny", context=64)


@pytest.fixture(scope="module")
def sharded_hf(tmp_path_factory: pytest.TempPathFactory, tiny_hf: Path) -> Path:
    """The same model saved in several safetensors shards with an index."""
    from transformers import AutoModelForCausalLM

    out = tmp_path_factory.mktemp("sharded") / "tiny"
    shutil.copytree(tiny_hf, out)
    (out / "model.safetensors").unlink()
    AutoModelForCausalLM.from_pretrained(tiny_hf).save_pretrained(out, max_shard_size="40KB")
    assert (out / "model.safetensors.index.json").is_file()
    return out


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_package_writes_a_decoupled_entry_with_every_file_hashed(tiny_hf: Path, tmp_path: Path) -> None:
    res = package_transformers(tiny_hf, tmp_path / "repo", "tiny-lm")
    vdir = tmp_path / "repo" / "tiny-lm" / "1"
    assert res.version_dir == vdir and res.version == 1
    listed = parse_sha_manifest((vdir / "manifest.sha256").read_bytes())
    for f in tiny_hf.iterdir():
        assert listed[f"hf/{f.name}"] == _sha(f), f.name
        assert (vdir / "hf" / f.name).read_bytes() == f.read_bytes()
    assert listed["model.py"] == _sha(vdir / "model.py")
    cfg, problems = parse_config((tmp_path / "repo" / "tiny-lm" / "config.pbtxt").read_text())
    assert problems == []
    assert cfg.decoupled and cfg.backend == "python" and cfg.max_batch_size == 0
    assert cfg.dynamic_batching is None
    assert [(t.name, t.optional) for t in cfg.inputs][:2] == [("text_input", False), ("stream", True)]
    assert json.loads((vdir / "modeldeploy.json").read_text())["format"] == "transformers"
    assert lint_repository(tmp_path / "repo") == []
    again = package_transformers(tiny_hf, tmp_path / "repo", "tiny-lm", version=1)
    assert again.unchanged and again.digest == res.digest


def test_sharded_model_packages_and_lint_finds_a_missing_shard(sharded_hf: Path, tmp_path: Path) -> None:
    package_transformers(sharded_hf, tmp_path / "repo", "llm", instance_kind="KIND_GPU", instance_count=2)
    assert "kind: KIND_GPU" in (tmp_path / "repo" / "llm" / "config.pbtxt").read_text()
    assert lint_repository(tmp_path / "repo") == []
    index = json.loads((sharded_hf / "model.safetensors.index.json").read_text())
    shard = sorted(set(index["weight_map"].values()))[-1]
    (tmp_path / "repo" / "llm" / "1" / "hf" / shard).unlink()
    msgs = [str(i) for i in errors(lint_repository(tmp_path / "repo"))]
    assert any(shard in m and "shard listed in model.safetensors.index.json is missing" in m for m in msgs), (
        msgs
    )


def test_package_refuses_a_directory_without_tokenizer_or_weights(tiny_hf: Path, tmp_path: Path) -> None:
    no_tok = tmp_path / "no-tok"
    shutil.copytree(tiny_hf, no_tok)
    (no_tok / "tokenizer.json").unlink()
    with pytest.raises(PackageError, match="no tokenizer"):
        package_transformers(no_tok, tmp_path / "repo", "a")
    no_weights = tmp_path / "no-weights"
    shutil.copytree(tiny_hf, no_weights)
    (no_weights / "model.safetensors").unlink()
    with pytest.raises(PackageError, match=r"no model\.safetensors"):
        package_transformers(no_weights, tmp_path / "repo", "b")
    assert not (tmp_path / "repo" / "a" / "1").exists()


def test_lint_reports_a_removed_tokenizer_and_bad_engine_args(tiny_hf: Path, tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    package_transformers(tiny_hf, repo, "tiny")
    (repo / "tiny" / "1" / "hf" / "tokenizer.json").unlink()
    vllm = repo / "vllm-model"
    (vllm / "1").mkdir(parents=True)
    cfg = ModelConfig(name="vllm-model", backend="vllm", inputs=[TensorSpec("text_input", "TYPE_STRING", [1])],
                      outputs=[TensorSpec("text_output", "TYPE_STRING", [-1])], decoupled=True)  # fmt: skip
    cfg.write(vllm)
    (vllm / "1" / "model.json").write_text('{"gpu_memory_utilization": 0.9')
    msgs = [str(i) for i in errors(lint_repository(repo))]
    assert any("tiny/1/hf" in m and "no tokenizer" in m for m in msgs), msgs
    assert any("model.json" in m and "not valid JSON" in m for m in msgs), msgs
    (vllm / "1" / "model.json").write_text('{"gpu_memory_utilization": 0.9}')
    msgs = [str(i) for i in errors(lint_repository(repo))]
    assert any("'model'" in m and "missing" in m for m in msgs), msgs


def test_decoupled_config_with_dynamic_batching_is_a_problem() -> None:
    text = """name: "m" backend: "python" max_batch_size: 4
    input { name: "text_input" data_type: TYPE_STRING dims: [ 1 ] }
    output { name: "text_output" data_type: TYPE_STRING dims: [ -1 ] }
    dynamic_batching { }
    model_transaction_policy { decoupled: true }"""
    cfg, problems = parse_config(text)
    assert cfg.decoupled
    assert any("decoupled" in p and "dynamic batching" in p for p in problems), problems


def test_large_shard_streams_through_hashing_and_copying(tiny_hf: Path, tmp_path: Path) -> None:
    """A 64 MiB shard is copied and hashed in chunks: Python's peak allocation stays far below it."""
    src = tmp_path / "big"
    shutil.copytree(tiny_hf, src)
    size = 64 << 20
    with open(src / "model.safetensors", "ab") as f:  # padding after the real tensors is read as data
        block = bytes(range(256)) * 4096
        for _ in range(size // len(block)):
            f.write(block)
    want = _sha(src / "model.safetensors")
    tracemalloc.start()
    try:
        package_transformers(src, tmp_path / "repo", "big")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 8 << 20, f"peak {peak / 1e6:.1f} MB while packaging a {size >> 20} MiB shard"
    listed = parse_sha_manifest((tmp_path / "repo" / "big" / "1" / "manifest.sha256").read_bytes())
    assert listed["hf/model.safetensors"] == want


def test_mdctl_package_detects_a_hf_directory(
    tiny_hf: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from modeldeploy.cli import main

    rc = main(
        ["package", str(tiny_hf), "-r", str(tmp_path / "repo"), "-n", "chat", "--json", "--no-progress"]
    )
    assert rc == 0
    out = json.loads(capsys.readouterr().out)
    assert out["model"] == "chat" and out["version"] == 1
    assert "hf/model.safetensors" in out["files"] and "model.py" in out["files"]
    assert main(["lint", str(tmp_path / "repo")]) == 0
