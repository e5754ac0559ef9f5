"""``mdctl operator run --query-agents`` against real agents and a real Triton.

KWOK's pods have no containers, and their IPs usually lead nowhere. Here the test adds a KWOK node
whose pod CIDR is a loopback range (127.77.x.0/24; all of 127/8 is loopback on Linux). The pod the
operator creates therefore gets an address this machine owns. The real runtime agent is bound to that
address, on the port named ``agent`` in the pod spec, and drives a real tritonserver. The operator
queries the agent exactly as it would in a cluster. The ModelDeployment's status then follows
what Triton really serves:
  * v1 Ready;
  * v2 loading, then Ready with v1 unloaded;
  * a v3 with a wrong sha256 Failed, with the agent's reason, while v2 keeps serving.
The operator runs with a manifest-sync window far longer than the test, so Ready can only come from
the agent's reports, never from the window running out.

The first test's agent has no push owner or key (pushes are refused, 403): the manifest reaches it
only through the file, as after a kubelet ConfigMap sync. The second runs three pods whose agents
verify the operator's signed pushes (the public key from the manifest ConfigMap, the owner from the
pod spec) and never see a file update: every change reaches them by push. The operator signs with a
key file the test gives it (MODELDEPLOY_PUSH_KEY_FILE), so the test can sign pushes of its own.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from opsupport import OperatorProcess, wait_for

from modeldeploy.cluster.local import NodePool
from modeldeploy.reconcile.pushkey import KEY_FILE_ENV
from modeldeploy_runtime.pushsign import OWNER_ENV, PUSH_KEY_FILE, PushSigner, owner_id

pytestmark = [pytest.mark.integration, pytest.mark.cluster, pytest.mark.triton]

NS_PREFIX = "mdqa-"  # not matched by the session operator's mdop-* namespaces
TAINT = {"key": "modeldeploy.io/loopback-test", "value": "true", "effect": "NoSchedule"}


@pytest.fixture
def loopback_node(cluster: Any) -> Iterator[str]:
    """A KWOK node whose pods get loopback addresses; tainted so that no other test's pod lands on it."""
    octet = 10 + uuid.uuid4().int % 200
    pool = NodePool(
        prefix=f"mdqa-loopback-{octet}", count=1, cpu="8", memory="32Gi",
        pod_cidr=f"127.77.{octet}.0/24", taints=[TAINT],
    )  # fmt: skip
    (name,) = cluster.add_nodes(pool)
    try:
        yield name
    finally:
        cluster.kubectl("delete", "node", name, "--wait=false", check=False)


@pytest.fixture
def qa_ns(cluster: Any) -> Iterator[str]:
    name = f"{NS_PREFIX}{uuid.uuid4().hex[:6]}"
    with cluster.scratch_namespace(name, {"pod-security.kubernetes.io/enforce": "restricted"}):
        yield name


@pytest.fixture
def agent_operator(
    cluster: Any,
    modeldeploy_crd: str,
    tmp_path_factory: pytest.TempPathFactory,
    operator_push_key: tuple[PushSigner, Path],
) -> Iterator[OperatorProcess]:
    env = {**cluster.env(), KEY_FILE_ENV: str(operator_push_key[1])}
    op = OperatorProcess(
        env, tmp_path_factory.mktemp("operator-qa"), namespace=f"{NS_PREFIX}*",
        query_agents=True, manifest_sync_seconds=3600,
    )  # fmt: skip
    with op.running():
        yield op


def _package(store: Path, version: int, factor: float) -> None:
    from modeldeploy.cluster.podagents import package_scale

    package_scale(store, version, factor)


def _md(ns: str, node: str, store: Path, versions: list[dict[str, Any]], replicas: int = 1) -> dict[str, Any]:
    from modeldeploy.cluster.podagents import scale_deployment

    return scale_deployment(ns, node, store, versions, replicas, TAINT)


def _status(cluster: Any, ns: str) -> dict[str, Any]:
    out = cluster.kubectl("get", "md", "scale", "-n", ns, "-o", "json").stdout
    return dict(json.loads(out).get("status") or {})


def _cond(st: dict[str, Any], type_: str) -> dict[str, Any]:
    return next((c for c in st.get("conditions") or [] if c["type"] == type_), {})


def _states(st: dict[str, Any]) -> dict[int, tuple[str, str]]:
    models = st.get("models") or [{}]
    return {v["version"]: (v["state"], v.get("reason", "")) for v in models[0].get("versions") or []}


def test_status_follows_the_real_agents(
    cluster: Any,
    agent_operator: OperatorProcess,
    loopback_node: str,
    qa_ns: str,
    tmp_path: Path,
) -> None:
    import requests

    from modeldeploy_runtime.agent import Agent
    from modeldeploy_runtime.triton import TritonServer

    store = tmp_path / "store"
    _package(store, 1, 1.0)
    _package(store, 2, 2.0)
    apply = lambda doc: cluster.kubectl("apply", "-f", "-", input=json.dumps(doc))  # noqa: E731
    apply(_md(qa_ns, loopback_node, store, [{"version": 1}]))

    def pod() -> dict[str, Any] | None:
        items = json.loads(cluster.kubectl("get", "pods", "-n", qa_ns, "-o", "json").stdout)["items"]
        running = [
            p for p in items if (p.get("status") or {}).get("podIP") and p["status"].get("phase") == "Running"
        ]
        return running[0] if running else None

    p = wait_for(pod, 90, "the pod Running with an IP")
    ip = p["status"]["podIP"]
    assert ip.startswith("127.77."), ip
    port = next(
        cp["containerPort"]
        for c in p["spec"]["containers"]
        for cp in c.get("ports") or []
        if cp["name"] == "agent"
    )

    # The agent runs on the manifest the operator rendered, copied into a file as the kubelet would.
    manifest = tmp_path / "manifest.json"

    def sync_manifest() -> int:
        cm = json.loads(cluster.kubectl("get", "cm", "scale-models", "-n", qa_ns, "-o", "json").stdout)
        text = cm["data"]["manifest.json"]
        tmp = manifest.with_suffix(".tmp")
        tmp.write_text(text)
        tmp.replace(manifest)
        return int(json.loads(text)["generation"])

    sync_manifest()
    repo = tmp_path / "models"
    agent = Agent(manifest, repo, "http://127.0.0.1:9", poll_interval=0.3)
    assert agent.run_init() == 0
    srv = TritonServer(repo, model_control_mode="explicit", log_path=tmp_path / "triton.log").start()
    agent = Agent(manifest, repo, srv.http_url, poll_interval=0.3)
    stop = threading.Event()
    server, _ = agent.serve_in_thread(ip, port)
    loop = threading.Thread(target=agent.run_sidecar, args=(stop,), daemon=True)
    loop.start()
    try:
        assert requests.get(f"http://{ip}:{port}/status", timeout=5).status_code == 200

        def status_when(pred: Any) -> dict[str, Any] | None:
            st = _status(cluster, qa_ns)
            return st if pred(st) else None

        def agent_ready(version: int) -> bool:
            return any(
                v["version"] == version and v["state"] == "Ready"
                for m in requests.get(f"http://{ip}:{port}/status", timeout=5).json()["models"]
                for v in m["versions"]
            )

        wait_for(lambda: agent_ready(1), 120, "the agent to load v1 into Triton")
        # The agent reports Ready with an empty reason; pod readiness alone would say "Loaded".
        st = wait_for(
            lambda: status_when(lambda s: _states(s).get(1) == ("Ready", "") and s.get("servedVersions") == "scale:1"),
            60, "Ready serving scale:1, as reported by the agent",
        )  # fmt: skip
        assert _cond(st, "Ready")["status"] == "True" and st["models"][0]["versions"][0]["readyReplicas"] == 1
        # how the pod got v1: downloaded from the store by the init step (the sidecar found it in place)
        fetch = st["models"][0]["versions"][0]["fetch"]
        assert fetch["downloaded"] == 1 and fetch["bytesDownloaded"] > 0 and fetch["fromCache"] == 0, fetch

        # v2 in place: the operator rewrites the manifest; until the agent has it, v2 is not Ready
        apply(_md(qa_ns, loopback_node, store, [{"version": 1}, {"version": 2}]))
        st = wait_for(
            lambda: status_when(lambda s: _states(s).get(2, ("",))[0] == "Loading"),
            60, "v2 Loading while the agent still runs the old manifest",
        )  # fmt: skip
        assert _cond(st, "Ready")["status"] == "False"
        assert _states(st)[1] == ("Ready", "StillServing") and st["servedVersions"] == "scale:1"
        t0 = time.monotonic()
        assert sync_manifest() >= 2  # what the kubelet does within its sync period
        st = wait_for(
            lambda: status_when(lambda s: _cond(s, "Ready").get("status") == "True" and s.get("servedVersions") == "scale:2"),
            90, "Ready serving only scale:2",
        )  # fmt: skip
        assert _states(st) == {1: ("Unloaded", "NotInVersionPolicy"), 2: ("Ready", "")}
        took = time.monotonic() - t0
        assert took < 600, took  # long before the 3600 s manifest-sync window could have ended

        # a v3 whose artifact does not match its sha256: v3 Failed with the reason, v2 keeps serving
        bad = [
            {"version": 1},
            {"version": 2},
            {"version": 3, "source": f"file://{store}/scale/2", "sha256": "0" * 64},
        ]
        apply(_md(qa_ns, loopback_node, store, bad))
        wait_for(lambda: sync_manifest() >= 3 or None, 60, "the manifest with v3")
        st = wait_for(
            lambda: status_when(lambda s: _cond(s, "Degraded").get("status") == "True"),
            90, "Degraded after v3 fails",
        )  # fmt: skip
        assert _states(st)[3][0] == "Failed" and _states(st)[3][1] == "DigestMismatch", _states(st)
        assert (_cond(st, "Ready")["status"], _cond(st, "Ready")["reason"]) == ("False", "ModelLoadFailed")
        assert "scale version 3: DigestMismatch" in _cond(st, "Degraded")["message"]
        assert _states(st)[2] == ("Ready", "StillServing") and st["servedVersions"] == "scale:2"
        x = [[1.0, 2.0, 3.0, 4.0]]
        body = {"inputs": [{"name": "X", "shape": [1, 4], "datatype": "FP32", "data": x}]}
        r = requests.post(f"{srv.http_url}/v2/models/scale/infer", json=body, timeout=30)
        assert r.status_code == 200 and r.json()["outputs"][0]["data"] == [2.0, 4.0, 6.0, 8.0]  # v2 serves
    finally:
        stop.set()
        server.shutdown()
        loop.join(30)
        srv.stop()


def _pods(cluster: Any, ns: str) -> list[dict[str, Any]]:
    items = json.loads(cluster.kubectl("get", "pods", "-n", ns, "-o", "json").stdout)["items"]
    return [
        p for p in items if (p.get("status") or {}).get("podIP") and p["status"].get("phase") == "Running"
    ]


class _Watch:
    """While a version changes: every pod's rendered readiness probe performed as the kubelet
    would (every 0.5 s), and inference hammered on every pod's Triton. Counts failures."""

    def __init__(self, pods: list[dict[str, Any]], tritons: list[str]) -> None:
        self.pods, self.tritons = pods, tritons
        self.stop = threading.Event()
        self.phase = "v1"
        self.probes = 0
        self.probe_failures: list[str] = []
        self.answers: dict[float, int] = {}
        self.failures: list[str] = []
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self._probe, daemon=True)] + [
            threading.Thread(target=self._infer, args=(u,), daemon=True) for u in tritons
        ]

    def _probe(self) -> None:
        from modeldeploy.cluster.podagents import probe_passes

        while not self.stop.is_set():
            for p in self.pods:
                ok, what = probe_passes(p)
                with self.lock:
                    self.probes += 1
                    if not ok:
                        self.probe_failures.append(f"{p['metadata']['name']} [{self.phase}]: {what}")
            self.stop.wait(0.5)

    def _infer(self, url: str) -> None:
        import requests

        s = requests.Session()
        body = {
            "inputs": [{"name": "X", "shape": [1, 4], "datatype": "FP32", "data": [[1.0, 1.0, 1.0, 1.0]]}]
        }
        while not self.stop.is_set():
            try:
                r = s.post(f"{url}/v2/models/scale/infer", json=body, timeout=30)
                with self.lock:
                    if r.status_code == 200:
                        v = float(r.json()["outputs"][0]["data"][0])
                        self.answers[v] = self.answers.get(v, 0) + 1
                    else:
                        self.failures.append(f"{url}: HTTP {r.status_code} {r.text[:200]}")
            except Exception as exc:
                with self.lock:
                    self.failures.append(f"{url}: {exc.__class__.__name__}: {exc}")
            self.stop.wait(0.02)

    def __enter__(self) -> _Watch:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(60)


@pytest.mark.slow
def test_a_bad_version_in_place_costs_no_availability(
    cluster: Any,
    agent_operator: OperatorProcess,
    operator_push_key: tuple[PushSigner, Path],
    loopback_node: str,
    qa_ns: str,
    tmp_path: Path,
) -> None:
    """Three pods, each with its own real agent and its own real tritonserver (nothing shared, so
    each pod's readiness is that pod's own Triton). v1 serves; a v2 whose sha256 is wrong is pushed
    by the operator: each pod's rendered readiness probe, performed as the kubelet would, keeps
    passing; inference on every pod keeps answering (0 failed requests) with v1; the status says
    Degraded/ModelLoadFailed naming version 2 and the agent's reason. A good v3 then recovers to
    Ready on every pod. The agents' manifest files are never updated after start: only the push
    can have delivered v2 and v3."""
    from modeldeploy.cluster.podagents import PodAgents

    store = tmp_path / "store"
    for v, f in ((1, 1.0), (2, 2.0), (3, 3.0)):
        _package(store, v, f)
    apply = lambda doc: cluster.kubectl("apply", "-f", "-", input=json.dumps(doc))  # noqa: E731
    apply(_md(qa_ns, loopback_node, store, [{"version": 1}], replicas=3))
    pods = wait_for(
        lambda: (lambda ps: ps if len(ps) == 3 else None)(_pods(cluster, qa_ns)), 120, "3 pods Running"
    )
    assert all(p["status"]["podIP"].startswith("127.77.") for p in pods)

    def status_when(pred: Any) -> dict[str, Any] | None:
        st = _status(cluster, qa_ns)
        return st if pred(st) else None

    # No Secret per ModelDeployment: the agents verify pushes with the operator's public key from
    # the manifest ConfigMap, for the owner (namespace/name/uid) in their pod spec.
    signer, _ = operator_push_key
    md_obj = json.loads(cluster.kubectl("get", "md", "scale", "-n", qa_ns, "-o", "json").stdout)
    owner = owner_id(qa_ns, "scale", md_obj["metadata"]["uid"])
    secrets = json.loads(cluster.kubectl("get", "secrets", "-n", qa_ns, "-o", "json").stdout)["items"]
    assert not [x for x in secrets if x["metadata"].get("ownerReferences")], secrets
    for p in pods:
        (agent_c,) = [c for c in p["spec"]["containers"] if c["name"] == "agent"]
        assert {"name": OWNER_ENV, "value": owner} in agent_c["env"]
    with PodAgents(cluster, qa_ns, "scale", tmp_path / "pods") as agents:
        assert agents.configmap_data()[PUSH_KEY_FILE] == signer.public_pem
        agents.start(pods)
        # As reported by the 3 agents (reason "" and readyReplicas from them); KWOK marks the pods
        # Ready at once, so pod readiness alone would say "Loaded" before any agent serves.
        wait_for(
            lambda: status_when(lambda s: _cond(s, "Ready").get("status") == "True" and s.get("servedVersions") == "scale:1"
                                and _states(s).get(1) == ("Ready", "") and s["models"][0]["versions"][0].get("readyReplicas") == 3),
            240, "Ready serving scale:1 on 3 agents",
        )  # fmt: skip
        with _Watch(pods, [p.triton.http_url for p in agents.pods]) as watch:
            bad = [{"version": 1}, {"version": 2, "source": f"file://{store}/scale/2", "sha256": "0" * 64}]
            watch.phase = "v1 -> bad v2"
            apply(_md(qa_ns, loopback_node, store, bad, replicas=3))
            st = wait_for(
                lambda: status_when(lambda s: _cond(s, "Degraded").get("status") == "True"),
                120, "Degraded after v2 fails on the agents",
            )  # fmt: skip
            degraded = _cond(st, "Degraded")
            assert degraded["reason"] == "ModelLoadFailed", degraded
            assert "scale version 2: DigestMismatch" in degraded["message"], degraded
            assert _states(st)[2][0] == "Failed" and _states(st)[1] == ("Ready", "StillServing")
            assert st["servedVersions"] == "scale:1" and st["readyReplicas"] == 3
            assert all(p.agent.manifest_source == "push" for p in agents.pods)
            # a while longer on the failed version (longer than the probe's period x failureThreshold,
            # 5 s x 1): the pods must stay in their Service throughout
            n0 = watch.probes
            wait_for(lambda: watch.probes >= n0 + 36 or None, 120, "12 more probe rounds on the failed v2")

            watch.phase = "v2 failed -> v3"
            good = [{"version": 1}, {"version": 3}]
            apply(_md(qa_ns, loopback_node, store, good, replicas=3))
            st = wait_for(
                lambda: status_when(lambda s: _cond(s, "Ready").get("status") == "True" and s.get("servedVersions") == "scale:3"),
                240, "Ready serving scale:3 after the good version",
            )  # fmt: skip
            assert _cond(st, "Degraded")["status"] == "False"
            wait_for(lambda: watch.answers.get(3.0), 60, "inference answered by v3")
        # The agents on the pod IPs take no manifest older than theirs, and none not signed by the
        # operator's key for this very object.
        from modeldeploy.reconcile.agents import push
        from modeldeploy_runtime.manifest import ModelManifest

        current = ModelManifest.from_json(agents.manifest_text())
        older = current.model_copy(update={"generation": current.generation - 1})
        newer = current.model_copy(update={"generation": current.generation + 1})
        outcome = lambda *a: {v.split(":")[0] for v in push(pods, *a).values()}  # noqa: E731
        assert outcome(older, signer, owner) == {"refused 409"}
        assert outcome(newer, PushSigner.generate(), owner) == {"refused 403"}  # another key
        other = owner_id(qa_ns, "other", md_obj["metadata"]["uid"])
        assert outcome(newer, signer, other) == {"refused 403"}  # signed for another object
        assert all(p.agent.known_generation() == current.generation for p in agents.pods)
        assert watch.probes > 0 and not watch.probe_failures, watch.probe_failures[:5]
        assert not watch.failures, watch.failures[:5]
        assert watch.answers.get(1.0, 0) > 0 and watch.answers.get(3.0, 0) > 0, watch.answers
        assert 2.0 not in watch.answers
        print(
            f"\n{watch.probes} probes passed, {sum(watch.answers.values())} requests, 0 failed: {watch.answers}"
        )
