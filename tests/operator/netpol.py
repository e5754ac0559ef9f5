"""A small evaluator of Kubernetes NetworkPolicy ingress semantics (networking.k8s.io/v1), for the
rules modeldeploy renders: podSelector / namespaceSelector / both in one peer / ipBlock, numeric
ports, policyTypes. No network plugin runs on the test machine, so tests check the rendered rules
with this, and this against the documented examples of the NetworkPolicy API.

Semantics (https://kubernetes.io/docs/concepts/services-networking/network-policies/):
* a pod not selected by any policy with Ingress in policyTypes accepts everything;
* a selected pod accepts a connection when some ingress rule of some selecting policy allows it
  (policies are additive); a rule allows it when its ``from`` (absent/empty: any source) has a
  matching peer and its ``ports`` (absent/empty: all ports) has the port;
* a peer with podSelector only matches pods of the policy's namespace; namespaceSelector only
  matches every pod of the selected namespaces; both in one peer: pods matching both; ipBlock: the
  source IP in cidr and not in except.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Pod:
    namespace: str
    labels: dict[str, str] = field(default_factory=dict)
    namespace_labels: dict[str, str] | None = None  # default: {kubernetes.io/metadata.name: ns}
    ip: str = "10.0.0.1"

    def ns_labels(self) -> dict[str, str]:
        base = {"kubernetes.io/metadata.name": self.namespace}
        return {**base, **(self.namespace_labels or {})}


def selector_matches(sel: dict[str, Any] | None, labels: dict[str, str]) -> bool:
    """A LabelSelector; {} matches everything."""
    if sel is None:
        return False
    for k, v in (sel.get("matchLabels") or {}).items():
        if labels.get(k) != v:
            return False
    for e in sel.get("matchExpressions") or []:
        key, op, values = e["key"], e["operator"], e.get("values") or []
        has = key in labels
        ok = {
            "In": has and labels.get(key) in values,
            "NotIn": not has or labels.get(key) not in values,
            "Exists": has,
            "DoesNotExist": not has,
        }[op]
        if not ok:
            return False
    return True


def _peer_matches(peer: dict[str, Any], src: Pod, policy_ns: str) -> bool:
    if "ipBlock" in peer:
        ip = ipaddress.ip_address(src.ip)
        block = peer["ipBlock"]
        if ip not in ipaddress.ip_network(block["cidr"]):
            return False
        return not any(ip in ipaddress.ip_network(x) for x in block.get("except") or [])
    ns_sel, pod_sel = peer.get("namespaceSelector"), peer.get("podSelector")
    if ns_sel is None and pod_sel is None:
        raise ValueError(f"peer selects nothing: {peer}")
    if ns_sel is None:
        ns_ok = src.namespace == policy_ns
    else:
        ns_ok = selector_matches(ns_sel, src.ns_labels())
    return ns_ok and (pod_sel is None or selector_matches(pod_sel, src.labels))


def _port_matches(ports: list[dict[str, Any]] | None, port: int, protocol: str) -> bool:
    if not ports:
        return True
    for p in ports:
        if p.get("protocol", "TCP") != protocol:
            continue
        if "port" not in p:
            return True
        if not isinstance(p["port"], int):
            raise ValueError(f"named ports are not evaluated: {p}")
        if p["port"] <= port <= p.get("endPort", p["port"]):
            return True
    return False


def _selects(policy: dict[str, Any], target: Pod) -> bool:
    spec = policy["spec"]
    types = spec.get("policyTypes") or ["Ingress"]
    return (
        "Ingress" in types
        and policy["metadata"]["namespace"] == target.namespace
        and selector_matches(spec.get("podSelector", {}), target.labels)
    )


def ingress_allowed(
    policies: list[dict[str, Any]], src: Pod, target: Pod, port: int, protocol: str = "TCP"
) -> bool:
    selecting = [p for p in policies if _selects(p, target)]
    if not selecting:
        return True
    for pol in selecting:
        for rule in pol["spec"].get("ingress") or []:
            peers = rule.get("from")
            if (not peers or any(_peer_matches(x, src, pol["metadata"]["namespace"]) for x in peers)) and (
                _port_matches(rule.get("ports"), port, protocol)
            ):
                return True
    return False
