"""Pure render functions: a ModelDeployment in, the bodies of its children out.

``render_children`` returns every child kind the operator manages, mapped to the body to apply, or
``None`` when that kind is not wanted (the reconciler deletes an existing one).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from modeldeploy.api.v1alpha1 import ModelDeployment
from modeldeploy.render.common import RenderError, RenderOptions, check_names, with_applied_hash
from modeldeploy.render.deployment import render_deployment
from modeldeploy.render.hpa import render_hpa
from modeldeploy.render.httpscaledobject import render_httpscaledobject
from modeldeploy.render.keda import render_scaledobject
from modeldeploy.render.manifest import render_configmap
from modeldeploy.render.networkpolicy import render_networkpolicy
from modeldeploy.render.pdb import render_pdb
from modeldeploy.render.prefetch import render_cache_sharers, render_prefetch_job, sharers_configmap_name
from modeldeploy.render.service import backend_service_name, render_backend_service, render_service
from modeldeploy.render.servicemonitor import render_servicemonitor

RenderFn = Callable[[ModelDeployment, RenderOptions], "dict[str, Any] | None"]

#: Child kinds in apply order (the prefetch Job, then the ConfigMap: the pods mount it; the
#: NetworkPolicy before the Deployment: no pod runs unfenced).
RENDERERS: dict[str, RenderFn] = {
    "CacheSharers": render_cache_sharers,  # <name>-cache-sharers: read by the evicting prefetch Job
    "Job": render_prefetch_job,  # first: the reconciler holds new versions back until it finished
    "ConfigMap": render_configmap,
    "NetworkPolicy": render_networkpolicy,
    "Service": render_service,
    "BackendService": render_backend_service,  # <name>-backend: only while routed through KEDA's interceptor
    "Deployment": render_deployment,
    "HorizontalPodAutoscaler": render_hpa,
    "ScaledObject": render_scaledobject,
    "HTTPScaledObject": render_httpscaledobject,
    "PodDisruptionBudget": render_pdb,
    "ServiceMonitor": render_servicemonitor,
}
CHILD_KINDS: tuple[str, ...] = tuple(RENDERERS)
#: Table keys that are not the child's kind.
KIND_OF: dict[str, str] = {"BackendService": "Service", "CacheSharers": "ConfigMap"}


def child_kind(key: str) -> str:
    """The Kubernetes kind of the child rendered under ``key`` in :data:`RENDERERS`."""
    return KIND_OF.get(key, key)


def child_name(md: ModelDeployment, key: str) -> str:
    """The name of the child under ``key`` (all but the backend Service and the Job: the
    ModelDeployment's name; the Job is collected by the reconciler, see prefetch Job cleanup)."""
    if key == "BackendService":
        return backend_service_name(md)
    if key == "CacheSharers":
        return sharers_configmap_name(md)
    return md.name


def render_children(
    md: ModelDeployment, opts: RenderOptions | None = None
) -> dict[str, dict[str, Any] | None]:
    """Kind -> body (stamped with its applied hash), or None when the kind is not wanted."""
    opts = opts or RenderOptions()
    check_names(md)
    out: dict[str, dict[str, Any] | None] = {}
    for kind, fn in RENDERERS.items():
        body = fn(md, opts)
        out[kind] = with_applied_hash(body) if body is not None else None
    return out


def render_all(md: ModelDeployment, opts: RenderOptions | None = None) -> list[dict[str, Any]]:
    """The wanted children, in apply order."""
    return [b for b in render_children(md, opts).values() if b is not None]


__all__ = [
    "CHILD_KINDS",
    "RENDERERS",
    "RenderError",
    "RenderOptions",
    "child_kind",
    "child_name",
    "render_all",
    "render_children",
]
