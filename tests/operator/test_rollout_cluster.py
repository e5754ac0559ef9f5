"""Rolling rollouts and time-based status transitions against the real local control plane.

* ``rollout.strategy: rolling``: every revision's manifest is its own immutable ConfigMap; the old
  ReplicaSet's pods keep theirs. A v2 whose pods never become Ready stalls at the first new pod while
  the old pods keep serving, until the Deployment's progress deadline, and the status says which
  version failed and why; a good v3 completes and the ConfigMaps nobody uses any more are deleted.
  KWOK marks pods Ready through its ``pod-ready`` stage, whose delay a pod annotation sets: a v2
  carrying ``pod-ready.stage.kwok.x-k8s.io/delay`` and ``jitter-delay`` of 24h is a revision whose pods never become Ready
  (what a pod whose agent never gets its versions READY looks like to the Deployment).
* Time-based transitions with a resync interval far longer than the test: the end of an in-place
  propagation window changes the status within 2 s of falling due.
* A pod the API server refuses to create (a missing ServiceAccount) is Degraded within 10 s.
"""

from __future__ import annotations

import datetime as dt
import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from opsupport import OperatorProcess, load_case, wait_for
from test_operator_cluster import apply, cond, get, md_doc, propagation_facts, wait_ready

from modeldeploy.api.v1alpha1 import ModelDeployment
from modeldeploy.render.manifest import manifest_configmap_name

pytestmark = [pytest.mark.integration, pytest.mark.cluster]

NEVER_READY = {f"pod-ready.stage.kwok.x-k8s.io/{k}": "24h" for k in ("delay", "jitter-delay")}
MANIFEST_CMS = "app.kubernetes.io/component=model-manifest,modeldeploy.io/deployment=cpu-model"


def _versions(*numbers: int) -> list[dict[str, Any]]:
    model = load_case("cpu")["spec"]["models"][0]
    return [{**model, "versions": [{"version": n} for n in numbers], "versionPolicy": {"latest": 1}}]


def _rolling(ns: str, *versions: int, **spec: Any) -> dict[str, Any]:
    # the shortest progress deadline: max(startupTimeoutSeconds 30, timeoutSeconds 10) + 60 = 90 s
    gate = {"timeoutSeconds": 10}
    rollout = {"strategy": "rolling", "maxSurge": 1, "maxUnavailable": 0, "readinessGate": gate}
    doc = md_doc("cpu", ns, replicas=2, models=_versions(*versions), rollout=rollout, **spec)
    doc["spec"]["server"] = {"startupTimeoutSeconds": 30}
    return doc


def _cm_name(doc: dict[str, Any]) -> str:
    return manifest_configmap_name(ModelDeployment.from_body(doc))


def _pods(cluster: Any, ns: str) -> list[dict[str, Any]]:
    out = cluster.kubectl("get", "pods", "-n", ns, "-o", "json").stdout
    return [p for p in json.loads(out)["items"] if not p["metadata"].get("deletionTimestamp")]


def _manifest_volume(pod: dict[str, Any]) -> str:
    return next(v["configMap"]["name"] for v in pod["spec"]["volumes"] if v["name"] == "model-manifest")


def _pod_ready(pod: dict[str, Any]) -> bool:
    return any(c["type"] == "Ready" and c["status"] == "True" for c in pod["status"].get("conditions") or [])


def _manifest_cms(cluster: Any, ns: str) -> dict[str, dict[str, Any]]:
    out = cluster.kubectl("get", "cm", "-n", ns, "-l", MANIFEST_CMS, "-o", "json").stdout
    return {c["metadata"]["name"]: c for c in json.loads(out)["items"]}


def _ready_endpoints(cluster: Any, ns: str) -> set[str]:
    out = cluster.kubectl(
        "get", "endpointslices", "-n", ns, "-l", "kubernetes.io/service-name=cpu-model", "-o", "json"
    ).stdout
    return {
        addr
        for s in json.loads(out)["items"]
        for e in s.get("endpoints") or []
        if (e.get("conditions") or {}).get("ready")
        for addr in e.get("addresses") or []
    }


@pytest.mark.slow
def test_rolling_update_keeps_old_pods_on_their_manifest_and_stalls_on_a_bad_version(
    cluster: Any, operator: OperatorProcess, ns: str
) -> None:
    v1 = _rolling(ns, 1)
    apply(cluster, v1)
    wait_ready(cluster, ns, "cpu-model")
    cm1 = _cm_name(v1)
    old = {p["metadata"]["name"]: p for p in _pods(cluster, ns)}
    assert len(old) == 2 and {_manifest_volume(p) for p in old.values()} == {cm1}
    before = _manifest_cms(cluster, ns)
    assert set(before) == {cm1} and before[cm1]["immutable"] is True
    old_ips = {p["status"]["podIP"] for p in old.values()}
    wait_for(lambda: _ready_endpoints(cluster, ns) == old_ips, 60, "the Service's endpoints: the v1 pods")

    # v2: a revision whose pods never become Ready
    v2 = _rolling(ns, 1, 2, podAnnotations=NEVER_READY)
    cm2 = _cm_name(v2)
    assert cm2 != cm1
    t0 = time.monotonic()
    apply(cluster, v2)
    new = wait_for(
        lambda: [p for p in _pods(cluster, ns) if p["metadata"]["name"] not in old], 60, "a v2 pod"
    )
    assert [_manifest_volume(p) for p in new] == [cm2], "the new pod mounts the new revision's manifest"
    cms = _manifest_cms(cluster, ns)
    assert set(cms) == {cm1, cm2} and cms[cm2]["immutable"] is True
    assert cms[cm1]["metadata"]["resourceVersion"] == before[cm1]["metadata"]["resourceVersion"]
    assert json.loads(cms[cm1]["data"]["manifest.json"])["models"][0]["versions"] == [
        {"version": 1, "source": "s3://models/simple/1"}
    ], "the old pods' manifest is untouched"
    assert json.loads(cms[cm2]["data"]["manifest.json"])["models"][0]["versionPolicy"] == {"latest": 1}

    def rolling_out() -> dict[str, Any] | None:
        md = get(cluster, "md", ns, "cpu-model")
        ok = cond(md, "Progressing").get("reason") == "RollingOut" and cond(md, "Ready")["status"] == "False"
        return md if ok and md["status"]["observedGeneration"] == md["metadata"]["generation"] else None

    md = wait_for(rolling_out, 30, "Ready=False, Progressing RollingOut")
    assert md["status"]["servedVersions"] == "simple:1", "the old version is still served, and said so"
    assert {v["version"]: v["state"] for v in md["status"]["models"][0]["versions"]} == {
        1: "Ready",
        2: "Loading",
    }

    def stalled() -> dict[str, Any] | None:
        md = get(cluster, "md", ns, "cpu-model")
        return md if cond(md, "Progressing").get("reason") == "ProgressDeadlineExceeded" else None

    try:
        md = wait_for(stalled, 180, "Progressing=False, ProgressDeadlineExceeded")
    except AssertionError:
        dep = get(cluster, "deploy", ns, "cpu-model") or {}
        md = get(cluster, "md", ns, "cpu-model") or {}
        raise AssertionError(
            f"deployment: {json.dumps(dep.get('status'))}\nmd: {json.dumps(md.get('status'))}"
        ) from None
    took = time.monotonic() - t0
    ready, degraded = cond(md, "Ready"), cond(md, "Degraded")
    assert (ready["status"], ready["reason"]) == ("False", "ProgressDeadlineExceeded")
    assert ready["message"].startswith("rolling out simple:2") and "stalled" in ready["message"]
    assert new[0]["metadata"]["name"] in ready["message"], "names the new pod and what it says"
    assert (degraded["status"], degraded["reason"]) == ("True", "ProgressDeadlineExceeded")
    assert cond(md, "Stalled")["status"] == "True"
    versions = {v["version"]: v for v in md["status"]["models"][0]["versions"]}
    assert (versions[2]["state"], versions[2]["reason"]) == ("Failed", "ProgressDeadlineExceeded")
    assert (versions[1]["state"], versions[1]["reason"]) == ("Ready", "StillServing")
    # the old pods kept serving all along: same pods, still Ready, still on their manifest, in the Service
    now = {p["metadata"]["name"]: p for p in _pods(cluster, ns)}
    assert set(old) <= set(now) and all(_pod_ready(now[n]) for n in old)
    assert len(now) == 3, "maxSurge 1, maxUnavailable 0: one new pod next to the two old ones"
    assert all(_manifest_volume(now[n]) == cm1 for n in old)
    assert _ready_endpoints(cluster, ns) == old_ips
    events = cluster.kubectl(
        "get", "events", "-n", ns, "--field-selector", "reason=VersionsChanged", "-o", "json"
    ).stdout
    assert [e["message"] for e in json.loads(events)["items"]] == ["model versions now simple:2"]
    print(f"bad v2 stalled with ProgressDeadlineExceeded after {took:.0f}s; old pods serving")

    # a good v3 completes; the revisions no ReplicaSet with pods uses any more are deleted
    v3 = _rolling(ns, 1, 2, 3)
    cm3 = _cm_name(v3)
    apply(cluster, v3)
    md = wait_ready(cluster, ns, "cpu-model", timeout=120)
    assert md["status"]["servedVersions"] == "simple:3"
    pods = _pods(cluster, ns)
    assert len(pods) == 2 and {_manifest_volume(p) for p in pods} == {cm3}
    wait_for(lambda: set(_manifest_cms(cluster, ns)) == {cm3}, 30, f"only {cm3} left")
    assert get(cluster, "cm", ns, "cpu-model-models") is None


def test_missing_service_account_is_degraded_within_seconds(
    cluster: Any, operator: OperatorProcess, ns: str
) -> None:
    t0 = time.monotonic()
    apply(cluster, md_doc("cpu", ns, serviceAccountName="nobody-made-this"))

    def degraded() -> dict[str, Any] | None:
        c = cond(get(cluster, "md", ns, "cpu-model"), "Degraded")
        return c if c.get("status") == "True" else None

    c = wait_for(degraded, 10, "Degraded=True", interval=0.2)
    took = time.monotonic() - t0
    assert c["reason"] == "ServiceAccountNotFound", c
    assert "nobody-made-this" in c["message"] and "cannot create pods" in c["message"], c
    md = get(cluster, "md", ns, "cpu-model")
    assert (cond(md, "Ready")["status"], cond(md, "Ready")["reason"]) == ("False", "ServiceAccountNotFound")
    print(f"missing ServiceAccount: Degraded after {took:.1f}s")


# ------------------------------------------------------------------- time-based transitions
TT_PREFIX = "mdtt-"  # a namespace pattern of its own: the operator below, not the session's, owns it
WINDOW = 8.0


@pytest.fixture
def slow_resync_operator(
    cluster: Any, modeldeploy_crd: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[OperatorProcess]:
    """An operator that resyncs once every 10 minutes: any transition seen sooner was scheduled."""
    op = OperatorProcess(
        cluster.env(), tmp_path_factory.mktemp("operator-tt"), namespace=f"{TT_PREFIX}*",
        resync=600, manifest_sync_seconds=WINDOW,
    )  # fmt: skip
    with op.running():
        yield op


@pytest.fixture
def tt_ns(cluster: Any) -> Iterator[str]:
    with cluster.scratch_namespace(f"{TT_PREFIX}{uuid.uuid4().hex[:6]}", {}) as name:
        yield name


def _rfc3339(value: str) -> dt.datetime:
    return dt.datetime.fromisoformat(value.replace("Z", "+00:00"))


def test_end_of_propagation_window_changes_the_status_on_time(
    cluster: Any, slow_resync_operator: OperatorProcess, tt_ns: str
) -> None:
    ns = tt_ns
    apply(cluster, md_doc("cpu", ns))
    wait_ready(cluster, ns, "cpu-model")
    model = load_case("cpu")["spec"]["models"][0]
    apply(cluster, md_doc("cpu", ns, models=[{**model, "versionPolicy": {"all": True}}]))

    def propagating() -> dict[str, Any] | None:
        md = get(cluster, "md", ns, "cpu-model")
        return md if cond(md, "Ready").get("reason") == "VersionsPropagating" else None

    wait_for(
        propagating,
        20,
        "Ready=False reason VersionsPropagating",
        interval=0.2,
        explain=lambda: propagation_facts(cluster, ns),
    )
    cm = get(cluster, "cm", ns, "cpu-model-models")
    assert cm is not None
    written = max(
        _rfc3339(mf["time"])
        for mf in cm["metadata"]["managedFields"]
        if mf["manager"] == "modeldeploy-operator" and not mf.get("subresource")
    )
    due = written + dt.timedelta(seconds=WINDOW)
    md = wait_ready(cluster, ns, "cpu-model", timeout=WINDOW + 20)
    seen = dt.datetime.now(dt.UTC)
    flipped = _rfc3339(cond(md, "Ready")["lastTransitionTime"])
    late = (flipped - due).total_seconds()
    print(f"window due {due:%H:%M:%S}, Ready at {flipped:%H:%M:%S} ({late:+.0f}s), seen {seen:%H:%M:%S}")
    assert -1 <= late <= 2, f"Ready flipped {late:+.0f}s after the window ended (resync is 600 s)"
    assert md["status"]["servedVersions"] == "simple:1,2"
