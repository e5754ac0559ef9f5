"""mdctl package --sign-key / mdctl verify and the signing module (no Triton needed)."""

from __future__ import annotations

from pathlib import Path

import pytest

from modeldeploy_runtime.cli import main
from modeldeploy_runtime.digest import version_digest, write_sha_manifest
from modeldeploy_runtime.signing import (
    SignatureError,
    VerifyPolicy,
    key_identity,
    sign_folder,
    verify_folder,
)

from .test_trust_triton import make_key


def _package(tmp_path: Path, *extra: str) -> int:
    src = tmp_path / "m.py"
    src.write_text("class TritonPythonModel:\n    def execute(self, requests):\n        return []\n")
    return main(["package", str(src), "-r", str(tmp_path / "repo"), "-n", "m", "--format", "python",
                 "--input", "X:TYPE_FP32:4", "--output", "Y:TYPE_FP32:4", "--no-progress", *extra])  # fmt: skip


def test_package_sign_key_then_verify(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    key, pub = make_key(tmp_path / "k")
    _, other = make_key(tmp_path / "o")
    assert _package(tmp_path, "--sign-key", str(key)) == 0
    folder = tmp_path / "repo" / "m" / "1"
    assert (folder / "model.sig").is_file()
    assert main(["verify", str(tmp_path / "repo"), "--public-key", str(pub)]) == 0
    assert f"OK, signed by {key_identity(pub.read_bytes())}" in capsys.readouterr().out
    assert main(["verify", str(folder), "--public-key", str(other)]) == 1
    out = capsys.readouterr().out
    assert "SignatureInvalid" in out and key_identity(pub.read_bytes()) in out


def test_signature_is_not_part_of_the_version_digest(tmp_path: Path) -> None:
    assert _package(tmp_path) == 0
    folder = tmp_path / "repo" / "m" / "1"
    before = version_digest(folder)
    key, _ = make_key(tmp_path / "k")
    sign_folder(folder, key)
    assert write_sha_manifest(folder) == before


@pytest.mark.parametrize(
    ("change", "reason", "text"),
    [
        (lambda f: (f / "model.sig").unlink(), "SignatureMissing", "model.sig: missing"),
        (
            lambda f: (f / "model.py").write_text("x = 1\n"),
            "SignatureInvalid",
            "model.py: modified after signing",
        ),
        (lambda f: (f / "extra.bin").write_bytes(b"x"), "SignatureInvalid", "extra.bin: not covered"),
    ],
)
def test_verify_failures_name_the_file(tmp_path: Path, change: object, reason: str, text: str) -> None:
    assert _package(tmp_path) == 0
    folder = tmp_path / "repo" / "m" / "1"
    key, pub = make_key(tmp_path / "k")
    sign_folder(folder, key)
    assert verify_folder(folder, VerifyPolicy(public_key=pub)) is not None
    change(folder)  # type: ignore[operator]
    with pytest.raises(SignatureError) as err:
        verify_folder(folder, VerifyPolicy(public_key=pub))
    assert err.value.reason == reason and text in str(err.value)
    assert key.read_text().splitlines()[1] not in str(err.value)


def test_unsigned_passes_when_not_required(tmp_path: Path) -> None:
    assert _package(tmp_path) == 0
    _, pub = make_key(tmp_path / "k")
    assert verify_folder(tmp_path / "repo" / "m" / "1", VerifyPolicy(public_key=pub, required=False)) is None
