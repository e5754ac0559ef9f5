"""Manifest pushes signed by the operator (Ed25519) and verified by the runtime agents.

The operator holds one Ed25519 private key for all the ModelDeployments it manages (its own Secret
in its own namespace, or a file it is given). The public key is not secret: it reaches the agents
in each manifest ConfigMap, under :data:`PUSH_KEY_FILE` beside ``manifest.json``, so no Secret is
written per ModelDeployment and the operator needs no access to Secrets in the namespaces it
manages. A push (``PUT /manifest``) carries the signature in :data:`SIGNATURE_HEADER`.

What is signed: a fixed context, the owner and the exact request body. The owner is
``<namespace>/<name>/<uid>`` of the ModelDeployment (:func:`owner_id`; the agent has it from
:data:`OWNER_ENV`, a plain value in the pod spec), so a push recorded for one ModelDeployment cannot
be replayed to the agents of another, nor to a later object of the same name. Replaying a push to
its own agents gains nothing: an agent refuses an older generation and takes the same one as a
no-op (``Agent.accept_push``).
"""

from __future__ import annotations

import base64
import binascii
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

#: The request header holding the base64 signature of a push.
SIGNATURE_HEADER = "X-Modeldeploy-Signature"
#: The operator's public key (PEM): its key in the manifest ConfigMap and its file name beside the
#: mounted manifest.
PUSH_KEY_FILE = "push-key.pub"
#: Environment variable of the agent container: the owner id (:func:`owner_id`), not a secret.
OWNER_ENV = "MODELDEPLOY_OWNER"
_CONTEXT = b"modeldeploy.io/manifest-push/v1\n"


def owner_id(namespace: str, name: str, uid: str) -> str:
    """The identity a push is bound to: one ModelDeployment object."""
    return f"{namespace}/{name}/{uid}"


def _message(owner: str, body: bytes) -> bytes:
    return _CONTEXT + owner.encode() + b"\n" + body


class PushSigner:
    """The operator's side: one Ed25519 key pair."""

    def __init__(self, key: Ed25519PrivateKey) -> None:
        self._key = key
        self.public_pem: str = (
            key.public_key()
            .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
            .decode()
        )

    @classmethod
    def generate(cls) -> PushSigner:
        return cls(Ed25519PrivateKey.generate())

    @classmethod
    def from_pem(cls, pem: bytes) -> PushSigner:
        """From a PKCS#8 PEM private key (what :meth:`private_pem` writes); ValueError otherwise."""
        key = serialization.load_pem_private_key(pem, password=None)
        if not isinstance(key, Ed25519PrivateKey):
            raise ValueError(f"the push signing key must be an Ed25519 key, not {type(key).__name__}")
        return cls(key)

    def private_pem(self) -> bytes:
        return self._key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )

    def sign(self, owner: str, body: bytes) -> str:
        """The value of :data:`SIGNATURE_HEADER` for ``body`` pushed to ``owner``'s agents."""
        return base64.b64encode(self._key.sign(_message(owner, body))).decode()


def load_public_key(pem: str | bytes) -> Ed25519PublicKey:
    """An Ed25519 public key from PEM; ValueError when it is not one."""
    key = serialization.load_pem_public_key(pem.encode() if isinstance(pem, str) else pem)
    if not isinstance(key, Ed25519PublicKey):
        raise ValueError(f"the push key must be an Ed25519 public key, not {type(key).__name__}")
    return key


def verify(public_key: Ed25519PublicKey, owner: str, body: bytes, signature: str | None) -> bool:
    """Whether ``signature`` (the header's value) signs ``body`` for ``owner`` with ``public_key``."""
    if not signature:
        return False
    try:
        raw = base64.b64decode(signature, validate=True)
        public_key.verify(raw, _message(owner, body))
    except (InvalidSignature, binascii.Error, ValueError):
        return False
    return True


def read_public_key(path: Path) -> Ed25519PublicKey | None:
    """The public key in ``path`` (the mounted ConfigMap file), or None when absent or invalid.
    Read on every push: the kubelet replaces the file when the operator's key changes."""
    try:
        return load_public_key(path.read_bytes())
    except (OSError, ValueError):
        return None
