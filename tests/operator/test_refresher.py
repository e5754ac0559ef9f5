"""Status refreshes through the work queue (real worker threads, real clock: a scheduled refresh
runs when due, a change does not wait for it) and the manifest-revision bookkeeping."""

from __future__ import annotations

import queue
import time

from modeldeploy.reconcile.reconciler import mounted_configmaps
from modeldeploy.reconcile.workqueue import WorkQueue


def refresher() -> tuple[WorkQueue, queue.Queue[tuple[str, str, float]]]:
    calls: queue.Queue[tuple[str, str, float]] = queue.Queue()
    r = WorkQueue(lambda key, _reasons: calls.put((*key, time.monotonic())), workers=2).start()
    return r, calls


def test_a_scheduled_refresh_runs_when_due_not_before() -> None:
    r, calls = refresher()
    try:
        t0 = time.monotonic()
        r.mark_in(("ns", "a"), 1.0)
        r.mark_in(("ns", "a"), 30)  # a later due time does not postpone the earlier one
        ns, name, at = calls.get(timeout=10)
        assert (ns, name) == ("ns", "a")
        assert 1.0 <= at - t0 < 3.0, at - t0
        assert r.pending(("ns", "a")) is None, "one refresh per due time"
    finally:
        r.stop()


def test_a_change_does_not_wait_for_a_scheduled_refresh() -> None:
    r, calls = refresher()
    try:
        r.mark_in(("ns", "a"), 60)
        t0 = time.monotonic()
        r.mark(("ns", "a"), "refresh", delay=0.05)  # debounced, like a child's event
        _, _, at = calls.get(timeout=10)
        assert at - t0 < 2.0
        r.mark_in(("ns", "a"), 60)
        pending = r.pending(("ns", "a"))
        assert pending is not None and 50 < pending <= 60
    finally:
        r.stop()


def rs(name: str, cm: str, replicas: int, have: int = 0) -> dict[str, object]:
    return {
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "template": {"spec": {"volumes": [{"name": "model-manifest", "configMap": {"name": cm}},
                                              {"name": "dshm", "emptyDir": {}}]}},
        },
        "status": {"replicas": have},
    }  # fmt: skip


def test_only_replicasets_with_pods_keep_their_manifest() -> None:
    sets = [rs("a", "m-models-1", 0), rs("b", "m-models-2", 0, have=1), rs("c", "m-models-3", 2)]
    assert mounted_configmaps(sets) == {"m-models-2", "m-models-3"}  # (b: scaling down, pods left)
