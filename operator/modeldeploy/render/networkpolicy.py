"""The NetworkPolicy of a ModelDeployment's Triton pods (ingress only).

* inference ports (HTTP, gRPC, and the OpenAI endpoint of LLM pods): from ``spec.networkPolicy.inferenceFrom`` (default: every pod of
  the same namespace);
* the agent port: only from the operator's namespace (``RenderOptions.operator_namespace``);
* the metrics port: only from ``spec.networkPolicy.monitoringNamespace`` (unset: no rule);
* the HTTP port from the KEDA HTTP add-on interceptor's namespace while the Service is routed
  through it (scale from zero on a request).

Namespaces by name use the ``kubernetes.io/metadata.name`` label the API server sets on every
namespace. Egress is not restricted (the agent fetches from arbitrary storage endpoints).
Ports are numbers, not names, so the policy means the same before and after a port change.
"""

from __future__ import annotations

from typing import Any

from modeldeploy.api.v1alpha1 import AGENT_PORT, OPENAI_PORT, ModelDeployment, NetworkPeer
from modeldeploy.render.common import RenderOptions, metadata, selector_labels, uses_http_addon

NAMESPACE_NAME_LABEL = "kubernetes.io/metadata.name"


def _namespace(name: str) -> dict[str, Any]:
    return {"namespaceSelector": {"matchLabels": {NAMESPACE_NAME_LABEL: name}}}


def _peer(p: NetworkPeer) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if p.namespace is not None:
        out.update(_namespace(p.namespace))
    elif p.namespaceSelector is not None:
        out["namespaceSelector"] = {"matchLabels": dict(p.namespaceSelector)} if p.namespaceSelector else {}
    if p.podSelector is not None:
        out["podSelector"] = {"matchLabels": dict(p.podSelector)} if p.podSelector else {}
    return out


def _ports(*numbers: int) -> list[dict[str, Any]]:
    return [{"protocol": "TCP", "port": n} for n in numbers]


def render_networkpolicy(md: ModelDeployment, opts: RenderOptions) -> dict[str, Any] | None:
    np = md.spec.networkPolicy
    if not np.enabled:
        return None
    ports = md.spec.server.ports
    inference = (
        [_peer(p) for p in np.inferenceFrom] if np.inferenceFrom is not None else [{"podSelector": {}}]
    )
    # LLM pods also serve the OpenAI-compatible endpoint (its /metrics too) on OPENAI_PORT.
    openai = (OPENAI_PORT,) if md.spec.serves_llm() else ()
    ingress: list[dict[str, Any]] = [
        {"from": inference, "ports": _ports(ports.http, ports.grpc, *openai)},
        {"from": [_namespace(opts.operator_namespace)], "ports": _ports(AGENT_PORT)},
    ]
    if uses_http_addon(md, opts):  # the KEDA HTTP add-on's interceptor forwards the woken requests
        ingress.append({"from": [_namespace(opts.interceptor_namespace)], "ports": _ports(ports.http)})
    if np.monitoringNamespace:
        ingress.append(
            {"from": [_namespace(np.monitoringNamespace)], "ports": _ports(ports.metrics, *openai)}
        )
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": metadata(md, md.name),
        "spec": {
            "podSelector": {"matchLabels": selector_labels(md)},
            "policyTypes": ["Ingress"],
            "ingress": ingress,
        },
    }
