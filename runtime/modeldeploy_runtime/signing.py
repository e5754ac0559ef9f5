"""Signed model versions: the OpenSSF model signing format (the ``model-signing`` package).

A version folder is signed into ``<version>/model.sig`` (a Sigstore bundle holding an in-toto
statement over every file's sha256) with a private key (elliptic curve, PEM) or a key plus
certificate chain. Nothing here touches the network: key and certificate verification only.

The signature covers every file of the folder except :data:`SIGNATURE_FILE` itself, the fetch
record the agent writes (``.modeldeploy-source.json``) and ``__pycache__``. ``manifest.sha256``
is covered; the signature file is *not* part of the version digest (digest.py skips it), so
signing a packaged version leaves the sha256 a spec names unchanged.

Identities: a key signer is ``key:sha256:<hex>`` (the sha256 of the public key's PEM, the
``hint`` model-signing stores in the bundle); a certificate signer is the leaf certificate's
subject alternative names (or subject) as model-signing's certificate verifier checks the chain.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from modeldeploy_runtime.digest import SIGNATURE_FILE, SOURCE_RECORD

REASON_MISSING = "SignatureMissing"
REASON_INVALID = "SignatureInvalid"
__all__ = ["SIGNATURE_FILE", "SignatureError", "Verified", "VerifyPolicy", "sign_folder", "verify_folder"]


class SignatureError(Exception):
    """Verification failed; ``reason`` is SignatureMissing or SignatureInvalid. The message names
    the file or identity and never contains key material."""

    def __init__(self, message: str, reason: str = REASON_INVALID) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class VerifyPolicy:
    """What a version must be signed with. ``public_key``: a PEM public key file; or
    ``certificate_chain`` (PEM files) plus ``identity`` (a SAN or subject the leaf must carry)."""

    public_key: Path | None = None
    certificate_chain: tuple[Path, ...] = ()
    identity: str | None = None
    required: bool = True


@dataclass(frozen=True)
class Verified:
    signer: str  # identity, see the module docstring
    files: int
    seconds: float = 0.0


def _hashing(folder: Path) -> Any:
    from model_signing import hashing

    from modeldeploy_runtime.llm_engine import generated_files

    ignored = [folder / SIGNATURE_FILE, folder / SOURCE_RECORD, folder / "__pycache__"]
    ignored += [folder / name for name in sorted(generated_files(folder))]  # written in the pod
    cfg = hashing.Config()  # type: ignore[no-untyped-call]
    return cfg.set_ignored_paths(paths=ignored, ignore_git_paths=True)


def key_identity(public_key_pem: bytes) -> str:
    return "key:sha256:" + hashlib.sha256(public_key_pem).hexdigest()


def public_key_of(private_key: Path, password: str | None = None) -> bytes:
    from cryptography.hazmat.primitives import serialization as ser

    key = ser.load_pem_private_key(private_key.read_bytes(), password.encode() if password else None)
    return key.public_key().public_bytes(ser.Encoding.PEM, ser.PublicFormat.SubjectPublicKeyInfo)


def sign_folder(
    folder: str | Path,
    private_key: str | Path,
    *,
    certificate: str | Path | None = None,
    certificate_chain: Sequence[str | Path] = (),
    password: str | None = None,
) -> str:
    """Sign one version folder into ``<folder>/model.sig``; returns the signer identity."""
    from model_signing import signing

    folder, private_key = Path(folder), Path(private_key)
    cfg = signing.Config()  # type: ignore[no-untyped-call]
    if certificate is not None:
        cfg.use_certificate_signer(
            private_key=private_key,
            signing_certificate=Path(certificate),
            certificate_chain=list(certificate_chain),
        )
        ident = cert_identity(Path(certificate).read_bytes())
    else:
        cfg.use_elliptic_key_signer(private_key=private_key, password=password)
        ident = key_identity(public_key_of(private_key, password))
    (folder / SIGNATURE_FILE).unlink(missing_ok=True)
    cfg.set_hashing_config(_hashing(folder)).sign(folder, folder / SIGNATURE_FILE)
    return ident


def cert_identity(pem: bytes) -> str:
    """The identities a certificate asserts: its SANs (URI, e-mail, DNS), else its subject."""
    from cryptography import x509

    cert = x509.load_pem_x509_certificate(pem)
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        names = [str(v) for t in (x509.UniformResourceIdentifier, x509.RFC822Name, x509.DNSName)
                 for v in san.get_values_for_type(t)]  # fmt: skip
    except x509.ExtensionNotFound:
        names = []
    return ",".join(names) or cert.subject.rfc4514_string()


def bundle_signer(sig: Path) -> str:
    """Who the bundle says signed it (unverified: for messages only)."""
    try:
        vm = json.loads(sig.read_text()).get("verificationMaterial") or {}
    except (OSError, ValueError):
        return "an unreadable signature"
    if "publicKey" in vm:
        return "key:sha256:" + str((vm["publicKey"] or {}).get("hint", "?"))
    chain = (vm.get("x509CertificateChain") or {}).get("certificates") or []
    raw = (vm.get("certificate") or {}).get("rawBytes") or (chain[0].get("rawBytes") if chain else None)
    if raw:
        der = base64.b64decode(raw)
        pem = b"-----BEGIN CERTIFICATE-----\n" + base64.encodebytes(der) + b"-----END CERTIFICATE-----\n"
        return "certificate " + cert_identity(pem)
    return "an unknown signer"


_HASH_MISMATCH = re.compile(r"Hash mismatch for \\?'([^'\\]+)\\?'")
_EXTRA = re.compile(r"Extra files found in model '[^']*': ([^'\"\]]+)")
_MISSING = re.compile(r"Missing files in the local model: ([^'\"\]]+)")


def _explain(exc: Exception) -> str:
    """model-signing's error as "which file, what": the raw text carries binary digests."""
    text = str(exc)
    parts = [f"{m}: modified after signing" for m in _HASH_MISMATCH.findall(text)]
    parts += [f"{m.strip()}: not covered by the signature" for m in _EXTRA.findall(text)]
    parts += [f"{m.strip()}: signed but missing" for m in _MISSING.findall(text)]
    return "; ".join(parts) or text[:300]


def verify_folder(folder: str | Path, policy: VerifyPolicy) -> Verified | None:
    """Verify ``folder`` against ``policy``. None when unsigned and not required; raises
    :class:`SignatureError` otherwise."""
    import time

    from model_signing import verifying

    folder = Path(folder)
    sig = folder / SIGNATURE_FILE
    if not sig.is_file():
        if policy.required:
            raise SignatureError(f"{SIGNATURE_FILE}: missing (a signature is required)", REASON_MISSING)
        return None
    t0 = time.monotonic()
    cfg = verifying.Config()  # type: ignore[no-untyped-call]
    if policy.public_key is not None:
        pem = policy.public_key.read_bytes()
        trusted = key_identity(pem)
        signer = bundle_signer(sig)
        if signer != trusted:
            raise SignatureError(f"signed by {signer}, the policy trusts {trusted}")
        cfg.use_elliptic_key_verifier(public_key=policy.public_key)
    else:
        signer = bundle_signer(sig)
        if policy.identity and policy.identity not in signer.removeprefix("certificate ").split(","):
            raise SignatureError(f"signed by {signer}, the policy expects identity {policy.identity}")
        cfg.use_certificate_verifier(certificate_chain=list(policy.certificate_chain))
        trusted = signer.removeprefix("certificate ")
    try:
        cfg.set_hashing_config(_hashing(folder)).verify(folder, sig)
    except Exception as exc:  # model-signing raises ValueError and friends
        why = _explain(exc)
        raise SignatureError(why if policy.public_key is not None else f"{signer}: {why}") from None
    files = sum(1 for p in folder.rglob("*") if p.is_file())
    return Verified(signer=trusted, files=files, seconds=time.monotonic() - t0)


def sign_repository(repository: str | Path, private_key: str | Path, **kw: Any) -> list[Path]:
    """Sign every ``<model>/<version>`` folder of a repository; returns the folders signed."""
    out = []
    for d in sorted(Path(repository).glob("*/*")):
        if d.is_dir() and d.name.isdigit():
            sign_folder(d, private_key, **kw)
            out.append(d)
    return out


def version_folders(path: str | Path) -> list[Path]:
    """A version folder itself, or every ``<model>/<version>`` of a repository."""
    p = Path(path)
    if p.name.isdigit() and p.is_dir():
        return [p]
    return sorted(d for d in p.glob("*/*") if d.is_dir() and d.name.isdigit())
