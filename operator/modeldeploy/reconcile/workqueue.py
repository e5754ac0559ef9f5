"""The operator's one work queue (client-go workqueue semantics), through which every reconcile and
status refresh of a ModelDeployment runs.

* Keys are ``(namespace, name)``. A key marked many times before it runs is run once (the *dirty*
  set): the marks' reasons are merged and handed to the run together.
* A key is never run by two workers at once: a mark while it runs queues it once more, for after.
* ``workers`` threads run different keys in parallel (the bound), earliest due first; besides them
  ``light_workers`` threads take only ``light`` marks (status refreshes: cheap, and the status lag
  should not wait behind a backlog of reconciles of other objects). Light marks are kept apart from
  the key's other pending marks: a refresh of an object whose resync or drift repair is queued
  behind a backlog (a resync pass marks every object at once) runs as soon as a light worker is
  free, not when the backlog reaches that object. A general worker that takes the key's other marks
  takes its pending light marks along (a reconcile ends with a status refresh).
* Runs whose reasons are all ``background`` (the periodic resync: a level-based backstop, pure CPU
  on the watch-fed stores) run at most ``background_workers`` at once. More of them in parallel
  would not finish a pass sooner (one interpreter lock) but would take the CPU from the informer
  threads and the light workers, which then see and report a Deployment turning Available late.
* :meth:`WorkQueue.mark` with ``delay`` debounces (the earliest due time of the pending marks wins:
  a later mark never postpones a pending run); :meth:`WorkQueue.mark_in` schedules a run for when a
  time-based transition falls due.
* A run that raises a *retryable* exception is queued again after a per-key exponential backoff
  (``backoff_base`` doubling up to ``backoff_cap``; reset by a success). Until then only *urgent*
  marks (a spec change) run it sooner. One of the ``permanent`` exception types ends the attempt:
  the key waits for a new mark.
* Each mark returns a :class:`~concurrent.futures.Future` of the outcome of the first run that
  *starts after* the mark (its result, or its exception), so an ``async`` handler can await it with
  :func:`asyncio.wrap_future` instead of blocking. :meth:`WorkQueue.nudge` and
  :meth:`WorkQueue.nudge_in` mark the same way without a Future, for callers that do not wait;
  :meth:`WorkQueue.discard` forgets a key whose object is gone.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger("modeldeploy.workqueue")

Key = tuple[str, str]
#: (key, reasons of the marks it serves) -> outcome
Process = Callable[[Key, frozenset[str]], Any]


@dataclass
class _Pending:
    due: float
    first: float  # when the earliest of its marks was made (queue latency)
    reasons: set[str] = field(default_factory=set)
    futures: list[Future[Any]] = field(default_factory=list)
    urgent: bool = False  # a spec change among its marks: not held back by a backoff


class WorkQueue:
    def __init__(
        self,
        process: Process,
        workers: int = 8,
        *,
        light_workers: int = 0,
        light: frozenset[str] = frozenset(),
        background: frozenset[str] = frozenset(),
        background_workers: int = 0,
        permanent: tuple[type[BaseException], ...] = (),
        backoff_base: float = 0.5,
        backoff_cap: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
        on_start: Callable[[Key, frozenset[str], float], None] | None = None,
        name: str = "reconcile",
    ) -> None:
        if workers < 1:
            raise ValueError("workers must be at least 1")
        self._process = process
        self._permanent = permanent
        self._light = light
        self._background = background
        self._background_limit = background_workers  # 0: no limit of its own
        self._background_running: set[Key] = set()
        self.backoff_base = backoff_base
        self.backoff_cap = backoff_cap
        self._clock = clock
        self._on_start = on_start
        self._pending: dict[Key, _Pending] = {}
        #: light marks, apart (only with light workers: without, light marks join the others)
        self._light_pending: dict[Key, _Pending] = {}
        self._light_apart = light_workers > 0
        self._running: set[Key] = set()
        self._failures: dict[Key, int] = {}
        self._not_before: dict[Key, float] = {}  # backoff: non-urgent marks wait until then
        self._cond = threading.Condition()
        self._stop = False
        self._threads = [
            threading.Thread(target=self._run, args=(False,), name=f"{name}-worker-{i}", daemon=True)
            for i in range(workers)
        ] + [
            threading.Thread(target=self._run, args=(True,), name=f"{name}-light-{i}", daemon=True)
            for i in range(light_workers)
        ]

    # ------------------------------------------------------------------ control
    def start(self) -> WorkQueue:
        for t in self._threads:
            t.start()
        return self

    def stop(self) -> None:
        with self._cond:
            self._stop = True
            self._cond.notify_all()

    def poke(self) -> None:
        """Re-evaluate due times now (after an injected clock moved)."""
        with self._cond:
            self._cond.notify_all()

    # -------------------------------------------------------------------- marks
    def mark(
        self, key: Key, reason: str = "update", delay: float = 0.0, *, urgent: bool = False
    ) -> Future[Any]:
        """Run ``key`` in ``delay`` seconds (or sooner, if already due sooner)."""
        fut: Future[Any] = Future()
        now = self._clock()
        self._mark(key, reason, now + max(0.0, delay), now, urgent, fut)
        return fut

    def nudge(self, key: Key, reason: str = "update", delay: float = 0.0, *, urgent: bool = False) -> None:
        """:meth:`mark` for a caller that does not wait for the run: no Future is made (a resync
        pass marks every object; a Future each, kept until its run, was a few hundred bytes of
        short-lived objects per object and mark)."""
        now = self._clock()
        self._mark(key, reason, now + max(0.0, delay), now, urgent, None)

    def mark_in(self, key: Key, seconds: float, reason: str = "refresh") -> Future[Any]:
        """Run ``key`` in ``seconds``: a time-based transition falls due then."""
        fut: Future[Any] = Future()
        due = self._clock() + max(0.0, seconds)
        self._mark(key, reason, due, due, False, fut)
        return fut

    def nudge_in(self, key: Key, seconds: float, reason: str = "refresh") -> None:
        """:meth:`mark_in` without a Future (see :meth:`nudge`)."""
        due = self._clock() + max(0.0, seconds)
        self._mark(key, reason, due, due, False, None)

    def mark_all(self, keys: Iterable[Key], reason: str, delay: float = 0.0) -> None:
        for key in keys:
            self.nudge(key, reason, delay)

    def _mark(
        self, key: Key, reason: str, due: float, first: float, urgent: bool, fut: Future[Any] | None
    ) -> None:
        with self._cond:
            if not urgent:
                due = max(due, self._not_before.get(key, due))
            table = self._table(frozenset({reason}))
            cur = table.get(key)
            if cur is None:
                cur = table[key] = _Pending(due=due, first=first)
            else:
                cur.due, cur.first = min(cur.due, due), min(cur.first, first)
            cur.reasons.add(reason)
            cur.urgent = cur.urgent or urgent
            if fut is not None:
                cur.futures.append(fut)
            self._cond.notify_all()

    def _table(self, reasons: frozenset[str] | set[str]) -> dict[Key, _Pending]:
        """Where marks with ``reasons`` wait: apart when all are light (and light workers exist)."""
        return self._light_pending if self._light_apart and reasons <= self._light else self._pending

    def discard(self, key: Key) -> None:
        """Forget ``key`` (its object is gone): its pending marks (their futures get ``None``, what
        a run of a gone object returns), its failure count and backoff. A run in progress
        finishes; a later mark queues it anew. Refreshes scheduled minutes ahead (a status
        interval, a propagation window) would otherwise outlive the object that long."""
        with self._cond:
            dropped = [p for t in (self._pending, self._light_pending) if (p := t.pop(key, None)) is not None]
            self._failures.pop(key, None)
            self._not_before.pop(key, None)
        for p in dropped:
            for fut in p.futures:
                fut.set_result(None)

    # ---------------------------------------------------------------- inspection
    def pending(self, key: Key) -> float | None:
        """Seconds until the next pending run of ``key`` (None: none pending)."""
        with self._cond:
            dues = [t[key].due for t in (self._pending, self._light_pending) if key in t]
            return min(dues) - self._clock() if dues else None

    def failures(self, key: Key) -> int:
        with self._cond:
            return self._failures.get(key, 0)

    def depth(self) -> int:
        with self._cond:
            return len(self._pending.keys() | self._light_pending.keys())

    def backoff(self, failures: int) -> float:
        return float(min(self.backoff_cap, self.backoff_base * 2 ** max(0, failures - 1)))

    # ------------------------------------------------------------------ workers
    def _next(self, light_only: bool) -> tuple[Key, _Pending] | None:
        with self._cond:
            while not self._stop:
                now = self._clock()
                best: tuple[float, Key, bool] | None = None  # (due, key, from the light table)
                wait: float | None = None
                tables = (self._light_pending,) if light_only else (self._pending, self._light_pending)
                for table in tables:
                    apart = table is self._light_pending
                    for k, p in table.items():
                        if k in self._running:  # (the light table holds light marks only)
                            continue
                        if apart and not light_only and k in self._pending:
                            continue  # taken along with the key's other marks, when they are due
                        if not apart and self._held_back(p.reasons):
                            continue
                        if p.due <= now:
                            best = (p.due, k, apart) if best is None or (p.due, k) < best[:2] else best
                        else:
                            wait = p.due - now if wait is None else min(wait, p.due - now)
                if best is not None:
                    _, key, apart = best
                    self._running.add(key)
                    work = self._take(key, apart)
                    if self._is_background(work.reasons):
                        self._background_running.add(key)
                    return key, work
                self._cond.wait(timeout=min(wait, 1.0) if wait is not None else 1.0)
            return None

    def _is_background(self, reasons: set[str] | frozenset[str]) -> bool:
        return bool(self._background_limit) and reasons <= self._background

    def _held_back(self, reasons: set[str]) -> bool:
        """A background run, while ``background_workers`` of them run already."""
        return self._is_background(reasons) and len(self._background_running) >= self._background_limit

    def _take(self, key: Key, light_only: bool) -> _Pending:
        """Pop the marks of ``key`` a run serves: its light marks alone, or all of them."""
        light = self._light_pending.pop(key, None)
        if light_only:
            assert light is not None
            return light
        work = self._pending.pop(key, None)
        if work is None:
            assert light is not None
            return light
        if light is not None:
            work.reasons |= light.reasons
            work.futures.extend(light.futures)
            work.first = min(work.first, light.first)
        return work

    def _run(self, light_only: bool) -> None:
        while self._run_one(light_only):
            pass

    def _run_one(self, light_only: bool) -> bool:
        """Take and run one key; False once stopped. (A method of its own: a worker waiting for
        the next key keeps nothing of its last run, whose result or exception, with the frames
        of its traceback, would otherwise stay referenced by the loop's locals until then.)"""
        item = self._next(light_only)
        if item is None:
            return False
        key, work = item
        reasons = frozenset(work.reasons)
        if self._on_start is not None:
            self._on_start(key, reasons, max(0.0, self._clock() - work.first))
        try:
            result = self._process(key, reasons)
        except BaseException as exc:
            self._failed(key, work, exc)
        else:
            self._done(key, work, result)
        return True

    def _done(self, key: Key, work: _Pending, result: Any) -> None:
        with self._cond:
            if not (self._light_apart and work.reasons <= self._light and key in self._pending):
                # a refresh that went well says nothing of the key's reconcile waiting in backoff
                self._failures.pop(key, None)
                self._not_before.pop(key, None)
            self._running.discard(key)
            self._background_running.discard(key)
            self._cond.notify_all()
        for fut in work.futures:
            fut.set_result(result)

    def _failed(self, key: Key, work: _Pending, exc: BaseException) -> None:
        with self._cond:
            self._running.discard(key)
            self._background_running.discard(key)
            if isinstance(exc, self._permanent):
                self._failures.pop(key, None)
                self._not_before.pop(key, None)
            else:
                n = self._failures[key] = self._failures.get(key, 0) + 1
                due = self._clock() + self.backoff(n)
                self._not_before[key] = due
                log.info("%s/%s failed (%s); retrying in %.1fs", *key, exc, due - self._clock())
                table = self._table(work.reasons)
                retry = table.get(key)
                if retry is None:
                    retry = table[key] = _Pending(due=due, first=due)
                elif not retry.urgent:  # marked while it ran: served by the retry, after the backoff
                    retry.due = max(retry.due, due)
                retry.reasons |= work.reasons
            self._cond.notify_all()
        for fut in work.futures:
            fut.set_exception(exc)
