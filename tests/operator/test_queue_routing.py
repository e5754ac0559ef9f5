"""How the handlers' State routes a run of the work queue (no cluster: the in-memory API of
memkube.py and the real Reconciler): which body a reconcile works from, and which reasons reconcile
and which only refresh the status."""

from __future__ import annotations

import asyncio
import copy
import threading
import time
from typing import Any

import pytest
from memkube import MemoryKube
from opsupport import small_md

from modeldeploy.handlers import State
from modeldeploy.reconcile.reconciler import InvalidSpec, OperatorConfig, Reconciler

NS = "models"


def setup() -> tuple[MemoryKube, State]:
    kube = MemoryKube()
    kube.put(small_md(NS, "m", replicas=1))
    state = State(OperatorConfig(query_agents=False))
    state.cache = kube  # type: ignore[assignment]  # the same read/write interface as CachedKube
    state.reconciler = Reconciler(kube, state.config)
    return kube, state


def stored(kube: MemoryKube) -> dict[str, Any]:
    md = kube.obj("ModelDeployment", NS, "m")
    assert md is not None
    return md


def replicas(kube: MemoryKube) -> int:
    dep = kube.obj("Deployment", NS, "m")
    assert dep is not None
    return int(dep["spec"]["replicas"])


def test_a_newer_generation_handed_by_kopf_wins_over_a_store_that_is_behind() -> None:
    kube, state = setup()
    state.process((NS, "m"), frozenset({"create"}))
    assert replicas(kube) == 1
    newer = copy.deepcopy(stored(kube))
    newer["spec"]["replicas"] = 3
    newer["metadata"]["generation"] += 1  # kopf saw it; the store has not yet
    state.hand(newer)
    state.process((NS, "m"), frozenset({"update", "refresh"}))
    assert replicas(kube) == 3


def test_an_older_body_handed_by_kopf_loses_to_the_store() -> None:
    kube, state = setup()
    older = copy.deepcopy(stored(kube))
    md = stored(kube)
    md["spec"]["replicas"] = 2
    md["metadata"]["generation"] += 1
    state.hand(older)
    state.process((NS, "m"), frozenset({"update"}))
    assert replicas(kube) == 2


def test_refresh_alone_writes_no_child_and_drift_reconciles() -> None:
    kube, state = setup()
    state.process((NS, "m"), frozenset({"refresh"}))
    assert not [w for w in kube.writes if w[0] == "apply"], "a status refresh applied children"
    state.process((NS, "m"), frozenset({"drift", "refresh"}))
    assert {kind for verb, kind, _ in kube.writes if verb == "apply"} >= {"Deployment", "Service"}


def test_the_resync_skips_an_object_an_event_reconciled_within_the_interval() -> None:
    """After a burst of creations the resync pass would reconcile each object again for nothing
    while the burst's pods start: an object compared on an event within ``resync_seconds`` is
    skipped; once that is longer ago (and at idle, where only the resync reconciles), it is not."""
    kube, state = setup()
    assert state.reconciler is not None
    now = [1000.0]
    state.reconciler.clock = lambda: now[0]
    state.process((NS, "m"), frozenset({"create"}))
    kube.objs[("Deployment", NS, "m")]["spec"]["replicas"] = 7  # drift no event told of
    assert state.process((NS, "m"), frozenset({"resync"})) is None
    assert replicas(kube) == 7
    before = len(kube.writes)
    kube.objs[("ModelDeployment", NS, "m")]["status"] = {}  # (a status the refresh will write)
    assert state.process((NS, "m"), frozenset({"resync", "refresh"})) is True  # the refresh alone
    assert replicas(kube) == 7 and {w[0] for w in kube.writes[before:]} == {"patch_status"}
    now[0] += state.config.resync_seconds
    state.process((NS, "m"), frozenset({"resync"}))
    assert replicas(kube) == 1, "the resync repairs it once the event's reconcile is an interval old"
    kube.objs[("Deployment", NS, "m")]["spec"]["replicas"] = 7
    state.process((NS, "m"), frozenset({"resync"}))
    assert replicas(kube) == 1, "a resync's own reconcile does not hold back the next pass"
    state.process((NS, "m"), frozenset({"drift"}))
    state.reconciler.forget(NS, "m")
    kube.objs[("Deployment", NS, "m")]["spec"]["replicas"] = 7
    state.process((NS, "m"), frozenset({"resync"}))
    assert replicas(kube) == 1, "forgotten with the object"


def test_a_deleted_object_is_not_reconciled() -> None:
    kube, state = setup()
    del kube.objs[("ModelDeployment", NS, "m")]
    assert state.process((NS, "m"), frozenset({"resync"})) is None
    assert not kube.writes


class Marks:
    """Stands in for the WorkQueue: records what ``State`` marks."""

    def __init__(self) -> None:
        self.marked: list[tuple[tuple[str, str], str]] = []
        self.delays: list[float] = []
        self.urgent: list[bool] = []
        self.discarded: list[tuple[str, str]] = []

    def discard(self, key: tuple[str, str]) -> None:
        self.discarded.append(key)

    def nudge(self, key: tuple[str, str], reason: str, delay: float = 0.0, urgent: bool = False) -> None:
        self.marked.append((key, reason))
        self.delays.append(delay)
        self.urgent.append(urgent)


def created_with_marks() -> tuple[MemoryKube, State, Marks]:
    """The object reconciled once (its children exist); from then on State's marks are recorded."""
    kube, state = setup()
    state.process((NS, "m"), frozenset({"create"}))
    marks = Marks()
    state.queue = marks  # type: ignore[assignment]
    return kube, state, marks


def test_the_store_seeing_an_unreported_generation_asks_for_a_status_refresh() -> None:
    """A safety net behind the reconcile's own status write: when the watch-fed store receives a
    generation whose status is not written yet, a (light) refresh is queued."""
    kube, state = setup()
    marks = Marks()
    state.queue = marks  # type: ignore[assignment]
    md = copy.deepcopy(stored(kube))
    md["metadata"]["generation"] = 2
    md["status"] = {"observedGeneration": 1}
    state.child_event("ModelDeployment", None, md)
    assert marks.marked == [((NS, "m"), "refresh")]
    md["status"] = {"observedGeneration": 2}  # our own status write coming back: nothing to do
    state.child_event("ModelDeployment", None, md)
    assert marks.marked == [((NS, "m"), "refresh")]


def test_a_modeldeployment_gone_from_its_store_is_forgotten() -> None:
    """The store's DELETED event (no kopf event handler: kopf ran one for every event of every
    object) drops the object's queued runs, queues the run that forgets its state, and forgets
    kopf's essence of it."""
    kube, state, marks = created_with_marks()
    md = copy.deepcopy(stored(kube))
    uid = str(md["metadata"]["uid"])
    state.diffbase._essences[uid] = b"x"
    state.child_event("ModelDeployment", md, md | {"status": {"observedGeneration": 1}})
    assert marks.discarded == [] and uid in state.diffbase._essences
    state.child_event("ModelDeployment", md, None)
    assert marks.discarded == [(NS, "m")]
    assert marks.marked[-1] == ((NS, "m"), "forget")
    assert uid not in state.diffbase._essences


def test_a_deployment_turning_available_is_refreshed_without_the_debounce() -> None:
    """Pod events are gathered for ``status_debounce_seconds``; the Deployment's availability
    changing is what Ready waits for, so its refresh is due at once (status lag, #12)."""
    kube, state, marks = created_with_marks()
    dep = kube.obj("Deployment", NS, "m")
    assert dep is not None
    dep = copy.deepcopy(dep)
    pod = {"metadata": {"name": "m-0", "namespace": NS, "labels": {"app.kubernetes.io/instance": "m"}}}
    state.child_event("Pod", None, pod)
    assert marks.marked == [((NS, "m"), "refresh")] and marks.delays == [state.config.status_debounce_seconds]
    available = copy.deepcopy(dep)
    available["status"] = {
        "availableReplicas": 1,
        "readyReplicas": 1,
        "updatedReplicas": 1,
        "conditions": [{"type": "Available", "status": "True"}],
    }
    state.child_event("Deployment", dep, available)
    assert marks.marked[-1] == ((NS, "m"), "refresh") and marks.delays[-1] == 0.0
    relabelled = copy.deepcopy(available)
    relabelled["metadata"]["resourceVersion"] = "999"  # nothing Ready depends on changed
    state.child_event("Deployment", available, relabelled)
    assert marks.delays[-1] == state.config.status_debounce_seconds


def test_forgetting_a_deleted_object_drops_its_queued_runs() -> None:
    """kopf's DELETED event: the queue keeps no run of the gone object (a refresh scheduled minutes
    ahead would keep its key, marks and futures alive until then), only the run that forgets it."""
    from modeldeploy.reconcile.workqueue import WorkQueue

    _, state = setup()
    state.queue = WorkQueue(state.process)  # not started: the marks stay queued
    scheduled = state.queue.mark_in((NS, "m"), 600.0)
    state.schedule(NS, "other", 600.0)
    state.forget(NS, "m")
    assert scheduled.result(timeout=0) is None
    pending = state.queue.pending((NS, "m"))
    assert pending is not None and pending <= 0, "the forgetting run, due at once"
    assert state.queue.pending((NS, "other")) is not None


def test_state_recorded_by_a_run_under_way_when_the_object_went_is_forgotten() -> None:
    """The object is deleted while a run of it is under way (its DELETED event arrives on kopf's
    loop meanwhile). The run records state at its end (here: its conditions on /metrics and its
    applied generation); the forgetting comes after it, so nothing of the object is left."""
    import threading

    from modeldeploy import metrics
    from modeldeploy.reconcile.workqueue import WorkQueue

    _, state = setup()
    rec = state.reconciler
    assert rec is not None
    started, release = threading.Event(), threading.Event()
    real_reconcile = rec.reconcile

    def slow_reconcile(body: dict[str, Any], trigger: str = "update") -> Any:
        started.set()
        release.wait(20)
        return real_reconcile(body, trigger)  # the store still held it when the run began

    rec.reconcile = slow_reconcile  # type: ignore[method-assign]
    state.queue = WorkQueue(state.process, workers=2).start()
    key = f"{NS}/m"
    try:
        state.queue.nudge((NS, "m"), "create")
        assert started.wait(20)
        state.forget(NS, "m")  # kopf's DELETED event, while the run is under way
        release.set()
        deadline = time.monotonic() + 20
        while state.queue.depth() or state.queue._running:
            assert time.monotonic() < deadline, "the queue did not drain"
            time.sleep(0.01)
        assert key not in metrics.CONDITIONS._by_md and key not in rec._applied
    finally:
        state.queue.stop()


def test_the_change_handler_marks_and_returns_before_the_run() -> None:
    """kopf's create/update handler does not wait for the run: an object of a burst costs kopf's
    per-object machinery only until its handler returned, not until its run is done (#12). The run
    then takes the body the handler was given."""
    from modeldeploy.handlers import handle_change
    from modeldeploy.reconcile.workqueue import WorkQueue

    kube, state = setup()
    release = threading.Event()
    ran: list[tuple[tuple[str, str], frozenset[str], int]] = []

    def process(key: tuple[str, str], reasons: frozenset[str]) -> None:
        release.wait(20)
        body = state.body(key)
        ran.append((key, reasons, body["spec"]["replicas"] if body else -1))

    state.queue = WorkQueue(process, workers=1).start()
    try:
        newer = copy.deepcopy(stored(kube))
        newer["spec"]["replicas"] = 4
        newer["metadata"]["generation"] += 1
        asyncio.run(asyncio.wait_for(handle_change(state, newer, "update"), 10))
        assert ran == [], "the handler waited for the run"
        release.set()
        deadline = time.monotonic() + 20
        while not ran and time.monotonic() < deadline:
            time.sleep(0.01)
        assert ran == [((NS, "m"), frozenset({"update"}), 4)]
    finally:
        release.set()
        state.queue.stop()


def test_the_change_handler_ends_a_spec_that_can_never_work_as_kopf_permanent_error() -> None:
    """An invalid spec is still marked (its run writes Ready=False, InvalidSpec, into the status)
    and kopf is told it can never work: no retries, no endless loop."""
    import kopf

    from modeldeploy.handlers import handle_change

    kube, state = setup()
    marks = Marks()
    state.queue = marks  # type: ignore[assignment]
    bad = copy.deepcopy(stored(kube))
    bad["spec"]["replicas"] = -1
    bad["metadata"]["generation"] += 1  # kopf saw it before the store
    with pytest.raises(kopf.PermanentError, match=r"InvalidSpec: .*replicas"):
        asyncio.run(handle_change(state, bad, "update"))
    assert marks.marked == [((NS, "m"), "update")] and marks.urgent == [True]
    with pytest.raises(InvalidSpec, match="replicas"):  # the run, with the body kopf handed over
        state.process((NS, "m"), frozenset({"update"}))
    ready = {c["type"]: c for c in stored(kube)["status"]["conditions"]}["Ready"]
    assert ready["status"] == "False" and ready["reason"] == "InvalidSpec" and "replicas" in ready["message"]


def test_a_controller_numbering_the_deployment_revision_is_not_drift() -> None:
    """The Deployment controller annotates every new Deployment with its revision: no drift
    reconcile of the owner for that (one per object at N = 1,000), but an annotation of ours
    edited or removed by hand, a label or the spec is drift."""
    kube, state, marks = created_with_marks()
    dep = kube.obj("Deployment", NS, "m")
    assert dep is not None
    ours = dict(dep["metadata"].get("annotations") or {})
    assert ours, "the rendered Deployment carries annotations of ours"
    numbered = copy.deepcopy(dep)
    numbered["metadata"]["annotations"] = {**ours, "deployment.kubernetes.io/revision": "1"}
    state.child_event("Deployment", dep, numbered)
    assert ((NS, "m"), "drift") not in marks.marked
    renumbered = copy.deepcopy(numbered)
    renumbered["metadata"]["annotations"]["deployment.kubernetes.io/revision"] = "2"
    state.child_event("Deployment", numbered, renumbered)
    assert ((NS, "m"), "drift") not in marks.marked
    for edit in (
        lambda d: d["metadata"]["annotations"].pop(next(iter(ours))),
        lambda d: d["metadata"]["annotations"].update({next(iter(ours)): "edited"}),
        lambda d: d["metadata"].setdefault("labels", {}).update({"x": "y"}),
        lambda d: d["spec"].update({"replicas": 5}),
    ):
        edited = copy.deepcopy(numbered)
        edit(edited)
        marks.marked.clear()
        state.child_event("Deployment", numbered, edited)
        assert ((NS, "m"), "drift") in marks.marked


def test_kopfs_essence_is_built_without_copying_the_status() -> None:
    """MemoryDiffBase.build builds kopf's essence from the spec, labels and annotations alone
    (kopf's deep-copies the whole body first, status and managedFields too, on every event): the
    same essence as kopf's, and the status no part of it."""
    import kopf

    from modeldeploy.handlers import MemoryDiffBase

    raw = copy.deepcopy(small_md(NS, "m", replicas=2))
    raw["metadata"] |= {
        "labels": {"team": "a"},
        "annotations": {
            "note": "kept",
            "kubectl.kubernetes.io/last-applied-configuration": "{}",
            "modeldeploy.io/kopf-managed": "yes",
            "modeldeploy.io/last-handled-configuration": "{}",
        },
        "managedFields": [{"manager": "kubectl", "fieldsV1": {"f:spec": {}}}],
        "resourceVersion": "7",
    }
    raw["status"] = {"observedGeneration": 1, "conditions": [{"type": "Ready", "status": "True"}]}
    ours = MemoryDiffBase().build(body=kopf.Body(copy.deepcopy(raw)))
    theirs = kopf.DiffBaseStorage.build(MemoryDiffBase(), body=kopf.Body(copy.deepcopy(raw)))
    assert ours == theirs
    assert "status" not in ours and ours["spec"]["replicas"] == 2
    assert ours["metadata"] == {"labels": {"team": "a"}, "annotations": {"note": "kept"}}
    essence = MemoryDiffBase().build(body=kopf.Body(raw))
    essence["spec"]["replicas"] = 9  # a copy: the body is not changed through it
    assert raw["spec"]["replicas"] == 2


def test_a_finish_mark_is_a_whole_pass_even_with_a_create_mark() -> None:
    kube, state = setup()
    assert state.reconciler is not None
    later: list[tuple[str, str, float]] = []
    state.reconciler.finish_later = lambda ns, name, seconds: later.append((ns, name, seconds))
    state.reconciler.backlogged = lambda: True
    state.process((NS, "m"), frozenset({"create"}))
    assert later and kube.obj("Service", NS, "m") is None  # staged
    state.process((NS, "m"), frozenset({"finish", "create"}))
    assert kube.obj("Service", NS, "m") is not None
    assert len(later) == 1
    assert stored(kube)["status"]["observedGeneration"] == 1


def test_a_staged_objects_pod_moves_its_finish_ahead_as_it_progresses() -> None:
    """A staged create's finish run goes to the front once its pod runs (tier 2), and once it is on
    a node (tier 1) but only when no create is queued any more: not while the burst's Deployments
    are still being written."""
    kube, state = setup()
    assert state.reconciler is not None
    marks: list[tuple[Any, ...]] = []

    class Queue:
        def nudge(self, key: Any, reason: str = "update", delay: float = 0.0, **kw: Any) -> None:
            marks.append((key, reason, kw.get("front", 0)))

    state.queue = Queue()  # type: ignore[assignment]
    state.reconciler.finish_later = lambda ns, name, seconds: None
    state.reconciler.backlogged = lambda: True
    state.mark(small_md(NS, "m"), "create")
    state.mark(small_md(NS, "other"), "create")  # another object's create, queued
    state.process((NS, "m"), frozenset({"create"}))
    assert state.reconciler.awaiting_finish(NS, "m")
    pod = {
        "metadata": {"namespace": NS, "name": "m-1", "labels": {"app.kubernetes.io/instance": "m"}},
        "spec": {},
    }
    state.child_event("Pod", None, pod)  # not on a node yet: only a refresh
    bound = copy.deepcopy(pod)
    bound["spec"]["nodeName"] = "node-0"
    bound["status"] = {"phase": "Pending"}
    state.child_event("Pod", pod, bound)
    assert [m for m in marks if m[1] == "finish"] == [], "a create is still queued"
    state.process((NS, "other"), frozenset({"create"}))  # the last queued create taken ...
    assert [m for m in marks if m[1] == "finish"] == [((NS, "m"), "finish", 1)], "... moves it"
    marks.clear()
    state.child_event("Pod", bound, bound)  # no create queued: moved on its own event
    assert [m for m in marks if m[1] == "finish"] == [((NS, "m"), "finish", 1)]
    marks.clear()
    pod, bound = bound, copy.deepcopy(bound)
    bound["status"]["phase"] = "Running"
    state.child_event("Pod", pod, bound)
    assert [m for m in marks if m[1] == "finish"] == [((NS, "m"), "finish", 2)]
    marks.clear()
    state.process((NS, "m"), frozenset({"finish"}))
    assert not state.reconciler.awaiting_finish(NS, "m")
    assert kube.obj("Service", NS, "m") is not None
    state.child_event("Pod", bound, bound)  # finished: no more finish marks
    assert all(reason != "finish" for _, reason, _ in marks), marks


def test_a_deleted_objects_queued_create_holds_back_no_promotion() -> None:
    """A create mark whose object went before its run is not counted as queued any more."""
    _, state = setup()
    marks: list[Any] = []

    class Queue:
        def nudge(self, *a: Any, **kw: Any) -> None:
            marks.append(a)

        def discard(self, key: Any) -> None:
            pass

    state.queue = Queue()  # type: ignore[assignment]
    state.mark(small_md(NS, "gone"), "create")
    on_node = {"spec": {"nodeName": "node-0"}}
    assert state._finish_tier((NS, "m"), on_node) == 0
    state.forget(NS, "gone")
    assert state._finish_tier((NS, "m"), on_node) == 1
    assert state._finish_tier((NS, "m"), {"spec": {}}) == 0
    assert state._finish_tier((NS, "m"), {"spec": {}, "status": {"phase": "Running"}}) == 2


def test_once_a_staged_pod_runs_during_the_creates_a_pod_on_a_node_moves_its_finish_at_once() -> None:
    """A burst too large for its creates to be written before pods start: once a staged object's
    pod runs while creates are queued, pods on a node move their finish runs ahead at once (tier 1),
    those that got on a node before first; when the last create is taken, that ends."""
    kube, state = setup()
    assert state.reconciler is not None
    kube.put(small_md(NS, "n", replicas=1))
    marks: list[tuple[Any, ...]] = []

    class Queue:
        def nudge(self, key: Any, reason: str = "update", delay: float = 0.0, **kw: Any) -> None:
            if reason == "finish":
                marks.append((key[1], kw.get("front", 0)))

    state.queue = Queue()  # type: ignore[assignment]
    state.reconciler.finish_later = lambda ns, name, seconds: None
    state.reconciler.backlogged = lambda: True
    for name in ("m", "n", "queued"):
        state.mark(small_md(NS, name), "create")
    for name in ("m", "n"):
        state.process((NS, name), frozenset({"create"}))
        assert state.reconciler.awaiting_finish(NS, name)

    def pod(owner: str, node: bool, phase: str = "Pending") -> dict[str, Any]:
        return {
            "metadata": {
                "namespace": NS,
                "name": f"{owner}-1",
                "labels": {"app.kubernetes.io/instance": owner},
            },
            "spec": {"nodeName": "node-0"} if node else {},
            "status": {"phase": phase},
        }

    state.child_event("Pod", None, pod("m", True))
    assert marks == [], "a create is queued and no staged pod ran yet"
    state.child_event("Pod", None, pod("n", True, "Running"))
    assert marks == [("m", 1), ("n", 2)], marks
    marks.clear()
    state.child_event("Pod", None, pod("m", True))  # still creating, but pods ran: moved at once
    assert marks == [("m", 1)]
    marks.clear()
    state.process((NS, "queued"), frozenset({"create"}))  # the burst's creates written: over
    state.mark(small_md(NS, "later"), "create")  # the next burst
    state.child_event("Pod", None, pod("m", True))
    assert marks == [], "a new burst's creates are queued and none of its pods ran"
