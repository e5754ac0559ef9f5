"""Packaging, config.pbtxt rendering/parsing and the ONNX reader (no Triton needed)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from modeldeploy_runtime.config import (
    DynamicBatching,
    InstanceGroup,
    ModelConfig,
    TensorSpec,
    VersionPolicy,
    load_config,
    parse_config,
)
from modeldeploy_runtime.digest import verify_folder
from modeldeploy_runtime.onnx_io import OnnxTensor, encode_io_only, read_io
from modeldeploy_runtime.package import (
    BatchingOptions,
    PackageError,
    package_onnx,
    package_python,
    package_torch,
)
from modeldeploy_runtime.pbtxt import PbtxtError, loads

# torch.jit.* emits deprecation notices on every call
pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning")


def test_config_roundtrip_through_template() -> None:
    cfg = ModelConfig(
        name="m",
        backend="python",
        max_batch_size=8,
        inputs=[TensorSpec("INPUT__0", "TYPE_FP32", [3, -1])],
        outputs=[TensorSpec("OUTPUT__0", "TYPE_INT64", [1])],
        dynamic_batching=DynamicBatching([4, 8], 100),
        instance_groups=[InstanceGroup(2, "KIND_CPU")],
        version_policy=VersionPolicy.specific([3, 1]),
        parameters={"k": "v"},
    )
    back, problems = parse_config(cfg.render())
    assert problems == []
    assert back == cfg
    assert back.version_policy is not None and back.version_policy.versions == [1, 3]


def test_pbtxt_reader_forms_and_errors() -> None:
    msg = loads(
        'name: "a" input [ { name: "x", dims: [1, 2] } ] version_policy: { latest { num_versions: 2 } } # c\n'
    )
    assert msg["input"][0] == {"name": ["x"], "dims": [1, 2]}  # type: ignore[comparison-overlap]
    with pytest.raises(PbtxtError) as exc:
        loads('name: "a"\ninput {\n  name: "x"\n', "models/a/config.pbtxt")
    assert "models/a/config.pbtxt:" in str(exc.value) and "close" in str(exc.value)
    with pytest.raises(PbtxtError) as exc:
        loads('name "a"')
    assert exc.value.line == 1 and exc.value.col == 6


def test_config_problems_are_all_reported(tmp_path: Path) -> None:
    text = (
        'name: "m"\nbackend: "python"\nmax_batch_size: 0\nfoo: 1\n'
        'input { name: "x" data_type: TYPE_FP99 dims: [0] }\n'
        'output { name: "y" data_type: TYPE_FP32 dims: [2] }\noutput { name: "y" data_type: TYPE_FP32 dims: [2] }\n'
        "dynamic_batching { }\ninstance_group { count: 0 kind: KIND_TPU }\n"
    )
    _, problems = parse_config(text)
    joined = "\n".join(problems)
    for needle in ("foo: unknown field", "TYPE_FP99", "invalid dimension 0", "duplicate tensor name 'y'",
                   "requires max_batch_size > 0", "count: must be >= 1", "KIND_TPU"):  # fmt: skip
        assert needle in joined, joined
    p = tmp_path / "config.pbtxt"
    p.write_text(text)
    with pytest.raises(ValueError, match=str(p)):
        load_config(p)


def test_package_torch_module_writes_repository_entry(tmp_path: Path, mlp: Any) -> None:
    import torch

    res = package_torch(mlp, tmp_path, "mlp", example_inputs=torch.randn(2, 8))
    vdir = tmp_path / "mlp" / "1"
    assert res.version == 1 and res.version_dir == vdir
    assert sorted(p.name for p in vdir.iterdir()) == [
        "manifest.sha256",
        "model.pt",
        "model.py",
        "modeldeploy.json",
    ]
    assert verify_folder(vdir) == res.digest
    cfg = load_config(tmp_path / "mlp" / "config.pbtxt")
    assert cfg.backend == "python" and cfg.max_batch_size == 8
    assert [(t.name, t.data_type, t.dims) for t in cfg.inputs] == [("INPUT__0", "TYPE_FP32", [8])]
    assert [(t.name, t.data_type, t.dims) for t in cfg.outputs] == [("OUTPUT__0", "TYPE_FP32", [4])]
    assert cfg.dynamic_batching is not None
    scripted = torch.jit.load(str(vdir / "model.pt"))
    x = torch.randn(5, 8)
    torch.testing.assert_close(scripted(x), mlp(x))
    # same content again: no-op; the next version number is picked automatically
    again = package_torch(mlp, tmp_path, "mlp", example_inputs=torch.randn(1, 8), version=1)
    assert again.unchanged and again.digest == res.digest
    assert package_torch(mlp, tmp_path, "mlp", example_inputs=torch.randn(1, 8)).version == 2


def test_package_torch_libtorch_and_torchscript_file(tmp_path: Path, cnn: Any) -> None:
    import torch

    ts = tmp_path / "cnn.pt"
    torch.jit.trace(cnn, torch.randn(1, 3, 8, 8)).save(str(ts))
    res = package_torch(
        ts, tmp_path / "repo", "cnn", example_inputs=torch.randn(1, 3, 8, 8), backend="libtorch",
        batching=BatchingOptions(max_batch_size=0, dynamic_batching=False),
    )  # fmt: skip
    cfg = load_config(tmp_path / "repo" / "cnn" / "config.pbtxt")
    assert cfg.platform == "pytorch_libtorch" and cfg.max_batch_size == 0 and cfg.dynamic_batching is None
    assert cfg.inputs[0].dims == [1, 3, 8, 8] and cfg.outputs[0].dims == [1, 5]
    assert not (res.version_dir / "model.py").exists()


def test_package_torch_clear_errors(tmp_path: Path, mlp: Any) -> None:
    import torch

    class FixedBatch(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x.reshape(1, -1)

    class DictOut(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
            return {"y": x}

    with pytest.raises(PackageError, match=r"forward\(\) failed on the example input.*\(1, 5\)"):
        package_torch(mlp, tmp_path, "m", example_inputs=torch.randn(1, 5))
    with pytest.raises(PackageError, match=r"expected a torch\.Tensor"):
        package_torch(mlp, tmp_path, "m", example_inputs=[[1.0] * 8])
    with pytest.raises(PackageError, match=r"not batch-size independent|fails on a batch of 2"):
        package_torch(FixedBatch(), tmp_path, "m", example_inputs=torch.randn(1, 4))
    with pytest.raises(PackageError, match="output 0 is a dict"):
        package_torch(DictOut(), tmp_path, "m", example_inputs=torch.randn(1, 4))
    with pytest.raises(PackageError, match="not a TorchScript file"):
        bad = tmp_path / "bad.pt"
        bad.write_bytes(b"not a model")
        package_torch(bad, tmp_path, "m", example_inputs=torch.randn(1, 4))
    with pytest.raises(PackageError, match="invalid model name"):
        package_torch(mlp, tmp_path, "bad/name", example_inputs=torch.randn(1, 8))
    package_torch(mlp, tmp_path, "m", example_inputs=torch.randn(1, 8), version=1)
    torch.manual_seed(5)
    other = torch.nn.Sequential(torch.nn.Linear(8, 32), torch.nn.ReLU(), torch.nn.Linear(32, 4))
    with pytest.raises(PackageError, match="already exists with different content"):
        package_torch(other, tmp_path, "m", example_inputs=torch.randn(1, 8), version=1)
    assert not [p for p in (tmp_path / "m").iterdir() if p.name.startswith(".")]  # no temp leftovers


def test_onnx_reader_and_packaging(tmp_path: Path) -> None:
    f = tmp_path / "model.onnx"
    f.write_bytes(
        encode_io_only(
            [OnnxTensor("images", "TYPE_FP32", [-1, 3, 224, 224])],
            [OnnxTensor("logits", "TYPE_FP16", [-1, 1000])],
        )
    )
    ins, outs = read_io(f)
    assert (ins[0].name, ins[0].dims, outs[0].data_type) == ("images", [-1, 3, 224, 224], "TYPE_FP16")
    res = package_onnx(f, tmp_path / "repo", "resnet")
    cfg = load_config(tmp_path / "repo" / "resnet" / "config.pbtxt")
    assert cfg.platform == "onnxruntime_onnx" and cfg.inputs[0].dims == [3, 224, 224]
    assert (res.version_dir / "model.onnx").read_bytes() == f.read_bytes()
    fixed = tmp_path / "fixed.onnx"
    fixed.write_bytes(
        encode_io_only([OnnxTensor("x", "TYPE_FP32", [1, 3])], [OnnxTensor("y", "TYPE_FP32", [1])])
    )
    with pytest.raises(PackageError, match="dynamic batch dimension"):
        package_onnx(fixed, tmp_path / "repo", "fixed")
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"\xff\xff\xff")
    with pytest.raises(PackageError, match=r"junk\.onnx"):
        package_onnx(junk, tmp_path / "repo", "junk")


def test_package_onnx_with_python_backend_wrapper(tmp_path: Path) -> None:
    """backend="python": model.onnx plus the wrapper as model.py, a python-backend config with the
    graph's inputs/outputs, and packaging metadata naming model.onnx as the artifact."""
    from modeldeploy_runtime.package import PYTHON_WRAPPER

    f = tmp_path / "clf.onnx"
    f.write_bytes(
        encode_io_only([OnnxTensor("x", "TYPE_FP32", [-1, 4])], [OnnxTensor("y", "TYPE_INT64", [-1])])
    )
    res = package_onnx(f, tmp_path / "repo", "clf", backend="python")
    cfg = load_config(tmp_path / "repo" / "clf" / "config.pbtxt")
    assert (cfg.backend, cfg.platform) == ("python", "")
    assert [(t.name, t.data_type, t.dims) for t in cfg.inputs + cfg.outputs] == [
        ("x", "TYPE_FP32", [4]),
        ("y", "TYPE_INT64", [1]),
    ]
    assert (res.version_dir / "model.py").read_bytes() == PYTHON_WRAPPER.read_bytes()
    meta = json.loads((res.version_dir / "modeldeploy.json").read_text())
    assert (meta["format"], meta["artifact"]) == ("onnx", "model.onnx")
    verify_folder(res.version_dir)  # model.py and model.onnx are both in manifest.sha256
    with pytest.raises(PackageError, match=r"clf\.onnx: unknown backend 'libtorch'"):
        package_onnx(f, tmp_path / "repo", "clf2", backend="libtorch")  # type: ignore[arg-type]


def test_package_python_model_with_artifacts(tmp_path: Path) -> None:
    src = tmp_path / "model.py"
    src.write_text("class TritonPythonModel:\n    def execute(self, requests):\n        return []\n")
    (tmp_path / "vocab.txt").write_text("a\nb\n")
    io = {"inputs": [TensorSpec("X", "TYPE_FP32", [4])], "outputs": [TensorSpec("Y", "TYPE_FP32", [4])]}
    res = package_python(src, tmp_path / "repo", "py", artifacts=[tmp_path / "vocab.txt"], **io)  # type: ignore[arg-type]
    assert (res.version_dir / "vocab.txt").read_text() == "a\nb\n"
    meta = json.loads((res.version_dir / "modeldeploy.json").read_text())
    assert meta["format"] == "python" and meta["config"]["backend"] == "python"
    bad = tmp_path / "bad.py"
    bad.write_text("def broken(:\n")
    with pytest.raises(PackageError, match=r"bad\.py:1: syntax error"):
        package_python(bad, tmp_path / "repo", "py2", **io)  # type: ignore[arg-type]
    nocls = tmp_path / "nocls.py"
    nocls.write_text("x = 1\n")
    with pytest.raises(PackageError, match="TritonPythonModel"):
        package_python(nocls, tmp_path / "repo", "py3", **io)  # type: ignore[arg-type]


def test_mdctl_package_cli(tmp_path: Path, mlp: Any, capsys: pytest.CaptureFixture[str]) -> None:
    import torch

    from modeldeploy_runtime.cli import main

    ts = tmp_path / "mlp.pt"
    torch.jit.trace(mlp, torch.randn(1, 8)).save(str(ts))
    rc = main(
        [
            "package",
            str(ts),
            "-r",
            str(tmp_path / "repo"),
            "-n",
            "mlp",
            "--example-shape",
            "1,8",
            "--json",
            "--no-progress",
        ]
    )
    assert rc == 0
    out = json.loads(capsys.readouterr().out)
    assert out["version"] == 1 and len(out["sha256"]) == 64
    assert main(["lint", str(tmp_path / "repo")]) == 0
    assert (
        main(["package", str(ts), "-r", str(tmp_path / "repo"), "-n", "mlp", "--example-shape", "1,9"]) == 1
    )
    assert "forward() failed" in capsys.readouterr().err
    onnx = tmp_path / "clf.onnx"
    onnx.write_bytes(
        encode_io_only([OnnxTensor("x", "TYPE_FP32", [-1, 4])], [OnnxTensor("y", "TYPE_FP32", [-1, 2])])
    )
    assert main(["package", str(onnx), "-r", str(tmp_path / "repo"), "--backend", "libtorch"]) == 2
    assert "--backend libtorch does not apply to onnx models" in capsys.readouterr().err
    assert main(["package", str(onnx), "-r", str(tmp_path / "repo"), "--backend", "python", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["model"] == "clf"
    assert load_config(tmp_path / "repo" / "clf" / "config.pbtxt").backend == "python"
    assert main(["package", str(onnx), "-r", str(tmp_path / "repo"), "-n", "clf_native", "--json"]) == 0
    capsys.readouterr()
    assert load_config(tmp_path / "repo" / "clf_native" / "config.pbtxt").platform == "onnxruntime_onnx"
