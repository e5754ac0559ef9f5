"""Benchmark: N ModelDeployments applied at once against the local control plane (#12's figures).

Starts its own LocalCluster (or attaches to a running one: ``MODELDEPLOY_TEST_KUBECONFIG`` or
``--kubeconfig``), runs the operator as a subprocess (``python -m modeldeploy.cli operator run``,
exactly as in production) watching one fresh namespace, creates N CPU ModelDeployments as fast as
possible and reports, all from one run so that ratios can be compared:

* time from the first create until every ModelDeployment is Ready=True, p50 / p99 create -> Ready;
* where that time goes, per object (p50 / p99): operator reaction (MD created -> its Deployment
  written by the operator, from the audit log's timestamps), pods (Deployment written -> Available,
  KWOK's simulated start: not the operator's), status lag (Deployment Available -> MD Ready=True,
  both seen through watches by this script);
* a floor from the same run: the same rendered children written by a plain client (server-side
  apply, ``--floor-workers`` in parallel, no operator) into a second namespace, timed to all
  Deployments Available; and the operator's time / floor;
* the operator's requests by verb (audit log): writes per object and reads (GET/LIST, which the
  watch-fed stores should answer) until Ready, and every request
  (reads included: the local cluster's audit policy logs the admin user's reads) during a quiet
  period afterwards;
* the operator's RSS: idle before, peak (VmHWM) until Ready and including the deletion, and after
  every object and pod is deleted again; its CPU
  time (user + system) from its start until all are Ready and the quiet period is over. ``--operator-env NAME=VALUE`` sets the operator's
  environment (say ``PYTHONMALLOC=malloc``, what the chart's ``operator.extraEnv`` would set).

With ``--baseline-ref REF`` the same measurement runs a second time in the same session, with the
operator of an earlier commit (``git archive REF``, run from a temporary directory) in a fresh
namespace, and the ratios between the two are printed (``vs_baseline``): #12's "at most 0.7x
today's time, in the same run". ``--rounds K`` (with a baseline) measures both K times in
alternating order (this tree, the baseline, the baseline, this tree, ...: ABBA), so that a machine
whose load drifts during the run favours neither side; ``rounds`` lists each pair and
``all_ready_s_vs_baseline_over_rounds`` is this tree's total time over the baseline's. The
top-level figures stay those of the first round.

    python bench/reconcile.py --n 100
    python bench/reconcile.py --n 1000 --cpu-nodes 10 --baseline-ref d7c9af8
"""

from __future__ import annotations

import argparse
import collections
import datetime as dt
import json
import math
import os
import shlex
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
CRD_FILE = REPO / "crds" / "modeldeploy.io_modeldeployments.yaml"
BENCH_UA = "modeldeploy-bench"
#: User agents of the operator process: its REST client (kubernetes' OpenAPI client) and kopf.
OPERATOR_UAS = ("OpenAPI-Generator/", "kopf/")
WRITE_VERBS = frozenset({"create", "update", "patch", "delete", "deletecollection"})


def md_body(ns: str, i: int) -> dict[str, Any]:
    return {
        "apiVersion": "modeldeploy.io/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": f"bench-{i:04d}", "namespace": ns},
        "spec": {
            "models": [
                {
                    "name": "simple",
                    "format": "onnx",
                    "source": "s3://models/simple",
                    "versions": [{"version": 1}],
                }
            ],
            "resources": {"requests": {"cpu": "10m", "memory": "32Mi"}},
            "runtime": {"resources": {"requests": {"cpu": "10m", "memory": "32Mi"}}},
            # spread over every KWOK node, GPU nodes included (110 pods per node)
            "scheduling": {
                "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
            },
            "monitoring": {"enabled": False},
        },
    }


def percentile(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    k = max(0, min(len(s) - 1, math.ceil(p / 100 * len(s)) - 1))
    return s[k]


def p50_p99(values: list[float]) -> dict[str, float]:
    return {"p50": round(percentile(values, 50), 3), "p99": round(percentile(values, 99), 3)}


def rss_mib(pid: int, field: str = "VmRSS") -> float:
    """VmRSS (now) or VmHWM (peak) of a process, MiB."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def memory_map(pid: int) -> dict[str, float]:
    """Where a process's RSS lies (MiB), from /proc/PID/smaps: ``heap`` (glibc's main heap),
    ``anon`` (other anonymous mappings: CPython's pymalloc arenas, which the kernel merges into
    larger mappings, glibc's thread arena, large blocks, thread stacks) and ``files`` (code,
    libraries)."""
    out = dict.fromkeys(("heap", "anon", "files"), 0.0)
    where = "anon"
    try:
        lines = Path(f"/proc/{pid}/smaps").read_text().splitlines()
    except OSError:
        return out
    for line in lines:
        head = line.split()
        if "-" in head[0] and len(head) >= 5:  # a mapping: range perms offset dev inode [path]
            path = head[5] if len(head) > 5 else ""
            where = "heap" if path == "[heap]" else "files" if path.startswith("/") else "anon"
        elif head[0] == "Rss:":
            out[where] += int(head[1]) / 1024
    return {k: round(v, 1) for k, v in out.items()}


def cluster_cpu(cluster: Any) -> dict[str, float]:
    """CPU seconds each control-plane process (etcd, kube-apiserver, ..., kwok) has used so far."""
    from modeldeploy.cluster.local import ClusterState

    st = ClusterState.load(cluster.state_file)
    return {name: cpu_seconds(pid) for name, pid in sorted((st.pids if st else {}).items())}


def cpu_since(cluster: Any, before: dict[str, float]) -> dict[str, float]:
    """CPU seconds each control-plane process used since ``before`` (:func:`cluster_cpu`)."""
    return {k: round(v - before.get(k, 0.0), 1) for k, v in cluster_cpu(cluster).items()}


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used so far, seconds (/proc/PID/stat)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def audit_events(path: Path, since: int, ns: str) -> tuple[list[dict[str, Any]], int]:
    """Events of namespace ``ns`` after line ``since``, and the number of lines read."""
    out = []
    n = since
    with path.open() as f:
        for n, line in enumerate(f, 1):
            if n <= since:
                continue
            try:
                ev = json.loads(line)
            except ValueError:
                continue
            if (ev.get("objectRef") or {}).get("namespace") == ns:
                out.append(ev)
    return out, n


def is_operator(ev: dict[str, Any]) -> bool:
    return str(ev.get("userAgent", "")).startswith(OPERATOR_UAS)


def completed_writes(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every write the API server completed, once each (whoever made it)."""
    return [e for e in events if e.get("verb") in WRITE_VERBS and e.get("stage") == "ResponseComplete"]


def operator_writes(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Writes by the operator process (not the bench, KWOK or the controllers), once each."""
    return [e for e in completed_writes(events) if is_operator(e)]


def by_verb(events: list[dict[str, Any]]) -> dict[str, int]:
    """The operator's requests by ``verb resource[/sub]``: a watch once when it starts, any other
    request when it completes."""
    c: collections.Counter[str] = collections.Counter()
    for e in events:
        watch = e.get("verb") == "watch"
        if not is_operator(e) or e.get("stage") != ("ResponseStarted" if watch else "ResponseComplete"):
            continue
        ref = e.get("objectRef") or {}
        c[
            f"{e['verb']} {ref.get('resource')}"
            + (f"/{ref['subresource']}" if ref.get("subresource") else "")
        ] += 1
    return dict(c.most_common())


def writer(ev: dict[str, Any]) -> str:
    """Who made a request: ``operator``, ``bench`` (this script's client: the creates, the floor's
    writes) or the API user (the controller-manager's controllers, the scheduler, KWOK)."""
    if is_operator(ev):
        return "operator"
    if str(ev.get("userAgent", "")).startswith(BENCH_UA):
        return "bench"
    user = str((ev.get("user") or {}).get("username", "?"))
    # the controller-manager writes as one service account per controller (deployment-controller, ...)
    return user.removeprefix("system:serviceaccount:kube-system:").removeprefix("system:")


def api_writes_per_object(events: list[dict[str, Any]], n: int) -> dict[str, Any]:
    """Every write the API server completed in the namespace, per object, in all and by writer:
    the work the API server did for one object's way to Ready (what the operator adds to the
    floor's, which the controllers and KWOK's pod start share)."""
    by: collections.Counter[str] = collections.Counter(writer(e) for e in completed_writes(events))
    return {
        "total": round(sum(by.values()) / n, 2),
        "by_writer": {k: round(v / n, 2) for k, v in by.most_common()},
    }


def status_writes_histogram(writes: list[dict[str, Any]]) -> dict[str, int]:
    """How many ModelDeployments got 1, 2, ... status writes (``{"2": 80, "3": 20}``)."""
    per: collections.Counter[str] = collections.Counter(
        str((e.get("objectRef") or {}).get("name"))
        for e in writes
        if (e.get("objectRef") or {}).get("resource") == "modeldeployments"
        and (e.get("objectRef") or {}).get("subresource") == "status"
    )
    return {str(k): v for k, v in sorted(collections.Counter(per.values()).items())}


def status_sequences(history: dict[str, list[tuple[float, str]]], ready: dict[str, float]) -> dict[str, int]:
    """The three most common sequences of statuses the watch saw per object, from the first status
    to the first Ready: what each status write said (observed generation, ready replicas, every
    condition's status/reason), so a write too many shows what it was for."""
    seqs: collections.Counter[str] = collections.Counter()
    for name, seen in history.items():
        if name not in ready:
            continue
        steps: list[str] = []
        for when, st in seen:
            if when > ready[name]:
                break
            if "=" in st and (not steps or steps[-1] != st):  # a status (the create has none)
                steps.append(st)
        seqs[" -> ".join(steps)] += 1
    return dict(seqs.most_common(3))


def stamp(ev: dict[str, Any]) -> float:
    return dt.datetime.fromisoformat(ev["stageTimestamp"].replace("Z", "+00:00")).timestamp()


def reaction_times(events: list[dict[str, Any]]) -> list[float]:
    """Per ModelDeployment: its create (by the bench) -> the operator's first Deployment write."""
    created: dict[str, float] = {}
    dep_written: dict[str, float] = {}
    for e in events:
        if e.get("stage") != "ResponseComplete":
            continue
        ref = e.get("objectRef") or {}
        name = str(ref.get("name") or "")
        if ref.get("resource") == "modeldeployments" and e["verb"] == "create":
            created.setdefault(name, stamp(e))
        elif ref.get("resource") == "deployments" and not ref.get("subresource") and is_operator(e):
            if e["verb"] in ("create", "patch", "update") and name not in dep_written:
                dep_written[name] = stamp(e)
    return [dep_written[n] - created[n] for n in created if n in dep_written]


def first_deployment_writes(events: list[dict[str, Any]], by_operator: bool) -> dict[str, float]:
    out: dict[str, float] = {}
    for e in events:
        ref = e.get("objectRef") or {}
        if (
            e.get("stage") == "ResponseComplete"
            and ref.get("resource") == "deployments"
            and not ref.get("subresource")
            and e.get("verb") in ("create", "patch", "update")
            and is_operator(e) == by_operator
        ):
            out.setdefault(str(ref.get("name")), stamp(e))
    return out


def received(ev: dict[str, Any]) -> float:
    return dt.datetime.fromisoformat(ev["requestReceivedTimestamp"].replace("Z", "+00:00")).timestamp()


def audit_status_lags(
    events: list[dict[str, Any]], ready: dict[str, float], avail: dict[str, float]
) -> list[float]:
    """The status lag without this script's own watch delays: per object, from the Deployment status
    write (by the controller-manager) that made it Available to the operator's ModelDeployment
    status write that made it Ready, each taken as the last such write the API server received
    before this script's watch saw the state (a state is seen only after the write that made it)."""
    writes: dict[tuple[str, str], list[float]] = collections.defaultdict(list)
    for e in events:
        ref = e.get("objectRef") or {}
        if (
            e.get("stage") == "ResponseComplete"
            and ref.get("subresource") == "status"
            and e.get("verb") in ("update", "patch")
            and (e.get("responseStatus") or {}).get("code", 200) < 300
        ):
            res = str(ref.get("resource"))
            if (res == "deployments" and not is_operator(e)) or (
                res == "modeldeployments" and is_operator(e)
            ):
                writes[(res, str(ref.get("name")))].append(received(e))
    out = []
    for name in ready.keys() & avail.keys():
        md = [t for t in writes[("modeldeployments", name)] if t <= ready[name]]
        dep = [t for t in writes[("deployments", name)] if t <= avail[name]]
        if md and dep:
            out.append(max(md) - max(dep))
    return out


def worst_lags(
    events: list[dict[str, Any]],
    ready: dict[str, float],
    avail: dict[str, float],
    history: dict[str, list[tuple[float, str]]],
    k: int = 5,
) -> list[dict[str, Any]]:
    """The ``k`` objects with the longest status lag and, from the audit log, when (seconds
    relative to the Deployment seen Available) the controller-manager wrote the Deployment's status
    and the operator wrote the ModelDeployment's: whether the lag was the operator's or a watch's."""
    worst = sorted((ready[n] - avail[n], n) for n in ready if n in avail)[-k:]
    out = []
    for lag, name in reversed(worst):
        t0 = avail[name]

        def rel(
            resource: str, operator: bool, t0: float = t0, name: str = name, lag: float = lag
        ) -> list[float]:
            return [
                round(stamp(e) - t0, 2)
                for e in events
                if e.get("stage") == "ResponseComplete"
                and (e.get("objectRef") or {}).get("name") == name
                and (e.get("objectRef") or {}).get("resource") == resource
                and (e.get("objectRef") or {}).get("subresource") == "status"
                and e.get("verb") in ("update", "patch")
                and is_operator(e) == operator
                and -30 < stamp(e) - t0 < lag + 5
            ]

        out.append(
            {
                "name": name,
                "lag_s": round(lag, 2),
                "deployment_status_writes_s": rel("deployments", False),
                "md_status_writes_s": rel("modeldeployments", True),
                "md_versions_seen": [(round(t - t0, 2), what) for t, what in history.get(name, [])],
            }
        )
    return out


class Observer:
    """Watches (from this process, as a client would) ModelDeployments and Deployments of one
    namespace; records, in wall-clock seconds, when each first became Ready / Available."""

    def __init__(self, api: Any, ns: str, mds: bool = True) -> None:
        self.api, self.ns = api, ns
        self.md_ready: dict[str, float] = {}
        self.dep_available: dict[str, float] = {}
        #: per ModelDeployment, every version seen: (when, its conditions' status/reason, observed generation)
        self.md_history: dict[str, list[tuple[float, str]]] = collections.defaultdict(list)
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._loop, args=(self._deployments,), daemon=True)]
        if mds:
            self._threads.append(threading.Thread(target=self._loop, args=(self._mds,), daemon=True))

    def start(self) -> Observer:
        for t in self._threads:
            t.start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def _loop(self, fn: Any) -> None:
        while not self._stop.is_set():
            try:
                fn()
            except Exception as exc:  # a watch broke: start again (records only first times)
                print(f"watch restarted: {exc}", file=sys.stderr)
                time.sleep(0.5)

    def _mds(self) -> None:
        from kubernetes import client, watch

        api = client.CustomObjectsApi(self.api)
        w = watch.Watch()
        for ev in w.stream(
            api.list_namespaced_custom_object, "modeldeploy.io", "v1alpha1", self.ns, "modeldeployments",
            timeout_seconds=60,
        ):  # fmt: skip
            obj = ev["object"]
            st = obj.get("status") or {}
            conds = " ".join(
                f"{c['type']}={c['status']}/{c.get('reason')}" for c in st.get("conditions") or []
            )
            self.md_history[obj["metadata"]["name"]].append(
                (time.time(), f"gen {st.get('observedGeneration')} ready {st.get('readyReplicas')} {conds}")
            )
            ready = any(c["type"] == "Ready" and c["status"] == "True" for c in st.get("conditions") or [])
            if ready and st.get("observedGeneration") == obj["metadata"].get("generation"):
                self.md_ready.setdefault(obj["metadata"]["name"], time.time())
            if self._stop.is_set():
                w.stop()

    def _deployments(self) -> None:
        from kubernetes import client, watch

        api = client.AppsV1Api(self.api)
        w = watch.Watch()
        for ev in w.stream(
            api.list_namespaced_deployment, self.ns, timeout_seconds=60, _preload_content=True
        ):
            d = ev["object"]
            st = d.status
            if (
                st is not None
                and st.observed_generation == d.metadata.generation
                and (st.available_replicas or 0) >= (d.spec.replicas or 0)
                and any(c.type == "Available" and c.status == "True" for c in st.conditions or [])
            ):
                self.dep_available.setdefault(d.metadata.name, time.time())
            if self._stop.is_set():
                w.stop()


#: Operator metrics reported with the figures (where the status lag goes: queue waits of status
#: refreshes, resync passes, reconciles by trigger, status changes held back).
METRICS_REPORTED = (
    "modeldeploy_handler_latency_seconds_bucket",
    "modeldeploy_handler_latency_seconds_count",
    "modeldeploy_watch_event_age_seconds_bucket",
    "modeldeploy_resync_passes_total",
    "modeldeploy_reconcile_total",
    "modeldeploy_status_deferred_total",
    "modeldeploy_status_writes_total",
)


def scrape_metrics(port: int, names: tuple[str, ...] | None = None) -> dict[str, float]:
    """The operator's samples named in ``names`` (default METRICS_REPORTED; ``name{labels}`` ->
    value); empty on error."""
    names = names or METRICS_REPORTED
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
            text = r.read().decode()
    except OSError:
        return {}
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith(names):
            name, _, value = line.rpartition(" ")
            out[name] = float(value)
    return out


def wait_until(cond: Any, timeout: float, interval: float = 0.2) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(interval)
    return bool(cond())


def start_operator(
    cluster: Any,
    ns: str,
    resync: float,
    log: Path,
    extra: list[str] | None = None,
    source: Path | None = None,
    extra_env: dict[str, str] | None = None,
) -> tuple[subprocess.Popen[bytes], int]:
    """The operator as in production, with ``extra`` arguments; from ``source`` (a tree with
    operator/ and runtime/) if given."""
    from modeldeploy_runtime.ports import free_ports

    health, metrics_port = free_ports(2)
    cmd = [
        sys.executable, "-m", "modeldeploy.cli", "operator", "run", "--namespace", ns,
        "--resync-seconds", str(resync), "--metrics-port", str(metrics_port),
        "--health-port", str(health), "--bind-address", "127.0.0.1", "--log-format", "json",
        "--no-query-agents",  # KWOK pods: their IPs lead nowhere
        *(extra or []),
    ]  # fmt: skip
    from modeldeploy.cluster.source import tree_env

    env = cluster.env() | (tree_env(source) if source is not None else {}) | (extra_env or {})
    with log.open("wb") as f:
        op = subprocess.Popen(cmd, env=env, stdout=f, stderr=subprocess.STDOUT, cwd=source)

    def healthy() -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{health}/healthz", timeout=2):
                return True
        except OSError:
            return op.poll() is not None

    if not wait_until(healthy, 60, 0.3) or op.poll() is not None:
        raise SystemExit(f"operator did not start; log: {log}")
    return op, metrics_port


def floor_children(ns: str, n: int) -> list[list[dict[str, Any]]]:
    """The children the operator would write for each of the N objects, without owner references
    (there is no owner: a plain client writes them)."""
    from modeldeploy.api.v1alpha1 import ModelDeployment
    from modeldeploy.render import RenderOptions, render_all

    out = []
    for i in range(n):
        body = md_body(ns, i)
        body["metadata"] |= {"uid": str(uuid.uuid4()), "generation": 1}
        children = render_all(ModelDeployment.from_body(body), RenderOptions(crds=frozenset()))
        for c in children:
            c["metadata"].pop("ownerReferences", None)
        out.append(children)
    return out


def run_floor(cluster: Any, kube: Any, api: Any, n: int, workers: int, timeout: float) -> dict[str, Any]:
    """The same children written directly (server-side apply, ``workers`` objects in parallel)."""
    ns = f"bench-floor-{uuid.uuid4().hex[:6]}"
    cluster.kubectl("create", "namespace", ns)
    audit = Path(cluster.audit_log)
    _, start_line = audit_events(audit, 0, "-")
    try:
        work = floor_children(ns, n)
        obs = Observer(api, ns, mds=False).start()
        cpu0 = cluster_cpu(cluster)
        t0 = time.time()
        with ThreadPoolExecutor(max_workers=workers) as pool:
            list(pool.map(lambda children: [kube.apply(c, manager="bench-floor") for c in children], work))
        written = time.time() - t0
        done = wait_until(lambda: len(obs.dep_available) >= n, timeout, 0.2)
        cpu = cpu_since(cluster, cpu0)
        obs.stop()
        took = max(obs.dep_available.values(), default=t0) - t0
        return {
            "floor_all_available_s": round(took, 2) if done else None,
            "floor_written_in_s": round(written, 2),
            "floor_writes_per_object": sum(len(c) for c in work) / n,
            "floor_api_writes_per_object": api_writes_per_object(audit_events(audit, start_line, ns)[0], n),
            "floor_workers": workers,
            "floor_cluster_cpu_s_until_available": cpu,
        }
    finally:
        cluster.kubectl("delete", "namespace", ns, "--wait=false", check=False)


def delete_all(kube: Any, ns: str, timeout: float) -> bool:
    """Delete every ModelDeployment; wait until they, their Deployments and their pods (garbage
    collection, then KWOK's pod deletion) are gone: until then the operator still caches the pods
    and handles their deletion events, which is not what "after deletion" measures."""
    from modeldeploy.reconcile.kube import DEPLOYMENT, MODELDEPLOYMENT, POD

    kube.request("DELETE", MODELDEPLOYMENT.path(ns), kind="ModelDeployment", verb="deletecollection")
    return wait_until(
        lambda: not any(kube.list(kind, ns) for kind in (MODELDEPLOYMENT, DEPLOYMENT, POD)), timeout, 1
    )


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=100, help="number of ModelDeployments")
    ap.add_argument("--kubeconfig", type=Path, default=os.environ.get("MODELDEPLOY_TEST_KUBECONFIG"))
    ap.add_argument(
        "--cpu-nodes", type=int, default=0, help="CPU nodes of a started cluster (default: N/100 + 1)"
    )
    ap.add_argument(
        "--controller-qps",
        type=int,
        default=None,
        help="--kube-api-qps of the started cluster's controller-manager and scheduler (default: "
        "theirs, 20 and 50/s: the Deployment and ReplicaSet controllers then pace every pod start)",
    )
    ap.add_argument(
        "--create-workers",
        type=int,
        default=8,
        help="parallel clients creating the N ModelDeployments (1: one after another, as before)",
    )
    ap.add_argument("--resync-seconds", type=float, default=30.0)
    ap.add_argument(
        "--quiet-seconds", type=float, default=35.0, help="quiet period measured after all are Ready"
    )
    ap.add_argument("--floor-workers", type=int, default=8, help="parallel objects of the floor's client")
    ap.add_argument(
        "--operator-args",
        default="",
        help="more flags of `mdctl operator run` (say '--status-progress-seconds 0 "
        "--status-detail-seconds 0' for a status write on every change)",
    )
    ap.add_argument(
        "--operator-env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="environment of the operator process (repeatable), e.g. PYTHONMALLOC=malloc",
    )
    ap.add_argument("--no-floor", action="store_true", help="skip the floor measurement")
    ap.add_argument("--timeout", type=float, default=900.0)
    ap.add_argument("--keep", action="store_true", help="keep the namespace afterwards")
    ap.add_argument(
        "--baseline-ref", default=None, help="also measure the operator of this git commit (same run)"
    )
    ap.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="with --baseline-ref: measure both this many times, in alternating (ABBA) order",
    )
    return ap.parse_args(argv)


def run_operator(cluster: Any, args: argparse.Namespace, source: Path | None) -> dict[str, Any]:
    """One full measurement (create N, Ready, quiet period, delete all) in a fresh namespace."""
    from modeldeploy.reconcile.kube import Kube

    ns = f"bench-{uuid.uuid4().hex[:6]}"
    op: subprocess.Popen[bytes] | None = None
    log = Path(tempfile.mkdtemp(prefix="mdbench-")) / "operator.log"
    print(f"operator log: {log}", file=sys.stderr)
    try:
        cluster.kubectl("create", "namespace", ns)
        # --operator-args are for this tree's operator: an earlier commit may not know them
        extra = shlex.split(args.operator_args) if source is None else []
        env = dict(kv.split("=", 1) for kv in args.operator_env)
        op, metrics_port = start_operator(cluster, ns, args.resync_seconds, log, extra, source, env)
        api = cluster.api_client()
        api.user_agent = BENCH_UA
        kube = Kube(api)
        time.sleep(2)  # the operator's first LISTs and kopf's start are part of idle
        rss_idle = rss_mib(op.pid)
        map_idle = memory_map(op.pid)
        result = measure_operator(cluster, kube, api, ns, args, op, metrics_port)
        result |= {"resync_seconds": args.resync_seconds, "operator_rss_idle_mib": round(rss_idle, 1)}
        deleted = delete_all(kube, ns, args.timeout)
        time.sleep(args.resync_seconds)  # one resync pass over the empty namespace
        after = rss_mib(op.pid) if deleted else None
        # the deletion's own churn can take RSS past the peak at Ready (VmHWM covers both now)
        result["operator_peak_rss_incl_delete_mib"] = round(rss_mib(op.pid, "VmHWM"), 1)
        result["operator_rss_after_delete_mib"] = round(after, 1) if after is not None else None
        result["operator_rss_after_delete_over_idle_mib"] = round(after - rss_idle, 1) if after else None
        result["operator_memory_map_mib"] = {"idle": map_idle, "after_delete": memory_map(op.pid)}
        # what the operator's stores still hold (0 of each kind: nothing kept of deleted objects; the
        # "<Kind>:names" stores keep anyone's names, so the namespace's kube-root-ca.crt stays)
        held = scrape_metrics(metrics_port, ("modeldeploy_cache_objects",))
        result["operator_cache_objects_after_delete"] = {
            k.split('kind="', 1)[-1].rstrip('"}'): int(v) for k, v in held.items()
        }
        result["operator_env"] = env
        return result
    finally:
        if op is not None and op.poll() is None:
            op.send_signal(signal.SIGTERM)
            try:
                op.wait(timeout=30)
            except subprocess.TimeoutExpired:
                op.kill()
        if not args.keep:
            cluster.kubectl("delete", "namespace", ns, "--wait=false", check=False)


#: Figures compared with the baseline (ours / baseline; below 1 is better).
COMPARED = ("all_ready_s", "operator_writes_per_md_until_ready", "operator_peak_rss_mib")


def abba(rounds: int) -> list[tuple[str, ...]]:
    """The order of the sides in each round: this tree first in odd rounds, the baseline first in
    even ones (A B, B A, A B, ...), so a linear drift of the machine's speed cancels over pairs."""
    return [("ours", "baseline") if r % 2 == 0 else ("baseline", "ours") for r in range(rounds)]


def compare(ours: dict[str, Any], base: dict[str, Any]) -> dict[str, float | None]:
    out: dict[str, float | None] = {}
    for k in COMPARED:
        a, b = ours.get(k), base.get(k)
        out[k] = round(a / b, 2) if isinstance(a, int | float) and isinstance(b, int | float) and b else None
    for k in ("status_lag_s", "operator_reaction_s", "apply_to_ready_s"):
        a, b = (ours.get(k) or {}).get("p99"), (base.get(k) or {}).get("p99")
        out[f"{k}_p99"] = round(a / b, 2) if a is not None and b and not math.isnan(b) else None
    return out


def measure_operator(
    cluster: Any, kube: Any, api: Any, ns: str, args: argparse.Namespace, op: Any, metrics_port: int
) -> dict[str, Any]:
    from modeldeploy.reconcile.kube import MODELDEPLOYMENT

    audit = Path(cluster.audit_log)
    _, start_line = audit_events(audit, 0, "-")
    obs = Observer(api, ns).start()

    def create(i: int) -> tuple[str, float]:
        body = md_body(ns, i)
        kube.create(MODELDEPLOYMENT, ns, body)
        return str(body["metadata"]["name"]), time.time()

    cpu0 = cluster_cpu(cluster)
    t0 = time.time()
    # "N at once": --create-workers clients in parallel, so the creates themselves take seconds
    # (one client creates ~12/s on a loaded 2-core machine: 25 s of N = 300 would be the bench's)
    with ThreadPoolExecutor(args.create_workers) as pool:
        created = dict(pool.map(create, range(args.n)))
    t_created = time.time() - t0
    wait_until(lambda: len(obs.md_ready) >= args.n, args.timeout, 0.2)
    ready = dict(obs.md_ready)
    cpu = cpu_since(cluster, cpu0)
    t_all = max(ready.values(), default=t0) - t0
    if len(ready) < args.n:
        print(f"only {len(ready)}/{args.n} Ready after {args.timeout:.0f}s", file=sys.stderr)
    metrics_at_ready = scrape_metrics(metrics_port)
    events, line_ready = audit_events(audit, start_line, ns)
    written = first_deployment_writes(events, by_operator=True)
    avail = obs.dep_available
    writes = operator_writes(events)
    time.sleep(args.quiet_seconds)  # the quiet period is the measurement itself
    quiet_events, _ = audit_events(audit, line_ready, ns)
    obs.stop()
    quiet = by_verb(quiet_events)
    return {
        "n": args.n,
        "created_in_s": round(t_created, 2),
        "all_ready_s": round(t_all, 2),
        "ready": len(ready),
        "apply_to_ready_s": p50_p99([ready[n] - created[n] for n in ready]),
        "operator_reaction_s": p50_p99(reaction_times(events)),
        "pods_start_s": p50_p99([avail[n] - written[n] for n in avail if n in written]),
        "status_lag_s": p50_p99([ready[n] - avail[n] for n in ready if n in avail]),
        "status_lag_audit_s": p50_p99(audit_status_lags(events, ready, avail)),
        "status_lag_worst": worst_lags(events, ready, avail, obs.md_history),
        "operator_writes_per_md_until_ready": round(len(writes) / args.n, 2),
        "api_writes_per_md_until_ready": api_writes_per_object(events, args.n),
        "operator_writes_by_kind": by_verb(writes),
        # GET/LIST until Ready (the stores answer reads; each one here went to the API server)
        "operator_reads_until_ready": {
            k: v for k, v in by_verb(events).items() if k.split()[0] in ("get", "list")
        },
        "status_writes_per_md": status_writes_histogram(writes),
        "status_sequences_until_ready": status_sequences(obs.md_history, ready),
        "quiet_period_s": args.quiet_seconds,
        "operator_requests_in_quiet_period": quiet,
        "operator_writes_in_quiet_period": sum(v for k, v in quiet.items() if k.split()[0] in WRITE_VERBS),
        "operator_reads_in_quiet_period": sum(v for k, v in quiet.items() if k.split()[0] in ("get", "list")),
        "operator_peak_rss_mib": round(rss_mib(op.pid, "VmHWM"), 1),
        "operator_cpu_s_until_ready": round(cpu_seconds(op.pid), 1),
        # the control plane's CPU from the first create until all Ready (the floor's: until all
        # available): what the operator's requests and watches cost the API server shows here
        "cluster_cpu_s_until_ready": cpu,
        "operator_metrics_at_ready": metrics_at_ready,
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from modeldeploy.cluster.local import LocalCluster
    from modeldeploy.reconcile.kube import Kube

    own = args.kubeconfig is None
    if own:
        cluster = LocalCluster(
            name=f"bench-{os.getpid()}",
            ephemeral=True,
            cpu_nodes=args.cpu_nodes or args.n // 100 + 1,
            controller_qps=args.controller_qps,
        )
        t = time.monotonic()
        cluster.up()
        print(f"cluster up in {time.monotonic() - t:.1f}s", file=sys.stderr)
    else:
        cluster = LocalCluster.attach(Path(args.kubeconfig))
    try:
        cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(CRD_FILE))
        cluster.wait_established("modeldeployments.modeldeploy.io")
        if not args.baseline_ref:
            result = run_operator(cluster, args, None)
            ok = result["ready"] == args.n
        else:
            from modeldeploy.cluster.source import export_tree

            source = export_tree(args.baseline_ref, REPO)
            pairs = []
            for order in abba(max(args.rounds, 1)):
                got = {
                    side: run_operator(cluster, args, None if side == "ours" else source) for side in order
                }
                pairs.append((order, got["ours"], got["baseline"]))
            result, base = pairs[0][1], pairs[0][2]
            ok = all(p[1]["ready"] == args.n and p[2]["ready"] == args.n for p in pairs)
            result |= {
                "baseline_ref": args.baseline_ref,
                "baseline": base,
                "vs_baseline": compare(result, base),
            }
            if len(pairs) > 1:
                result["rounds"] = [
                    {
                        "order": list(order),
                        "all_ready_s": a["all_ready_s"],
                        "baseline_all_ready_s": b["all_ready_s"],
                        "vs_baseline": compare(a, b)["all_ready_s"],
                        "operator_cpu_s_until_ready": a.get("operator_cpu_s_until_ready"),
                        "baseline_operator_cpu_s_until_ready": b.get("operator_cpu_s_until_ready"),
                        # the operator's own parts, per round (the top level has the first round's)
                        **{
                            f"{prefix}{k}": side.get(k)
                            for prefix, side in (("", a), ("baseline_", b))
                            for k in ("status_lag_s", "status_lag_audit_s", "operator_reaction_s")
                        },
                    }
                    for order, a, b in pairs
                ]
                ours_s = [p[1]["all_ready_s"] for p in pairs]
                base_s = [p[2]["all_ready_s"] for p in pairs]
                if None not in ours_s and None not in base_s:
                    result["all_ready_s_vs_baseline_over_rounds"] = round(sum(ours_s) / sum(base_s), 2)
        if not args.no_floor:
            api = cluster.api_client()
            api.user_agent = BENCH_UA
            result |= run_floor(cluster, Kube(api), api, args.n, args.floor_workers, args.timeout)
            floor = result["floor_all_available_s"]
            result["operator_vs_floor"] = round(result["all_ready_s"] / floor, 2) if floor else None
            # the API server's writes for one object, operator path / floor (the controllers' and
            # KWOK's included): on a machine where the API server is the bottleneck, about the
            # time the operator's path must take over the floor's
            result["api_writes_vs_floor"] = round(
                result["api_writes_per_md_until_ready"]["total"]
                / result["floor_api_writes_per_object"]["total"],
                2,
            )
        print(json.dumps(result, indent=2))
        return 0 if ok else 1
    finally:
        if own:
            cluster.down()


if __name__ == "__main__":
    sys.exit(main())
