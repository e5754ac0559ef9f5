"""Benchmark: spec change -> every agent serving the new version, through the operator's push.

Starts its own LocalCluster (or attaches: ``MODELDEPLOY_TEST_KUBECONFIG`` / ``--kubeconfig``), adds a
KWOK node whose pod CIDR is a loopback range, runs the operator as in production (``python -m
modeldeploy.cli operator run --query-agents``) and, for the ModelDeployment's pods, real runtime
agents and real tritonservers on the pods' IPs (modeldeploy.cluster.podagents). The agents' manifest
files are never updated after start, so the kubelet's ConfigMap sync (up to a minute or more) is
excluded: a new version can only arrive by the operator's push.

Each round applies a spec whose ``versionPolicy latest: 1`` now selects the next version of a tiny
python model and measures the time from the ``kubectl apply`` until every agent's Triton serves
exactly that version (polled every 20 ms from the agents' typed ``/status``). Target: <= 5 s.

    python bench/push_bench.py                     # 3 agents, 3 rounds
    python bench/push_bench.py --agents 1 --rounds 1 --json out.json
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
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
TAINT = {"key": "modeldeploy.io/push-bench", "value": "true", "effect": "NoSchedule"}


def md_body(ns: str, node: str, store: Path, latest: int, replicas: int) -> dict[str, Any]:
    from modeldeploy.cluster.podagents import scale_deployment

    return scale_deployment(ns, node, store, [{"version": v} for v in range(1, latest + 1)], replicas, TAINT)


def wait(cond: Any, timeout: float, what: str, interval: float = 0.2) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = cond()
        if got:
            return got
        time.sleep(interval)
    raise SystemExit(f"timed out after {timeout:.0f}s waiting for {what}")


def crd_established(cluster: Any) -> bool:
    out = cluster.kubectl("get", "crd", "modeldeployments.modeldeploy.io", "-o", "json", check=False)
    if out.returncode != 0:
        return False
    conds = json.loads(out.stdout).get("status", {}).get("conditions") or []
    return any(c.get("type") == "Established" and c.get("status") == "True" for c in conds)


def start_operator(cluster: Any, ns: str, log: Path) -> subprocess.Popen[bytes]:
    from modeldeploy_runtime.ports import free_ports

    health, metrics_port = free_ports(2)
    cmd = [
        sys.executable, "-m", "modeldeploy.cli", "operator", "run", "--namespace", ns,
        "--resync-seconds", "30", "--manifest-sync-seconds", "3600", "--query-agents",
        "--metrics-port", str(metrics_port), "--health-port", str(health), "--bind-address", "127.0.0.1",
        "--log-format", "json",
    ]  # fmt: skip
    with log.open("wb") as f:
        op = subprocess.Popen(cmd, env=cluster.env(), stdout=f, stderr=subprocess.STDOUT)

    def healthy() -> bool:
        if op.poll() is not None:
            raise SystemExit(f"operator exited; log: {log}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{health}/healthz", timeout=2):
                return True
        except OSError:
            return False

    wait(healthy, 60, "the operator's health endpoint", 0.3)
    return op


def measure(args: argparse.Namespace, cluster: Any, ns: str, work: Path) -> dict[str, Any]:
    from modeldeploy.cluster.local import NodePool
    from modeldeploy.cluster.podagents import PodAgents, package_scale

    octet = 10 + uuid.uuid4().int % 200
    pool = NodePool(
        prefix=f"pushbench-{octet}",
        count=1,
        cpu="64",
        memory="256Gi",
        pod_cidr=f"127.78.{octet}.0/24",
        taints=[TAINT],
    )
    (node,) = cluster.add_nodes(pool)
    store = work / "store"
    for v in range(1, args.rounds + 2):
        package_scale(store, v, float(v))
    apply = lambda doc: cluster.kubectl("apply", "-f", "-", input=json.dumps(doc))  # noqa: E731
    apply(md_body(ns, node, store, 1, args.agents))

    def running() -> list[dict[str, Any]] | None:
        items = json.loads(cluster.kubectl("get", "pods", "-n", ns, "-o", "json").stdout)["items"]
        ps = [
            p for p in items if (p.get("status") or {}).get("podIP") and p["status"].get("phase") == "Running"
        ]
        return ps if len(ps) == args.agents else None

    pods = wait(running, 180, f"{args.agents} pods Running")
    try:
        with PodAgents(cluster, ns, "scale", work / "pods") as agents:
            t = time.monotonic()
            agents.start(pods)
            started = time.monotonic() - t

            def all_serve(v: int) -> bool:
                return all(
                    (st := p.agent.status()).models and st.models[0].served == [v] for p in agents.pods
                )

            wait(lambda: all_serve(1), 300, "every agent serving v1")
            rounds: list[float] = []
            delivered: list[float] = []
            for v in range(2, args.rounds + 2):
                gen = max(p.agent.known_generation() for p in agents.pods)
                t0 = time.monotonic()
                apply(md_body(ns, node, store, v, args.agents))
                wait(lambda g=gen: all(p.agent.known_generation() > g for p in agents.pods), args.timeout,
                     f"the manifest with v{v} at every agent", 0.01)  # fmt: skip
                delivered.append(time.monotonic() - t0)
                wait(lambda v=v: all_serve(v), args.timeout, f"every agent serving v{v}", 0.02)
                took = time.monotonic() - t0
                rounds.append(took)
                sources = sorted({p.agent.manifest_source for p in agents.pods})
                print(
                    f"v{v - 1} -> v{v}: manifest at all {args.agents} agents after {delivered[-1]:.2f}s, "
                    f"all serve v{v} after {took:.2f}s (manifest from {sources})"
                )
                if sources != ["push"]:
                    raise SystemExit("a manifest did not come by push")
    finally:
        cluster.kubectl("delete", "node", node, "--wait=false", check=False)
    return {
        "agents": args.agents,
        "rounds": len(rounds),
        "agents_started_s": round(started, 2),
        "spec_change_to_manifest_at_all_agents_s": [round(r, 3) for r in delivered],
        "spec_change_to_all_serving_s": [round(r, 3) for r in rounds],
        "median_s": round(statistics.median(rounds), 3),
        "max_s": round(max(rounds), 3),
        "target_s": 5.0,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--agents", type=int, default=3, help="pods, each with its own agent and tritonserver")
    ap.add_argument("--rounds", type=int, default=3, help="version changes measured")
    ap.add_argument("--timeout", type=float, default=120.0, help="per round")
    ap.add_argument("--kubeconfig", type=Path, default=os.environ.get("MODELDEPLOY_TEST_KUBECONFIG"))
    ap.add_argument("--json", type=Path, help="also write the figures here")
    args = ap.parse_args(argv)

    from modeldeploy.cluster.local import LocalCluster

    own = args.kubeconfig is None
    if own:
        cluster = LocalCluster(name=f"pushbench-{os.getpid()}", ephemeral=True, cpu_nodes=1)
        t = time.monotonic()
        cluster.up()
        print(f"cluster up in {time.monotonic() - t:.1f}s", file=sys.stderr)
    else:
        cluster = LocalCluster.attach(Path(args.kubeconfig))
    ns = f"pushbench-{uuid.uuid4().hex[:6]}"
    work = Path(tempfile.mkdtemp(prefix="mdpushbench-"))
    op: subprocess.Popen[bytes] | None = None
    try:
        cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(CRD_FILE))
        wait(lambda: crd_established(cluster), 120, "the ModelDeployment CRD Established", 0.5)
        cluster.kubectl("create", "namespace", ns)
        op = start_operator(cluster, ns, work / "operator.log")
        result = measure(args, cluster, ns, work)
        print(json.dumps(result, indent=2))
        if args.json:
            args.json.write_text(json.dumps(result, indent=2))
        return 0
    finally:
        if op is not None and op.poll() is None:
            op.send_signal(signal.SIGTERM)
            try:
                op.wait(timeout=30)
            except subprocess.TimeoutExpired:
                op.kill()
        cluster.kubectl("delete", "namespace", ns, "--wait=false", check=False)
        if own:
            cluster.down()


if __name__ == "__main__":
    sys.exit(main())
