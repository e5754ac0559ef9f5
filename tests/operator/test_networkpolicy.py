"""NetworkPolicy (issue #15): the evaluator against the documented examples of the API, the
rendered policies against sample source pods, and the real API server admitting them."""

from __future__ import annotations

import json
from typing import Any

import pytest
import yaml
from netpol import Pod, ingress_allowed
from opsupport import load_case

from modeldeploy.api.v1alpha1 import OPENAI_PORT, ModelDeployment
from modeldeploy.render import RenderOptions, render_all
from modeldeploy.render.networkpolicy import render_networkpolicy

# ------------------------------------------------------------- the documented examples (k8s docs)
DOC_EXAMPLE = yaml.safe_load("""
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: test-network-policy, namespace: default}
spec:
  podSelector: {matchLabels: {role: db}}
  policyTypes: [Ingress, Egress]
  ingress:
  - from:
    - ipBlock: {cidr: 172.17.0.0/16, except: [172.17.1.0/24]}
    - namespaceSelector: {matchLabels: {project: myproject}}
    - podSelector: {matchLabels: {role: frontend}}
    ports: [{protocol: TCP, port: 6379}]
""")
DB = Pod("default", {"role": "db"}, ip="10.9.9.9")


@pytest.mark.parametrize(
    ("src", "port", "allowed"),
    [
        (Pod("default", {"role": "frontend"}), 6379, True),  # pods in default with role=frontend
        (Pod("default", {"role": "frontend"}), 6380, False),  # only TCP 6379
        (Pod("default", {"role": "backend"}), 6379, False),
        (Pod("other", {"role": "frontend"}), 6379, False),  # podSelector alone: the policy's namespace
        (Pod("proj", {}, {"project": "myproject"}), 6379, True),  # any pod of project=myproject
        (Pod("x", {}, ip="172.17.2.3"), 6379, True),  # 172.17.0.0/16 ...
        (Pod("x", {}, ip="172.17.1.3"), 6379, False),  # ... except 172.17.1.0/24
    ],
)
def test_documented_example(src: Pod, port: int, allowed: bool) -> None:
    assert ingress_allowed([DOC_EXAMPLE], src, DB, port) is allowed
    assert ingress_allowed([DOC_EXAMPLE], src, Pod("default", {"role": "web"}), 1) is True  # not selected


def _policy(ingress: Any, pod_selector: Any = None) -> dict[str, Any]:
    spec: dict[str, Any] = {"podSelector": pod_selector or {}, "policyTypes": ["Ingress"]}
    if ingress is not None:
        spec["ingress"] = ingress
    return {"metadata": {"namespace": "default"}, "spec": spec}


def test_documented_and_versus_or() -> None:
    """The docs' "Behavior of to and from selectors": one element with both selectors (AND) versus
    two elements (OR)."""
    both = _policy([{"from": [{"namespaceSelector": {"matchLabels": {"user": "alice"}},
                                "podSelector": {"matchLabels": {"role": "client"}}}]}])  # fmt: skip
    either = _policy([{"from": [{"namespaceSelector": {"matchLabels": {"user": "alice"}}},
                                {"podSelector": {"matchLabels": {"role": "client"}}}]}])  # fmt: skip
    target = Pod("default", {"app": "x"})
    alice_client = Pod("a", {"role": "client"}, {"user": "alice"})
    alice_other = Pod("a", {"role": "other"}, {"user": "alice"})
    local_client = Pod("default", {"role": "client"})
    assert [ingress_allowed([both], p, target, 80) for p in (alice_client, alice_other, local_client)] == [
        True, False, False,
    ]  # fmt: skip
    assert [ingress_allowed([either], p, target, 80) for p in (alice_client, alice_other, local_client)] == [
        True, True, True,
    ]  # fmt: skip


def test_documented_default_deny_allow_all_and_end_port() -> None:
    src, target = Pod("x"), Pod("default", {"a": "b"})
    assert ingress_allowed([_policy(None)], src, target, 80) is False  # default deny all ingress
    assert ingress_allowed([_policy([{}])], src, target, 80) is True  # allow all ingress
    ranged = _policy([{"ports": [{"protocol": "TCP", "port": 32000, "endPort": 32768}]}])
    assert [ingress_allowed([ranged], src, target, p) for p in (31999, 32000, 32768, 32769)] == [
        False, True, True, False,
    ]  # fmt: skip
    assert ingress_allowed([ranged], src, target, 32000, "UDP") is False
    # policies are additive
    assert ingress_allowed([_policy(None), _policy([{}])], src, target, 80) is True


# ------------------------------------------------------------------------- the rendered policies
def _rendered(case: str, operator_ns: str = "modeldeploy-system") -> tuple[dict[str, Any], Pod]:
    md = ModelDeployment.from_body(load_case(case))
    pol = render_networkpolicy(md, RenderOptions(operator_namespace=operator_ns))
    assert pol is not None
    dep = next(d for d in render_all(md) if d["kind"] == "Deployment")
    return pol, Pod(md.namespace, dep["spec"]["template"]["metadata"]["labels"])


def test_default_policy_same_namespace_operator_agent_no_metrics() -> None:
    pol, triton = _rendered("cpu")
    ns = triton.namespace
    neighbour, stranger, operator = Pod(ns, {"app": "web"}), Pod("elsewhere"), Pod("modeldeploy-system")
    prom = Pod("monitoring")
    table = {
        (who, port): ingress_allowed([pol], src, triton, port)
        for who, src in {
            "neighbour": neighbour,
            "stranger": stranger,
            "operator": operator,
            "prom": prom,
        }.items()
        for port in (8000, 8001, 8002, 8080)
    }
    assert table == {
        ("neighbour", 8000): True, ("neighbour", 8001): True, ("neighbour", 8002): False, ("neighbour", 8080): False,
        ("stranger", 8000): False, ("stranger", 8001): False, ("stranger", 8002): False, ("stranger", 8080): False,
        ("operator", 8000): False, ("operator", 8001): False, ("operator", 8002): False, ("operator", 8080): True,
        ("prom", 8000): False, ("prom", 8001): False, ("prom", 8002): False, ("prom", 8080): False,
    }  # fmt: skip


def test_tuned_policy_peers_and_monitoring_namespace() -> None:
    pol, triton = _rendered("trust", operator_ns="ops")
    cases = [
        (Pod("apps", {"app": "web"}), 8000, True),
        (Pod("apps", {"app": "batch"}), 8000, False),  # namespace AND pod labels
        (Pod("research", {}, {"team": "ml"}), 8001, True),  # namespaceSelector
        (Pod("research", {}, {"team": "web"}), 8001, False),
        (Pod("models", {"role": "client"}), 8000, True),  # podSelector alone: the own namespace
        (Pod("models", {"role": "other"}), 8000, False),  # the default (same namespace) is replaced
        (Pod("apps", {"role": "client"}), 8000, False),
        (Pod("monitoring"), 8002, True),
        (Pod("monitoring"), 8000, False),
        (Pod("ops"), 8080, True),
        (Pod("modeldeploy-system"), 8080, False),
    ]
    got = [(src, port, ingress_allowed([pol], src, triton, port)) for src, port, _ in cases]
    assert got == cases
    other_pod = Pod("models", {"app.kubernetes.io/name": "something-else"})
    assert ingress_allowed([pol], Pod("elsewhere"), other_pod, 8000) is True  # only the Triton pods


def test_network_policy_can_be_turned_off() -> None:
    body = load_case("cpu")
    body["spec"]["networkPolicy"] = {"enabled": False}
    md = ModelDeployment.from_body(body)
    assert render_networkpolicy(md, RenderOptions()) is None
    assert "NetworkPolicy" not in {d["kind"] for d in render_all(md)}


@pytest.mark.cluster
@pytest.mark.parametrize("case", ["cpu", "trust", "multi-model"])
def test_rendered_policies_admitted_by_the_api_server(cluster: Any, case: str) -> None:
    md = ModelDeployment.from_body(load_case(case))
    pol = render_networkpolicy(md, RenderOptions())
    assert pol is not None
    pol = {**pol, "metadata": {k: v for k, v in pol["metadata"].items() if k != "ownerReferences"}}
    with cluster.scratch_namespace(f"np-{case}") as ns:
        pol["metadata"]["namespace"] = ns
        out = cluster.kubectl("apply", "--server-side", "-o", "json", "-f", "-", input=json.dumps(pol))
        live = json.loads(out.stdout)
        assert live["spec"]["ingress"] == pol["spec"]["ingress"]
        assert live["spec"]["podSelector"] == pol["spec"]["podSelector"]


def test_llm_pods_open_the_openai_endpoint_to_inference_peers_only() -> None:
    pol, triton = _rendered("llm-transformers")
    neighbour, stranger = Pod(triton.namespace, {"app": "chat-ui"}), Pod("elsewhere")
    assert ingress_allowed([pol], neighbour, triton, OPENAI_PORT)
    assert not ingress_allowed([pol], stranger, triton, OPENAI_PORT)
    # a tensor model's pods do not open it
    cpu_pol, cpu_pod = _rendered("cpu")
    assert not ingress_allowed([cpu_pol], Pod(cpu_pod.namespace, {}), cpu_pod, OPENAI_PORT)
