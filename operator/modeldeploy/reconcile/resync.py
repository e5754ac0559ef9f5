"""Level-based resync without kopf timers.

kopf's timers and daemons put a finalizer on every object (so that they can be stopped before the
object goes), which would leave ModelDeployments stuck in deletion while the operator is down. This
loop instead takes the ModelDeployments in scope every ``interval`` seconds and marks each in the
operator's work queue (reconcile/workqueue.py: coalesced with any other trigger of the object, never
run concurrently with one, within the queue's bound), whose reconcile reads the object's latest
state and writes nothing when nothing changed. With the operator's
:class:`~modeldeploy.reconcile.cache.CachedKube` the list and every read of the reconcile come from
the watch-fed stores (no API read at all in the steady state); hand edits are normally repaired
sooner, through the children's watch events (see modeldeploy.handlers), and this loop is the
backstop. Each pass also hands the heap pages freed since the last one back to the system
(:func:`modeldeploy.memory.release`, a few milliseconds), so that RSS follows a shrinking workload
even when no store shrank by a lot at once.
"""

from __future__ import annotations

import fnmatch
import logging
import threading
from collections.abc import Callable, Sequence

from modeldeploy import memory, metrics
from modeldeploy.reconcile.kube import MODELDEPLOYMENT, Kube

log = logging.getLogger("modeldeploy.resync")


def in_scope(namespace: str, patterns: Sequence[str]) -> bool:
    return not patterns or any(fnmatch.fnmatchcase(namespace, p) for p in patterns)


class ResyncLoop:
    def __init__(
        self,
        kube: Kube,
        mark: Callable[[tuple[str, str]], object],
        interval: float,
        namespaces: Sequence[str] = (),
    ) -> None:
        self.kube = kube
        self.mark = mark
        self.interval = interval
        self.namespaces = list(namespaces)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="resync", daemon=True)

    def start(self) -> ResyncLoop:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def keys(self) -> list[tuple[str, str]]:
        """(namespace, name) of every ModelDeployment in scope that is not being deleted (from the
        store's index where the kube keeps one: no object is decoded for a pass)."""
        exact = [p for p in self.namespaces if not any(ch in p for ch in "*?[")]
        if self.namespaces and len(exact) == len(self.namespaces):
            keys: list[tuple[str, str]] = []
            for ns in exact:
                keys.extend(self.kube.list_keys(MODELDEPLOYMENT, ns))
            return keys
        return [k for k in self.kube.list_keys(MODELDEPLOYMENT, None) if in_scope(k[0], self.namespaces)]

    def run_once(self) -> int:
        """Mark every ModelDeployment in scope (the queue runs them); how many were marked."""
        keys = self.keys()
        for key in keys:
            self.mark(key)
        return len(keys)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.run_once()
            except Exception as exc:
                log.warning("resync: listing ModelDeployments failed: %s", exc)
            memory.release()
            metrics.RESYNC_PASSES.inc()
