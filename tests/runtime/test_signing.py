"""mdctl package --sign-key / mdctl verify and the signing module (no Triton needed)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from modeldeploy_runtime.cli import main
from modeldeploy_runtime.digest import version_digest, write_sha_manifest
from modeldeploy_runtime.signing import (
    SignatureError,
    VerifyPolicy,
    key_identity,
    sign_folder,
    sign_repository,
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
    key, pub = make_key(tmp_path / "k")
    assert sign_repository(tmp_path / "repo", key) == [folder]  # the Python API for a whole repository
    assert write_sha_manifest(folder) == before
    assert main(["verify", str(tmp_path / "repo"), "--public-key", str(pub)]) == 0


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


def _cert_pki(d: Path, identity: str) -> tuple[Path, Path, Path, Path]:
    """A CA, a leaf (SAN URI ``identity``, codeSigning) signed by it, and an unrelated CA."""
    import datetime as dt

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives import serialization as ser
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = dt.datetime.now(dt.UTC)

    def cert(cn: str, key: Any, issuer: Any, issuer_key: Any, ca: bool, serial: int) -> Any:
        b = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
            .issuer_name(issuer or x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
            .public_key(key.public_key())
            .serial_number(serial)
            .not_valid_before(now - dt.timedelta(hours=1))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        )
        if not ca:
            b = b.add_extension(
                x509.SubjectAlternativeName([x509.UniformResourceIdentifier(identity)]), critical=False
            ).add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CODE_SIGNING]), critical=False)
        return b.sign(issuer_key or key, hashes.SHA256())

    ca_key, leaf_key, other_key = (ec.generate_private_key(ec.SECP256R1()) for _ in range(3))
    ca = cert("test ca", ca_key, None, None, True, 1)
    leaf = cert("signer", leaf_key, ca.subject, ca_key, False, 2)
    other = cert("other ca", other_key, None, None, True, 3)
    paths = d / "ca.pem", d / "leaf.pem", d / "leaf.key", d / "other.pem"
    paths[0].write_bytes(ca.public_bytes(ser.Encoding.PEM))
    paths[1].write_bytes(leaf.public_bytes(ser.Encoding.PEM))
    paths[2].write_bytes(
        leaf_key.private_bytes(ser.Encoding.PEM, ser.PrivateFormat.PKCS8, ser.NoEncryption())
    )
    paths[3].write_bytes(other.public_bytes(ser.Encoding.PEM))
    return paths


def test_certificate_chain_and_identity(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ident = "https://ci.example.com/release"
    ca, leaf, leaf_key, other_ca = _cert_pki(tmp_path, ident)
    assert (
        _package(tmp_path, "--sign-key", str(leaf_key), "--sign-cert", str(leaf), "--sign-chain", str(ca))
        == 0
    )
    folder = tmp_path / "repo" / "m" / "1"
    res = verify_folder(folder, VerifyPolicy(certificate_chain=(ca,), identity=ident))
    assert res is not None and res.signer == ident
    with pytest.raises(SignatureError, match="the policy expects identity https://other"):
        verify_folder(folder, VerifyPolicy(certificate_chain=(ca,), identity="https://other"))
    with pytest.raises(SignatureError, match=f"signed by certificate {ident}|certificate {ident}"):
        verify_folder(folder, VerifyPolicy(certificate_chain=(other_ca,), identity=ident))
    capsys.readouterr()
    assert main(["verify", str(folder), "--cert-chain", str(ca), "--identity", ident]) == 0
    assert f"OK, signed by {ident}" in capsys.readouterr().out
