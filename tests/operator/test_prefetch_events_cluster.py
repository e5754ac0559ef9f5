"""A corrupt shared-cache entry, found by a real agent, on the real API server: status.cache names
the pod, and each corrupt-entry record becomes exactly one Warning event, not one per status refresh.

The pod is the operator's own, on a KWOK node whose pod CIDR is a loopback range (see
test_query_agents.py); the real agent is bound to the pod's address and agent port, fills its
repository from a cache directory whose entry has one byte flipped, and serves ``/status``. The
agent runs without Triton: the test is about the cache report, which the init step produces.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import pytest
from opsupport import OperatorProcess, wait_for
from test_query_agents import TAINT, agent_operator, loopback_node, qa_ns  # noqa: F401 (fixtures)

from modeldeploy.cluster.podagents import agent_port, package_scale, scale_deployment

pytestmark = [pytest.mark.integration, pytest.mark.cluster]


def _claim(cluster: Any, ns: str) -> str:
    """A claim bound to a PV at once (the scheduler places no pod whose claim is unbound)."""
    pv_name = f"cache-{ns}"[:63]
    pvc = {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": "model-cache", "namespace": ns},
           "spec": {"accessModes": ["ReadWriteMany"], "storageClassName": "manual-events", "volumeName": pv_name,
                    "resources": {"requests": {"storage": "1Gi"}}}}  # fmt: skip
    pv = {"apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": pv_name},
          "spec": {"capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteMany"],
                   "storageClassName": "manual-events", "persistentVolumeReclaimPolicy": "Delete",
                   "hostPath": {"path": f"/tmp/{ns}"}, "claimRef": {"namespace": ns, "name": "model-cache"}}}  # fmt: skip
    for doc in (pv, pvc):
        cluster.kubectl("apply", "-f", "-", input=json.dumps(doc))
    return pv_name


def _events(cluster: Any, ns: str, reason: str) -> list[dict[str, Any]]:
    out = cluster.kubectl(
        "get",
        "events",
        "-n",
        ns,
        "--field-selector",
        f"involvedObject.name=scale,reason={reason}",
        "-o",
        "json",
    ).stdout
    return list(json.loads(out)["items"])


def test_a_corrupt_entry_is_one_warning_event_and_named_in_status(
    cluster: Any,
    agent_operator: OperatorProcess,  # noqa: F811
    loopback_node: str,  # noqa: F811
    qa_ns: str,  # noqa: F811
    tmp_path: Path,
) -> None:
    from modeldeploy_runtime.agent import Agent
    from modeldeploy_runtime.cache import ENTRIES, SharedCache
    from modeldeploy_runtime.digest import version_digest
    from modeldeploy_runtime.fetch import Fetcher

    store = tmp_path / "store"
    package_scale(store, 1, 1.0)
    digest = version_digest(store / "scale" / "1")
    assert digest
    pv = _claim(cluster, qa_ns)
    md = scale_deployment(qa_ns, loopback_node, store, [{"version": 1, "sha256": digest}], 1, TAINT)
    md["spec"]["cache"] = {"claimName": "model-cache", "prefetch": False}
    try:
        cluster.kubectl("apply", "-f", "-", input=json.dumps(md))

        def running() -> dict[str, Any] | None:
            items = json.loads(cluster.kubectl("get", "pods", "-n", qa_ns, "-o", "json").stdout)["items"]
            ok = [
                p
                for p in items
                if (p.get("status") or {}).get("podIP") and p["status"].get("phase") == "Running"
            ]
            return ok[0] if ok else None

        pod = wait_for(running, 90, "the pod Running with a loopback IP")
        ip, port, pod_name = pod["status"]["podIP"], agent_port(pod), pod["metadata"]["name"]
        assert ip.startswith("127.77."), ip
        cm = json.loads(cluster.kubectl("get", "cm", "scale-models", "-n", qa_ns, "-o", "json").stdout)
        manifest = tmp_path / "manifest.json"
        manifest.write_text(cm["data"]["manifest.json"])

        # an earlier pod published the version into the cache; then one byte of it flipped
        cache = tmp_path / "cache"
        cache.mkdir()
        Fetcher(tmp_path / "earlier", cache=SharedCache(cache)).fetch(
            "scale", 1, f"file://{store}/scale/1", digest
        )
        victim = next(
            p for p in sorted((cache / ENTRIES / digest).rglob("*")) if p.is_file() and p.suffix == ".py"
        )
        data = bytearray(victim.read_bytes())
        data[len(data) // 2] ^= 0x01
        victim.write_bytes(bytes(data))

        # the pod's agent (writable cache, as on a node-local volume): detects, refetches, republishes
        agent = Agent(
            manifest,
            tmp_path / "models",
            "http://127.0.0.1:9",
            fetcher=Fetcher(tmp_path / "models", cache=SharedCache(cache)),
        )
        agent.manifest, _ = agent.read_manifest()
        assert agent.fill_repository(agent.manifest)
        queried = threading.Semaphore(0)
        real_status = agent.status

        def counted() -> Any:
            queried.release()
            return real_status()

        agent.status = counted  # type: ignore[method-assign]  # counts the operator's refreshes
        server, _ = agent.serve_in_thread(ip, port)
        try:

            def corrupt() -> list[dict[str, Any]] | None:
                out = cluster.kubectl("get", "md", "scale", "-n", qa_ns, "-o", "json").stdout
                entries = ((json.loads(out).get("status") or {}).get("cache") or {}).get("corruptEntries")
                return entries if entries and len(entries) >= 2 else None

            entries = wait_for(corrupt, 90, "status.cache.corruptEntries from the agent's report")
            assert [(e["event"], e["pod"], e["digest"]) for e in entries] == [
                ("CorruptEntry", pod_name, digest),
                ("CorruptEntryRefetched", pod_name, digest),
            ]
            assert victim.name in entries[0]["message"]
            for reason in ("CorruptEntry", "CorruptEntryRefetched"):
                (ev,) = wait_for(lambda r=reason: _events(cluster, qa_ns, r) or None, 60, f"a {reason} event")
                assert ev["type"] == "Warning" and ev["message"].startswith(f"{pod_name}: ")
            # more refreshes (each pod change makes one, and each reads the agent): still one event each
            while queried.acquire(blocking=False):
                pass
            for i in range(4):
                cluster.kubectl("annotate", "pod", pod_name, "-n", qa_ns, f"test/refresh={i}", "--overwrite")
                assert queried.acquire(timeout=60), "the operator refreshed the status (queried the agent)"
            for reason in ("CorruptEntry", "CorruptEntryRefetched"):
                (ev,) = _events(cluster, qa_ns, reason)
                assert ev.get("count", 1) == 1
        finally:
            server.shutdown()
    finally:
        cluster.kubectl("delete", "pv", pv, "--wait=false", check=False)
