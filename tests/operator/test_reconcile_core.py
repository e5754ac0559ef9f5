"""Unit tests of the reconcile core on an in-memory store (tests/operator/memkube.py): the same
read/write interface as the API client and the watch-fed cache, so the reconciler's decisions (what
it writes, when, and what the status says) are checked in milliseconds, without a control plane.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest
from memkube import MemoryKube
from opsupport import small_md

from modeldeploy.reconcile.kube import KubeError
from modeldeploy.reconcile.reconciler import (
    HANDOVER_MANAGER,
    ApplyRejected,
    InvalidSpec,
    OperatorConfig,
    Reconciler,
)
from modeldeploy.render.common import FIELD_MANAGER

NS = "models"
#: the children of the ``cpu`` case (no autoscaler, no monitoring)
CHILDREN = ("ConfigMap", "Service", "Deployment", "NetworkPolicy", "PodDisruptionBudget")


def setup(replicas: int = 1) -> tuple[MemoryKube, Reconciler]:
    kube = MemoryKube()
    kube.put(small_md(NS, "m", replicas=replicas))
    return kube, Reconciler(kube, OperatorConfig(query_agents=False))


def body(kube: MemoryKube) -> dict[str, Any]:
    md = kube.obj("ModelDeployment", NS, "m")
    assert md is not None
    return copy.deepcopy(md)


def change_spec(kube: MemoryKube, **spec: Any) -> dict[str, Any]:
    """A spec change as the API server stores it (generation + 1)."""
    md = kube.obj("ModelDeployment", NS, "m")
    assert md is not None
    md["spec"].update(spec)
    md["metadata"]["generation"] += 1
    return copy.deepcopy(md)


def applied_kinds(kube: MemoryKube) -> list[str]:
    return [kind for verb, kind, _ in kube.writes if verb == "apply"]


def ready(kube: MemoryKube) -> dict[str, Any]:
    st = body(kube).get("status") or {}
    return {c["type"]: c for c in st.get("conditions") or []}.get("Ready") or {}


def present(kube: MemoryKube) -> list[str]:
    return [k for k in CHILDREN if kube.obj(k, NS, "m") is not None or (k == "ConfigMap" and _cms(kube))]


def _cms(kube: MemoryKube) -> list[str]:
    return [n for (k, ns, n) in kube.objs if k == "ConfigMap" and ns == NS]


def test_create_writes_each_child_once_and_a_status() -> None:
    kube, rec = setup()
    rec.reconcile(body(kube), trigger="create")
    kinds = applied_kinds(kube)
    assert sorted(kinds) == sorted(set(kinds)), f"a child applied twice: {kinds}"
    assert {"ConfigMap", "Service", "Deployment"} <= set(kinds)
    assert [w for w in kube.writes if w[0] == "patch_status"] == [("patch_status", "ModelDeployment", "m")]
    secrets = [w for w in kube.writes if w[:2] == ("create", "Secret")]
    assert len(secrets) == 2, secrets  # the agents' push token and Triton's control key
    st = body(kube)["status"]
    assert st["observedGeneration"] == 1
    assert ready(kube)["status"] == "False"  # no pod is serving yet


def test_a_second_pass_writes_nothing() -> None:
    kube, rec = setup()
    rec.reconcile(body(kube), trigger="create")
    kube.clear_log()
    rec.reconcile(body(kube), trigger="resync")
    rec.reconcile(body(kube), trigger="drift")
    assert kube.writes == []


@pytest.mark.parametrize("kind", ["ConfigMap", "Service", "Deployment", "NetworkPolicy"])
@pytest.mark.parametrize("how", ["deleted", "edited"])
def test_drift_of_each_child_is_repaired_with_one_write(kind: str, how: str) -> None:
    kube, rec = setup()
    rec.reconcile(body(kube), trigger="create")
    key = next(k for k in kube.objs if k[0] == kind)
    if how == "deleted":
        del kube.objs[key]
    else:
        kube.objs[key]["metadata"]["labels"]["app.kubernetes.io/instance"] = "edited"
    kube.clear_log()
    rec.reconcile(body(kube), trigger="drift")
    assert applied_kinds(kube) == [kind]
    assert kube.objs[key]["metadata"]["labels"]["app.kubernetes.io/instance"] == "m"
    others = [w for w in kube.writes if w[0] != "apply" and w[:2] != ("create", "Event")]
    assert others == [], "only the repair is written (and an Event when the Deployment is re-created)"


def test_replicas_are_handed_over_before_the_autoscaler_takes_them() -> None:
    kube, rec = setup(replicas=3)
    rec.reconcile(body(kube), trigger="create")
    auto = {"mode": "hpa", "minReplicas": 1, "maxReplicas": 4, "metric": {"type": "cpu", "target": 70}}
    kube.clear_log()
    rec.reconcile(change_spec(kube, autoscaling=auto), trigger="update")
    deployment_applies = [name.split("/", 1)[1] for verb, kind, name in kube.writes if kind == "Deployment"]
    assert deployment_applies == [HANDOVER_MANAGER, FIELD_MANAGER]
    dep = kube.obj("Deployment", NS, "m")
    assert dep is not None and dep["spec"]["replicas"] == 3, "replicas reset by dropping the field"
    assert "HorizontalPodAutoscaler" in applied_kinds(kube)


def test_a_stale_body_never_reverts_a_newer_generation() -> None:
    kube, rec = setup()
    old = body(kube)
    rec.reconcile(old, trigger="create")
    rec.reconcile(change_spec(kube, replicas=2), trigger="update")
    kube.clear_log()
    rec.reconcile(old, trigger="resync")  # the copy a resync listed before the change
    dep = kube.obj("Deployment", NS, "m")
    assert dep is not None and dep["spec"]["replicas"] == 2
    assert kube.writes == []


def test_status_claims_a_generation_only_once_it_is_applied() -> None:
    kube, rec = setup()
    rec.reconcile(body(kube), trigger="create")
    change_spec(kube, replicas=2)  # stored, not reconciled yet
    kube.clear_log()
    assert rec.refresh_status(NS, "m") is False
    assert kube.writes == []
    assert body(kube)["status"]["observedGeneration"] == 1


class LaggingStore(MemoryKube):
    """A watch-fed store that has not seen the newest ModelDeployment yet: its reads of the
    ModelDeployment return ``held`` (the previous generation), while writes reach the server."""

    held: dict[str, Any] | None = None

    def get(self, res: Any, namespace: str | None, name: str) -> dict[str, Any] | None:
        if res.kind == "ModelDeployment" and self.held is not None:
            return copy.deepcopy(self.held)
        return super().get(res, namespace, name)


def test_the_status_follows_a_reconcile_even_when_the_store_is_behind() -> None:
    """kopf hands the reconcile a generation the store has not seen yet: the status written after
    it must still describe that generation (it used to be skipped as "not applied", leaving the old
    generation's status until some child changed)."""
    kube = LaggingStore()
    kube.put(small_md(NS, "m"))
    rec = Reconciler(kube, OperatorConfig(query_agents=False))
    rec.reconcile(body(kube), trigger="create")
    kube.held = body(kube)  # generation 1, status of generation 1
    newer = change_spec(kube, replicas=2)
    kube.clear_log()
    out = rec.reconcile(newer, trigger="update")
    assert out.status_written
    st = kube.obj("ModelDeployment", NS, "m")["status"]  # type: ignore[index]
    assert st["observedGeneration"] == 2
    assert {c["type"]: c["observedGeneration"] for c in st["conditions"]}["Ready"] == 2


def test_a_child_the_api_server_refuses_ends_in_the_status_without_a_hot_loop() -> None:
    kube, rec = setup()
    kube.reject["Service"] = KubeError(
        422, "PATCH", "/api/v1/namespaces/models/services/m", "spec.ports: Invalid"
    )
    with pytest.raises((InvalidSpec, ApplyRejected)):
        rec.reconcile(body(kube), trigger="create")
    r = ready(kube)
    assert r["status"] == "False" and "Service" in r["message"], r
    kube.clear_log()
    for _ in range(3):  # resyncs and repairs: the same generation is not retried
        rec.reconcile(body(kube), trigger="resync")
        rec.reconcile(body(kube), trigger="drift")
    assert kube.writes == []


def test_a_forbidden_child_is_retried_per_resync_but_the_status_is_written_once() -> None:
    kube, rec = setup()
    kube.reject["Service"] = KubeError(403, "PATCH", "/api/v1/namespaces/models/services/m", "forbidden")
    with pytest.raises(ApplyRejected):
        rec.reconcile(body(kube), trigger="create")
    assert ready(kube)["reason"] == "ApplyRejected"
    kube.clear_log()
    with pytest.raises(ApplyRejected):
        rec.reconcile(body(kube), trigger="resync")
    assert [w for w in kube.writes if w[0] != "apply"] == [], "no status or Event rewritten"
    assert applied_kinds(kube).count("Service") == 1
    del kube.reject["Service"]
    rec.reconcile(body(kube), trigger="resync")
    assert kube.obj("Service", NS, "m") is not None


def test_a_child_controlled_by_another_owner_is_not_taken_over() -> None:
    kube, rec = setup()
    other = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "m", "namespace": NS}, "spec": {}}
    other["metadata"]["ownerReferences"] = [
        {"apiVersion": "apps/v1", "kind": "Deployment", "name": "x", "uid": "u-x", "controller": True}
    ]
    kube.put(other)
    with pytest.raises(ApplyRejected):
        rec.reconcile(body(kube), trigger="create")
    svc = kube.obj("Service", NS, "m")
    assert svc is not None and svc["metadata"]["ownerReferences"][0]["uid"] == "u-x"
    assert "controlled by Deployment/x" in ready(kube)["message"]
    assert not [w for w in kube.writes if w[:2] == ("apply", "Service")]
