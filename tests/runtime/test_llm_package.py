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


# ------------------------------------------------------------------------------- vllm / tensorrtllm
def test_mdctl_package_vllm_keeps_engine_args_for_the_agent(
    tiny_hf: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from modeldeploy.cli import main
    from modeldeploy_runtime.agent import Agent
    from modeldeploy_runtime.manifest import ManifestLLM, ManifestModel, ManifestVersion, ModelManifest

    repo = tmp_path / "repo"
    argv = ["package", str(tiny_hf), "-r", str(repo), "-n", "chat", "--format", "vllm", "--json",
            "--no-progress", "--engine-arg", "enforce_eager=true", "--engine-arg", "max_num_seqs=8"]  # fmt: skip
    assert main(argv) == 0
    out = json.loads(capsys.readouterr().out)
    vdir = repo / "chat" / "1"
    listed = parse_sha_manifest((vdir / "manifest.sha256").read_bytes())
    for f in tiny_hf.iterdir():  # weights and tokenizer, each hashed
        assert listed[f"hf/{f.name}"] == _sha(f), f.name
    assert "hf/model.safetensors" in out["files"] and "hf/tokenizer.json" in out["files"]
    assert not (vdir / "model.json").exists() and "model.py" not in out["files"]
    meta = json.loads((vdir / "modeldeploy.json").read_text())
    assert meta["format"] == "vllm" and meta["engine_args"] == {"enforce_eager": True, "max_num_seqs": 8}
    cfg, problems = parse_config((repo / "chat" / "config.pbtxt").read_text())
    assert problems == [] and (cfg.backend, cfg.max_batch_size, cfg.decoupled) == ("vllm", 0, True)
    assert [g.kind for g in cfg.instance_groups] == ["KIND_MODEL"]
    assert main(["lint", str(repo)]) == 0  # model.json is written in the pod: not missing here
    # the agent fetches that very version and writes model.json from it plus the manifest
    manifest = ModelManifest(
        models=[ManifestModel(
            name="chat", format="vllm", llm=ManifestLLM(tensorParallelSize=4, maxModelLen=64),
            versions=[ManifestVersion(version=1, source=f"file://{vdir}", sha256=out["sha256"])],
        )]
    )  # fmt: skip
    assert Agent(tmp_path / "unused.json", tmp_path / "pod").fill_repository(manifest)
    pod_v = tmp_path / "pod" / "chat" / "1"
    assert json.loads((pod_v / "model.json").read_text()) == {
        "model": str((pod_v / "hf").absolute()), "enforce_eager": True, "max_num_seqs": 8,
        "tensor_parallel_size": 4, "max_model_len": 64, "disable_log_stats": False,
    }  # fmt: skip
    assert errors(lint_repository(tmp_path / "pod")) == []


def test_package_vllm_refuses_a_model_engine_arg_and_lint_checks_engine_args(
    tiny_hf: Path, tmp_path: Path
) -> None:
    from modeldeploy_runtime.package import package_vllm

    with pytest.raises(PackageError, match="'model' is set by the agent"):
        package_vllm(tiny_hf, tmp_path / "repo", "chat", engine_args={"model": "/elsewhere"})
    package_vllm(tiny_hf, tmp_path / "repo", "chat")
    vdir = tmp_path / "repo" / "chat" / "1"
    (vdir / "model.json").write_text(json.dumps({"model": "/m", "tensor_parallel_size": 0}))
    found = [i.message for i in errors(lint_repository(tmp_path / "repo"))]
    assert found == ["engine arguments: tensor_parallel_size must be a positive integer, got 0"]
    (vdir / "hf" / "tokenizer.json").unlink()
    assert any("no tokenizer" in i.message for i in errors(lint_repository(tmp_path / "repo")))


@pytest.fixture
def trt_engine(tmp_path: Path) -> Path:
    """A synthetic prebuilt TensorRT-LLM engine directory (two ranks, build config)."""
    d = tmp_path / "llama-engine"
    d.mkdir()
    (d / "rank0.engine").write_bytes(bytes(range(256)) * 4096)
    (d / "rank1.engine").write_bytes(b"\x01" * 300_000)
    (d / "config.json").write_text(json.dumps({"build_config": {"max_batch_size": 16}}))
    return d


def test_mdctl_package_tensorrtllm_writes_a_text_front_over_the_engine(
    trt_engine: Path, tiny_hf: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from modeldeploy.cli import main
    from modeldeploy_runtime.hf import LLM_INPUTS, LLM_OUTPUTS

    repo = tmp_path / "repo"
    argv = ["package", str(trt_engine), "-r", str(repo), "-n", "llama", "--format", "tensorrtllm", "--json",
            "--tokenizer", str(tiny_hf)]  # fmt: skip
    assert main([*argv, "--no-progress"]) == 0
    out = json.loads(capsys.readouterr().out)
    vdir = repo / "llama" / "1"
    listed = parse_sha_manifest((vdir / "manifest.sha256").read_bytes())
    for f in trt_engine.iterdir():
        assert listed[f"engine/{f.name}"] == _sha(f), f.name
    # the tokenizer (and the model's config, for its context) without the weights
    assert listed["hf/tokenizer.json"] == _sha(tiny_hf / "tokenizer.json")
    assert "hf/config.json" in listed and not any(k.endswith(".safetensors") for k in listed)
    assert {"model.py", "textgen.py", "engine/rank0.engine"} <= set(out["files"])
    # <name>: the text front, with the text tensors the OpenAI endpoint sends and reads
    front, problems = parse_config((repo / "llama" / "config.pbtxt").read_text())
    assert problems == []
    assert (front.backend, front.max_batch_size, front.decoupled) == ("python", 0, True)
    assert front.io_signature() == ModelConfig("x", inputs=LLM_INPUTS, outputs=LLM_OUTPUTS).io_signature()
    assert front.parameters["engine_model"] == "llama-engine"
    # <name>-engine: the TensorRT-LLM backend over the packaged engine
    cfg, problems = parse_config((repo / "llama-engine" / "config.pbtxt").read_text())
    assert problems == []
    assert (cfg.backend, cfg.max_batch_size, cfg.decoupled) == ("tensorrtllm", 16, True)
    assert Path(cfg.parameters["gpt_model_path"]) == (vdir / "engine").absolute()
    assert cfg.parameters["gpt_model_type"] == "inflight_fused_batching"
    assert [t.name for t in cfg.inputs][:3] == ["input_ids", "input_lengths", "request_output_len"]
    assert json.loads((repo / "llama-engine" / "1" / "engine.json").read_text())["version"] == 1
    assert main(["lint", str(repo)]) == 0
    # more than the engine was built for is refused; a smaller batch is taken; the entry follows v2
    assert main([*argv, "--no-progress", "--max-batch-size", "32"]) == 1
    assert "exceeds the engine's build_config.max_batch_size 16" in capsys.readouterr().err
    assert main([*argv, "--no-progress", "--max-batch-size", "4", "-v", "2"]) == 0
    assert json.loads(capsys.readouterr().out)["version"] == 2
    cfg, _ = parse_config((repo / "llama-engine" / "config.pbtxt").read_text())
    assert cfg.max_batch_size == 4 and cfg.parameters["gpt_model_path"].endswith("/llama/2/engine")
    # a tampered engine file is a digest error lint reports; so is a missing tokenizer
    (vdir / "engine" / "rank1.engine").write_bytes(b"\x02" * 300_000)
    assert any("rank1.engine" in i.path for i in errors(lint_repository(repo)))
    (repo / "llama" / "2" / "hf" / "tokenizer.json").unlink()
    assert any("no tokenizer" in i.message for i in errors(lint_repository(repo)))


def test_package_tensorrtllm_needs_a_tokenizer(trt_engine: Path, tiny_hf: Path, tmp_path: Path) -> None:
    from modeldeploy_runtime.package import package_tensorrtllm

    with pytest.raises(PackageError, match=r"no tokenizer in the engine directory.*--tokenizer DIR"):
        package_tensorrtllm(trt_engine, tmp_path / "repo", "llama")
    with pytest.raises(PackageError, match="not a tokenizer folder"):
        package_tensorrtllm(trt_engine, tmp_path / "repo", "llama", tokenizer=trt_engine)
    # a tokenizer shipped inside the engine directory is taken from there
    shutil.copyfile(tiny_hf / "tokenizer.json", trt_engine / "tokenizer.json")
    shutil.copyfile(tiny_hf / "tokenizer_config.json", trt_engine / "tokenizer_config.json")
    res = package_tensorrtllm(trt_engine, tmp_path / "repo", "llama")
    assert (res.version_dir / "hf" / "tokenizer.json").is_file()
    assert not (res.version_dir / "hf" / "rank0.engine").exists()


def test_agent_writes_the_front_and_its_engine_entry(trt_engine: Path, tiny_hf: Path, tmp_path: Path) -> None:
    from modeldeploy_runtime.agent import Agent
    from modeldeploy_runtime.manifest import ManifestModel, ManifestVersion, ModelManifest
    from modeldeploy_runtime.package import package_tensorrtllm

    res = package_tensorrtllm(trt_engine, tmp_path / "store", "llama", tokenizer=tiny_hf)
    manifest = ModelManifest(
        models=[ManifestModel(name="llama", format="tensorrtllm", maxBatchSize=8, versions=[
            ManifestVersion(version=1, source=f"file://{res.version_dir}", sha256=res.digest)])]
    )  # fmt: skip
    agent = Agent(tmp_path / "unused.json", tmp_path / "pod")
    assert agent.fill_repository(manifest)
    front, problems = parse_config((tmp_path / "pod" / "llama" / "config.pbtxt").read_text())
    assert problems == [] and front.backend == "python" and "gpt_model_path" not in front.parameters
    assert front.max_batch_size == 0  # the endpoint's unbatched text tensors; maxBatchSize is the engine's
    cfg, problems = parse_config((tmp_path / "pod" / "llama-engine" / "config.pbtxt").read_text())
    assert problems == [] and cfg.max_batch_size == 8
    assert cfg.parameters["gpt_model_path"] == str((tmp_path / "pod" / "llama" / "1" / "engine").absolute())
    assert errors(lint_repository(tmp_path / "pod")) == []
    agent.remove_model("llama")  # no Triton here: the unloads fail, the folders go
    assert not (tmp_path / "pod" / "llama").exists() and not (tmp_path / "pod" / "llama-engine").exists()


def test_package_tensorrtllm_refuses_a_folder_without_engine(tmp_path: Path, tiny_hf: Path) -> None:
    from modeldeploy_runtime.package import package_tensorrtllm

    (tmp_path / "e").mkdir()
    (tmp_path / "e" / "config.json").write_text("{}")
    with pytest.raises(PackageError, match=r"no \*\.engine file"):
        package_tensorrtllm(tmp_path / "e", tmp_path / "repo", "x", max_batch_size=1)
    (tmp_path / "e" / "rank0.engine").write_bytes(b"x")
    with pytest.raises(PackageError, match=r"no build_config\.max_batch_size"):
        package_tensorrtllm(tmp_path / "e", tmp_path / "repo", "x", tokenizer=tiny_hf)
