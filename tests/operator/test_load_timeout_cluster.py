"""An in-place load that hangs is reported as LoadTimeout when the timeout falls due, not at a resync.

The same set-up as test_query_agents.py (a KWOK node whose pod CIDR is a loopback range, the real
runtime agent bound to the pod's address, a real tritonserver), with an operator that resyncs only
every 10 minutes. v1 serves; v2's ``initialize`` blocks for minutes, so the agent reports it Loading
until long after ``rollout.readinessGate.timeoutSeconds``. The status must say ``LoadTimeout`` within
2 s of the timeout falling due, while v1 keeps serving.
"""

from __future__ import annotations

import datetime as dt
import json
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from opsupport import OperatorProcess, wait_for
from test_query_agents import _cond, _md, _package, _states, _status, loopback_node

from modeldeploy_runtime.config import TensorSpec
from modeldeploy_runtime.package import package_python

pytestmark = [pytest.mark.integration, pytest.mark.cluster, pytest.mark.triton, pytest.mark.slow]

__all__ = ["loopback_node"]  # the fixture, imported for the tests below

NS_PREFIX = "mdlt-"
TIMEOUT = 10  # rollout.readinessGate.timeoutSeconds (its minimum)

HANGING_MODEL = """
import time


class TritonPythonModel:
    def initialize(self, args):
        time.sleep(300)  # a load that does not finish within the readiness gate's timeout

    def execute(self, requests):
        return []
"""


@pytest.fixture
def lt_ns(cluster: Any) -> Iterator[str]:
    with cluster.scratch_namespace(f"{NS_PREFIX}{uuid.uuid4().hex[:6]}", {}) as name:
        yield name


@pytest.fixture
def slow_agent_operator(
    cluster: Any, modeldeploy_crd: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[OperatorProcess]:
    op = OperatorProcess(
        cluster.env(), tmp_path_factory.mktemp("operator-lt"), namespace=f"{NS_PREFIX}*",
        extra_args=("--query-agents",), resync=600, manifest_sync_seconds=3600,
    )  # fmt: skip
    with op.running():
        yield op


def _rfc3339(value: str) -> dt.datetime:
    return dt.datetime.fromisoformat(value.replace("Z", "+00:00"))


def test_load_timeout_is_reported_when_it_falls_due(
    cluster: Any, slow_agent_operator: OperatorProcess, loopback_node: str, lt_ns: str, tmp_path: Path
) -> None:
    from modeldeploy_runtime.agent import Agent
    from modeldeploy_runtime.triton import TritonServer

    ns = lt_ns
    store = tmp_path / "store"
    _package(store, 1, 1.0)
    src = store / "build-2"
    src.mkdir(parents=True)
    (src / "model.py").write_text(HANGING_MODEL)
    package_python(
        src / "model.py", store, "scale", version=2,
        inputs=[TensorSpec("X", "TYPE_FP32", [4])], outputs=[TensorSpec("Y", "TYPE_FP32", [4])],
    )  # fmt: skip

    def apply(versions: list[dict[str, Any]]) -> None:
        doc = _md(ns, loopback_node, store, versions)
        doc["spec"]["rollout"]["readinessGate"] = {"timeoutSeconds": TIMEOUT}
        cluster.kubectl("apply", "-f", "-", input=json.dumps(doc))

    apply([{"version": 1}])

    def pod() -> dict[str, Any] | None:
        items = json.loads(cluster.kubectl("get", "pods", "-n", ns, "-o", "json").stdout)["items"]
        return next(
            (p for p in items if p["status"].get("podIP") and p["status"].get("phase") == "Running"), None
        )

    p = wait_for(pod, 90, "the pod Running with an IP")
    ip = p["status"]["podIP"]
    port = next(cp["containerPort"] for c in p["spec"]["containers"] for cp in c.get("ports") or []
                if cp["name"] == "agent")  # fmt: skip
    manifest = tmp_path / "manifest.json"

    def sync_manifest() -> dict[str, Any]:
        cm = json.loads(cluster.kubectl("get", "cm", "scale-models", "-n", ns, "-o", "json",
                                        "--show-managed-fields").stdout)  # fmt: skip
        tmp = manifest.with_suffix(".tmp")
        tmp.write_text(cm["data"]["manifest.json"])
        tmp.replace(manifest)
        return dict(cm)

    sync_manifest()
    repo = tmp_path / "models"
    assert Agent(manifest, repo, "http://127.0.0.1:9", poll_interval=0.3).run_init() == 0
    srv = TritonServer(repo, model_control_mode="explicit", log_path=tmp_path / "triton.log").start()
    agent = Agent(manifest, repo, srv.http_url, poll_interval=0.3)
    stop = threading.Event()
    server, _ = agent.serve_in_thread(ip, port)
    loop = threading.Thread(target=agent.run_sidecar, args=(stop,), daemon=True)
    loop.start()
    try:
        wait_for(lambda: _cond(_status(cluster, ns), "Ready").get("status") == "True", 120, "v1 Ready")

        apply([{"version": 1}, {"version": 2}])
        cm = wait_for(
            lambda: (c := sync_manifest()) and json.loads(c["data"]["manifest.json"])["generation"] >= 2 and c,
            60, "the manifest with v2",
        )  # fmt: skip
        written = max(
            _rfc3339(mf["time"])
            for mf in cm["metadata"]["managedFields"]
            if mf["manager"] == "modeldeploy-operator" and not mf.get("subresource")
        )
        due = written + dt.timedelta(seconds=TIMEOUT)
        wait_for(lambda: _states(_status(cluster, ns)).get(2, ("",))[0] == "Loading", 30, "v2 Loading")
        st = wait_for(
            lambda: (s := _status(cluster, ns)) and _cond(s, "Degraded").get("status") == "True" and s,
            TIMEOUT + 30, "Degraded after the load timeout", interval=0.2,
        )  # fmt: skip
        degraded = _cond(st, "Degraded")
        late = (_rfc3339(degraded["lastTransitionTime"]) - due).total_seconds()
        print(f"load timeout due {due:%H:%M:%S}, Degraded at {degraded['lastTransitionTime']} ({late:+.0f}s)")
        assert _states(st)[2] == ("Failed", "LoadTimeout"), _states(st)
        assert degraded["reason"] == "ModelLoadFailed" and "LoadTimeout" in degraded["message"]
        assert -1 <= late <= 2, f"LoadTimeout {late:+.0f}s after it fell due (resync is 600 s)"
        assert _states(st)[1] == ("Ready", "StillServing") and st["servedVersions"] == "scale:1"
    finally:
        stop.set()
        server.shutdown()
        srv.stop()
        loop.join(30)
