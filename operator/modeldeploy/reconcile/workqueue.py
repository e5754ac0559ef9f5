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

How it stays cheap with thousands of keys pending (a burst, a resync pass): the pending marks are
kept in heaps by due time (then key), so a worker takes the earliest run it may take in O(log n)
instead of scanning every pending key; an entry goes stale when its key's marks move, run or are
dropped, and is skipped when it comes up. Each worker waits on a condition of its own (all on the
queue's one lock), so a mark wakes one worker of a kind that can take it, and none while one of
that kind is already looking; a worker that takes a run wakes the next while more are due (a
chain: as many workers wake as there are runs to take). Of each kind's idle workers one, the
timer, sleeps until the earliest run that is not due yet (a mark or a run's end with a sooner due
time wakes it to sleep less); the others wait until woken.
"""

from __future__ import annotations

import heapq
import itertools
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
#: A heap entry: (due, key, seq); current while the key's pending marks carry that seq.
_Entry = tuple[float, Key, int]

_GENERAL, _LIGHT = 0, 1  # the kinds of workers
#: The longest the timer (see _sleep) sleeps before it looks again; never longer than until the
#: earliest due mark. Only an injected clock that moved without a poke() needs it.
_MAX_WAIT = 1.0
#: How far before now a nudge to the front is due, per tier: more than any real due time of the
#: queue's runs can lie in the past, so tiers never mix with each other or with the others.
_FRONT_SPAN = 1e9


@dataclass(eq=False)
class _Pending:
    due: float
    first: float  # when the earliest of its marks was made (queue latency)
    reasons: set[str] = field(default_factory=set)
    futures: list[Future[Any]] = field(default_factory=list)
    urgent: bool = False  # a spec change among its marks: not held back by a backoff
    seq: int = 0  # of its current heap entry (older entries of the key are stale)


class _Waiter:
    """One worker's own wake-up: a Condition on the queue's lock, so that a notify wakes exactly
    the worker it is meant for. ``woken``: set by whoever woke it (and counted it as searching)."""

    __slots__ = ("at", "cond", "woken")

    def __init__(self, lock: threading.Lock) -> None:
        self.cond = threading.Condition(lock)
        self.woken = False
        self.at = 0.0  # as the timer: the due time it sleeps until


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
        # The pending runs by due time (then key), each table's entries in heaps: _pending's
        # background-only ones apart (held back while background_workers run), _light_pending's
        # all for the light workers and again those of keys without other marks (the general
        # workers take these too). An entry goes stale when its key's marks move (a new entry
        # with a new seq), run or are dropped; stale ones are skipped when they come up, and
        # entries of a running key too (its marks are pushed anew when its run ends).
        self._due: list[_Entry] = []
        self._due_background: list[_Entry] = []
        self._due_light: list[_Entry] = []
        self._due_alone: list[_Entry] = []
        self._general_heaps = (
            (self._due, self._pending, False),
            (self._due_background, self._pending, False),
            (self._due_alone, self._light_pending, True),
        )
        self._seq = itertools.count(1)
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)  # `with q._cond`: the queue's lock
        self._kinds = (_LIGHT, _GENERAL) if self._light_apart else (_GENERAL,)
        #: per kind: workers awake and looking for a key (or woken to), idle ones, the timer
        self._searching = [0, 0]
        self._idle: tuple[list[_Waiter], list[_Waiter]] = ([], [])
        self._timer: list[_Waiter | None] = [None, None]
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
        with self._lock:
            self._stop = True
            for kind in (_GENERAL, _LIGHT):
                for w in [*self._idle[kind], self._timer[kind]]:
                    if w is not None:
                        w.cond.notify()

    def poke(self) -> None:
        """Re-evaluate due times now (after an injected clock moved)."""
        with self._lock:
            for kind in self._kinds:
                self._wake_timer(kind)
            self._kick()

    # -------------------------------------------------------------------- marks
    def mark(
        self, key: Key, reason: str = "update", delay: float = 0.0, *, urgent: bool = False
    ) -> Future[Any]:
        """Run ``key`` in ``delay`` seconds (or sooner, if already due sooner)."""
        fut: Future[Any] = Future()
        now = self._clock()
        self._mark(key, reason, now + max(0.0, delay), now, urgent, fut)
        return fut

    def nudge(
        self,
        key: Key,
        reason: str = "update",
        delay: float = 0.0,
        *,
        urgent: bool = False,
        front: int = 0,
    ) -> None:
        """:meth:`mark` for a caller that does not wait for the run: no Future is made (a resync
        pass marks every object; a Future each, kept until its run, was a few hundred bytes of
        short-lived objects per object and mark). ``front`` (a tier, 1 and up): due before every
        pending run of a lower tier (0: those not put in front), and within its tier after the runs
        put there before it, so the next free worker takes the most urgent, oldest first (a
        backoff still holds it back). A key already in front moves only to a higher tier."""
        now = self._clock()
        due = now - front * _FRONT_SPAN if front > 0 else now + max(0.0, delay)
        self._mark(key, reason, due, now, urgent, None)

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
        with self._lock:
            if not urgent:
                due = max(due, self._not_before.get(key, due))
            table = self._table({reason})
            light = table is self._light_pending
            cur = table.get(key)
            if cur is None:
                cur = table[key] = _Pending(due=due, first=first)
                moved = True
            else:
                # sooner, or a background run joined by other work (no longer held back)
                moved = due < cur.due or (
                    not light and reason not in self._background and self._is_background(cur.reasons)
                )
                cur.due, cur.first = min(cur.due, due), min(cur.first, first)
            cur.reasons.add(reason)
            cur.urgent = cur.urgent or urgent
            if fut is not None:
                cur.futures.append(fut)
            if moved and key not in self._running:
                self._push(key, cur, light)
                self._compact()
                self._kick()

    def _table(self, reasons: frozenset[str] | set[str]) -> dict[Key, _Pending]:
        """Where marks with ``reasons`` wait: apart when all are light (and light workers exist)."""
        return self._light_pending if self._light_apart and reasons <= self._light else self._pending

    def discard(self, key: Key) -> None:
        """Forget ``key`` (its object is gone): its pending marks (their futures get ``None``, what
        a run of a gone object returns), its failure count and backoff. A run in progress
        finishes; a later mark queues it anew. Refreshes scheduled minutes ahead (a status
        interval, a propagation window) would otherwise outlive the object that long."""
        with self._lock:
            dropped = [p for t in (self._pending, self._light_pending) if (p := t.pop(key, None)) is not None]
            self._failures.pop(key, None)
            self._not_before.pop(key, None)
        for p in dropped:
            for fut in p.futures:
                fut.set_result(None)

    # ---------------------------------------------------------------- inspection
    def pending(self, key: Key) -> float | None:
        """Seconds until the next pending run of ``key`` (None: none pending)."""
        with self._lock:
            dues = [t[key].due for t in (self._pending, self._light_pending) if key in t]
            return min(dues) - self._clock() if dues else None

    def failures(self, key: Key) -> int:
        with self._lock:
            return self._failures.get(key, 0)

    def depth(self) -> int:
        with self._lock:
            return len(self._pending.keys() | self._light_pending.keys())

    def backoff(self, failures: int) -> float:
        return float(min(self.backoff_cap, self.backoff_base * 2 ** max(0, failures - 1)))

    # -------------------------------------------------------------------- heaps
    def _push(self, key: Key, p: _Pending, light: bool) -> None:
        """A new current entry for ``key``'s marks ``p`` (its older entries go stale)."""
        p.seq = seq = next(self._seq)
        entry = (p.due, key, seq)
        if light:
            heapq.heappush(self._due_light, entry)
            if key not in self._pending:
                heapq.heappush(self._due_alone, entry)
        else:
            heapq.heappush(self._due_background if self._is_background(p.reasons) else self._due, entry)

    def _ended(self, key: Key, kind: int) -> None:
        """``key``'s run by a worker of ``kind`` ended: heap entries for its marks made while it
        ran (or its retry), and a kick if that or a background run's end changed what is due."""
        self._running.discard(key)
        changed = key in self._background_running
        self._background_running.discard(key)
        if (p := self._pending.get(key)) is not None:
            self._push(key, p, False)
            changed = True
        if (p := self._light_pending.get(key)) is not None:
            self._push(key, p, True)
            changed = True
        if changed:  # (else nothing is due that was not, and this worker looks next)
            self._kick(coming=kind)

    def _compact(self) -> None:
        """Rebuild the heaps once stale entries are most of them (marks that moved a key's due
        time sooner leave one each, until its old due time)."""
        heaps = (self._due, self._due_background, self._due_light, self._due_alone)
        if sum(map(len, heaps)) <= 2 * (len(self._pending) + 2 * len(self._light_pending)) + 256:
            return
        for heap in heaps:
            heap.clear()
        for light, table in ((False, self._pending), (True, self._light_pending)):
            for key, p in table.items():
                if key not in self._running:
                    self._push(key, p, light)

    def _top(self, heap: list[_Entry], table: dict[Key, _Pending], alone: bool = False) -> _Entry | None:
        """The heap's earliest current entry of a key not running (stale ones dropped)."""
        while heap:
            _, key, seq = entry = heap[0]
            p = table.get(key)
            if p is not None and p.seq == seq and key not in self._running:
                if not (alone and key in self._pending):  # else taken along with its other marks
                    return entry
            heapq.heappop(heap)
        return None

    def _first(self, kind: int, alone: bool = True) -> tuple[list[_Entry], _Entry] | None:
        """The earliest pending run a worker of ``kind`` may take now or later (its heap and
        entry): a light worker the light marks; a general worker the others (background ones
        unless ``background_workers`` run already) and, with ``alone``, the light marks of keys
        without others."""
        if kind == _LIGHT:
            top = self._top(self._due_light, self._light_pending)
            return None if top is None else (self._due_light, top)
        best: tuple[list[_Entry], _Entry] | None = None
        for heap, table, of_alone in self._general_heaps:
            if (of_alone and not alone) or (heap is self._due_background and self._background_full()):
                continue
            top = self._top(heap, table, of_alone)
            if top is not None and (best is None or top[:2] < best[1][:2]):
                best = (heap, top)
        return best

    # ------------------------------------------------------------------ waking
    def _kick(self, coming: int | None = None) -> None:
        """After the pending runs changed: wake a worker for runs due that no worker is looking
        for already (one: it wakes the next when it takes one and more are due), and keep a
        timer for the earliest run not due yet. ``coming``: the kind of a worker that is about
        to look (its run just ended)."""
        now = self._clock()
        for kind in self._kinds:  # light first: light marks go to light workers while one waits
            searching = self._searching[kind] + (kind == coming)
            first = self._first(kind, alone=False)
            due = first is not None and first[1][0] <= now
            later = None if first is None or due else first[1][0]
            if kind == _GENERAL and self._light_apart:
                alone = self._top(self._due_alone, self._light_pending, alone=True)
                if alone is not None and alone[0] > now:
                    later = alone[0] if later is None else min(later, alone[0])
                elif alone is not None and not self._light_looking():
                    due = True  # a refresh due while every light worker is busy
            if due:
                if not searching:
                    self._wake(kind)
            elif later is not None:
                timer = self._timer[kind]
                if timer is None and not searching:
                    self._wake(kind)  # an idle worker becomes the timer
                elif timer is not None and later < timer.at:
                    self._wake_timer(kind)  # to sleep until the sooner due time

    def _light_looking(self) -> bool:
        """A light worker looks for a key, or one waits that a kick would wake."""
        return bool(self._searching[_LIGHT] or self._idle[_LIGHT] or self._timer[_LIGHT])

    def _wake(self, kind: int) -> None:
        """Wake one waiting worker of ``kind`` (an idle one rather than the timer) to look."""
        idle = self._idle[kind]
        if idle:
            self._notify(kind, idle.pop())
        else:
            self._wake_timer(kind)

    def _wake_timer(self, kind: int) -> None:
        timer = self._timer[kind]
        if timer is not None:
            self._timer[kind] = None
            self._notify(kind, timer)

    def _notify(self, kind: int, w: _Waiter) -> None:
        w.woken = True
        self._searching[kind] += 1
        w.cond.notify()

    def _sleep(self, kind: int, me: _Waiter, later: float | None, now: float) -> None:
        """Wait until woken (looking again on return). One waiting worker of each kind, the
        timer, sleeps until the earliest run not due yet falls due (a mark or a run's end due
        sooner wakes it); the others until a kick wakes them."""
        timer = self._timer[kind]
        if later is not None and timer is None:
            self._timer[kind] = me
            me.at = later
            me.cond.wait(min(later - now, _MAX_WAIT))
            if self._timer[kind] is me:
                self._timer[kind] = None
        else:
            if later is not None and timer is not None and later < timer.at:
                self._wake_timer(kind)  # (a kick does this; only in case one was missed)
            self._idle[kind].append(me)
            while not me.woken and not self._stop:
                me.cond.wait()
        if me.woken:
            me.woken = False  # counted as searching by whoever woke it
        else:
            self._searching[kind] += 1

    # ------------------------------------------------------------------ workers
    def _next(self, light_only: bool, me: _Waiter) -> tuple[Key, _Pending] | None:
        kind = _LIGHT if light_only else _GENERAL
        with self._lock:
            self._searching[kind] += 1
            while not self._stop:
                now = self._clock()
                first = self._first(kind)
                if first is not None and first[1][0] <= now:
                    heap, (_, key, _) = first
                    heapq.heappop(heap)
                    self._searching[kind] -= 1
                    self._running.add(key)
                    work = self._take(key, light_only)
                    if self._is_background(work.reasons):
                        self._background_running.add(key)
                    self._kick()  # more due: the next worker
                    return key, work
                self._searching[kind] -= 1
                self._sleep(kind, me, None if first is None else first[1][0], now)
            self._searching[kind] -= 1
            return None

    def _is_background(self, reasons: set[str] | frozenset[str]) -> bool:
        return bool(self._background_limit) and reasons <= self._background

    def _background_full(self) -> bool:
        """``background_workers`` background runs run already: the next one is held back."""
        return bool(self._background_limit) and len(self._background_running) >= self._background_limit

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
        me = _Waiter(self._lock)
        try:
            while self._run_one(light_only, me):
                pass
        finally:  # (a worker killed by an exception: the work its end was to look for)
            with self._lock:
                self._kick()

    def _run_one(self, light_only: bool, me: _Waiter) -> bool:
        """Take and run one key; False once stopped. (A method of its own: a worker waiting for
        the next key keeps nothing of its last run, whose result or exception, with the frames
        of its traceback, would otherwise stay referenced by the loop's locals until then.)"""
        item = self._next(light_only, me)
        if item is None:
            return False
        key, work = item
        reasons = frozenset(work.reasons)
        if self._on_start is not None:
            self._on_start(key, reasons, max(0.0, self._clock() - work.first))
        kind = _LIGHT if light_only else _GENERAL
        try:
            result = self._process(key, reasons)
        except BaseException as exc:
            self._failed(key, work, exc, kind)
        else:
            self._done(key, work, result, kind)
        return True

    def _done(self, key: Key, work: _Pending, result: Any, kind: int) -> None:
        with self._lock:
            if not (self._light_apart and work.reasons <= self._light and key in self._pending):
                # a refresh that went well says nothing of the key's reconcile waiting in backoff
                self._failures.pop(key, None)
                self._not_before.pop(key, None)
            self._ended(key, kind)
        for fut in work.futures:
            fut.set_result(result)

    def _failed(self, key: Key, work: _Pending, exc: BaseException, kind: int) -> None:
        with self._lock:
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
            self._ended(key, kind)
        for fut in work.futures:
            fut.set_exception(exc)
