"""KEDA HTTP add-on ``HTTPScaledObject`` (``autoscaling.mode: keda`` with ``minReplicas: 0``):
scale from zero on a request.

Triton's Prometheus metrics cannot wake a deployment at zero replicas (no pod, no metric), so with
``minReplicas: 0`` the request path must: when the add-on's CRD is installed, this renders an
HTTPScaledObject for the Deployment and its Service. Requests sent to the add-on's interceptor
(``keda-add-ons-http-interceptor-proxy.<keda namespace>:8080``) with one of ``spec.hosts`` as Host
header are held while the add-on scales the Deployment from zero and then forwarded to the Service;
the add-on then scales on in-flight requests (concurrency) and owns the Deployment's KEDA
ScaledObject, so :func:`modeldeploy.render.keda.render_scaledobject` renders none. Without the CRD
the status says that requests cannot wake the deployment.

The ModelDeployment's Service ``<name>`` is then an ExternalName alias of the interceptor and the
HTTPScaledObject targets ``<name>-backend`` (:mod:`modeldeploy.render.service`): clients calling
``http://<name>.<ns>.svc:<interceptor port>`` send one of the hosts below and wake it.
"""

from __future__ import annotations

import math
from typing import Any

from modeldeploy.api.v1alpha1 import ModelDeployment, parse_quantity
from modeldeploy.render.common import (
    HTTPSCALEDOBJECT_CRD,
    ROUTED_NOTE,
    Note,
    RenderOptions,
    metadata,
    uses_http_addon,
    wants_http_addon,
)
from modeldeploy.render.service import backend_service_name, service_name

__all__ = ["HTTPSCALEDOBJECT_CRD", "hosts", "render_httpscaledobject", "uses_http_addon", "wants_http_addon"]
#: In-flight requests per replica the add-on aims for when the metric is not pendingRequests.
DEFAULT_CONCURRENCY = 100


def hosts(md: ModelDeployment) -> list[str]:
    """The names a client in the cluster may call the Service by (the interceptor matches the Host
    header without its port)."""
    svc, ns = service_name(md), md.namespace
    return [f"{svc}.{ns}.svc", f"{svc}.{ns}.svc.cluster.local", f"{svc}.{ns}", svc]


def _concurrency(md: ModelDeployment) -> int:
    a = md.spec.autoscaling
    assert a is not None
    if a.metric.type == "pendingRequests":  # pending requests per pod ~ in-flight requests per pod
        return max(1, math.ceil(parse_quantity(a.metric.target)))
    return DEFAULT_CONCURRENCY


def render_httpscaledobject(md: ModelDeployment, opts: RenderOptions | None = None) -> dict[str, Any] | None:
    if not wants_http_addon(md):
        return None
    opts = opts or RenderOptions()
    a = md.spec.autoscaling
    assert a is not None
    if not opts.has_crd(HTTPSCALEDOBJECT_CRD):
        opts.notes.append(
            Note(
                "ScaleFromZeroUnavailable",
                "spec.autoscaling.minReplicas 0: the KEDA HTTP add-on (CRD "
                f"{HTTPSCALEDOBJECT_CRD}) is not installed, so requests cannot wake the deployment "
                "from zero replicas; only its metric trigger scales it up",
                degraded=True,
            )
        )
        return None
    opts.notes.append(
        Note(
            ROUTED_NOTE,
            f"service {service_name(md)} is routed through the KEDA HTTP add-on interceptor "
            f"({opts.keda_interceptor}): HTTP requests to http://{hosts(md)[0]}:{opts.interceptor_port} "
            f"wake the deployment from zero replicas; gRPC and metrics go to {backend_service_name(md)} "
            "and do not",
        )
    )
    return {
        "apiVersion": "http.keda.sh/v1alpha1",
        "kind": "HTTPScaledObject",
        "metadata": metadata(md, md.name, component="autoscaler"),
        "spec": {
            "hosts": hosts(md),
            "scaleTargetRef": {
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "name": md.name,
                "service": backend_service_name(md),
                "port": md.spec.server.ports.http,
            },
            "replicas": {"min": 0, "max": a.maxReplicas},
            "scaledownPeriod": a.cooldownSeconds,
            "scalingMetric": {"concurrency": {"targetValue": _concurrency(md)}},
        },
    }
