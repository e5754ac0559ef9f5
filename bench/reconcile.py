"""Benchmark: N ModelDeployments applied at once against the local control plane.

Starts its own LocalCluster (or attaches to a running one: ``MODELDEPLOY_TEST_KUBECONFIG`` or
``--kubeconfig``), runs the operator as a subprocess (``python -m modeldeploy.cli operator run``,
exactly as in production) watching one fresh namespace, creates N CPU ModelDeployments as fast as
possible and reports:

* time from the first create until every ModelDeployment is Ready=True,
* p50 / p99 of create -> Ready per ModelDeployment,
* write requests per ModelDeployment made by the operator (from the API server's audit log),
  until all are Ready and during a quiet period afterwards (should be 0),
* the operator's peak RSS (VmHWM).

    python bench/reconcile.py --n 100
    python bench/reconcile.py --n 1000 --cpu-nodes 10
"""

from __future__ import annotations

import argparse
import collections
import json
import math
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
CRD_FILE = REPO / "crds" / "modeldeploy.io_modeldeployments.yaml"
BENCH_UA = "modeldeploy-bench"


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


def peak_rss_mib(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def audit_writes(path: Path, since: int, ns: str) -> tuple[list[dict[str, Any]], int]:
    out = []
    n = 0
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


#: User agents of the operator process: its REST client (kubernetes' OpenAPI client) and kopf.
OPERATOR_UAS = ("OpenAPI-Generator/", "kopf/")


def operator_writes(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Writes by the operator process (not the bench, KWOK or the controllers)."""
    return [e for e in events if str(e.get("userAgent", "")).startswith(OPERATOR_UAS)]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=100, help="number of ModelDeployments")
    ap.add_argument("--kubeconfig", type=Path, default=os.environ.get("MODELDEPLOY_TEST_KUBECONFIG"))
    ap.add_argument(
        "--cpu-nodes", type=int, default=0, help="CPU nodes of a started cluster (default: N/100 + 1)"
    )
    ap.add_argument("--resync-seconds", type=float, default=30.0)
    ap.add_argument(
        "--quiet-seconds", type=float, default=35.0, help="quiet period measured after all are Ready"
    )
    ap.add_argument("--timeout", type=float, default=900.0)
    ap.add_argument("--keep", action="store_true", help="keep the namespace afterwards")
    args = ap.parse_args(argv)

    from modeldeploy.cluster.local import LocalCluster
    from modeldeploy.reconcile.kube import MODELDEPLOYMENT, Kube
    from modeldeploy_runtime.ports import free_ports

    own = args.kubeconfig is None
    if own:
        cluster = LocalCluster(
            name=f"bench-{os.getpid()}", ephemeral=True, cpu_nodes=args.cpu_nodes or args.n // 100 + 1
        )
        t = time.monotonic()
        cluster.up()
        print(f"cluster up in {time.monotonic() - t:.1f}s", file=sys.stderr)
    else:
        cluster = LocalCluster.attach(Path(args.kubeconfig))
    ns = f"bench-{uuid.uuid4().hex[:6]}"
    op: subprocess.Popen[bytes] | None = None
    log = Path(tempfile.mkdtemp(prefix="mdbench-")) / "operator.log"
    try:
        cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(CRD_FILE))
        cluster.wait_established("modeldeployments.modeldeploy.io")
        cluster.kubectl("create", "namespace", ns)
        health, metrics_port = free_ports(2)
        cmd = [
            sys.executable, "-m", "modeldeploy.cli", "operator", "run", "--namespace", ns,
            "--resync-seconds", str(args.resync_seconds), "--metrics-port", str(metrics_port),
            "--health-port", str(health), "--bind-address", "127.0.0.1", "--log-format", "json",
            "--no-query-agents",  # KWOK pods: their IPs lead nowhere
        ]  # fmt: skip
        with log.open("wb") as f:
            op = subprocess.Popen(cmd, env=cluster.env(), stdout=f, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{health}/healthz", timeout=2):
                    break
            except OSError:
                if op.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit(f"operator did not start; log: {log}") from None
                time.sleep(0.3)
        rss_idle = peak_rss_mib(op.pid)

        api = cluster.api_client()
        api.user_agent = BENCH_UA
        kube = Kube(api)
        audit = Path(cluster.audit_log)
        _, start_line = audit_writes(audit, 0, "-")

        created: dict[str, float] = {}
        t0 = time.monotonic()
        for i in range(args.n):
            body = md_body(ns, i)
            kube.create(MODELDEPLOYMENT, ns, body)
            created[body["metadata"]["name"]] = time.monotonic()
        t_created = time.monotonic() - t0

        ready: dict[str, float] = {}
        while len(ready) < args.n and time.monotonic() - t0 < args.timeout:
            now = time.monotonic()
            for item in kube.list(MODELDEPLOYMENT, ns):
                name = item["metadata"]["name"]
                if name in ready:
                    continue
                st = item.get("status") or {}
                conds = {c["type"]: c for c in st.get("conditions") or []}
                if conds.get("Ready", {}).get("status") == "True" and st.get("observedGeneration") == item[
                    "metadata"
                ].get("generation"):
                    ready[name] = now
            time.sleep(0.25)
        t_all = time.monotonic() - t0
        if len(ready) < args.n:
            print(f"only {len(ready)}/{args.n} Ready after {args.timeout:.0f}s", file=sys.stderr)
        lat = [ready[n] - created[n] for n in ready]

        events, line_ready = audit_writes(audit, start_line, ns)
        writes_to_ready = operator_writes(events)
        time.sleep(args.quiet_seconds)
        quiet_events, _ = audit_writes(audit, line_ready, ns)
        quiet_writes = operator_writes(quiet_events)
        rss_peak = peak_rss_mib(op.pid)

        by_kind = collections.Counter(
            f"{e['verb']} {e['objectRef'].get('resource')}{'/' + e['objectRef']['subresource'] if e['objectRef'].get('subresource') else ''}"
            for e in writes_to_ready
        )
        result = {
            "n": args.n,
            "created_in_s": round(t_created, 2),
            "all_ready_s": round(t_all, 2),
            "ready": len(ready),
            "apply_to_ready_p50_s": round(percentile(lat, 50), 2),
            "apply_to_ready_p99_s": round(percentile(lat, 99), 2),
            "operator_writes_per_md_until_ready": round(len(writes_to_ready) / args.n, 2),
            "operator_writes_by_kind": dict(by_kind.most_common()),
            "operator_writes_in_quiet_period": len(quiet_writes),
            "quiet_period_s": args.quiet_seconds,
            "resync_seconds": args.resync_seconds,
            "operator_rss_idle_mib": round(rss_idle, 1),
            "operator_peak_rss_mib": round(rss_peak, 1),
        }
        print(json.dumps(result, indent=2))
        return 0 if len(ready) == args.n else 1
    finally:
        if op is not None and op.poll() is None:
            op.send_signal(signal.SIGTERM)
            try:
                op.wait(timeout=30)
            except subprocess.TimeoutExpired:
                op.kill()
        if not args.keep:
            cluster.kubectl("delete", "namespace", ns, "--wait=false", check=False)
        if own:
            cluster.down()


if __name__ == "__main__":
    sys.exit(main())
