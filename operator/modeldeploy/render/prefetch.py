"""The shared model cache (``spec.cache``): the prefetch Job, and the cache's volume, mount and
environment for the agent containers of the model pods (used by :mod:`modeldeploy.render.deployment`).

The prefetch Job runs the runtime image in ``prefetch`` mode with the cache claim mounted
read-write: it fetches every wanted version that pins a sha256 into ``sha256/<digest>`` (verified,
atomically published; see ``modeldeploy_runtime.cache``). Its manifest is passed in the Job itself
(an environment variable), and its name carries a hash of that manifest: a Job's pod template is
immutable, so a new set of versions is a new Job, and an unchanged set keeps the completed one.
The model pods mount the claim read-only; their agents read or link from it and fall back to their
own download when a digest is missing.

With ``spec.cache.maxSize`` the Job also evicts unreferenced entries. Its refs file on the volume
names what its ModelDeployment wants; a deleted ModelDeployment's refs file would keep its digests
forever (no finalizers here), so the operator renders ``<name>-cache-sharers``, a ConfigMap listing
the namespace's live ModelDeployments that use the same claim (``RenderOptions.cache_sharers``), and
the Job mounts it (optional: absent, nothing is removed) and removes the refs files of the others
before evicting. A ConfigMap rather than Job arguments: the list changes when other ModelDeployments
come and go, which must not make a new Job (a new Job re-verifies every wanted entry).
"""

from __future__ import annotations

import json
from typing import Any

from modeldeploy.api.v1alpha1 import ModelDeployment, parse_quantity
from modeldeploy.render.common import (
    RenderOptions,
    container_security,
    credential_secrets,
    metadata,
    pod_security,
    stable_hash,
)
from modeldeploy.render.manifest import build_manifest, credentials_mount_path

CACHE_MOUNT = "/var/cache/modeldeploy"
CACHE_VOLUME = "model-cache"
PREFETCH_CONTAINER = "prefetch"
MANIFEST_ENV = "MODELDEPLOY_PREFETCH_MANIFEST"
SHARERS_VOLUME = "cache-sharers"
SHARERS_MOUNT = "/etc/modeldeploy/cache-sharers"
SHARERS_KEY = "sharers.json"
BACKOFF_LIMIT = 3


def cache_volumes(md: ModelDeployment) -> list[dict[str, Any]]:
    c = md.spec.cache
    if c is None:
        return []
    return [{"name": CACHE_VOLUME, "persistentVolumeClaim": {"claimName": c.claimName, "readOnly": True}}]


def cache_mounts(md: ModelDeployment) -> list[dict[str, Any]]:
    if md.spec.cache is None:
        return []
    return [{"name": CACHE_VOLUME, "mountPath": CACHE_MOUNT, "readOnly": True}]


def cache_env(md: ModelDeployment) -> list[dict[str, Any]]:
    if md.spec.cache is None:
        return []
    return [
        {"name": "MODELDEPLOY_CACHE_DIR", "value": CACHE_MOUNT},
        {"name": "MODELDEPLOY_CACHE_READONLY", "value": "1"},
    ]


def prefetch_manifest_json(md: ModelDeployment) -> str:
    """The versions to prefetch (generation 0: scaling or other spec changes do not make a new Job)."""
    return build_manifest(md, generation=0).to_json()


def prefetch_args(md: ModelDeployment) -> list[str]:
    args = ["prefetch", "--manifest-env", MANIFEST_ENV, "--cache-dir", CACHE_MOUNT]
    args += ["--owner", f"{md.namespace}/{md.name}"]  # its refs: what eviction must keep
    c = md.spec.cache
    if c is not None and c.maxSize is not None:
        args += ["--max-bytes", str(int(parse_quantity(c.maxSize)))]
        args += ["--sharers-file", f"{SHARERS_MOUNT}/{SHARERS_KEY}"]
    return args


def sharers_configmap_name(md: ModelDeployment) -> str:
    return f"{md.name}-cache-sharers"


def render_cache_sharers(md: ModelDeployment, opts: RenderOptions | None = None) -> dict[str, Any] | None:
    """``<name>-cache-sharers``: who uses this ModelDeployment's cache claim now (itself included),
    for its evicting prefetch Job; None without maxSize or when the list is unknown."""
    c = md.spec.cache
    if c is None or not c.prefetch or c.maxSize is None or opts is None or opts.cache_sharers is None:
        return None
    doc = {
        "namespace": md.namespace,
        "claimName": c.claimName,
        "modelDeployments": sorted({*opts.cache_sharers, md.name}),
    }
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": metadata(md, sharers_configmap_name(md), component="prefetch"),
        "data": {SHARERS_KEY: json.dumps(doc, sort_keys=True)},
    }


def prefetch_job_name(md: ModelDeployment) -> str:
    """``<name>-prefetch-<hash of what the Job does>``: a Job's pod template is immutable, so other
    versions (or another maxSize) make another Job."""
    return f"{md.name}-prefetch-{stable_hash([prefetch_manifest_json(md), prefetch_args(md)])[:8]}"


def pod_labels(md: ModelDeployment) -> dict[str, str]:
    """Labels of the prefetch pods: never the model pods' selector (Service endpoints, status)."""
    return {
        "app.kubernetes.io/name": "modeldeploy-prefetch",
        "app.kubernetes.io/instance": md.name,
        "app.kubernetes.io/component": "prefetch",
        "app.kubernetes.io/part-of": "modeldeploy",
    }


def render_prefetch_job(md: ModelDeployment, opts: RenderOptions | None = None) -> dict[str, Any] | None:
    c = md.spec.cache
    if c is None or not c.prefetch:
        return None
    spec = md.spec
    mounts: list[dict[str, Any]] = [
        {"name": CACHE_VOLUME, "mountPath": CACHE_MOUNT},
        {"name": "tmp", "mountPath": "/tmp"},
    ]
    volumes: list[dict[str, Any]] = [
        {"name": CACHE_VOLUME, "persistentVolumeClaim": {"claimName": c.claimName}},
        {"name": "tmp", "emptyDir": {}},
    ]
    for i, secret in enumerate(credential_secrets(md)):
        mounts.append(
            {"name": f"credentials-{i}", "mountPath": credentials_mount_path(secret), "readOnly": True}
        )
        volumes.append({"name": f"credentials-{i}", "secret": {"secretName": secret}})
    if c.maxSize is not None:  # the cache's live users (optional: absent, no refs are removed)
        mounts.append({"name": SHARERS_VOLUME, "mountPath": SHARERS_MOUNT, "readOnly": True})
        volumes.append(
            {"name": SHARERS_VOLUME, "configMap": {"name": sharers_configmap_name(md), "optional": True}}
        )
    container: dict[str, Any] = {
        "name": PREFETCH_CONTAINER,
        "image": spec.runtime_image(),
        **({"imagePullPolicy": spec.server.imagePullPolicy} if spec.server.imagePullPolicy else {}),
        "command": ["modeldeploy-runtime"],
        "args": prefetch_args(md),
        "env": [{"name": MANIFEST_ENV, "value": prefetch_manifest_json(md)}],
        "volumeMounts": mounts,
        "securityContext": container_security(read_only_root=True),
        "terminationMessagePolicy": "File",
    }
    pod: dict[str, Any] = {
        "restartPolicy": "Never",
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "securityContext": pod_security(),
        "containers": [container],
        "volumes": volumes,
    }
    if spec.serviceAccountName:  # e.g. workload identity to the model store
        pod["serviceAccountName"] = spec.serviceAccountName
    if spec.server.imagePullSecrets:
        pod["imagePullSecrets"] = [{"name": r.name} for r in spec.server.imagePullSecrets]
    name = prefetch_job_name(md)
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": metadata(md, name, component="prefetch"),
        "spec": {
            "backoffLimit": BACKOFF_LIMIT,
            "template": {"metadata": {"labels": pod_labels(md)}, "spec": pod},
        },
    }
