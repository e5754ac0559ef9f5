"""Prometheus metrics of the operator process (served on ``--metrics-port``, path /metrics)."""

from __future__ import annotations

import threading
from collections.abc import Hashable, Iterable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

REGISTRY = CollectorRegistry(auto_describe=True)

RECONCILES = Counter(
    "modeldeploy_reconcile_total",
    "Reconciles of ModelDeployments, by trigger and result (ok, error, invalid).",
    ["trigger", "result"],
    registry=REGISTRY,
)
RECONCILE_ERRORS = Counter(
    "modeldeploy_reconcile_errors_total",
    "Failed reconciles, by reason (conflict, transient, invalid_spec, error).",
    ["reason"],
    registry=REGISTRY,
)
RECONCILE_DURATION = Histogram(
    "modeldeploy_reconcile_duration_seconds",
    "Duration of one reconcile (render, compare, apply, status).",
    ["trigger"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
    registry=REGISTRY,
)
HANDLER_LATENCY = Histogram(
    "modeldeploy_handler_latency_seconds",
    "Queue latency: from the change of a ModelDeployment (its last write by another manager) or a "
    "child event, to the start of the handler that processes it.",
    ["trigger"],
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
    registry=REGISTRY,
)
WATCH_EVENT_AGE = Histogram(
    "modeldeploy_watch_event_age_seconds",
    "Age of a watch event of a Deployment or ModelDeployment when the operator handles it: now "
    "minus the object's latest managedFields time (whole seconds: up to 1 s more than the real age).",
    ["kind"],
    buckets=(1, 1.5, 2, 3, 5, 10, 30, 60),
    registry=REGISTRY,
)
API_REQUESTS = Counter(
    "modeldeploy_api_requests_total",
    "Kubernetes API requests made by the reconciler, by verb and kind.",
    ["verb", "kind"],
    registry=REGISTRY,
)
CHILD_WRITES = Counter(
    "modeldeploy_child_writes_total",
    "Children applied or deleted because they differed from the desired state.",
    ["kind", "action"],
    registry=REGISTRY,
)
STATUS_WRITES = Counter(
    "modeldeploy_status_writes_total", "Status patches of ModelDeployments.", registry=REGISTRY
)
RESYNC_PASSES = Counter(
    "modeldeploy_resync_passes_total",
    "Passes of the resync loop (each marks every ModelDeployment in scope, then trims the heap).",
    registry=REGISTRY,
)
CACHE_OBJECTS = Gauge(
    "modeldeploy_cache_objects",
    "Objects held in the operator's watch-fed stores, by kind.",
    ["kind"],
    registry=REGISTRY,
)
STATUS_DEFERRED = Counter(
    "modeldeploy_status_deferred_total",
    "Status changes held back until their per-object interval ended, by kind of change.",
    ["change"],
    registry=REGISTRY,
)
MANAGED = Gauge(
    "modeldeploy_managed_modeldeployments",
    "ModelDeployments managed by this operator, by condition type and the status the API server holds.",
    ["condition", "status"],
    registry=REGISTRY,
)


#: Label values of the counters and histograms (those not in one of them are created on first use).
RESULTS = ("ok", "error", "invalid")
ERROR_REASONS = ("conflict", "transient", "invalid_spec", "error")
LATENCY_TRIGGERS = ("create", "update", "refresh", "child-event")
EVENT_AGE_KINDS = ("Deployment", "ModelDeployment")
VERBS = ("get", "list", "watch", "apply", "patch_status", "create", "delete")
WRITE_ACTIONS = ("apply", "delete")
DEFERRED_CHANGES = ("progress", "detail")


def prime(triggers: Iterable[str], kinds: Iterable[str], child_kinds: Iterable[str]) -> None:
    """Create the label children the operator's work uses, at start-up (Prometheus' advice: a
    series that appears only at its first increment hides that increment from ``rate()``). It also
    places these long-lived objects in the small heap of an idle process: created on first use,
    each would land somewhere in the memory of the first burst of work and keep that allocator
    arena from being handed back once the burst's objects are freed."""
    triggers, kinds, child_kinds = tuple(triggers), tuple(kinds), tuple(child_kinds)
    for t in triggers:
        RECONCILE_DURATION.labels(trigger=t)
        for r in RESULTS:
            RECONCILES.labels(trigger=t, result=r)
    for reason in ERROR_REASONS:
        RECONCILE_ERRORS.labels(reason=reason)
    for t in LATENCY_TRIGGERS:
        HANDLER_LATENCY.labels(trigger=t)
    for k in EVENT_AGE_KINDS:
        WATCH_EVENT_AGE.labels(kind=k)
    for k in kinds:
        for v in VERBS:
            API_REQUESTS.labels(verb=v, kind=k)
    for k in child_kinds:
        for a in WRITE_ACTIONS:
            CHILD_WRITES.labels(kind=k, action=a)
    CHILD_WRITES.labels(kind="Deployment", action="handover")
    for c in DEFERRED_CHANGES:
        STATUS_DEFERRED.labels(change=c)
    CONDITIONS.export()  # every (condition, status) count, at 0


class ConditionTracker:
    """Counts the stored ModelDeployments by the status of each condition type, exported as MANAGED.

    Fed by the ModelDeployment store (:class:`modeldeploy.reconcile.informer.Informer`'s
    ``tracker``), under the store's lock, with each object it keeps (watch events and the answers
    of our own status writes) and each one it lets go: the counts say what the API server holds,
    never a status the operator only computed, and an object the watch saw deleted is no longer
    counted whatever a run of it still under way does. Kept as counts: a change or a deletion
    costs O(1), not a pass over every object."""

    TYPES = ("Ready", "ModelsReady", "Progressing", "Degraded")
    STATUSES = ("True", "False", "Unknown")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        #: the store's key -> the status of each of TYPES, as one tuple of interned strings
        self._by_md: dict[Hashable, tuple[str, ...]] = {}
        self._counts = {(t, s): 0 for t in self.TYPES for s in self.STATUSES}

    def summary(self, obj: dict[str, Any]) -> tuple[str, ...]:
        """What is counted of ``obj``: the status of each of TYPES in its stored status."""
        conds = {
            c.get("type"): c.get("status")
            for c in ((obj.get("status") or {}).get("conditions") or [])
            if isinstance(c, dict)
        }
        return tuple(self._status(conds.get(t)) for t in self.TYPES)

    def stored(self, key: Hashable, summary: tuple[str, ...] | None) -> None:
        """The store now holds ``key`` with ``summary`` (None: it no longer holds it)."""
        with self._lock:
            old = self._by_md.pop(key, None) if summary is None else self._by_md.get(key)
            if summary is not None:
                self._by_md[key] = summary
            if old != summary:
                self._move(old, summary)

    def export(self) -> None:
        """Export every (condition, status) count as it stands (0 before anything is stored)."""
        with self._lock:
            self._move(None, None)

    def __len__(self) -> int:
        with self._lock:
            return len(self._by_md)

    def _status(self, value: object) -> str:
        return next((s for s in self.STATUSES if s == value), "Unknown")  # the interned one

    def _move(self, old: tuple[str, ...] | None, new: tuple[str, ...] | None) -> None:
        for i, t in enumerate(self.TYPES):
            if old is not None:
                self._counts[(t, old[i])] -= 1
            if new is not None:
                self._counts[(t, new[i])] += 1
        for (t, s), n in self._counts.items():
            MANAGED.labels(condition=t, status=s).set(n)


CONDITIONS = ConditionTracker()


def serve(port: int, addr: str = "0.0.0.0") -> None:
    """Serve /metrics on ``addr:port`` in a daemon thread."""
    start_http_server(port, addr=addr, registry=REGISTRY)
