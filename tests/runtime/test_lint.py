"""``mdctl lint`` catches broken repositories, each message naming the file at fault (test 6)."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from modeldeploy_runtime.config import TensorSpec
from modeldeploy_runtime.lint import errors, lint_repository
from modeldeploy_runtime.onnx_io import OnnxTensor, encode_io_only
from modeldeploy_runtime.package import BatchingOptions, package_onnx, package_python, package_torch

# torch.jit.* emits deprecation notices on every call
pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning")


@pytest.fixture(scope="module")
def good_repo(tmp_path_factory: pytest.TempPathFactory, mlp: Any) -> Path:
    import torch

    repo = tmp_path_factory.mktemp("good") / "repo"
    package_torch(mlp, repo, "mlp", example_inputs=torch.randn(1, 8))
    src = repo.parent / "model.py"
    src.write_text("class TritonPythonModel:\n    def execute(self, requests):\n        return []\n")
    package_python(
        src,
        repo,
        "py",
        inputs=[TensorSpec("X", "TYPE_FP32", [4])],
        outputs=[TensorSpec("Y", "TYPE_FP32", [4])],
    )
    onnx = repo.parent / "m.onnx"
    onnx.write_bytes(
        encode_io_only([OnnxTensor("x", "TYPE_FP32", [-1, 4])], [OnnxTensor("y", "TYPE_FP32", [-1, 2])])
    )
    package_onnx(onnx, repo, "onnx", batching=BatchingOptions(max_batch_size=4))
    package_onnx(onnx, repo, "onnxpy", backend="python", batching=BatchingOptions(max_batch_size=4))
    return repo


def _edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, f"{old!r} not in {path}"
    path.write_text(text.replace(old, new))


Breaker = Callable[[Path], None]
# (case id, how to break the good repository, file the message must name, words the message must contain)
CASES: list[tuple[str, Breaker, str, str]] = [
    ("missing-config", lambda r: (r / "mlp" / "config.pbtxt").unlink(), "mlp/config.pbtxt", "missing"),
    ("syntax-error", lambda r: _edit(r / "mlp" / "config.pbtxt", "max_batch_size: 8", "max_batch_size 8"), "mlp/config.pbtxt:", "expected ':'"),
    ("unknown-field", lambda r: _edit(r / "mlp" / "config.pbtxt", "max_batch_size: 8", "max_batch_size: 8\nmax_batch: 3"), "mlp/config.pbtxt", "max_batch: unknown field"),
    ("name-mismatch", lambda r: _edit(r / "mlp" / "config.pbtxt", 'name: "mlp"', 'name: "other"'), "mlp/config.pbtxt", "does not match the model folder"),
    ("bad-dtype", lambda r: _edit(r / "mlp" / "config.pbtxt", "data_type: TYPE_FP32", "data_type: TYPE_FLOAT"), "mlp/config.pbtxt", "unknown data type 'TYPE_FLOAT'"),
    ("bad-dims", lambda r: _edit(r / "mlp" / "config.pbtxt", "dims: [ 8 ]", "dims: [ 0 ]"), "mlp/config.pbtxt", "invalid dimension 0"),
    ("no-backend", lambda r: _edit(r / "py" / "config.pbtxt", 'backend: "python"\n', ""), "py/config.pbtxt", "neither is set"),
    ("batching-without-batch", lambda r: _edit(r / "mlp" / "config.pbtxt", "max_batch_size: 8", "max_batch_size: 0"), "mlp/config.pbtxt", "requires max_batch_size > 0"),
    ("io-differs-from-artifact", lambda r: _edit(r / "mlp" / "config.pbtxt", "dims: [ 4 ]", "dims: [ 5 ]"), "mlp/config.pbtxt", "does not match the artifact of version 1"),
    ("non-numeric-version", lambda r: (r / "mlp" / "1").rename(r / "mlp" / "v1"), "mlp/v1", "not a version folder"),
    ("leading-zero-version", lambda r: (r / "mlp" / "1").rename(r / "mlp" / "01"), "mlp/01", "invalid version folder"),
    ("no-versions", lambda r: shutil.rmtree(r / "py" / "1"), "repo/py", "no version folders"),
    ("missing-artifact", lambda r: (r / "mlp" / "1" / "model.pt").unlink(), "mlp/1/model.pt", "missing"),
    ("state-dict-not-torchscript", lambda r: _corrupt_torchscript(r / "mlp" / "1"), "mlp/1/model.pt", "not a TorchScript archive"),
    ("digest-mismatch", lambda r: _append(r / "py" / "1" / "model.py", "\n# edited after packaging\n"), "py/1/model.py", "does not match"),
    ("python-syntax", lambda r: _rewrite_py(r / "py" / "1" / "model.py", "class TritonPythonModel(:\n"), "py/1/model.py:1", "syntax error"),
    ("python-no-class", lambda r: _rewrite_py(r / "py" / "1" / "model.py", "x = 1\n"), "py/1/model.py", "TritonPythonModel"),
    ("onnx-input-renamed", lambda r: _edit(r / "onnx" / "config.pbtxt", 'name: "x"', 'name: "input"'), "onnx/config.pbtxt", "not a graph input"),
    ("wrapped-onnx-not-onnx", lambda r: _rewrite_py(r / "onnxpy" / "1" / "model.onnx", "not a protobuf"), "onnxpy/1/model.onnx", "ONNX"),
    ("wrapped-onnx-input-renamed", lambda r: _edit(r / "onnxpy" / "config.pbtxt", 'name: "x"', 'name: "input"'), "onnxpy/config.pbtxt", "not a graph input"),
    ("policy-missing-version", lambda r: _append(r / "mlp" / "config.pbtxt", "version_policy { specific { versions: [ 1, 7 ] } }\n"), "mlp/config.pbtxt", "version 7"),
    ("empty-artifact", lambda r: _rewrite_py(r / "py" / "1" / "model.py", ""), "py/1/model.py", "empty file"),
]  # fmt: skip


def _append(p: Path, text: str) -> None:
    p.write_text(p.read_text() + text)


def _rewrite_py(p: Path, text: str) -> None:
    """Change model.py *and* its manifest.sha256 entry, so only the content check fires."""
    from modeldeploy_runtime.digest import write_sha_manifest

    p.write_text(text)
    write_sha_manifest(p.parent)


def _corrupt_torchscript(vdir: Path) -> None:
    import torch

    from modeldeploy_runtime.digest import write_sha_manifest

    torch.save({"weight": torch.zeros(2)}, str(vdir / "model.pt"), _use_new_zipfile_serialization=False)
    write_sha_manifest(vdir)


def test_good_repository_is_clean(good_repo: Path) -> None:
    assert lint_repository(good_repo) == []


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_lint_catches(case: tuple[str, Breaker, str, str], good_repo: Path, tmp_path: Path) -> None:
    _, breaker, file_part, words = case
    repo = tmp_path / "repo"
    shutil.copytree(good_repo, repo)
    breaker(repo)
    errs = errors(lint_repository(repo))
    assert errs, "lint found nothing"
    hits = [e for e in errs if file_part in e.path and words in e.message]
    assert hits, "\n".join(map(str, errs))
    assert all(str(repo) in e.path for e in errs)


def test_lint_cli_exit_codes(good_repo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from modeldeploy_runtime.cli import main

    assert main(["lint", str(good_repo)]) == 0
    assert main(["lint", str(tmp_path / "nope")]) == 1
    assert "repository does not exist" in capsys.readouterr().out
    repo = tmp_path / "repo"
    shutil.copytree(good_repo, repo)
    (repo / "mlp" / "config.pbtxt").unlink()
    assert main(["lint", str(repo), "--json"]) == 1
    out = json.loads(capsys.readouterr().out)
    assert any(i["path"].endswith("mlp/config.pbtxt") for i in out)
