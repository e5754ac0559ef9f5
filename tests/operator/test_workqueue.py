"""The work queue (reconcile/workqueue.py): coalescing, one run per key at a time, bounded
parallelism, per-key backoff, delayed marks. Real worker threads; waits on conditions only."""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

import pytest

from modeldeploy.reconcile.workqueue import Key, WorkQueue


class Permanent(Exception):
    pass


class Recorder:
    """A process function that records its runs (key, reasons, start time) and can be held."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.runs: list[tuple[Key, frozenset[str], float]] = []
        self.cond = threading.Condition()
        self.gate = threading.Event()
        self.gate.set()
        self.held: dict[Key, threading.Event] = {}  # keys held by a gate of their own
        self.active: dict[Key, int] = {}
        self.max_active_per_key = 0
        self.max_active = 0
        self.fail: Exception | None = None

    def __call__(self, key: Key, reasons: frozenset[str]) -> str:
        with self.cond:
            self.runs.append((key, reasons, self.clock()))
            self.active[key] = self.active.get(key, 0) + 1
            self.max_active_per_key = max(self.max_active_per_key, self.active[key])
            self.max_active = max(self.max_active, sum(self.active.values()))
            self.cond.notify_all()
        try:
            self.held.get(key, self.gate).wait(30)
            time.sleep(0.002)  # long enough for another worker to overlap if the queue allowed it
            if self.fail is not None:
                raise self.fail
            return f"{key[1]}:{len(self.runs)}"
        finally:
            with self.cond:
                self.active[key] -= 1
                self.cond.notify_all()

    def wait_runs(self, n: int, timeout: float = 20) -> None:
        with self.cond:
            assert self.cond.wait_for(lambda: len(self.runs) >= n, timeout), (
                f"{len(self.runs)} runs, want {n}"
            )

    def wait_idle(self, timeout: float = 20) -> None:
        with self.cond:
            assert self.cond.wait_for(lambda: not any(self.active.values()), timeout)


@pytest.fixture
def rec() -> Recorder:
    return Recorder()


def test_a_hundred_marks_before_it_runs_are_one_run(rec: Recorder) -> None:
    q = WorkQueue(rec, workers=4)  # not started yet: every mark lands before the first run
    futs = [q.mark(("ns", "a"), reason=f"r{i % 3}") for i in range(100)]
    q.start()
    try:
        results = {f.result(timeout=20) for f in futs}
        assert len(rec.runs) == 1
        assert rec.runs[0][1] == {"r0", "r1", "r2"}, "the run serves every mark's reason"
        assert results == {"a:1"}, "every mark gets the outcome of that one run"
        assert q.depth() == 0
    finally:
        q.stop()


def test_a_key_never_runs_twice_at_once_and_a_mark_while_running_reruns_once(rec: Recorder) -> None:
    q = WorkQueue(rec, workers=8).start()
    try:
        rec.gate.clear()
        first = q.mark(("ns", "a"))
        rec.wait_runs(1)
        later = [q.mark(("ns", "a"), reason="drift") for _ in range(50)]  # while it runs
        time.sleep(0.05)  # give idle workers every chance to (wrongly) start it again
        assert len(rec.runs) == 1 and q.pending(("ns", "a")) is not None
        rec.gate.set()
        assert first.result(timeout=20) == "a:1"
        assert {f.result(timeout=20) for f in later} == {"a:2"}, "marks during a run get the next run"
        rec.wait_idle()
        assert len(rec.runs) == 2, "exactly one re-run"
        assert rec.max_active_per_key == 1
    finally:
        q.stop()


def test_parallelism_is_bounded_and_every_key_is_served(rec: Recorder) -> None:
    q = WorkQueue(rec, workers=3).start()
    try:
        rec.gate.clear()
        futs = [q.mark(("ns", f"k{i}")) for i in range(30)]
        with rec.cond:
            assert rec.cond.wait_for(lambda: sum(rec.active.values()) == 3, 20)
        time.sleep(0.05)
        assert sum(rec.active.values()) == 3, "more runs at once than workers"
        rec.gate.set()
        for f in futs:
            f.result(timeout=30)
        assert {k for k, _, _ in rec.runs} == {("ns", f"k{i}") for i in range(30)}
        assert len(rec.runs) == 30 and rec.max_active == 3
    finally:
        q.stop()


def wait_for(cond: Callable[[], bool], timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.005)


class FakeClock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def test_retryable_failures_back_off_per_key_and_a_success_resets() -> None:
    clock = FakeClock()
    rec = Recorder(clock)
    rec.fail = RuntimeError("transient")
    q = WorkQueue(rec, workers=2, clock=clock, backoff_base=0.5, backoff_cap=4.0).start()
    key = ("ns", "a")
    try:
        fut = q.mark(key)
        with pytest.raises(RuntimeError):
            fut.result(timeout=20)
        expected = [0.5, 1.0, 2.0, 4.0, 4.0]  # doubling up to the cap
        for n, delay in enumerate(expected, start=1):
            rec.wait_runs(n)
            wait_for(lambda n=n: q.failures(key) == n)  # type: ignore[misc]
            assert q.pending(key) == pytest.approx(delay)
            assert q.mark(key, reason="drift").done() is False  # a non-urgent mark waits for the backoff
            assert q.pending(key) == pytest.approx(delay)
            clock.t += delay - 0.01
            q.poke()
            time.sleep(0.02)
            assert len(rec.runs) == n, "ran before its backoff was over"
            clock.t += 0.01
            q.poke()
        rec.wait_runs(len(expected) + 1)
        starts = [t for k, _, t in rec.runs if k == key]
        gaps = [round(b - a, 6) for a, b in itertools.pairwise(starts)]
        assert gaps == expected
        rec.fail = None
        # another key is not held back by this one's backoff
        assert q.mark(("ns", "b")).result(timeout=20)
        urgent = q.mark(key, urgent=True)  # a spec change runs at once, despite the backoff
        assert urgent.result(timeout=20)
        assert q.failures(key) == 0 and q.pending(key) is None, "a success resets the backoff"
    finally:
        q.stop()


def test_a_permanent_failure_waits_for_a_new_mark() -> None:
    rec = Recorder()
    rec.fail = Permanent("invalid")
    q = WorkQueue(rec, workers=2, permanent=(Permanent,)).start()
    try:
        with pytest.raises(Permanent):
            q.mark(("ns", "a")).result(timeout=20)
        rec.wait_idle()
        assert q.pending(("ns", "a")) is None and q.failures(("ns", "a")) == 0
        rec.fail = None
        assert q.mark(("ns", "a")).result(timeout=20) == "a:2"
    finally:
        q.stop()


def test_mark_in_fires_when_due_and_the_earliest_due_wins(rec: Recorder) -> None:
    clock = FakeClock()
    rec.clock = clock
    q = WorkQueue(rec, workers=2, clock=clock).start()
    try:
        fut: Future[Any] = q.mark_in(("ns", "a"), 5.0)
        q.mark_in(("ns", "a"), 60.0)  # a later due time does not postpone the earlier one
        clock.t += 4.9
        q.poke()
        time.sleep(0.05)
        assert not rec.runs and q.pending(("ns", "a")) == pytest.approx(0.1)
        clock.t += 0.1
        q.poke()
        assert fut.result(timeout=20) == "a:1"
        assert rec.runs[0][1] == {"refresh"} and rec.runs[0][2] == pytest.approx(1005.0)
        assert q.pending(("ns", "a")) is None, "one run per due time"
    finally:
        q.stop()


def test_a_status_refresh_does_not_wait_behind_a_backlog_of_reconciles(rec: Recorder) -> None:
    q = WorkQueue(rec, workers=2, light_workers=1, light=frozenset({"refresh"})).start()
    try:
        rec.gate.clear()  # every run holds its worker
        heavy = [q.mark(("ns", f"r{i}"), "create") for i in range(5)]
        with rec.cond:
            assert rec.cond.wait_for(lambda: sum(rec.active.values()) == 2, 20)
        q.mark(("ns", "s"), "refresh")
        with rec.cond:  # the light worker takes it although both general workers are busy
            assert rec.cond.wait_for(lambda: rec.active.get(("ns", "s")) == 1, 20)
        time.sleep(0.05)
        assert sum(rec.active.values()) == 3, "the light worker took a reconcile"
        rec.gate.set()
        for f in heavy:
            f.result(timeout=20)
    finally:
        q.stop()


def test_a_refresh_does_not_wait_for_its_keys_resync_queued_behind_a_backlog(rec: Recorder) -> None:
    """A resync pass marks every object at once; a status refresh of one of them (its Deployment
    became Available) runs on the light worker at once instead of joining the queued resync and
    waiting until the backlog reaches it (at 1,000 objects: the status lag p99 of 31.5 s)."""
    q = WorkQueue(rec, workers=1, light_workers=1, light=frozenset({"refresh"})).start()
    a, b = ("ns", "a"), ("ns", "b")
    try:
        rec.gate.clear()
        busy = q.mark(a, "create")  # the general worker: busy
        with rec.cond:
            assert rec.cond.wait_for(lambda: rec.active.get(a) == 1, 20)
        resync = q.mark(b, "resync")  # queued behind it
        refresh = q.mark(b, "refresh")
        with rec.cond:
            assert rec.cond.wait_for(lambda: rec.active.get(b) == 1, 5), "the refresh waited for the resync"
        assert [r for k, r, _ in rec.runs if k == b] == [{"refresh"}]
        rec.gate.set()
        assert refresh.result(timeout=20) != resync.result(timeout=20), "the resync is a run of its own"
        busy.result(timeout=20)
        rec.wait_idle()
        assert [r for k, r, _ in rec.runs if k == b] == [{"refresh"}, {"resync"}]
        assert rec.max_active_per_key == 1
    finally:
        q.stop()


def test_a_reconcile_takes_its_keys_pending_refresh_along(rec: Recorder) -> None:
    """A general worker that takes a key's reconcile serves the key's pending refresh with it (a
    reconcile ends with a status refresh): one run, both marks' futures."""
    q = WorkQueue(rec, workers=1, light_workers=1, light=frozenset({"refresh"})).start()
    a, b, x = ("ns", "a"), ("ns", "b"), ("ns", "x")
    rec.held[x] = threading.Event()
    try:
        rec.gate.clear()
        busy = q.mark(a, "create")
        with rec.cond:
            assert rec.cond.wait_for(lambda: rec.active.get(a) == 1, 20)
        light = q.mark(x, "refresh")  # the light worker: busy
        with rec.cond:
            assert rec.cond.wait_for(lambda: rec.active.get(x) == 1, 20)
        drift, refresh = q.mark(b, "drift"), q.mark(b, "refresh")
        rec.gate.set()  # the general worker is free, the light one still busy
        assert drift.result(timeout=20) == refresh.result(timeout=20)
        assert [r for k, r, _ in rec.runs if k == b] == [{"drift", "refresh"}]
        rec.held[x].set()
        busy.result(timeout=20)
        light.result(timeout=20)
        assert q.depth() == 0
    finally:
        rec.held[x].set()
        q.stop()


def test_resync_runs_are_bounded_apart_and_do_not_hold_back_other_work(rec: Recorder) -> None:
    """A resync pass marks every object: at most ``background_workers`` resync-only runs at once
    (the rest of the workers stay free for spec changes and drift), and every one still runs."""
    q = WorkQueue(rec, workers=4, background=frozenset({"resync"}), background_workers=1).start()
    try:
        rec.gate.clear()
        resyncs = [q.mark(("ns", f"k{i}"), "resync") for i in range(6)]
        with rec.cond:
            assert rec.cond.wait_for(lambda: sum(rec.active.values()) == 1, 20)
        time.sleep(0.05)
        assert sum(rec.active.values()) == 1, "more resync runs at once than background_workers"
        spec = q.mark(("ns", "new"), "create")  # a free general worker takes it at once
        drift = q.mark(("ns", "k5"), "drift")  # a resync joined by a drift is no longer background
        with rec.cond:
            assert rec.cond.wait_for(
                lambda: rec.active.get(("ns", "new")) == 1 and rec.active.get(("ns", "k5")) == 1, 5
            ), "work of other kinds waited behind the resync pass"
        rec.gate.set()
        for f in [*resyncs, spec, drift]:
            f.result(timeout=20)
        assert rec.max_active <= 3
        assert sorted(k[1] for k, r, _ in rec.runs if r == {"resync"}) == [f"k{i}" for i in range(5)]
    finally:
        q.stop()


def test_discard_drops_a_gone_keys_pending_marks_and_backoff(rec: Recorder) -> None:
    """An object deleted with refreshes scheduled minutes ahead and a reconcile in backoff: the
    queue keeps nothing of it (its awaiters get None), other keys run as before, and a new mark
    of the same key (a new object of that name) runs at once."""
    clock = FakeClock()
    rec.clock = clock
    q = WorkQueue(
        rec, workers=2, light_workers=1, light=frozenset({"refresh"}), clock=clock, backoff_base=30.0
    ).start()
    gone, other = ("ns", "gone"), ("ns", "other")
    try:
        rec.fail = RuntimeError("transient")
        with pytest.raises(RuntimeError):
            q.mark(gone).result(timeout=20)
        rec.fail = None
        wait_for(lambda: q.failures(gone) == 1)
        later = q.mark_in(gone, 300.0)  # a light refresh scheduled far ahead
        in_backoff = q.mark(gone, reason="drift")
        kept = q.mark_in(other, 300.0)
        q.discard(gone)
        assert later.result(timeout=1) is None and in_backoff.result(timeout=1) is None
        assert q.pending(gone) is None and q.failures(gone) == 0
        assert q.pending(other) == pytest.approx(300.0) and not kept.done()
        assert q.mark(gone).result(timeout=20) == "gone:2", "no backoff left for a new object"
        clock.t += 300
        q.poke()
        assert kept.result(timeout=20) == "other:3"
        assert [k for k, _, _ in rec.runs] == [gone, gone, other]
    finally:
        q.stop()


def test_nudges_run_like_marks_without_a_future_each(rec: Recorder) -> None:
    """Fire-and-forget marks (resync, child events, scheduled refreshes) coalesce with marks that
    are awaited, and the queue keeps no Future for them."""
    clock = FakeClock()
    rec.clock = clock
    q = WorkQueue(rec, workers=2, clock=clock).start()
    try:
        for _ in range(100):
            q.nudge(("ns", "a"), "resync", delay=1.0)
        q.nudge_in(("ns", "a"), 5.0)
        waited = q.mark(("ns", "a"), "drift", delay=1.0)
        with q._cond:
            assert [len(p.futures) for p in q._pending.values()] == [1], "only the awaited mark's"
        clock.t += 1.0
        q.poke()
        assert waited.result(timeout=20) == "a:1"
        assert rec.runs[0][1] == {"resync", "drift", "refresh"} and len(rec.runs) == 1
    finally:
        q.stop()


def test_an_idle_worker_keeps_nothing_of_its_last_run() -> None:
    """A worker waiting for work holds no reference to its last run's result or exception (an
    exception's traceback holds every frame's locals: a whole object and its children)."""
    import gc
    import weakref

    class Result:
        pass

    made: list[weakref.ref[Any]] = []

    def process(key: Key, reasons: frozenset[str]) -> Any:
        obj = Result()
        made.append(weakref.ref(obj))
        if key[1] == "fails":
            raise RuntimeError(obj)
        return obj

    q = WorkQueue(process, workers=1).start()
    try:
        q.nudge(("ns", "ok"))
        q.nudge(("ns", "fails"))
        wait_for(lambda: len(made) == 2 and q.depth() == 1)  # the failure's retry is queued
        gc.collect()
        wait_for(lambda: all(r() is None for r in made))
    finally:
        q.stop()


# ----------------------------------------------------------------- waking (no thundering herd)
def _waiting(q: WorkQueue) -> tuple[int, int]:
    """Workers waiting (general, light): idle ones and the timer of each kind."""
    with q._cond:
        return tuple(len(q._idle[k]) + (q._timer[k] is not None) for k in (0, 1))  # type: ignore[return-value]


def test_a_mark_wakes_one_idle_worker_not_all(rec: Recorder) -> None:
    """A mark wakes one worker of a kind that can take it; the others keep waiting (every mark
    once woke every idle worker, each of which then scanned the whole queue under its lock)."""
    q = WorkQueue(rec, workers=8, light_workers=4, light=frozenset({"refresh"})).start()
    try:
        wait_for(lambda: _waiting(q) == (8, 4))
        rec.gate.clear()
        q.mark(("ns", "a"), "create")  # the wake happens under the lock, within the mark
        assert _waiting(q)[1] == 4, "a light worker woke for a reconcile"
        rec.wait_runs(1)
        assert _waiting(q) == (7, 4)
        q.mark(("ns", "b"), "refresh")
        rec.wait_runs(2)
        assert _waiting(q) == (7, 3), "the refresh: one light worker, no general one"
        rec.gate.set()
        wait_for(lambda: _waiting(q) == (8, 4))
    finally:
        rec.gate.set()
        q.stop()


def test_runs_falling_due_together_are_taken_by_as_many_workers(rec: Recorder) -> None:
    """Delayed marks that fall due at once: one worker sleeps until then (the timer), and each
    worker that takes one wakes the next while more are due, up to every worker."""
    clock = FakeClock()
    rec.clock = clock
    q = WorkQueue(rec, workers=4, clock=clock).start()
    try:
        wait_for(lambda: _waiting(q) == (4, 0))
        rec.gate.clear()
        futs = [q.mark_in(("ns", f"k{i}"), 5.0) for i in range(10)]

        def one_timer_for_the_due_time() -> bool:  # (the worker woken to be it: asleep again)
            with q._cond:
                timer = q._timer[0]
                return timer is not None and timer.at == 1005.0 and len(q._idle[0]) == 3

        wait_for(one_timer_for_the_due_time)
        clock.t += 5.0
        q.poke()
        with rec.cond:
            assert rec.cond.wait_for(lambda: sum(rec.active.values()) == 4, 20)
        rec.gate.set()
        for f in futs:
            f.result(timeout=20)
        assert rec.max_active == 4 and len(rec.runs) == 10
    finally:
        rec.gate.set()
        q.stop()


def test_a_delayed_mark_runs_when_due_without_a_poll(monkeypatch: pytest.MonkeyPatch, rec: Recorder) -> None:
    """The timer sleeps until the earliest due time, and a sooner mark wakes it to sleep less:
    with the periodic look (a backstop for injected clocks) out of the way, a mark due in 50 ms
    after one due in an hour still runs."""
    from modeldeploy.reconcile import workqueue

    monkeypatch.setattr(workqueue, "_MAX_WAIT", 3600.0)
    q = WorkQueue(rec, workers=2, light_workers=1, light=frozenset({"refresh"})).start()
    try:
        wait_for(lambda: _waiting(q) == (2, 1))
        q.nudge(("ns", "later"), "drift", delay=3600.0)
        q.nudge_in(("ns", "later-refresh"), 3600.0)

        def timers_asleep_for_an_hour() -> bool:
            with q._cond:
                return all(t is not None and t.at > time.monotonic() + 3000 for t in q._timer)

        wait_for(timers_asleep_for_an_hour)
        soon = q.mark(("ns", "soon"), "drift", delay=0.05)
        soon_refresh = q.mark_in(("ns", "soon-refresh"), 0.05)
        assert soon.result(timeout=20) and soon_refresh.result(timeout=20)
        assert q.pending(("ns", "later")) is not None and q.depth() == 2
    finally:
        q.stop()


def test_a_refresh_runs_on_a_free_general_worker_while_every_light_worker_is_busy(rec: Recorder) -> None:
    q = WorkQueue(rec, workers=1, light_workers=1, light=frozenset({"refresh"})).start()
    x, y = ("ns", "x"), ("ns", "y")
    rec.held[x] = threading.Event()
    try:
        busy = q.mark(x, "refresh")
        with rec.cond:
            assert rec.cond.wait_for(lambda: rec.active.get(x) == 1, 20)
        assert q.mark(y, "refresh").result(timeout=20), "waited for the light worker"
        rec.held[x].set()
        busy.result(timeout=20)
    finally:
        rec.held[x].set()
        q.stop()


def test_the_due_time_heaps_stay_bounded_by_the_pending_marks() -> None:
    """Every mark that moves a key's run sooner leaves a stale heap entry behind; they are
    dropped before they outnumber the pending marks by much."""
    clock = FakeClock()
    q = WorkQueue(lambda k, r: None, workers=1, light_workers=1, light=frozenset({"refresh"}), clock=clock)
    for i in range(5000):
        q.nudge_in(("ns", "a"), 10_000.0 - i)
        q.nudge(("ns", "b"), "drift", delay=10_000.0 - i)
    with q._cond:
        assert len(q._due) + len(q._due_light) + len(q._due_alone) <= 2 * 3 + 256 + 2
    assert q.pending(("ns", "a")) == pytest.approx(10_000.0 - 4999)


def _one_held_worker(rec: Recorder) -> tuple[WorkQueue, threading.Event]:
    """A queue with one worker, held in a run of ("ns", "busy") until the event is set: what is
    marked meanwhile queues up."""
    q = WorkQueue(rec, workers=1).start()
    rec.held[("ns", "busy")] = hold = threading.Event()
    q.nudge(("ns", "busy"), "create")
    rec.wait_runs(1)
    return q, hold


def test_a_front_nudge_runs_before_a_backlog_marked_earlier(rec: Recorder) -> None:
    q, hold = _one_held_worker(rec)
    try:
        for i in range(5):
            q.nudge(("ns", f"c{i}"), "create")
        q.nudge(("ns", "late"), "finish", 30.0)  # due in 30 s ...
        q.nudge(("ns", "late"), "finish", front=True)  # ... moved ahead of every pending run
        hold.set()
        rec.wait_runs(7)
        order = [k[1] for k, _, _ in rec.runs]
        assert order[:2] == ["busy", "late"], order
        assert sorted(order[2:]) == [f"c{i}" for i in range(5)]
        assert order[2:] == sorted(order[2:]), "the others kept their order"
    finally:
        q.stop()


def test_front_tiers_run_highest_first_and_in_order_of_moving_within_a_tier(rec: Recorder) -> None:
    q, hold = _one_held_worker(rec)
    try:
        q.nudge(("ns", "c0"), "create")
        for name in ("t1-z", "t1-a"):  # tier 1, moved in this order (not the keys' order)
            q.nudge(("ns", name), "finish", 30.0)
            q.nudge(("ns", name), "finish", front=1)
        q.nudge(("ns", "t2-y"), "finish", 30.0)
        q.nudge(("ns", "t2-y"), "finish", front=1)
        q.nudge(("ns", "t2-y"), "finish", front=2)  # moved up a tier
        q.nudge(("ns", "t2-x"), "finish", front=2)
        q.nudge(("ns", "t2-y"), "finish", front=1)  # a lower tier again: stays where it is
        hold.set()
        rec.wait_runs(6)
        order = [k[1] for k, _, _ in rec.runs]
        assert order == ["busy", "t2-y", "t2-x", "t1-z", "t1-a", "c0"], order
    finally:
        q.stop()
