"""The operator's manifest-push signing key (:class:`~modeldeploy_runtime.pushsign.PushSigner`).

One Ed25519 key for every ModelDeployment the operator manages, obtained once at startup (never
per object):

1. from the PEM file named by :data:`KEY_FILE_ENV`, when set;
2. else from the Secret :data:`SECRET_NAME` (key :data:`SECRET_KEY`) in the operator's own
   namespace: read it, create it with a new key when it does not exist (404), read it again when
   another operator created it meanwhile (409). One read, and at most one create, per operator
   start. The chart grants ``get`` on exactly that Secret and ``create`` on Secrets in the release
   namespace, nothing on Secrets anywhere else;
3. else, when that namespace does not exist or the operator may not read or create the Secret, a
   key of this process only, with a warning: agents of pods whose ConfigMap still holds another
   key's public half refuse pushes until the kubelet syncs their ConfigMap volume (the operator
   rewrites the ConfigMaps with the new key; the manifest reaches the pods through the volume).

The public key goes into every manifest ConfigMap (render/manifest.py); the private key never
leaves this process and is never logged.
"""

from __future__ import annotations

import base64
import binascii
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from modeldeploy.reconcile.kube import SECRET, Kube, KubeError
from modeldeploy.render.common import FIELD_MANAGER, MANAGED_BY_LABEL
from modeldeploy_runtime.pushsign import PushSigner

log = logging.getLogger("modeldeploy.pushkey")

#: A PEM file (PKCS#8 Ed25519 private key) to sign with instead of the Secret.
KEY_FILE_ENV = "MODELDEPLOY_PUSH_KEY_FILE"
#: The Secret holding the key, in the operator's namespace, and its data key.
SECRET_NAME = "modeldeploy-push-key"
SECRET_KEY = "push.key"


def secret_body(namespace: str, signer: PushSigner) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": SECRET_NAME,
            "namespace": namespace,
            "labels": {MANAGED_BY_LABEL: FIELD_MANAGER, "app.kubernetes.io/part-of": "modeldeploy"},
        },
        "type": "Opaque",
        # Rotation: delete the Secret and restart the operator (it creates a new one).
        "immutable": True,
        "data": {SECRET_KEY: base64.b64encode(signer.private_pem()).decode()},
    }


def _from_secret_body(obj: dict[str, Any]) -> PushSigner:
    data = (obj.get("data") or {}).get(SECRET_KEY)
    if not data:
        raise ValueError(f"Secret {SECRET_NAME} has no key {SECRET_KEY!r}")
    try:
        return PushSigner.from_pem(base64.b64decode(data))
    except (ValueError, TypeError, binascii.Error) as exc:
        # the exception text never holds the key material; say only what is wrong
        raise ValueError(
            f"Secret {SECRET_NAME} key {SECRET_KEY!r} is not a PEM Ed25519 private key "
            f"({exc.__class__.__name__}); delete the Secret to have a new key made"
        ) from None


def from_secret(kube: Kube, namespace: str) -> PushSigner:
    """The signer from the Secret, creating the Secret with a new key when it does not exist.
    KubeError (403, 404 for a missing namespace, ...) and ValueError (unusable content) go up."""
    live = kube.get(SECRET, namespace, SECRET_NAME)
    if live is None:
        signer = PushSigner.generate()
        try:
            kube.create(SECRET, namespace, secret_body(namespace, signer))
            log.info("created Secret %s/%s holding the manifest-push signing key", namespace, SECRET_NAME)
            return signer
        except KubeError as exc:
            if exc.status != 409:  # 409: another operator created it first: use theirs
                raise
        live = kube.get(SECRET, namespace, SECRET_NAME)
        if live is None:
            raise KubeError(404, "GET", f"secrets/{SECRET_NAME}", "created concurrently, then gone")
    return _from_secret_body(live)


def obtain(kube: Kube, namespace: str, env: Mapping[str, str] | None = None) -> PushSigner:
    """The operator's signer (see the module doc). Blocking: call it from a thread (kopf's sync
    startup handler), never from a coroutine."""
    env = os.environ if env is None else env
    path = env.get(KEY_FILE_ENV)
    if path:
        try:
            signer = PushSigner.from_pem(Path(path).read_bytes())
        except (OSError, ValueError) as exc:
            raise ValueError(
                f"{KEY_FILE_ENV}={path}: not a readable PEM Ed25519 private key ({exc.__class__.__name__})"
            ) from None
        log.info("manifest pushes signed with the key in %s", path)
        return signer
    try:
        signer = from_secret(kube, namespace)
    except KubeError as exc:
        if exc.status not in (403, 404):
            raise
        why = "forbidden" if exc.status == 403 else "not found (no such namespace?)"
        log.warning(
            "cannot keep the manifest-push signing key in Secret %s/%s (%s): signing with a key of this "
            "process only. Agents of pods started under another key refuse pushes until the kubelet "
            "syncs their manifest ConfigMap (the new public key is written there); set %s or let the "
            "operator get/create that Secret (POD_NAMESPACE names its namespace)",
            namespace, SECRET_NAME, why, KEY_FILE_ENV,
        )  # fmt: skip
        return PushSigner.generate()
    log.info("manifest pushes signed with the key in Secret %s/%s", namespace, SECRET_NAME)
    return signer
