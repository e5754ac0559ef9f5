"""Issue #13: the agent writes vLLM's ``model.json`` and the vllm/tensorrtllm ``config.pbtxt`` from
the manifest the operator renders (engine settings resolved from the ModelDeployment). Files only:
no Triton here (this Triton has no vLLM backend); the agent fetches from a file:// store."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from modeldeploy_runtime.agent import Agent
from modeldeploy_runtime.config import parse_config
from modeldeploy_runtime.digest import verify_folder, write_sha_manifest
from modeldeploy_runtime.lint import errors, lint_repository
from modeldeploy_runtime.llm_engine import engine_args, vllm_config
from modeldeploy_runtime.manifest import ManifestLLM, ModelManifest


@pytest.fixture(scope="module")
def tiny_hf(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from modeldeploy_runtime.tiny_lm import build_tiny_lm

    return build_tiny_lm(tmp_path_factory.mktemp("hf") / "tiny", context=64)


def _vllm_version(tiny_hf: Path, store: Path, engine: dict[str, object]) -> tuple[Path, str]:
    """A vllm version as packaging lays it out: hf/ + modeldeploy.json (engine args) + sha256s."""
    vdir = store / "chat" / "1"
    shutil.copytree(tiny_hf, vdir / "hf")
    cfg = vllm_config("chat").to_dict()
    cfg.pop("version_policy")
    meta = {"format": "vllm", "artifact": "hf", "config": cfg, "engine_args": engine}
    (vdir / "modeldeploy.json").write_text(json.dumps(meta))
    return vdir, write_sha_manifest(vdir)


def _manifest(store: Path, digest: str, gpus: int, **llm: object) -> ModelManifest:
    """The manifest the operator renders for a vllm ModelDeployment on ``gpus`` GPUs."""
    from modeldeploy.api.v1alpha1 import ModelDeployment
    from modeldeploy.render.manifest import build_manifest

    md = ModelDeployment.model_validate(
        {
            "apiVersion": "modeldeploy.io/v1alpha1",
            "kind": "ModelDeployment",
            "metadata": {"name": "chat", "namespace": "llm", "generation": 1},
            "spec": {
                "resources": {"gpu": gpus},
                "models": [
                    {"name": "chat", "format": "vllm", "source": f"file://{store}/chat",
                     "versions": [{"version": 1, "sha256": digest}], "llm": llm or None}
                ],
            },
        }
    )  # fmt: skip
    return build_manifest(md)


def test_agent_writes_model_json_and_config_from_the_manifest(tiny_hf: Path, tmp_path: Path) -> None:
    store, pod = tmp_path / "store", tmp_path / "pod"
    _, digest = _vllm_version(tiny_hf, store, {"enforce_eager": True, "dtype": "bfloat16"})
    manifest = _manifest(store, digest, 2, gpuMemoryUtilization=0.85, maxModelLen=64, dtype="float16")
    assert manifest.models[0].llm == ManifestLLM(
        tensorParallelSize=2, gpuMemoryUtilization=0.85, maxModelLen=64, dtype="float16"
    )
    agent = Agent(tmp_path / "unused.json", pod)
    assert agent.fill_repository(manifest)

    vdir = pod / "chat" / "1"
    args = json.loads((vdir / "model.json").read_text())
    assert args == {
        "model": str((vdir / "hf").absolute()),
        "tensor_parallel_size": 2,  # the pod's 2 GPUs
        "gpu_memory_utilization": 0.85,
        "max_model_len": 64,
        "dtype": "float16",  # the ModelDeployment wins over the packaged bfloat16
        "enforce_eager": True,  # packaged engine args are kept
        "disable_log_stats": False,  # vLLM's KV-cache gauge is reported
    }
    cfg, problems = parse_config((pod / "chat" / "config.pbtxt").read_text())
    assert problems == []
    assert (cfg.backend, cfg.max_batch_size, cfg.decoupled) == ("vllm", 0, True)
    assert [(g.count, g.kind) for g in cfg.instance_groups] == [(1, "KIND_MODEL")]
    assert cfg.parameters["REPORT_CUSTOM_METRICS"] == "true"
    assert cfg.dynamic_batching is None and cfg.version_policy is not None
    assert cfg.version_policy.versions == [1]
    # the generated model.json is not content: the version still verifies, lint accepts the entry
    assert verify_folder(vdir, digest) == digest
    assert errors(lint_repository(pod)) == []
    # unchanged settings: nothing rewritten (no reload); new settings: model.json follows
    assert agent.write_config(manifest.models[0], [1]) is False
    eight = _manifest(store, digest, 8).models[0]
    assert agent.write_config(eight, [1]) is True
    args = json.loads((vdir / "model.json").read_text())
    assert args["tensor_parallel_size"] == 8 and args["dtype"] == "bfloat16"
    assert "gpu_memory_utilization" not in args


def test_explicit_tensor_parallel_size_and_tampering_is_still_caught(tiny_hf: Path, tmp_path: Path) -> None:
    store, pod = tmp_path / "store", tmp_path / "pod"
    _, digest = _vllm_version(tiny_hf, store, {})
    manifest = _manifest(store, digest, 4, tensorParallelSize=2)
    assert Agent(tmp_path / "unused.json", pod).fill_repository(manifest)
    vdir = pod / "chat" / "1"
    assert json.loads((vdir / "model.json").read_text())["tensor_parallel_size"] == 2
    # the packaged engine args are hashed: changing them is a digest mismatch lint reports
    meta = json.loads((vdir / "modeldeploy.json").read_text())
    meta["engine_args"] = {"trust_remote_code": True}
    (vdir / "modeldeploy.json").write_text(json.dumps(meta))
    assert any("modeldeploy.json" in i.path for i in errors(lint_repository(pod)))


def test_a_hand_made_model_json_without_packaging_is_content_and_kept(tmp_path: Path) -> None:
    """A vLLM version not packaged by modeldeploy: its own model.json (e.g. a hub model name) is
    hashed like any artifact, and the agent leaves it as fetched."""
    vdir = tmp_path / "repo" / "opt" / "1"
    vdir.mkdir(parents=True)
    (vdir / "model.json").write_text('{"model": "facebook/opt-125m"}\n')
    digest = write_sha_manifest(vdir)
    assert "model.json" in (vdir / "manifest.sha256").read_text()
    from modeldeploy_runtime.llm_engine import write_engine_args

    assert write_engine_args(vdir, ManifestLLM(tensorParallelSize=2)) is False
    assert json.loads((vdir / "model.json").read_text()) == {"model": "facebook/opt-125m"}
    assert verify_folder(vdir, digest) == digest


def test_engine_args_only_set_what_the_manifest_resolves() -> None:
    assert engine_args({"model": "x"}, None, None) == {"model": "x", "disable_log_stats": False}
    got = engine_args({"disable_log_stats": True}, ManifestLLM(tensorParallelSize=1), Path("w"))
    assert got == {"model": str(Path("w").absolute()), "disable_log_stats": True, "tensor_parallel_size": 1}


def test_signed_vllm_version_verifies_with_the_generated_model_json(
    tiny_hf: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """mdctl package --format vllm --sign-key; the agent (init, then a fresh sidecar process that
    re-verifies what is present) serves it under a required signature policy although it wrote
    model.json into the version; a changed packaged engine argument breaks the signature."""
    from modeldeploy.cli import main
    from modeldeploy_runtime.manifest import ManifestModel, ManifestVerification, ManifestVersion

    from .test_trust_triton import make_key

    key, pub = make_key(tmp_path / "k")
    argv = ["package", str(tiny_hf), "-r", str(tmp_path / "store"), "-n", "chat", "--format", "vllm",
            "--json", "--no-progress", "--sign-key", str(key)]  # fmt: skip
    assert main(argv) == 0
    digest = json.loads(capsys.readouterr().out)["sha256"]
    model = ManifestModel(
        name="chat", format="vllm", llm=ManifestLLM(tensorParallelSize=1),
        versions=[ManifestVersion(version=1, source=f"file://{tmp_path}/store/chat/1", sha256=digest)],
        verification=ManifestVerification(required=True, publicKeyPath=str(pub)),
    )  # fmt: skip
    pod = tmp_path / "pod"
    assert Agent(tmp_path / "unused.json", pod).fill_repository(ModelManifest(models=[model]))
    assert (pod / "chat" / "1" / "model.json").is_file()
    sidecar = Agent(tmp_path / "unused.json", pod)
    assert sidecar.fetch_wanted(model) == [1]  # verify_present: signature still valid
    meta = pod / "chat" / "1" / "modeldeploy.json"
    meta.write_text(
        meta.read_text().replace('"engine_args": {}', '"engine_args": {"trust_remote_code": true}')
    )
    assert "trust_remote_code" in meta.read_text()
    again = Agent(tmp_path / "unused.json", pod)
    assert again.fetch_wanted(model) == []
    assert again.states["chat"][1].state == "Failed"
