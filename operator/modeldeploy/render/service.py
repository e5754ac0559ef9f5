"""The Services in front of the Triton pods (http, grpc, metrics; openai when an LLM is served).

Normally one ClusterIP Service named like the ModelDeployment. With ``autoscaling.mode: keda``,
``minReplicas: 0`` and the KEDA HTTP add-on installed (:func:`~modeldeploy.render.common.uses_http_addon`)
requests must pass the add-on's interceptor to wake the deployment, so:

* ``<name>`` becomes an ``ExternalName`` Service: a DNS alias of the interceptor proxy Service
  (operator setting ``--keda-interceptor``). A client resolving ``<name>.<ns>.svc`` reaches the
  interceptor; the port it dials must be the interceptor's (8080 by default), which is why the
  Service lists that one port and ``status.endpoints.http`` names it. The interceptor routes on the
  Host header (one of the HTTPScaledObject's hosts: the Service's names), holds the request while
  the add-on scales the Deployment up, then forwards it to
* ``<name>-backend``: the ClusterIP Service with the pods' every port, which the HTTPScaledObject
  targets. gRPC, the OpenAI port and metrics go to it directly (they do not wake the deployment).
"""

from __future__ import annotations

from typing import Any

from modeldeploy.api.v1alpha1 import OPENAI_PORT, ModelDeployment
from modeldeploy.render.common import (
    RenderOptions,
    check_interceptor,
    metadata,
    selector_labels,
    uses_http_addon,
)

BACKEND_SUFFIX = "-backend"


def service_name(md: ModelDeployment) -> str:
    return md.name


def backend_service_name(md: ModelDeployment) -> str:
    """At most 58 characters (names are at most 50, see api.v1alpha1.MAX_NAME_LENGTH)."""
    return f"{md.name}{BACKEND_SUFFIX}"


def _ports(md: ModelDeployment) -> list[dict[str, Any]]:
    ports = md.spec.server.ports
    llm = (
        [
            {
                "name": "openai",
                "port": OPENAI_PORT,
                "targetPort": "openai",
                "protocol": "TCP",
                "appProtocol": "http",
            }
        ]
        if md.spec.serves_llm()
        else []
    )
    return [
        {"name": "http", "port": ports.http, "targetPort": "http", "protocol": "TCP"},
        {
            "name": "grpc",
            "port": ports.grpc,
            "targetPort": "grpc",
            "protocol": "TCP",
            "appProtocol": "grpc",
        },
        {"name": "metrics", "port": ports.metrics, "targetPort": "metrics", "protocol": "TCP"},
        *llm,
    ]


def _cluster_ip(md: ModelDeployment, name: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": metadata(md, name),
        "spec": {"type": "ClusterIP", "selector": selector_labels(md), "ports": _ports(md)},
    }


def routed(md: ModelDeployment, opts: RenderOptions | None) -> bool:
    """The Service is routed through the KEDA HTTP add-on's interceptor."""
    return uses_http_addon(md, opts or RenderOptions())


def render_service(md: ModelDeployment, opts: RenderOptions | None = None) -> dict[str, Any]:
    opts = opts or RenderOptions()
    if not routed(md, opts):
        return _cluster_ip(md, service_name(md))
    check_interceptor(opts)
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": metadata(md, service_name(md)),
        "spec": {
            "type": "ExternalName",
            "externalName": opts.interceptor_host,
            "ports": [
                {
                    "name": "http",
                    "port": opts.interceptor_port,
                    "targetPort": opts.interceptor_port,
                    "protocol": "TCP",
                }
            ],
        },
    }


def render_backend_service(md: ModelDeployment, opts: RenderOptions | None = None) -> dict[str, Any] | None:
    """``<name>-backend`` (the pods' ports) while the Service is routed through the interceptor."""
    return _cluster_ip(md, backend_service_name(md)) if routed(md, opts) else None


def endpoints(md: ModelDeployment, interceptor_port: int | None = None) -> dict[str, str]:
    """In-cluster URLs; ``interceptor_port`` while routed through the interceptor: HTTP then goes to
    ``<name>`` on the interceptor's port (wakes the deployment), the rest to ``<name>-backend``."""
    host = f"{service_name(md)}.{md.namespace}.svc"
    ports = md.spec.server.ports
    if interceptor_port is None:
        out = {"http": f"http://{host}:{ports.http}", "grpc": f"{host}:{ports.grpc}"}
        direct = host
    else:
        direct = f"{backend_service_name(md)}.{md.namespace}.svc"
        out = {"http": f"http://{host}:{interceptor_port}", "grpc": f"{direct}:{ports.grpc}"}
    if md.spec.serves_llm():
        out["openai"] = f"http://{direct}:{OPENAI_PORT}/v1"
    return out
