"""The work queue's own cost during a burst (reconcile/workqueue.py), against an earlier commit's.

    python bench/workqueue_bench.py [--n 1000] [--repeat 3] [--baseline-ref main] [--json out.json]

One in-process run per implementation, no cluster: a WorkQueue configured like production
(``workers``, ``status_workers`` light workers taking ``refresh`` marks, ``resync`` marks as
background limited to ``resync_workers``: OperatorConfig's defaults, as handlers.py builds it) gets

* N keys marked at once (``create``, each with a Future, as the kopf handler marks them),
* a stream of light ``refresh`` marks, ``--refreshes`` per key spread over the run in small
  batches (one in three with a delay of up to ``--max-delay`` seconds: the debounced ones),
* after the first round of refreshes, a resync pass (every key nudged ``resync``, background),

and a process function that does a fixed amount of pure-Python CPU work (``--work-ms``), so what
differs between implementations is the queue's own CPU. Reported per implementation (median of
``--repeat`` runs, the implementations alternating): the wall time from the first mark until every
mark was served, the process CPU time (``time.process_time``: every thread) over the same span,
the process function's own CPU (thread CPU time around its work) and the queue's overhead = the
process CPU minus that (the queue's locking, waking and scanning, in the marking thread and the
workers, and the bench's driver, which is the same for both). With ``--baseline-ref REF`` the
queue module of REF (``git show REF:operator/modeldeploy/reconcile/workqueue.py``, loaded as a
module of its own) runs the same load in the same process, and the ratios current/baseline are
printed (``vs_baseline``). Only ratios within one run mean anything: the absolute figures move
with the machine's load.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import random
import statistics
import sys
import time
import types
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / p) for p in ("runtime", "operator")]
MODULE_PATH = "operator/modeldeploy/reconcile/workqueue.py"


def load_ref(ref: str) -> types.ModuleType:
    """The queue module as of git ``ref``, loaded as a module of its own."""
    from modeldeploy.cluster.source import git  # a failure says git's stderr

    src = git(REPO, "show", f"{ref}:{MODULE_PATH}").decode()
    name = f"_workqueue_at_{ref.replace('/', '_').replace('-', '_').replace('~', '_').replace('^', '_')}"
    mod = types.ModuleType(name)
    mod.__file__ = f"{ref}:{MODULE_PATH}"
    sys.modules[name] = mod  # dataclasses look the module up
    exec(compile(src, mod.__file__, "exec"), mod.__dict__)
    return mod


def calibrate(work_ms: float) -> int:
    """Loop iterations of :func:`spin` that take about ``work_ms`` of CPU."""
    n = 10_000
    while True:
        t0 = time.thread_time()
        spin(n)
        took = time.thread_time() - t0
        if took > 0.02:
            return max(1, int(n * work_ms / 1000 / took))
        n *= 4


def spin(n: int) -> int:
    x = 0
    for i in range(n):
        x += i & 7
    return x


class Load:
    """The process function: fixed CPU work per run; counts runs and their own CPU."""

    def __init__(self, iters: int) -> None:
        self.iters = iters
        self.cpu: list[float] = []  # list.append: atomic, no lock of the bench's own
        self.light_runs: list[int] = []

    def __call__(self, key: tuple[str, str], reasons: frozenset[str]) -> int:
        t0 = time.thread_time()
        x = spin(self.iters)
        self.cpu.append(time.thread_time() - t0)
        if reasons == {"refresh"}:
            self.light_runs.append(1)
        return x


def one_run(mod: types.ModuleType, args: argparse.Namespace, iters: int) -> dict[str, Any]:
    from modeldeploy.reconcile.reconciler import OperatorConfig

    cfg = OperatorConfig()
    load = Load(iters)
    q = mod.WorkQueue(
        load,
        workers=args.workers or cfg.workers,
        light_workers=cfg.status_workers if args.light_workers is None else args.light_workers,
        light=frozenset({"refresh"}),
        background=frozenset({"resync"}),
        background_workers=cfg.resync_workers,
        name="bench",
    ).start()
    keys = [("bench", f"md-{i:05d}") for i in range(args.n)]
    rng = random.Random(args.seed)
    refreshes = [(k, r) for r in range(args.refreshes) for k in keys]
    rng.shuffle(refreshes)  # arrival order: not key order (a Deployment turns Available any time)
    refreshes.sort(key=lambda kr: kr[1])  # but round by round (created, progressing, available)
    batch = max(1, args.batch)
    gc.collect()
    time.sleep(0.05)  # the workers waiting
    c0, t0 = time.process_time(), time.perf_counter()
    creates = [q.mark(k, "create") for k in keys]
    marks = len(keys)
    resynced = False
    for i in range(0, len(refreshes), batch):
        for k, r in refreshes[i : i + batch]:
            delay = rng.uniform(0.0, args.max_delay) if rng.random() < 1 / 3 else 0.0
            q.nudge(k, "refresh", delay)
            marks += 1
            if r == 1 and not resynced:  # the first round done: a resync pass marks every key
                q.mark_all(keys, "resync")
                marks += len(keys)
                resynced = True
        time.sleep(args.batch_gap_ms / 1000)  # the informer threads wait on the API server
    for f in creates:
        f.result(timeout=args.timeout)
    deadline = time.monotonic() + args.timeout
    while q.depth() or len(q._running):  # every mark served (delayed ones included)
        if time.monotonic() > deadline:
            raise SystemExit(f"not done in {args.timeout}s: depth {q.depth()}")
        time.sleep(0.001)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    q.stop()
    for t in q._threads:
        t.join(5)
    work = sum(load.cpu)
    return {
        "wall_s": wall,
        "cpu_s": cpu,
        "work_cpu_s": work,
        "overhead_cpu_s": cpu - work,
        "runs": len(load.cpu),
        "light_runs": len(load.light_runs),
        "marks": marks,
        "overhead_us_per_mark": (cpu - work) / marks * 1e6,
    }


def summarize(runs: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k in runs[0]:
        med = statistics.median(r[k] for r in runs)
        out[k] = round(med, 6) if isinstance(med, float) else med
    out["overhead_cpu_s_each"] = [round(r["overhead_cpu_s"], 4) for r in runs]
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1000, help="keys marked at once")
    ap.add_argument("--refreshes", type=int, default=3, help="light marks per key over the run")
    ap.add_argument("--max-delay", type=float, default=0.02, help="largest refresh delay (s)")
    ap.add_argument("--batch", type=int, default=50, help="refresh marks per batch")
    ap.add_argument("--batch-gap-ms", type=float, default=1.0, help="pause between batches")
    ap.add_argument("--work-ms", type=float, default=0.2, help="CPU of one run of the process function")
    ap.add_argument("--workers", type=int, default=0, help="general workers (0: OperatorConfig's)")
    ap.add_argument("--light-workers", type=int, default=None, help="(default: OperatorConfig's)")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--timeout", type=float, default=300.0)
    ap.add_argument("--baseline-ref", help="git ref whose workqueue.py to compare with")
    ap.add_argument("--json", help="write the figures here")
    args = ap.parse_args(argv)

    from modeldeploy.reconcile import workqueue as current
    from modeldeploy.reconcile.reconciler import OperatorConfig

    impls: dict[str, types.ModuleType] = {"current": current}
    if args.baseline_ref:
        impls["baseline"] = load_ref(args.baseline_ref)
    iters = calibrate(args.work_ms)
    results: dict[str, list[dict[str, Any]]] = {name: [] for name in impls}
    for _ in range(args.repeat):
        for name, mod in impls.items():  # alternating: drift of the machine's load hits both
            results[name].append(one_run(mod, args, iters))
    cfg = OperatorConfig()
    figures: dict[str, Any] = {
        "n": args.n,
        "refreshes_per_key": args.refreshes,
        "work_ms": args.work_ms,
        "workers": args.workers or cfg.workers,
        "light_workers": cfg.status_workers if args.light_workers is None else args.light_workers,
        "background_workers": cfg.resync_workers,
        "repeat": args.repeat,
        "cpus": os.cpu_count(),
    }
    for name in impls:
        figures[name] = summarize(results[name])
    if args.baseline_ref:
        figures["baseline_ref"] = args.baseline_ref
        cur, base = figures["current"], figures["baseline"]
        figures["vs_baseline"] = {
            k: round(cur[k] / base[k], 3) if base[k] else None for k in ("wall_s", "cpu_s", "overhead_cpu_s")
        }
    for name in impls:
        f = figures[name]
        print(
            f"{name:>8}: N={args.n} marks={f['marks']} runs={f['runs']} wall {f['wall_s']:.3f}s "
            f"cpu {f['cpu_s']:.3f}s (work {f['work_cpu_s']:.3f}s, queue overhead "
            f"{f['overhead_cpu_s']:.3f}s = {f['overhead_us_per_mark']:.1f} us/mark)"
        )
    if args.baseline_ref:
        r = figures["vs_baseline"]
        print(
            f"-> ratio current/baseline ({args.baseline_ref}): wall {r['wall_s']}, cpu {r['cpu_s']}, "
            f"overhead {r['overhead_cpu_s']}"
        )
    print(json.dumps(figures, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
