"""The local control plane is made of the real components and behaves like a cluster (issue #2)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from modeldeploy.cluster.local import ClusterState, LocalCluster, _pid_alive, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.cluster]

GPU_TOLERATION = {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
RESTRICTED_CTX = {
    "runAsNonRoot": True,
    "runAsUser": 1000,
    "allowPrivilegeEscalation": False,
    "capabilities": {"drop": ["ALL"]},
    "seccompProfile": {"type": "RuntimeDefault"},
}


def get_json(cluster: Any, *args: str) -> Any:
    return json.loads(cluster.kubectl("get", *args, "-o", "json").stdout)


def apply(
    cluster: Any, ns: str, *objs: dict[str, Any], check: bool = True
) -> subprocess.CompletedProcess[str]:
    return cluster.kubectl("apply", "-n", ns, "-f", "-", input=yaml.safe_dump_all(objs), check=check)


def deployment(name: str, gpus: int = 0, replicas: int = 1) -> dict[str, Any]:
    container: dict[str, Any] = {"name": "main", "image": "registry.example/triton:1"}
    pod_spec: dict[str, Any] = {"containers": [container]}
    if gpus:
        container["resources"] = {"limits": {"nvidia.com/gpu": str(gpus)}}
        pod_spec["tolerations"] = [GPU_TOLERATION]
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": {"app": name}}, "spec": pod_spec},
        },
    }


def test_nodes_advertise_gpus(cluster: Any) -> None:
    nodes = get_json(cluster, "nodes")["items"]
    gpu = [n for n in nodes if "nvidia.com/gpu" in n["status"]["allocatable"]]
    cpu = [n for n in nodes if "nvidia.com/gpu" not in n["status"]["allocatable"]]
    assert len(gpu) == 2 and len(cpu) == 1
    for n in gpu:
        assert n["status"]["allocatable"]["nvidia.com/gpu"] == "8"
        assert n["metadata"]["labels"]["nvidia.com/gpu.product"] == "NVIDIA-H100-80GB-HBM3"
        assert {"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"} in n["spec"]["taints"]
    server = json.loads(cluster.kubectl("version", "-o", "json").stdout)["serverVersion"]
    versions = dict(
        line.split("=", 1)
        for line in (Path(__file__).parents[2] / "hack" / "versions.env").read_text().splitlines()
        if line and not line.startswith("#")
    )
    assert server["gitVersion"] == versions["KUBERNETES_VERSION"]


def test_gpu_deployment_is_scheduled_on_a_gpu_node_and_available(cluster: Any, namespace: str) -> None:
    apply(cluster, namespace, deployment("gpu-app", gpus=1))
    cluster.kubectl("rollout", "status", "deployment/gpu-app", "-n", namespace, "--timeout=90s")
    dep = get_json(cluster, "deployment", "gpu-app", "-n", namespace)
    avail = {c["type"]: c["status"] for c in dep["status"]["conditions"]}
    assert avail["Available"] == "True"
    pods = get_json(cluster, "pods", "-n", namespace, "-l", "app=gpu-app")["items"]
    assert len(pods) == 1
    node = get_json(cluster, "node", pods[0]["spec"]["nodeName"])
    assert node["status"]["allocatable"].get("nvidia.com/gpu") == "8"
    assert pods[0]["status"]["phase"] == "Running"


def test_pod_asking_for_too_many_gpus_stays_pending_with_event(cluster: Any, namespace: str) -> None:
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "greedy"},
        "spec": {
            "tolerations": [GPU_TOLERATION],
            "containers": [{"name": "main", "image": "x", "resources": {"limits": {"nvidia.com/gpu": "16"}}}],
        },
    }
    apply(cluster, namespace, pod)

    def failed_scheduling() -> list[dict[str, Any]]:
        evs = get_json(cluster, "events", "-n", namespace, "--field-selector", "involvedObject.name=greedy")[
            "items"
        ]
        return [e for e in evs if e["reason"] == "FailedScheduling"]

    events = wait_for(failed_scheduling, 60, what="FailedScheduling event")
    assert "nvidia.com/gpu" in events[0]["message"]
    p = get_json(cluster, "pod", "greedy", "-n", namespace)
    assert p["status"]["phase"] == "Pending"
    assert not p["spec"].get("nodeName")


def test_podsecurity_restricted_is_enforced(cluster: Any, namespace: str) -> None:
    cluster.kubectl("label", "namespace", namespace, "pod-security.kubernetes.io/enforce=restricted")
    bad = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "privileged"},
        "spec": {"containers": [{"name": "c", "image": "x", "securityContext": {"privileged": True}}]},
    }
    out = apply(cluster, namespace, bad, check=False)
    assert out.returncode != 0
    assert "violates PodSecurity" in out.stderr and "restricted" in out.stderr
    good = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "restricted"},
        "spec": {
            "securityContext": {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}},
            "containers": [{"name": "c", "image": "x", "securityContext": RESTRICTED_CTX}],
        },
    }
    apply(cluster, namespace, good)
    assert get_json(cluster, "pod", "restricted", "-n", namespace)["metadata"]["name"] == "restricted"


def test_deleting_a_deployment_garbage_collects_replicasets_and_pods(cluster: Any, namespace: str) -> None:
    apply(cluster, namespace, deployment("gc-app", replicas=2))
    cluster.kubectl("rollout", "status", "deployment/gc-app", "-n", namespace, "--timeout=90s")
    assert len(get_json(cluster, "replicasets", "-n", namespace)["items"]) == 1
    assert len(get_json(cluster, "pods", "-n", namespace, "-l", "app=gc-app")["items"]) == 2
    cluster.kubectl("delete", "deployment", "gc-app", "-n", namespace, "--wait=false")
    wait_for(lambda: not get_json(cluster, "replicasets", "-n", namespace)["items"], 60, what="ReplicaSet GC")
    wait_for(lambda: not get_json(cluster, "pods", "-n", namespace)["items"], 60, what="pod GC")


def test_rbac_role_allows_exactly_what_it_grants(cluster: Any, namespace: str) -> None:
    sa = f"system:serviceaccount:{namespace}:reader"
    cluster.kubectl("create", "serviceaccount", "reader", "-n", namespace)
    cluster.kubectl(
        "create", "role", "cm-reader", "-n", namespace, "--verb=get,list", "--resource=configmaps"
    )
    cluster.kubectl(
        "create",
        "rolebinding",
        "cm-reader",
        "-n",
        namespace,
        "--role=cm-reader",
        f"--serviceaccount={namespace}:reader",
    )

    def can(*args: str, ns: str = namespace) -> bool:
        out = cluster.kubectl("auth", "can-i", *args, "-n", ns, "--as", sa, check=False)
        return out.stdout.strip() == "yes"

    wait_for(lambda: can("get", "configmaps"), 30, what="RBAC to take effect")
    assert can("list", "configmaps")
    assert not can("create", "configmaps")
    assert not can("get", "secrets")
    assert not can("get", "configmaps", ns="default")

    # And for real, with a token from the TokenRequest API (the ServiceAccount token controller and
    # the service-account signing key work).
    token = cluster.kubectl("create", "token", "reader", "-n", namespace, "--duration=10m").stdout.strip()
    kc = cluster.kubeconfig_for_token(token, Path(cluster.dir) / f"reader-{namespace}.kubeconfig")
    try:
        ok = cluster.kubectl("--kubeconfig", str(kc), "get", "configmaps", "-n", namespace, check=False)
        assert ok.returncode == 0, ok.stderr
        denied = cluster.kubectl("--kubeconfig", str(kc), "get", "secrets", "-n", namespace, check=False)
        assert denied.returncode != 0 and "Forbidden" in denied.stderr
    finally:
        kc.unlink()


@pytest.mark.slow
def test_cluster_up_twice_and_after_a_killed_run(tmp_path: Path) -> None:
    """A second `up` is a no-op; a SIGKILLed cluster leaves nothing that blocks the next `up`.
    Started with ``controller_qps`` (bench/reconcile.py --controller-qps), the controller-manager
    and the scheduler run with that client rate (their flag dump says what they took)."""
    c = LocalCluster(
        name="updown", root=tmp_path / "c", gpu_nodes=1, cpu_nodes=0, log=lambda _m: None, controller_qps=150
    )
    try:
        c.up()
        first = ClusterState.load(c.state_file)
        assert first is not None
        for comp in ("kube-controller-manager", "kube-scheduler"):
            flags = (c.dir / "logs" / f"{comp}.log").read_text()
            assert 'FLAG: --kube-api-qps="150"' in flags and 'FLAG: --kube-api-burst="300"' in flags, comp
        c.up()  # already running: same processes, same server
        second = ClusterState.load(c.state_file)
        assert second is not None and second.pids == first.pids and second.server == first.server
        assert c.kubectl("get", "nodes").returncode == 0

        for pid in first.pids.values():  # simulate a crash: kill -9 everything, leave the folder
            os.killpg(pid, signal.SIGKILL)
        wait_for(lambda: not any(_pid_alive(p) for p in first.pids.values()), 20, what="processes to die")
        assert c.state_file.exists()
        assert not c.is_running()

        c.up()
        third = ClusterState.load(c.state_file)
        assert third is not None and third.pids != first.pids
        assert c.kubectl("get", "nodes").returncode == 0
        assert len(get_json(c, "nodes")["items"]) == 1
    finally:
        st = ClusterState.load(c.state_file)
        c.down()
        if st:
            wait_for(
                lambda: not any(_pid_alive(p) for p in st.pids.values()), 20, what="down to stop processes"
            )
        assert not c.dir.exists()


def test_cli_cluster_status_and_env(cluster: Any) -> None:
    """`mdctl cluster env` prints usable export lines."""
    name = Path(cluster.dir).name
    out = subprocess.run(
        [sys.executable, "-m", "modeldeploy.cli", "cluster", "env", "--name", name],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "export KUBECONFIG=" in out.stdout and "export PATH=" in out.stdout
    assert str(cluster.bin_dir) in out.stdout


def test_audit_log_has_every_write_and_only_the_admin_users_reads(cluster: Any, namespace: str) -> None:
    """What the quiet-period counts rely on: the admin user's get/list/watch are logged (so a zero
    means zero), while the controllers' and KWOK's reads are not (volume)."""
    log = Path(cluster.audit_log)
    offset = log.stat().st_size
    cluster.kubectl("create", "configmap", "audited", "-n", namespace)
    cluster.kubectl("get", "configmap", "audited", "-n", namespace)
    apply(cluster, namespace, deployment("audited-dep"))

    def seen() -> list[dict[str, Any]] | None:
        with log.open("rb") as f:
            f.seek(offset)
            events = [json.loads(line) for line in f.read().splitlines() if line.strip()]
        mine = [e for e in events if (e.get("objectRef") or {}).get("namespace") == namespace]
        verbs = {(e["verb"], e["objectRef"].get("resource")) for e in mine}
        return (
            mine if {("create", "configmaps"), ("get", "configmaps"), ("create", "pods")} <= verbs else None
        )

    events = wait_for(seen, 60, "the create, the get and the ReplicaSet controller's pod create")
    reads = [e for e in events if e["verb"] in ("get", "list", "watch")]
    assert {e["user"]["username"] for e in reads} == {"modeldeploy-admin"}, reads
    assert any(e["user"]["username"].startswith("system:") for e in events if e["verb"] == "create")
