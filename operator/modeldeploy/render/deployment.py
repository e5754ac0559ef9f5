"""The Deployment running Triton plus the runtime agent (init container and sidecar).

No Secret of the operator's is referenced by the pod. Triton's control key is made by the pod
itself: the init agent writes it into an in-memory emptyDir (``control-key``) shared with Triton
(whose container starts through ``control.triton_launch``, a shell line reading the key into the
restricted-API flags) and the sidecar agent (``--control-key-file``). The sidecar verifies the
operator's manifest pushes with the public key mounted beside the manifest (``push-key.pub``) for
the owner in its ``MODELDEPLOY_OWNER`` env (a plain value: namespace/name/uid).
"""

from __future__ import annotations

import copy
import math
from typing import Any

from modeldeploy.api.v1alpha1 import (
    AGENT_PORT,
    GPU_PRODUCT_LABEL,
    GPU_RESOURCE,
    OPENAI_PORT,
    ComputeResources,
    ModelDeployment,
    dump,
    quantity_string,
)
from modeldeploy.render.common import (
    MANIFEST_HASH_ANNOTATION,
    MANIFEST_MOUNT_DIR,
    MODEL_REPOSITORY,
    RenderOptions,
    container_security,
    credential_secrets,
    metadata,
    pod_security,
    push_owner,
    selector_labels,
)
from modeldeploy.render.manifest import (
    build_manifest,
    carries_push_key,
    credentials_mount_path,
    manifest_configmap_name,
    manifest_content_hash,
)
from modeldeploy.render.prefetch import cache_env, cache_mounts, cache_volumes
from modeldeploy.render.verification import verification_mounts, verification_volumes
from modeldeploy_runtime.agentapi import SERVING_PATH
from modeldeploy_runtime.control import CONTROL_KEY_DIR, CONTROL_KEY_FILE, triton_launch
from modeldeploy_runtime.manifest import MANIFEST_KEY
from modeldeploy_runtime.pushsign import OWNER_ENV, PUSH_KEY_FILE

TRITON_CONTAINER = "triton"
AGENT_CONTAINER = "agent"
FETCH_CONTAINER = "fetch-models"
OPENAI_CONTAINER = "openai"
#: Where pvc://<claim>/<path> sources are mounted for the agent (the runtime's MODELDEPLOY_PVC_ROOT default).
PVC_ROOT = "/mnt/pvc"
#: The in-memory emptyDir holding the pod's Triton control key (a line of 43 characters).
CONTROL_KEY_VOLUME = "control-key"
CONTROL_KEY_SIZE = "1Mi"
DEFAULT_AGENT_RESOURCES: dict[str, Any] = {
    "requests": {"cpu": "100m", "memory": "256Mi"},
    "limits": {"memory": "1Gi"},
}


def _compute(res: ComputeResources | None) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if res is None:
        return out
    if res.cpu is not None:
        out["cpu"] = quantity_string(res.cpu)
    if res.memory is not None:
        out["memory"] = quantity_string(res.memory)
    return out


def triton_resources(md: ModelDeployment) -> dict[str, Any]:
    r = md.spec.resources
    requests = _compute(r.requests)
    limits = _compute(r.limits)
    gpu = r.gpu_resource_name()
    if gpu is not None:
        # Extended resources must be equal in requests and limits.
        requests[gpu] = str(r.gpu_count())
        limits[gpu] = str(r.gpu_count())
    out: dict[str, Any] = {}
    if requests:
        out["requests"] = requests
    if limits:
        out["limits"] = limits
    return out


def _agent_resources(md: ModelDeployment) -> dict[str, Any]:
    res = md.spec.runtime.resources
    if res is None:
        return copy.deepcopy(DEFAULT_AGENT_RESOURCES)
    out: dict[str, Any] = {}
    if res.requests is not None and _compute(res.requests):
        out["requests"] = _compute(res.requests)
    if res.limits is not None and _compute(res.limits):
        out["limits"] = _compute(res.limits)
    return out


def _pvc_claims(md: ModelDeployment) -> list[str]:
    """Claims named by ``pvc://<claim>/<path>`` sources (mounted read-only for the agent)."""
    claims: list[str] = []
    for m in md.spec.models:
        for v in m.versions:
            src = m.version_source(v.version)
            if src.startswith("pvc://"):
                claim = src[len("pvc://") :].split("/", 1)[0]
                if claim not in claims:
                    claims.append(claim)
    return claims


def _agent_args(md: ModelDeployment, mode: str) -> list[str]:
    return [
        "agent",
        "--mode",
        mode,
        "--manifest",
        f"{MANIFEST_MOUNT_DIR}/{MANIFEST_KEY}",
        "--repository",
        MODEL_REPOSITORY,
        "--triton-url",
        f"http://127.0.0.1:{md.spec.server.ports.http}",
        "--port",
        str(AGENT_PORT),
        # init: creates the pod's key; sidecar: reads it to load/unload in Triton
        "--control-key-file",
        CONTROL_KEY_FILE,
    ]


def _control_key_mount(read_only: bool) -> dict[str, Any]:
    mount: dict[str, Any] = {"name": CONTROL_KEY_VOLUME, "mountPath": CONTROL_KEY_DIR}
    if read_only:
        mount["readOnly"] = True
    return mount


def _agent_mounts(md: ModelDeployment, *, writes_key: bool) -> list[dict[str, Any]]:
    mounts: list[dict[str, Any]] = [
        {"name": "model-repository", "mountPath": MODEL_REPOSITORY},
        {"name": "model-manifest", "mountPath": MANIFEST_MOUNT_DIR, "readOnly": True},
        {"name": "agent-tmp", "mountPath": "/tmp"},
        _control_key_mount(read_only=not writes_key),  # the init agent creates the key
    ]
    for i, secret in enumerate(credential_secrets(md)):
        mounts.append(
            {"name": f"credentials-{i}", "mountPath": credentials_mount_path(secret), "readOnly": True}
        )
    for i, claim in enumerate(_pvc_claims(md)):
        mounts.append({"name": f"pvc-{i}", "mountPath": f"{PVC_ROOT}/{claim}", "readOnly": True})
    return mounts + verification_mounts(md) + cache_mounts(md)


def triton_args(md: ModelDeployment) -> list[str]:
    """tritonserver's arguments, without the restricted-API flags: :func:`triton_launch` adds them
    with the pod's control key when the container starts."""
    s = md.spec.server
    return [
        f"--model-repository={MODEL_REPOSITORY}",
        f"--model-control-mode={s.modelControlMode}",
        "--strict-readiness=true",
        f"--http-port={s.ports.http}",
        f"--grpc-port={s.ports.grpc}",
        f"--metrics-port={s.ports.metrics}",
        *(s.args or []),
    ]


def _affinity(md: ModelDeployment) -> dict[str, Any] | None:
    """spec.scheduling.affinity plus the GPU product requirement (ANDed into every node term)."""
    affinity = dump(md.spec.scheduling.affinity) if md.spec.scheduling.affinity else {}
    product = md.spec.resources.gpuProduct
    if product:
        expr = {"key": GPU_PRODUCT_LABEL, "operator": "In", "values": [product]}
        node = affinity.setdefault("nodeAffinity", {})
        required = node.setdefault("requiredDuringSchedulingIgnoredDuringExecution", {})
        terms = required.setdefault("nodeSelectorTerms", [])
        if not terms:
            terms.append({"matchExpressions": [expr]})
        else:
            for term in terms:
                term.setdefault("matchExpressions", []).append(copy.deepcopy(expr))
    return affinity or None


def _tolerations(md: ModelDeployment) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    if md.spec.resources.uses_gpu():
        out.append({"key": GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"})
    for t in md.spec.scheduling.tolerations or []:
        out.append(t.model_dump(mode="json", exclude_none=True))
    return out


def _topology_spread(md: ModelDeployment) -> list[dict[str, Any]]:
    out = []
    for c in md.spec.scheduling.topologySpreadConstraints or []:
        d = c.model_dump(mode="json", exclude_none=True)
        d.setdefault("labelSelector", {"matchLabels": selector_labels(md)})
        out.append(d)
    return out


def _openai_containers(md: ModelDeployment, pull_policy: dict[str, Any]) -> list[dict[str, Any]]:
    """The OpenAI-compatible endpoint (``modeldeploy-runtime openai``, the runtime image with the
    ``llm`` extra) in pods serving an LLM: it reads tokenizers from the shared model repository and
    streams from Triton's gRPC port on loopback. Ready while Triton answers."""
    spec = md.spec
    if not spec.serves_llm():
        return []
    grpc = spec.server.ports.grpc
    container: dict[str, Any] = {
        "name": OPENAI_CONTAINER,
        "image": spec.runtime_image(),
        **pull_policy,
        "command": ["modeldeploy-runtime"],
        "args": [
            "openai",
            "--repository",
            MODEL_REPOSITORY,
            "--triton-grpc",
            f"127.0.0.1:{grpc}",
            "--host",
            "0.0.0.0",
            "--port",
            str(OPENAI_PORT),
        ],
        "env": [{"name": "HF_HOME", "value": "/tmp/hf"}],
        "ports": [{"name": "openai", "containerPort": OPENAI_PORT, "protocol": "TCP"}],
        "readinessProbe": {
            "httpGet": {"path": "/health", "port": "openai"},
            "periodSeconds": 5,
            "timeoutSeconds": 5,
            "failureThreshold": 3,
        },
        "volumeMounts": [
            {"name": "model-repository", "mountPath": MODEL_REPOSITORY, "readOnly": True},
            {"name": "openai-tmp", "mountPath": "/tmp"},
        ],
        "securityContext": container_security(read_only_root=True),
    }
    agent_resources = _agent_resources(md)
    if agent_resources:
        container["resources"] = agent_resources
    return [container]


def pod_template(md: ModelDeployment, opts: RenderOptions | None = None) -> dict[str, Any]:
    opts = opts or RenderOptions()
    spec = md.spec
    s = spec.server
    ports = s.ports
    # No version label on pods: upgrading the operator must not roll every model server.
    labels = {**(spec.podLabels or {}), **metadata(md, md.name)["labels"]}
    labels.pop("app.kubernetes.io/version", None)
    annotations: dict[str, str] = {
        **(spec.podAnnotations or {}),
        "prometheus.io/scrape": "true",
        "prometheus.io/port": str(ports.metrics),
        "prometheus.io/path": "/metrics",
        "kubectl.kubernetes.io/default-container": TRITON_CONTAINER,
    }
    if spec.rollout.strategy == "rolling":
        annotations[MANIFEST_HASH_ANNOTATION] = manifest_content_hash(build_manifest(md))

    pull_policy = {"imagePullPolicy": s.imagePullPolicy} if s.imagePullPolicy else {}
    startup_period = 10
    # load/unload only with the pod's control key, read from the file the init agent wrote
    triton_command, triton_arguments = triton_launch(triton_args(md))
    triton: dict[str, Any] = {
        "name": TRITON_CONTAINER,
        "image": s.effective_image(),
        **pull_policy,
        "command": triton_command,
        "args": triton_arguments,
        "ports": [
            {"name": "http", "containerPort": ports.http, "protocol": "TCP"},
            {"name": "grpc", "containerPort": ports.grpc, "protocol": "TCP"},
            {"name": "metrics", "containerPort": ports.metrics, "protocol": "TCP"},
        ],
        "startupProbe": {
            "httpGet": {"path": "/v2/health/live", "port": "http"},
            "periodSeconds": startup_period,
            "timeoutSeconds": 5,
            "failureThreshold": max(1, math.ceil(spec.startup_budget_seconds() / startup_period)),
        },
        "livenessProbe": {
            "httpGet": {"path": "/v2/health/live", "port": "http"},
            "periodSeconds": 10,
            "timeoutSeconds": 5,
            "failureThreshold": 3,
        },
        "readinessProbe": {
            "httpGet": {"path": "/v2/health/ready", "port": "http"},
            "periodSeconds": 5,
            "timeoutSeconds": 5,
            "failureThreshold": 3,
        },
        "volumeMounts": [
            {"name": "model-repository", "mountPath": MODEL_REPOSITORY},
            {"name": "dshm", "mountPath": "/dev/shm"},
            _control_key_mount(read_only=True),
        ],
        "securityContext": container_security(),
    }
    if s.env:
        triton["env"] = [{"name": e.name, "value": e.value} for e in s.env]
    resources = triton_resources(md)
    if resources:
        triton["resources"] = resources

    runtime_image = spec.runtime_image()
    agent_resources = _agent_resources(md)
    fetch: dict[str, Any] = {
        "name": FETCH_CONTAINER,
        "image": runtime_image,
        **pull_policy,
        "command": ["modeldeploy-runtime"],
        "args": _agent_args(md, "init"),
        "volumeMounts": _agent_mounts(md, writes_key=True),
        "securityContext": container_security(read_only_root=True),
    }
    agent: dict[str, Any] = {
        "name": AGENT_CONTAINER,
        "image": runtime_image,
        **pull_policy,
        "command": ["modeldeploy-runtime"],
        "args": _agent_args(md, "sidecar"),
        "ports": [{"name": "agent", "containerPort": AGENT_PORT, "protocol": "TCP"}],
        "livenessProbe": {
            "httpGet": {"path": "/healthz", "port": "agent"},
            "periodSeconds": 10,
            "timeoutSeconds": 5,
            "failureThreshold": 3,
        },
        # Readiness means serving: some READY version of every model (old or new), so a version
        # that loads or fails to load never takes the pod out of its Service. Which versions are
        # served exactly is the operator's to report (it reads the agents' /status).
        "readinessProbe": {
            "httpGet": {"path": SERVING_PATH, "port": "agent"},
            "periodSeconds": 5,
            "timeoutSeconds": 5,
            "failureThreshold": 1,
        },
        # Whose manifest pushes (PUT /manifest) it takes: the operator signs each for this object.
        "env": [{"name": OWNER_ENV, "value": push_owner(md)}, *cache_env(md)],
        "volumeMounts": _agent_mounts(md, writes_key=False),
        "securityContext": container_security(read_only_root=True),
    }
    if cache_env(md):  # the shared model cache (spec.cache), read-only
        fetch["env"] = cache_env(md)
    if agent_resources:
        fetch["resources"] = copy.deepcopy(agent_resources)
        agent["resources"] = agent_resources

    dshm: dict[str, Any] = {"medium": "Memory", "sizeLimit": quantity_string(s.sharedMemorySize)}
    repo: dict[str, Any] = {}
    if s.modelRepositorySizeLimit is not None:
        repo["sizeLimit"] = quantity_string(s.modelRepositorySizeLimit)
    volumes: list[dict[str, Any]] = [
        {"name": "model-repository", "emptyDir": repo},
        {"name": "dshm", "emptyDir": dshm},
        {
            "name": "model-manifest",
            "configMap": {
                "name": manifest_configmap_name(md),
                "items": [
                    {"key": k, "path": k}
                    for k in (MANIFEST_KEY, *((PUSH_KEY_FILE,) if carries_push_key(md) else ()))
                ],
            },
        },
        {"name": "agent-tmp", "emptyDir": {}},
        # the pod's Triton control key: in memory, never on a node's disk, gone with the pod
        {"name": CONTROL_KEY_VOLUME, "emptyDir": {"medium": "Memory", "sizeLimit": CONTROL_KEY_SIZE}},
    ]
    if spec.serves_llm():
        volumes.append({"name": "openai-tmp", "emptyDir": {}})
    for i, secret in enumerate(credential_secrets(md)):
        volumes.append({"name": f"credentials-{i}", "secret": {"secretName": secret}})
    for i, claim in enumerate(_pvc_claims(md)):
        volumes.append({"name": f"pvc-{i}", "persistentVolumeClaim": {"claimName": claim, "readOnly": True}})
    volumes += verification_volumes(md)
    volumes += cache_volumes(md)

    pod: dict[str, Any] = {
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "securityContext": pod_security(),
        "initContainers": [fetch],
        "containers": [triton, agent, *_openai_containers(md, pull_policy)],
        "volumes": volumes,
    }
    if spec.serviceAccountName:
        pod["serviceAccountName"] = spec.serviceAccountName
    if s.imagePullSecrets:
        pod["imagePullSecrets"] = [{"name": r.name} for r in s.imagePullSecrets]
    if spec.scheduling.nodeSelector:
        pod["nodeSelector"] = dict(spec.scheduling.nodeSelector)
    tolerations = _tolerations(md)
    if tolerations:
        pod["tolerations"] = tolerations
    affinity = _affinity(md)
    if affinity:
        pod["affinity"] = affinity
    if spec.scheduling.priorityClassName:
        pod["priorityClassName"] = spec.scheduling.priorityClassName
    spread = _topology_spread(md)
    if spread:
        pod["topologySpreadConstraints"] = spread
    return {"metadata": {"labels": labels, "annotations": annotations}, "spec": pod}


def render_deployment(md: ModelDeployment, opts: RenderOptions | None = None) -> dict[str, Any]:
    spec = md.spec
    gate = spec.rollout.readinessGate
    dep_spec: dict[str, Any] = {
        "selector": {"matchLabels": selector_labels(md)},
        "strategy": {
            "type": "RollingUpdate",
            "rollingUpdate": {
                "maxUnavailable": spec.rollout.maxUnavailable,
                "maxSurge": spec.rollout.maxSurge,
            },
        },
        "revisionHistoryLimit": 5,
        "minReadySeconds": gate.minReadySeconds if spec.rollout.strategy == "rolling" else 0,
        "progressDeadlineSeconds": max(spec.startup_budget_seconds(), gate.timeoutSeconds)
        + 60
        + gate.minReadySeconds,
        "template": pod_template(md, opts),
    }
    # With autoscaling the HPA/KEDA owns .spec.replicas: leaving it out of the applied body makes
    # our field manager release it, so we never fight the autoscaler.
    if not spec.autoscaling_enabled():
        dep_spec = {"replicas": spec.replicas, **dep_spec}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": metadata(md, md.name),
        "spec": dep_spec,
    }
