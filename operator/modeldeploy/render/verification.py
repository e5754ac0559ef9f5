"""Signed-model policy plumbing: the trusted key or certificate chain of each model with
``spec.models[].verification`` is mounted read-only (from its ConfigMap or Secret, by reference)
into the fetch init container and the agent, and the manifest tells the agent the file paths."""

from __future__ import annotations

from typing import Any

from modeldeploy.api.v1alpha1 import KeyReference, ModelDeployment, ModelSpec
from modeldeploy_runtime.manifest import ManifestVerification

VERIFY_MOUNT_ROOT = "/etc/modeldeploy/verify"


def _verified(md: ModelDeployment) -> list[tuple[int, ModelSpec, KeyReference]]:
    out: list[tuple[int, ModelSpec, KeyReference]] = []
    for m in md.spec.models:
        v = m.verification
        if v is not None:
            ref = v.publicKey or v.certificateChain
            assert ref is not None  # the API rules require one
            out.append((len(out), m, ref))
    return out


def verification_mount_path(model: str) -> str:
    return f"{VERIFY_MOUNT_ROOT}/{model}"


def manifest_verification(m: ModelSpec) -> ManifestVerification | None:
    v = m.verification
    if v is None:
        return None
    ref = v.publicKey or v.certificateChain
    assert ref is not None
    path = f"{verification_mount_path(m.name)}/{ref.key}"
    return ManifestVerification(
        required=v.required,
        publicKeyPath=path if v.publicKey else None,
        certificateChainPaths=[path] if v.certificateChain else [],
        identity=v.identity,
    )


def verification_volumes(md: ModelDeployment) -> list[dict[str, Any]]:
    vols = []
    for i, _m, ref in _verified(md):
        items = [{"key": ref.key, "path": ref.key}]
        src: dict[str, Any] = (
            {"configMap": {"name": ref.configMapName, "items": items}}
            if ref.configMapName
            else {"secret": {"secretName": ref.secretName, "items": items}}
        )
        vols.append({"name": f"verify-{i}", **src})
    return vols


def verification_mounts(md: ModelDeployment) -> list[dict[str, Any]]:
    return [
        {"name": f"verify-{i}", "mountPath": verification_mount_path(m.name), "readOnly": True}
        for i, m, _ref in _verified(md)
    ]
