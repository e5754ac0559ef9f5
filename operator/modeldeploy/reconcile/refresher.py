"""Debounced status refreshes: child events (Deployment, pods) mark their owner dirty; a worker
thread recomputes each dirty ModelDeployment's status at most once per debounce window.

Time-based transitions (the end of an in-place manifest's propagation window, an in-place load
timeout) are scheduled with :meth:`StatusRefresher.mark_in`, so the status changes when they fall
due rather than at the next resync. One refresh per object is pending at a time: the earliest wins,
and each refresh schedules the next due time it finds."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from modeldeploy import metrics

log = logging.getLogger("modeldeploy.refresher")


class StatusRefresher:
    def __init__(
        self, refresh: Callable[[str, str], object], debounce: float = 0.3, workers: int = 2
    ) -> None:
        self._refresh = refresh
        self._debounce = debounce
        self._due: dict[tuple[str, str], tuple[float, float]] = {}  # key -> (due, first marked)
        self._cond = threading.Condition()
        self._stop = False
        self._threads = [
            threading.Thread(target=self._run, name=f"status-refresher-{i}", daemon=True)
            for i in range(workers)
        ]
        self._busy: set[tuple[str, str]] = set()

    def start(self) -> StatusRefresher:
        for t in self._threads:
            t.start()
        return self

    def stop(self) -> None:
        with self._cond:
            self._stop = True
            self._cond.notify_all()

    def mark(self, namespace: str, name: str) -> None:
        """Refresh soon (after the debounce window): something about the object changed."""
        now = time.monotonic()
        self._mark((namespace, name), now + self._debounce, now)

    def mark_in(self, namespace: str, name: str, seconds: float) -> None:
        """Refresh in ``seconds``: a time-based transition falls due then."""
        due = time.monotonic() + max(0.0, seconds)
        self._mark((namespace, name), due, due)

    def _mark(self, key: tuple[str, str], due: float, first: float) -> None:
        with self._cond:
            cur = self._due.get(key)
            if cur is None or cur[0] > due:
                self._due[key] = (due, min(first, cur[1]) if cur else first)
                self._cond.notify_all()

    def pending(self, namespace: str, name: str) -> float | None:
        """Seconds until the pending refresh of the object (None: none pending)."""
        with self._cond:
            cur = self._due.get((namespace, name))
        return None if cur is None else cur[0] - time.monotonic()

    def _next(self) -> tuple[tuple[str, str], float] | None:
        with self._cond:
            while not self._stop:
                now = time.monotonic()
                ready = [(d, k) for k, (d, _) in self._due.items() if d <= now and k not in self._busy]
                if ready:
                    _, key = min(ready)
                    _, first = self._due.pop(key)
                    self._busy.add(key)
                    return key, first
                waits = [d - now for k, (d, _) in self._due.items() if k not in self._busy]
                self._cond.wait(timeout=min(waits) if waits else 1.0)
            return None

    def _run(self) -> None:
        while True:
            item = self._next()
            if item is None:
                return
            (ns, name), first = item
            metrics.HANDLER_LATENCY.labels(trigger="child-event").observe(time.monotonic() - first)
            try:
                self._refresh(ns, name)
            except Exception as exc:
                log.warning("status refresh of %s/%s failed: %s", ns, name, exc)
            finally:
                with self._cond:
                    self._busy.discard((ns, name))
                    self._cond.notify()
