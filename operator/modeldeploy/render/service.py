"""The Service in front of the Triton pods (http, grpc, metrics; openai when an LLM is served)."""

from __future__ import annotations

from typing import Any

from modeldeploy.api.v1alpha1 import OPENAI_PORT, ModelDeployment
from modeldeploy.render.common import RenderOptions, metadata, selector_labels


def service_name(md: ModelDeployment) -> str:
    return md.name


def render_service(md: ModelDeployment, opts: RenderOptions | None = None) -> dict[str, Any]:
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
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": metadata(md, service_name(md)),
        "spec": {
            "type": "ClusterIP",
            "selector": selector_labels(md),
            "ports": [
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
            ],
        },
    }


def endpoints(md: ModelDeployment) -> dict[str, str]:
    host = f"{service_name(md)}.{md.namespace}.svc"
    ports = md.spec.server.ports
    out = {"http": f"http://{host}:{ports.http}", "grpc": f"{host}:{ports.grpc}"}
    if md.spec.serves_llm():
        out["openai"] = f"http://{host}:{OPENAI_PORT}/v1"
    return out
