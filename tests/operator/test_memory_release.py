"""modeldeploy.memory on this (glibc) machine: freed heap comes back to the system.

In a fresh interpreter, four threads allocate 160 MiB as 8 KiB objects (the size of a stored
object's compressed JSON), all but every 64th are freed, and RSS is read before and after
``memory.release()``. Without the trim most of those pages stay with the process (glibc returns an
arena's memory only from its top, and the survivors pin it)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from typing import Any

PROBE = textwrap.dedent(
    """
    import json, threading
    from modeldeploy import memory

    def rss():
        for line in open("/proc/self/status"):
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024

    limited = memory.limit_arenas() if LIMIT else False
    kept = []
    def work():
        objs = [bytes(8192) + i.to_bytes(4, "little") for i in range(5000)]
        kept.extend(objs[::64])
        del objs
    before = rss()
    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads: t.start()
    for t in threads: t.join()
    freed = rss()
    released = memory.release()
    print(json.dumps({"before": before, "freed": freed, "trimmed": rss(), "released": released,
                      "limited": limited, "kept": len(kept)}))
    """
)


def probe(limit: bool) -> dict[str, float]:
    out = subprocess.run(
        [sys.executable, "-c", f"LIMIT = {limit}\n{PROBE}"], capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    result: dict[str, float] = json.loads(out.stdout)
    return result


def test_release_hands_freed_heap_back() -> None:
    r = probe(limit=True)
    print(r)
    assert r["limited"] and r["released"]
    assert r["freed"] - r["before"] > 60, "the probe did not keep its pages (nothing to trim)"
    assert r["trimmed"] - r["before"] < 30, r


def test_per_object_state_is_compact_and_dropped_on_forget() -> None:
    """The state kept per ModelDeployment outside the stores: kopf's last-handled essence (compressed
    bytes, decoded equal) and the condition counts of /metrics (a deleted object no longer counted)."""
    import kopf

    from modeldeploy import metrics
    from modeldeploy.handlers import MemoryDiffBase

    diffbase = MemoryDiffBase()
    body = kopf.Body({"metadata": {"uid": "u1", "name": "a"}, "spec": {"models": [{"name": "m", "x": None}]}})
    essence = diffbase.build(body=body)
    diffbase.store(body=body, patch=kopf.Patch(), essence=essence)
    assert isinstance(diffbase._essences["u1"], bytes)
    assert diffbase.fetch(body=body) == essence
    diffbase.forget("u1")
    assert diffbase.fetch(body=body) is None and not diffbase._essences

    tracker = metrics.ConditionTracker()

    def count(t: str, s: str) -> float:
        return (
            metrics.REGISTRY.get_sample_value(
                "modeldeploy_managed_modeldeployments", {"condition": t, "status": s}
            )
            or 0.0
        )

    def md(*conds: tuple[str, str]) -> dict[str, Any]:
        return {"status": {"conditions": [{"type": t, "status": s} for t, s in conds]}}

    tracker.stored(("ns", "a"), tracker.summary(md(("Ready", "True"), ("Degraded", "False"))))
    tracker.stored(("ns", "b"), tracker.summary(md(("Ready", "False"))))
    tracker.stored(("ns", "a"), tracker.summary(md(("Ready", "False"))))  # a change moves the count
    assert (count("Ready", "True"), count("Ready", "False"), count("Degraded", "Unknown")) == (0, 2, 2)
    assert tracker.summary({})[0] == "Unknown"  # no status yet
    tracker.stored(("ns", "a"), None)
    tracker.stored(("ns", "b"), None)
    tracker.stored(("ns", "never-seen"), None)
    assert len(tracker) == 0 and count("Ready", "False") == 0 and count("Degraded", "Unknown") == 0


def test_label_children_are_created_at_start_up() -> None:
    """``metrics.prime`` (State.start) exports, before any work, every series the work will move:
    the counts of requests and child writes per kind, reconciles per trigger and result, and the
    condition counts, at 0."""
    from prometheus_client import generate_latest

    from modeldeploy import metrics
    from modeldeploy.handlers import TRIGGERS
    from modeldeploy.reconcile.kube import REQUEST_KINDS
    from modeldeploy.render import CHILD_KINDS, child_kind

    def series() -> set[str]:
        text = generate_latest(metrics.REGISTRY).decode()
        return {line.rsplit(" ", 1)[0] for line in text.splitlines() if not line.startswith("#")}

    metrics.prime(TRIGGERS, REQUEST_KINDS, {child_kind(k) for k in CHILD_KINDS})
    after = series()  # (earlier tests in this process may have created some of them already)
    for want in (
        'modeldeploy_api_requests_total{kind="NetworkPolicy",verb="apply"}',
        'modeldeploy_api_requests_total{kind="Pod",verb="watch"}',
        'modeldeploy_child_writes_total{action="delete",kind="PodDisruptionBudget"}',
        'modeldeploy_child_writes_total{action="handover",kind="Deployment"}',
        'modeldeploy_reconcile_total{result="invalid",trigger="resync"}',
        'modeldeploy_reconcile_duration_seconds_count{trigger="drift"}',
        'modeldeploy_handler_latency_seconds_count{trigger="child-event"}',
        'modeldeploy_status_deferred_total{change="detail"}',
        'modeldeploy_managed_modeldeployments{condition="Degraded",status="Unknown"}',
    ):
        assert want in after, want


def test_kopf_lets_an_idle_per_object_worker_go_within_a_second(monkeypatch: Any) -> None:
    """kopf keeps a worker per object (a task, its queue, the object's last raw body) until it has
    been idle for ``queueing.idle_timeout``: 5 s by default, so a burst of 1,000 creations or
    deletions held 1,000 at once. The operator's startup sets it below a second, through kopf's
    current setting (the deprecated ``batching`` alias would warn)."""
    import warnings

    import kopf
    from kopf._core.intents.causes import Activity  # kopf exports no public handler lookup

    from modeldeploy import handlers
    from modeldeploy.reconcile.reconciler import OperatorConfig

    registry = kopf.OperatorRegistry()
    state = handlers.register(registry, OperatorConfig())
    monkeypatch.setattr(state, "start", lambda api_client=None: None)
    settings = kopf.OperatorSettings()
    default = settings.queueing.idle_timeout
    startup = registry._activities.get_handlers(activity=Activity.STARTUP)
    assert startup, "no startup handler registered"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for h in startup:
            h.fn(settings=settings)
    assert settings.queueing.idle_timeout <= 1.0 < default
