"""Unit tests of the reconcile core on an in-memory store (tests/operator/memkube.py): the same
read/write interface as the API client and the watch-fed cache, so the reconciler's decisions (what
it writes, when, and what the status says) are checked in milliseconds, without a control plane.
"""

from __future__ import annotations

import collections
import copy
import datetime
import importlib.util
import threading
from pathlib import Path
from typing import Any

import pytest
from memkube import MemoryKube
from opsupport import small_md

from modeldeploy.reconcile.cache import BASE_KINDS, OWNED, store_answers
from modeldeploy.reconcile.kube import KubeError
from modeldeploy.reconcile.reconciler import (
    HANDOVER_MANAGER,
    ApplyRejected,
    InvalidSpec,
    OperatorConfig,
    Reconciler,
    propagation_window,
)
from modeldeploy.render.common import FIELD_MANAGER

NS = "models"
#: the children of the ``cpu`` case (no autoscaler, no monitoring)
CHILDREN = ("ConfigMap", "Service", "Deployment", "NetworkPolicy", "PodDisruptionBudget")


def setup(replicas: int = 1) -> tuple[MemoryKube, Reconciler]:
    kube = MemoryKube()
    kube.put(small_md(NS, "m", replicas=replicas))
    return kube, Reconciler(kube, OperatorConfig(query_agents=False))


def body(kube: MemoryKube, name: str = "m") -> dict[str, Any]:
    md = kube.obj("ModelDeployment", NS, name)
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
    # no Secret per object: pushes are signed with the operator's key, the pod makes its control key
    assert not [w for w in kube.writes if w[1] == "Secret"], kube.writes
    assert not [r for r in kube.reads if r[1] == "Secret"], kube.reads
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
    others = [w for w in kube.writes if w[0] != "apply"]
    assert others == [], "only the repair is written (no Event, not even for a re-created Deployment)"


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


# ----------------------------------------------------------------- status writes during a rollout
class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def rollout_step(
    kube: MemoryKube, ready_pods: int, running_pods: int, want: int = 3, counted: int | None = None
) -> None:
    """The Deployment controller's and kubelet's view after some pods started (as the watches see
    it); ``counted``: the Ready pods the Deployment controller has counted so far (default: all)."""
    dep = kube.obj("Deployment", NS, "m")
    assert dep is not None
    counted = ready_pods if counted is None else counted
    dep["status"] = {
        "observedGeneration": dep["metadata"]["generation"],
        "replicas": want,
        "updatedReplicas": want,
        "readyReplicas": counted,
        "availableReplicas": counted,
    }
    labels = dep["spec"]["template"]["metadata"]["labels"]
    for i in range(want):
        phase = "Running" if i < running_pods else "Pending"
        ready_ = "True" if i < ready_pods else "False"
        kube.put(
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": f"m-{i}", "namespace": NS, "labels": dict(labels)},
                "status": {"phase": phase, "conditions": [{"type": "Ready", "status": ready_}]},
            }
        )


def status_writes(kube: MemoryKube) -> int:
    return len([w for w in kube.writes if w[0] == "patch_status"])


def rolling_setup() -> tuple[MemoryKube, Reconciler, Clock, list[float]]:
    kube, rec = setup(replicas=3)
    clock, scheduled = Clock(), []
    rec.clock = clock
    rec.schedule = lambda ns, name, seconds: scheduled.append(seconds)
    return kube, rec, clock, scheduled


def started_long_after_create(
    ready_pods: int, running_pods: int, counted: int | None = None
) -> tuple[MemoryKube, Reconciler, Clock, list[float]]:
    """A create reconciled (its first status written), then, 20 s later, the pods' and the
    Deployment's state as given (rollout_step)."""
    kube, rec, clock, scheduled = rolling_setup()
    rec.reconcile(body(kube), trigger="create")
    clock.now += 20.0
    rollout_step(kube, ready_pods, running_pods, counted=counted)
    return kube, rec, clock, scheduled


def test_a_quick_rollout_is_two_status_writes_the_first_and_ready() -> None:
    kube, rec, clock, scheduled = rolling_setup()
    rec.reconcile(body(kube), trigger="create")
    assert status_writes(kube) == 1 and ready(kube)["reason"] != "Available"
    # every intermediate state the watches deliver within the interval: progress only, held back
    for ready_pods, running in [(0, 0), (0, 1), (0, 3), (1, 3), (2, 3)]:
        clock.now += 0.8
        rollout_step(kube, ready_pods, running)
        assert rec.refresh_status(NS, "m") is False
    assert status_writes(kube) == 1
    # each held-back change has its refresh scheduled, for when it is due: detail (replica counts)
    # within 30 s; progress (a condition's reason: pods Running, ModelsReady VersionsPending ->
    # VersionsLoading; or the READY column) once it has lasted the settle time, 5 s from when it
    # first showed (1.6 s)
    assert [round(s, 2) for s in scheduled] == [29.45, 5.25, 4.45, 3.65, 2.85]
    clock.now += 0.8  # 4.8 s after the first write: Ready is written at once, not at the interval's end
    rollout_step(kube, 3, 3)
    assert rec.refresh_status(NS, "m") is True
    assert status_writes(kube) == 2
    st = body(kube)["status"]
    assert ready(kube)["status"] == "True" and st["readyReplicas"] == 3 and st["replicasSummary"] == "3/3"
    assert [w[1] for w in kube.writes if w[0] == "create"].count("Event") == 0  # the status says it
    kube.clear_log()
    assert rec.refresh_status(NS, "m") is False and kube.writes == []


def test_a_slow_rollout_shows_ready_replicas_within_the_progress_interval() -> None:
    kube, rec, clock, scheduled = rolling_setup()
    rec.config.status_settle_seconds = 1.0  # shorter than the interval: the last write's time rules
    rec.reconcile(body(kube), trigger="create")
    clock.now += 1.0
    rollout_step(kube, 0, 0)  # detail only (counts of replicas/updated): waits 30 s
    assert rec.refresh_status(NS, "m") is False
    assert scheduled[-1] == pytest.approx(29.0 + 0.25)
    clock.now += 1.0
    rollout_step(kube, 1, 3)  # the READY column moves: at most once per 5 s
    assert rec.refresh_status(NS, "m") is False
    assert scheduled[-1] == pytest.approx(3.0 + 0.25)
    clock.now += 3.25  # the scheduled refresh: written now, with the detail held back so far
    assert rec.refresh_status(NS, "m") is True
    st = body(kube)["status"]
    assert st["readyReplicas"] == 1 and st["replicas"] == 3 and ready(kube)["status"] == "False"
    clock.now += 1.0
    rollout_step(kube, 2, 3)
    assert rec.refresh_status(NS, "m") is False  # the next progress waits for the next interval
    clock.now += 4.0
    assert rec.refresh_status(NS, "m") is True
    assert body(kube)["status"]["readyReplicas"] == 2
    assert status_writes(kube) == 3


def conditions_of(kube: MemoryKube) -> dict[str, tuple[str, str]]:
    return {c["type"]: (c["status"], c["reason"]) for c in body(kube)["status"]["conditions"]}


def test_detail_waits_for_the_detail_interval() -> None:
    kube, rec, clock, _ = rolling_setup()
    rec.reconcile(body(kube), trigger="create")
    first = copy.deepcopy(body(kube)["status"])
    clock.now += 1.0
    rollout_step(kube, 0, 0)  # pods created, none Running: replicas 0 -> 3, every reason the same
    for _ in range(5):
        clock.now += 5.0
        assert rec.refresh_status(NS, "m") is False
    assert body(kube)["status"] == first
    clock.now += 4.0  # 30 s after the first write
    assert rec.refresh_status(NS, "m") is True
    assert body(kube)["status"]["replicas"] == 3
    assert status_writes(kube) == 2


def test_a_condition_reason_change_is_written_within_the_progress_interval() -> None:
    """Pods Running: ModelsReady VersionsPending -> VersionsLoading while every condition's status
    stays. A reader (human, kstatus) sees a changed reason within the progress interval, through a
    refresh scheduled for when it is due, not at the detail interval or the next resync."""
    kube, rec, clock, scheduled = rolling_setup()
    rec.reconcile(body(kube), trigger="create")
    before = conditions_of(kube)
    clock.now += 1.0
    rollout_step(kube, 0, 3)
    assert rec.refresh_status(NS, "m") is False
    assert scheduled[-1] == pytest.approx(5.0 + 0.25)  # due once it has lasted the settle time
    clock.now += scheduled[-1]
    assert rec.refresh_status(NS, "m") is True
    after = conditions_of(kube)
    assert before["ModelsReady"] == ("False", "VersionsPending")
    assert after["ModelsReady"] == ("False", "VersionsLoading")
    assert {k: v[0] for k, v in after.items()} == {k: v[0] for k, v in before.items()}
    assert status_writes(kube) == 2


def test_ready_keeps_one_reason_from_create_to_ready() -> None:
    """The Deployment controller creating the pods (updated = wanted) does not flip Ready's reason
    RollingOut -> PodsNotReady (which would cost a status write per create): PodsNotReady only
    once the Deployment has completed its rollout (Progressing: NewReplicaSetAvailable)."""
    kube, rec, clock, _ = rolling_setup()
    rec.reconcile(body(kube), trigger="create")
    assert conditions_of(kube)["Ready"] == ("False", "RollingOut")
    rollout_step(kube, 0, 0)
    clock.now += 40.0
    assert rec.refresh_status(NS, "m") is True  # the detail (replica counts), same reasons
    assert conditions_of(kube)["Ready"] == ("False", "RollingOut")
    dep = kube.obj("Deployment", NS, "m")
    assert dep is not None
    dep["status"]["conditions"] = [
        {"type": "Progressing", "status": "True", "reason": "NewReplicaSetAvailable"}
    ]
    clock.now += 40.0
    assert rec.refresh_status(NS, "m") is False  # a reason change: progress, held until it settled
    clock.now += 5.0
    assert rec.refresh_status(NS, "m") is True
    assert conditions_of(kube)["Ready"] == ("False", "PodsNotReady")


def test_progress_that_ready_follows_at_once_costs_no_write_of_its_own() -> None:
    """Long after the first write, pods turn Running (ModelsReady: VersionsLoading, progress) and
    a loaded controller-manager's Deployment counts them available 3 s later (Ready: urgent). The
    reason change is held for status_settle_seconds (5 s, refresh scheduled), so the two are one
    write."""
    kube, rec, clock, scheduled = started_long_after_create(0, 3)
    assert rec.refresh_status(NS, "m") is False
    assert scheduled[-1] == pytest.approx(5.0 + 0.25)
    clock.now += 3.0
    rollout_step(kube, 3, 3)
    assert rec.refresh_status(NS, "m") is True and ready(kube)["status"] == "True"
    assert status_writes(kube) == 2
    # alone, the same progress is written once it has lasted the settle time
    kube, rec, clock, scheduled = started_long_after_create(0, 3)
    assert rec.refresh_status(NS, "m") is False
    clock.now += scheduled[-1]
    assert rec.refresh_status(NS, "m") is True
    assert conditions_of(kube)["ModelsReady"] == ("False", "VersionsLoading")


def test_ready_pods_the_deployment_has_not_counted_yet_wait_for_its_count() -> None:
    """Every pod Ready, and a loaded controller-manager's Deployment counts them available 12 s
    later: nothing is loading any more, only the count is missing, so the progress this shows
    (ModelsReady VersionsLoading) is held up to the detail interval, and the two are one write. Should the
    count never come, the progress is written then; a pod still loading (Running, not Ready) or a
    Deployment holding Ready pods back on purpose (minReadySeconds) keeps the 5 s settle time."""
    kube, rec, clock, scheduled = started_long_after_create(3, 3, counted=0)
    assert rec.refresh_status(NS, "m") is False
    assert scheduled[-1] == pytest.approx(30.0 + 0.25)
    clock.now += 12.0
    rollout_step(kube, 3, 3)
    assert rec.refresh_status(NS, "m") is True and ready(kube)["status"] == "True"
    assert status_writes(kube) == 2
    # the count never comes: the progress shows at the detail interval, through the scheduled refresh
    kube, rec, clock, scheduled = started_long_after_create(3, 3, counted=1)
    assert rec.refresh_status(NS, "m") is False
    clock.now += 29.0
    assert rec.refresh_status(NS, "m") is False
    clock.now += scheduled[-1]
    assert rec.refresh_status(NS, "m") is True
    assert conditions_of(kube)["ModelsReady"] == ("False", "VersionsLoading")
    # one pod still loading: the settle time as before
    kube, rec, clock, scheduled = started_long_after_create(2, 3, counted=0)
    assert rec.refresh_status(NS, "m") is False
    assert scheduled[-1] == pytest.approx(5.0 + 0.25)
    # every pod Ready, but minReadySeconds holds them back on purpose: not a count that is late
    kube, rec, clock, scheduled = rolling_setup()
    rec.reconcile(body(kube), trigger="create")
    dep = kube.obj("Deployment", NS, "m")
    assert dep is not None
    dep["spec"]["minReadySeconds"] = 60
    clock.now += 20.0
    rollout_step(kube, 3, 3, counted=0)
    assert rec.refresh_status(NS, "m") is False
    assert scheduled[-1] == pytest.approx(5.0 + 0.25)


def test_losing_readiness_is_written_at_once() -> None:
    kube, rec, clock, _ = rolling_setup()
    rec.reconcile(body(kube), trigger="create")
    rollout_step(kube, 3, 3)
    clock.now += 0.5
    assert rec.refresh_status(NS, "m") is True and ready(kube)["status"] == "True"
    clock.now += 0.5
    rollout_step(kube, 2, 3)  # a pod stopped serving, 0.5 s after the last write
    assert rec.refresh_status(NS, "m") is True
    assert ready(kube)["status"] == "False"


def test_without_an_interval_every_change_is_written() -> None:
    kube, rec, clock, _ = rolling_setup()
    rec.config.status_progress_seconds = rec.config.status_detail_seconds = 0
    rec.reconcile(body(kube), trigger="create")
    for ready_pods in range(3):
        clock.now += 0.5
        rollout_step(kube, ready_pods, 3)
        rec.refresh_status(NS, "m")
    assert status_writes(kube) >= 3


# ------------------------------------------------------------ every write of a create -> Ready
def bench_md(name: str = "m") -> dict[str, Any]:
    """The spec shape bench/reconcile.py applies (its md_body), in namespace NS."""
    path = Path(__file__).resolve().parents[2] / "bench" / "reconcile.py"
    spec = importlib.util.spec_from_file_location("bench_reconcile", path)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    doc: dict[str, Any] = mod.md_body(NS, 0)
    doc["metadata"]["name"] = name
    return doc


def test_create_to_ready_of_the_bench_shape_is_six_writes() -> None:
    """Every write of a create -> Ready of bench/reconcile.py's spec (1 replica, no monitoring), as
    the bench counts them: the 4 children once each, 2 status writes (the first and Ready;
    everything in between is held back by the limiter), no Event, no Secret, nothing else.
    The pod takes 20 s to start (KWOK's simulated start in the bench)."""
    kube = MemoryKube()
    kube.put(bench_md())
    rec = Reconciler(kube, OperatorConfig(query_agents=False))
    clock = Clock()
    rec.clock = clock
    rec.schedule = lambda ns, name, seconds: None
    rec.reconcile(body(kube), trigger="create")
    for ready_pods, running, dt in [(0, 0, 0.5), (0, 0, 10.0), (1, 1, 10.0)]:
        clock.now += dt
        rollout_step(kube, ready_pods, running, want=1)
        rec.refresh_status(NS, "m")
    assert ready(kube)["status"] == "True"
    by_kind = collections.Counter(f"{verb} {kind}" for verb, kind, _ in kube.writes)
    assert by_kind == {
        "apply ConfigMap": 1,
        "apply Deployment": 1,
        "apply Service": 1,
        "apply NetworkPolicy": 1,
        "patch_status ModelDeployment": 2,
    }, by_kind
    # The target of #12 is <= 6: ConfigMap, Deployment, Service, PDB and one or two status writes.
    # This shape has no PDB (1 replica) but a NetworkPolicy in its place.
    assert sum(by_kind.values()) == 6


def crash(kube: MemoryKube) -> None:
    pod = kube.obj("Pod", NS, "m-0")
    assert pod is not None
    pod["status"]["conditions"] = [{"type": "Ready", "status": "False"}]
    pod["status"]["containerStatuses"] = [
        {"name": "triton", "ready": False, "state": {"waiting": {"reason": "CrashLoopBackOff"}}}
    ]
    dep = kube.obj("Deployment", NS, "m")
    assert dep is not None
    dep["status"].update(readyReplicas=0, availableReplicas=0)


def test_ready_event_only_for_a_recovery_after_a_warning() -> None:
    kube, rec, clock, _ = rolling_setup()
    rec.reconcile(body(kube), trigger="create")
    rollout_step(kube, 3, 3)
    clock.now += 20.0
    assert rec.refresh_status(NS, "m") is True and ready(kube)["status"] == "True"
    assert not [w for w in kube.writes if w[1] == "Event"], "no event for a plain create -> Ready"
    kube.clear_log()
    clock.now += 20.0
    crash(kube)
    assert rec.refresh_status(NS, "m") is True and ready(kube)["reason"] == "CrashLoopBackOff"
    assert [w[:2] for w in kube.writes if w[1] == "Event"] == [("create", "Event")]  # the Warning
    kube.clear_log()
    clock.now += 20.0
    rollout_step(kube, 3, 3)
    assert rec.refresh_status(NS, "m") is True and ready(kube)["status"] == "True"
    assert [w[:2] for w in kube.writes if w[1] == "Event"] == [("create", "Event")]  # Ready again


def _degraded_message(kube: MemoryKube) -> str:
    conds = {c["type"]: c for c in (body(kube).get("status") or {}).get("conditions") or []}
    return str(conds["Degraded"].get("message") or "")


def test_a_refresh_reuses_the_spec_and_notes_of_the_reconciled_generation(monkeypatch: Any) -> None:
    """A status refresh neither parses the spec again nor renders the children for their notes
    while the object's (uid, generation) and the established CRDs are those of the last render; a
    new generation, a new CRD or a re-created object (new uid) is parsed and rendered afresh."""
    from modeldeploy.api.v1alpha1 import ModelDeployment
    from modeldeploy.reconcile import reconciler as reconciler_mod
    from modeldeploy.render.common import SERVICEMONITOR_CRD

    kube = MemoryKube()
    kube.put(small_md(NS, "m") | {"spec": small_md(NS, "m")["spec"] | {"monitoring": {"enabled": True}}})
    cfg = OperatorConfig(
        query_agents=False, crd_cache_seconds=0, status_progress_seconds=0, status_detail_seconds=0
    )
    rec = Reconciler(kube, cfg)
    counts = collections.Counter[str]()
    real_render, real_parse = reconciler_mod.render_children, ModelDeployment.from_body

    def render(*a: Any, **kw: Any) -> Any:
        counts["render"] += 1
        return real_render(*a, **kw)

    def parse(b: Any) -> ModelDeployment:
        counts["parse"] += 1
        return real_parse(b)

    monkeypatch.setattr(reconciler_mod, "render_children", render)
    monkeypatch.setattr(ModelDeployment, "from_body", staticmethod(parse))
    rec.reconcile(body(kube), trigger="create")
    assert counts == {"render": 1, "parse": 1}
    assert "ServiceMonitor" in _degraded_message(kube)  # the note: prometheus-operator not installed
    counts.clear()
    rec.refresh_status(NS, "m")
    rec.reconcile(body(kube), trigger="resync")
    assert counts == {"render": 1}, "the resync renders (to compare), nothing is parsed again"
    counts.clear()
    rec.refresh_status(NS, "m")
    assert counts == {}
    # the CRD appears: the notes are rendered anew (the ServiceMonitor is no longer skipped)
    kube.put({"kind": "CustomResourceDefinition", "metadata": {"name": SERVICEMONITOR_CRD},
              "status": {"conditions": [{"type": "Established", "status": "True"}]}})  # fmt: skip
    rec.refresh_status(NS, "m")
    assert counts == {"render": 1}
    assert "ServiceMonitor" not in _degraded_message(kube)
    # a new generation: its own spec
    counts.clear()
    rec.reconcile(change_spec(kube, replicas=3), trigger="update")
    assert counts == {"render": 1, "parse": 1}
    dep = kube.obj("Deployment", NS, "m")
    assert dep is not None and dep["spec"]["replicas"] == 3
    # the object deleted (with its children) and created again under the same name: a new uid,
    # generation 1 again (a DELETED event not yet handled: the reconciler has not forgotten it)
    kube.objs = {k: v for k, v in kube.objs.items() if k[0] == "CustomResourceDefinition"}
    kube.put(small_md(NS, "m", replicas=2))
    counts.clear()
    rec.reconcile(body(kube), trigger="create")
    assert counts["parse"] == 1
    dep = kube.obj("Deployment", NS, "m")
    assert dep is not None and dep["spec"]["replicas"] == 2


def test_parsed_specs_kept_are_bounded(monkeypatch: Any) -> None:
    """The parsed specs are a bounded cache (least recently used out), not a copy per object."""
    from modeldeploy.reconcile import reconciler as reconciler_mod

    monkeypatch.setattr(reconciler_mod, "SPEC_CACHE", 2)
    kube = MemoryKube()
    rec = Reconciler(kube, OperatorConfig(query_agents=False))
    for name in ("a", "b", "c"):
        kube.put(small_md(NS, name))
        md = kube.obj("ModelDeployment", NS, name)
        assert md is not None
        rec.reconcile(copy.deepcopy(md), trigger="create")
    assert list(rec._specs) == [f"{NS}/b", f"{NS}/c"]
    rec.forget(NS, "c")
    assert list(rec._specs) == [f"{NS}/b"]


def test_parsed_specs_not_used_for_a_while_go() -> None:
    """A burst keeps every object's parsed spec (SPEC_CACHE is large); one not used for
    SPEC_IDLE_SECONDS goes at the next parse, so an idle operator does not keep one per object."""
    from modeldeploy.reconcile.reconciler import SPEC_IDLE_SECONDS

    kube = MemoryKube()
    rec = Reconciler(kube, OperatorConfig(query_agents=False))
    now = [100.0]
    rec.clock = lambda: now[0]
    for name in ("a", "b"):
        kube.put(small_md(NS, name))
        rec.parse(body(kube, name))
    now[0] += SPEC_IDLE_SECONDS / 2
    rec.parse(body(kube, "a"))  # used again: stays
    now[0] += SPEC_IDLE_SECONDS / 2 + 1
    kube.put(small_md(NS, "c"))
    rec.parse(body(kube, "c"))
    assert list(rec._specs) == [f"{NS}/a", f"{NS}/c"]


def test_the_propagation_window_counts_a_pod_started_in_the_second_of_the_change_as_old() -> None:
    """The API server's times have whole seconds: a pod whose startTime is the change's second may
    have read the old manifest (a clean-clone CI run once went Ready on a pod started at 01:29:25
    for a manifest changed at 01:29:25). A change in the ConfigMap's creation second has nothing
    older to propagate, so a new deployment is not held back by the window."""
    t = datetime.datetime(2026, 1, 1, 0, 0, 10, tzinfo=datetime.UTC)
    created = t - datetime.timedelta(seconds=10)
    now = t + datetime.timedelta(seconds=2)
    why, left = propagation_window(t, created, now, 15, [t])
    assert why is not None and "changed 2s ago" in why and left == 13
    assert propagation_window(t, created, now, 15, [t - datetime.timedelta(seconds=1)])[0] is not None
    assert propagation_window(t, created, now, 15, [t + datetime.timedelta(seconds=1)]) == (None, None)
    assert propagation_window(t, created, now, 15, [None]) == (None, None)
    assert propagation_window(t, created, t + datetime.timedelta(seconds=15), 15, [t]) == (None, None)
    assert propagation_window(t, t, now, 15, [t]) == (None, None)  # created and written at once
    assert propagation_window(t, None, now, 15, [t])[0] is not None


def test_a_deleted_object_leaves_no_per_object_state() -> None:
    """Refreshes still come after the object went (its children's deletion events): they must not
    leave state keyed by it behind (a lock per deleted object stayed forever: RSS grew with churn)."""
    kube, rec = setup()
    rec.reconcile(body(kube), trigger="create")
    rec.refresh_status(NS, "m")
    del kube.objs[("ModelDeployment", NS, "m")]
    rec.forget(NS, "m")
    assert rec.refresh_status(NS, "m") is False  # a pod's deletion event after the object went
    keys = (f"{NS}/m", (NS, "m"))
    left = [
        name
        for name, value in vars(rec).items()
        if isinstance(value, dict | set) and any(k in value for k in keys)
    ]
    assert not left, f"state kept for a deleted object: {left}"


def test_the_per_object_lock_excludes_while_held_and_goes_when_released() -> None:
    _, rec = setup()
    inside, release = threading.Event(), threading.Event()
    order: list[str] = []

    def first() -> None:
        with rec.lock("a/b"):
            inside.set()
            release.wait(10)
            order.append("first")

    def second() -> None:
        inside.wait(10)
        with rec.lock("a/b"):
            order.append("second")

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    for t in threads:
        t.start()
    inside.wait(10)
    with rec.lock("other/key"):  # another object's lock is independent
        pass
    release.set()
    for t in threads:
        t.join(10)
    assert order == ["first", "second"]
    assert not rec._locks


def test_a_refresh_reads_the_manifest_configmap_once() -> None:
    """With agent queries on but no agent answering (pods without an address), the status needs
    the manifest twice: its generation and age (load timeout) and its last change (propagation
    window). One refresh reads (and decodes from the store) the ConfigMap once for both."""
    kube = MemoryKube()
    kube.put(small_md(NS, "m"))
    rec = Reconciler(kube, OperatorConfig(query_agents=True))
    rec.schedule = lambda ns, name, seconds: None
    rec.reconcile(body(kube), trigger="create")
    rollout_step(kube, ready_pods=1, running_pods=1, want=1)
    kube.clear_log()
    rec.refresh_status(NS, "m")
    assert kube.reads.count(("get", "ConfigMap")) == 1, kube.reads
    assert ready(kube)["reason"] == "Available"  # a new ConfigMap: no older manifest to wait out


class DeletedDuringReconcile(MemoryKube):
    """The ModelDeployment is deleted (and gone from the store) while its children are applied."""

    def apply(self, body: dict[str, Any], *args: Any, **kwargs: Any) -> dict[str, Any]:
        out = super().apply(body, *args, **kwargs)
        if body["kind"] == "Deployment":
            self.objs.pop(("ModelDeployment", NS, "m"), None)
        return out


def test_an_object_deleted_during_its_reconcile_ends_it_without_an_error_or_a_retry() -> None:
    """The status write of a ModelDeployment deleted meanwhile gets 404: the reconcile ends
    normally (an error would have the work queue retry it after a backoff, for an object that is
    gone: wasted work and a log line for each object of a mass deletion)."""
    kube = DeletedDuringReconcile()
    kube.put(small_md(NS, "m"))
    rec = Reconciler(kube, OperatorConfig(query_agents=False))
    out = rec.reconcile(body(kube), trigger="create")
    assert ("patch_status", "ModelDeployment", "m") in kube.writes  # it was tried, and refused
    assert not out.status_written


def _walk_to_ready(kube: MemoryKube, rec: Reconciler, clock: Clock, want: int) -> None:
    rec.reconcile(body(kube), trigger="create")
    for ready_pods, running, dt in [(0, 0, 1.0), (0, want, 10.0), (want, want, 10.0)]:
        clock.now += dt
        rollout_step(kube, ready_pods, running, want=want)
        rec.refresh_status(NS, "m")
        rec.reconcile(body(kube), trigger="resync")


@pytest.mark.parametrize(
    "shape",
    [
        {},
        {"rollout": {"strategy": "rolling"}},
        {"rollout": {"strategy": "inPlace"}},
        {"cache": {"claimName": "model-cache", "prefetch": True, "maxSize": "10Gi"}},
    ],
    ids=["default", "rolling", "inPlace", "cache-prefetch"],
)
def test_every_list_of_a_watched_kind_is_answered_by_its_store(shape: dict[str, Any]) -> None:
    """#12: no LIST in the steady state. Each list the reconciler makes of a kind the operator
    watches must carry the labels of that kind's watch, or CachedKube sends it to the API server:
    one LIST per reconcile (the prefetch Job collection once did, without the managed-by label).
    Create -> Ready, a version change and its rollout, each with resyncs in between."""
    kube = MemoryKube()
    doc = small_md(NS, "m", replicas=2)
    doc["spec"].update(copy.deepcopy(shape))
    kube.put(doc)
    rec = Reconciler(kube, OperatorConfig(query_agents=False))
    clock = Clock()
    rec.clock = clock
    rec.schedule = lambda ns, name, seconds: None
    _walk_to_ready(kube, rec, clock, want=2)
    change_spec(kube, models=[{**body(kube)["spec"]["models"][0], "versions": [{"version": 3}]}])
    _walk_to_ready(kube, rec, clock, want=2)
    watched = {res.kind for res in BASE_KINDS}
    listed = [(kind, sel) for kind, sel in kube.list_selectors if kind in watched]
    assert listed, "no list was made: the check would prove nothing"
    unanswered = [(kind, sel) for kind, sel in listed if not store_answers(kind, sel)]
    assert unanswered == [], f"lists the stores cannot answer (a LIST each): {unanswered}"


def test_a_selector_without_the_watch_label_is_not_answered_by_the_store() -> None:
    """The rule above is not vacuous: the prefetch Job list as it was goes to the API server."""
    assert not store_answers("Job", "modeldeploy.io/deployment=m,app.kubernetes.io/component=prefetch")
    assert store_answers("Job", f"{OWNED},modeldeploy.io/deployment=m")
    assert store_answers("ModelDeployment", None)  # watched whole
    assert not store_answers("Pod", "modeldeploy.io/deployment=m")  # pods: part-of=modeldeploy


def staged_setup() -> tuple[MemoryKube, Reconciler, list[tuple[str, str, float]]]:
    """A reconciler whose work queue says it has a backlog (a burst of creates)."""
    kube, rec = setup(replicas=2)  # 2: a PodDisruptionBudget too (a child off the pods' path)
    later: list[tuple[str, str, float]] = []
    rec.finish_later = lambda ns, name, seconds: later.append((ns, name, seconds))
    rec.backlogged = lambda: True
    return kube, rec, later


def test_a_create_in_a_backlog_writes_the_pods_path_first_and_the_rest_in_a_finish_run() -> None:
    kube, rec, later = staged_setup()
    rec.reconcile(body(kube), trigger="create")
    first = applied_kinds(kube)
    assert set(first) == {"ConfigMap", "NetworkPolicy", "Deployment"}, first
    assert first.index("NetworkPolicy") < first.index("Deployment"), "a pod must never run unfenced"
    assert later == [(NS, "m", rec.config.stage_seconds)]
    # no status yet, and none a refresh could write: not every child carries the generation
    assert rec.refresh_status(NS, "m") is False
    assert not body(kube).get("status")
    assert kube.obj("Service", NS, "m") is None
    kube.writes.clear()
    rec.reconcile(body(kube), trigger="finish")
    rest = applied_kinds(kube)
    assert set(rest) == {"Service", "PodDisruptionBudget"}, f"the finish run rewrote {rest}"
    assert body(kube)["status"]["observedGeneration"] == 1
    assert ready(kube)["status"] == "False"  # its pods are not running (no controller here)
    assert later == [(NS, "m", rec.config.stage_seconds)], "a finish run is never staged again"


def test_a_create_is_whole_without_a_backlog_or_with_staging_off() -> None:
    for backlog, stage_seconds in ((False, 5.0), (True, 0.0)):
        kube, rec, later = staged_setup()
        rec.backlogged = lambda backlog=backlog: backlog
        rec.config.stage_seconds = stage_seconds
        rec.reconcile(body(kube), trigger="create")
        assert {"Service", "PodDisruptionBudget", "Deployment"} <= set(applied_kinds(kube))
        assert later == []
        assert body(kube)["status"]["observedGeneration"] == 1


def test_a_spec_change_during_a_staged_create_is_applied_whole() -> None:
    kube, rec, _ = staged_setup()
    rec.reconcile(body(kube), trigger="create")
    newer = change_spec(kube, replicas=3)
    kube.writes.clear()
    rec.reconcile(newer, trigger="update")  # the update mark runs first: a full pass, not staged
    assert {"Service", "Deployment", "PodDisruptionBudget"} <= set(applied_kinds(kube))
    dep = kube.obj("Deployment", NS, "m")
    assert dep is not None and dep["spec"]["replicas"] == 3
    assert body(kube)["status"]["observedGeneration"] == 2
