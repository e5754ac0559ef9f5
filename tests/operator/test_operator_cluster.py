"""The operator against the real local control plane (etcd, kube-apiserver, controllers, KWOK nodes).

Nothing is faked: the operator runs as a subprocess (``python -m modeldeploy.cli operator run``), the
API server validates every child against the real schemas (including the unmodified KEDA and
prometheus-operator CRDs), PodSecurity ``restricted`` is enforced in the test namespaces, the
scheduler places pods on KWOK GPU nodes, and the garbage collector deletes children.
"""

from __future__ import annotations

import copy
import json
import time
from typing import Any

import pytest
from opsupport import (
    OPERATOR_UAS,
    RESYNC_SECONDS,
    OperatorProcess,
    audit_events,
    audit_lines,
    audit_writes,
    load_case,
    wait_for,
)

from modeldeploy.api.v1alpha1 import ModelDeployment
from modeldeploy.render.manifest import manifest_configmap_name

pytestmark = [pytest.mark.integration, pytest.mark.cluster]

CHILD_KINDS = (
    "configmaps,services,deployments.apps,poddisruptionbudgets.policy,horizontalpodautoscalers.autoscaling"
)
OWNED_RESOURCES = {
    "modeldeployments",
    "configmaps",
    "services",
    "deployments",
    "poddisruptionbudgets",
    "horizontalpodautoscalers",
    "scaledobjects",
    "servicemonitors",
    "events",
}


# ----------------------------------------------------------------------------------------- helpers
def md_doc(case: str, ns: str, name: str | None = None, **spec: Any) -> dict[str, Any]:
    doc = load_case(case)
    doc["metadata"] = {"name": name or doc["metadata"]["name"], "namespace": ns}
    doc["spec"].update(copy.deepcopy(spec))
    return doc


def apply(cluster: Any, doc: dict[str, Any]) -> None:
    cluster.kubectl("apply", "-f", "-", input=json.dumps(doc))


def get(cluster: Any, kind: str, ns: str, name: str) -> dict[str, Any] | None:
    proc = cluster.kubectl("get", kind, name, "-n", ns, "-o", "json", "--show-managed-fields", check=False)
    if proc.returncode != 0:
        if "NotFound" in proc.stderr:
            return None
        raise AssertionError(proc.stderr)
    return dict(json.loads(proc.stdout))


def cond(md: dict[str, Any] | None, type_: str) -> dict[str, Any]:
    for c in ((md or {}).get("status") or {}).get("conditions") or []:
        if c["type"] == type_:
            return dict(c)
    return {}


def propagation_facts(cluster: Any, ns: str, name: str = "cpu-model") -> dict[str, Any]:
    """What decides an in-place propagation window: the Ready condition, our writes of the manifest
    ConfigMap and the pods' start times (for a wait that timed out)."""
    cm = get(cluster, "cm", ns, f"{name}-models") or {"metadata": {}}
    pods = json.loads(cluster.kubectl("get", "pods", "-n", ns, "-o", "json").stdout)["items"]
    return {
        "ready": cond(get(cluster, "md", ns, name), "Ready"),
        "manifest created": cm["metadata"].get("creationTimestamp"),
        "manifest writes": [(m["manager"], m.get("time")) for m in cm["metadata"].get("managedFields") or []],
        "pods started": {p["metadata"]["name"]: p["status"].get("startTime") for p in pods},
    }


def wait_ready(cluster: Any, ns: str, name: str, timeout: float = 90) -> dict[str, Any]:
    def ready() -> dict[str, Any] | None:
        md = get(cluster, "md", ns, name)
        c = cond(md, "Ready")
        gen = (md or {}).get("metadata", {}).get("generation")
        ok = c.get("status") == "True" and md and md["status"].get("observedGeneration") == gen
        return md if ok else None

    return wait_for(ready, timeout, f"{ns}/{name} Ready=True")


def resource_versions(cluster: Any, ns: str) -> dict[str, str]:
    out = cluster.kubectl(
        "get", f"modeldeployments,{CHILD_KINDS},servicemonitors,scaledobjects", "-n", ns, "-o", "json"
    ).stdout
    return {
        f"{i['kind']}/{i['metadata']['name']}": i["metadata"]["resourceVersion"]
        for i in json.loads(out)["items"]
    }


def owned_children(cluster: Any, ns: str, md: dict[str, Any]) -> dict[str, list[str]]:
    out = cluster.kubectl(
        "get", f"{CHILD_KINDS},servicemonitors,scaledobjects", "-n", ns, "-o", "json"
    ).stdout
    found: dict[str, list[str]] = {}
    for item in json.loads(out)["items"]:
        refs = item["metadata"].get("ownerReferences") or []
        if any(r["uid"] == md["metadata"]["uid"] and r.get("controller") for r in refs):
            found.setdefault(item["kind"], []).append(item["metadata"]["name"])
    return found


# ------------------------------------------------------------------------------------------- tests
def test_apply_creates_owned_children_and_becomes_ready(
    cluster: Any, operator: OperatorProcess, ns: str
) -> None:
    line = audit_lines(cluster)
    t0 = time.monotonic()
    doc = md_doc("gpu", ns)
    apply(cluster, doc)
    md = wait_ready(cluster, ns, "resnet")
    ready_after = time.monotonic() - t0
    # status writes from create to Ready: the first status, progress at most once per 5 s
    # (status_progress_seconds), Ready
    status_writes = [
        e
        for e in audit_writes(cluster, line, ns)
        if e.get("stage") == "ResponseComplete"
        and e["objectRef"].get("resource") == "modeldeployments"
        and e["objectRef"].get("subresource") == "status"
        and str(e.get("userAgent", "")).startswith(OPERATOR_UAS)
    ]
    assert 2 <= len(status_writes) <= 2 + int(ready_after / 5.0), (len(status_writes), ready_after)
    children = owned_children(cluster, ns, md)
    manifest_cm = manifest_configmap_name(ModelDeployment.from_body(doc))  # rolling: content-addressed
    assert manifest_cm.startswith("resnet-models-")
    assert children == {
        "ConfigMap": [manifest_cm],
        "Service": ["resnet"],
        "Deployment": ["resnet"],
        "PodDisruptionBudget": ["resnet"],
        "ServiceMonitor": ["resnet"],
    }, children
    st = md["status"]
    assert st["replicas"] == 2 and st["readyReplicas"] == 2
    assert st["endpoints"]["http"] == f"http://resnet.{ns}.svc:8000"
    assert st["models"] == [
        {
            "name": "resnet50",
            "versions": [
                {"version": 3, "state": "Ready", "reason": "Loaded", "message": "", "readyReplicas": 2}
            ],
        }
    ]
    assert {c["type"]: c["status"] for c in st["conditions"]} == {
        "Ready": "True",
        "ModelsReady": "True",
        "Progressing": "False",
        "Degraded": "False",
    }
    # the pods were admitted under PodSecurity "restricted" and scheduled onto GPU nodes
    pods = json.loads(cluster.kubectl("get", "pods", "-n", ns, "-o", "json").stdout)["items"]
    assert len(pods) == 2 and all(p["spec"]["nodeName"].startswith("gpu-node") for p in pods)
    # the manifest ConfigMap is what the runtime reads
    cm = get(cluster, "configmap", ns, manifest_cm)
    assert (
        cm is not None and json.loads(cm["data"]["manifest.json"])["models"][0]["versions"][0]["version"] == 3
    )
    assert cm.get("immutable") is True
    # events for meaningful transitions only
    events = json.loads(
        cluster.kubectl(
            "get", "events", "-n", ns, "--field-selector", "involvedObject.kind=ModelDeployment", "-o", "json"
        ).stdout
    )["items"]
    # a plain create -> Ready posts no Normal event (the status says it; Created and the first
    # Ready are gone, #12): Normal events are for Scaled, VersionsChanged and a recovery to Ready
    normal = [(e["reason"], e["message"]) for e in events if e["type"] == "Normal"]
    assert normal == [], normal
    print(f"apply -> Ready in {ready_after:.1f}s, {len(status_writes)} status writes")


def test_scale_via_kubectl_and_via_spec(cluster: Any, operator: OperatorProcess, ns: str) -> None:
    apply(cluster, md_doc("cpu", ns))
    wait_ready(cluster, ns, "cpu-model")
    assert get(cluster, "pdb", ns, "cpu-model") is None

    cluster.kubectl("scale", "md/cpu-model", "-n", ns, "--replicas=3")
    wait_for(
        lambda: (get(cluster, "deploy", ns, "cpu-model") or {}).get("spec", {}).get("replicas") == 3,
        20,
        "deployment scaled to 3",
    )
    md = wait_ready(cluster, ns, "cpu-model")
    assert md["status"]["replicas"] == 3 and md["status"]["replicasSummary"] == "3/3"
    assert get(cluster, "pdb", ns, "cpu-model") is not None, "a PDB once replicas > 1"

    cluster.kubectl("patch", "md/cpu-model", "-n", ns, "--type=merge", "-p", '{"spec":{"replicas":1}}')
    wait_for(lambda: get(cluster, "pdb", ns, "cpu-model") is None, 20, "PDB deleted when replicas <= 1")
    md = wait_ready(cluster, ns, "cpu-model")
    assert md["status"]["replicas"] == 1


def test_autoscaling_on_then_off(cluster: Any, operator: OperatorProcess, ns: str) -> None:
    apply(cluster, md_doc("cpu", ns, replicas=2))
    wait_ready(cluster, ns, "cpu-model")
    auto = {"mode": "hpa", "minReplicas": 1, "maxReplicas": 5, "metric": {"type": "cpu", "target": 60}}
    cluster.kubectl(
        "patch", "md/cpu-model", "-n", ns, "--type=merge", "-p", json.dumps({"spec": {"autoscaling": auto}})
    )
    hpa = wait_for(lambda: get(cluster, "hpa", ns, "cpu-model"), 20, "HPA created")
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "cpu-model",
    }
    assert hpa["spec"]["metrics"][0]["resource"]["target"] == {
        "type": "Utilization",
        "averageUtilization": 60,
    }

    def replicas_released() -> bool:
        dep = get(cluster, "deploy", ns, "cpu-model") or {}
        for mf in dep["metadata"].get("managedFields") or []:
            if mf["manager"] == "modeldeploy-operator" and mf["operation"] == "Apply":
                return "f:replicas" not in mf.get("fieldsV1", {}).get("f:spec", {})
        return False

    wait_for(replicas_released, 20, "the operator's field manager releasing spec.replicas")
    # ... without resetting it to the default (1) on the way
    assert get(cluster, "deploy", ns, "cpu-model")["spec"]["replicas"] == 2  # type: ignore[index]
    # the autoscaler (here: someone acting like it) sets replicas; the operator must not fight it
    cluster.kubectl("scale", "deploy/cpu-model", "-n", ns, "--replicas=4")
    time.sleep(RESYNC_SECONDS * 2 + 1)
    assert get(cluster, "deploy", ns, "cpu-model")["spec"]["replicas"] == 4  # type: ignore[index]
    md = wait_ready(cluster, ns, "cpu-model")
    assert md["status"]["replicas"] == 4

    cluster.kubectl(
        "patch", "md/cpu-model", "-n", ns, "--type=json", "-p", '[{"op":"remove","path":"/spec/autoscaling"}]'
    )
    wait_for(lambda: get(cluster, "hpa", ns, "cpu-model") is None, 20, "HPA deleted when autoscaling is off")
    wait_for(
        lambda: get(cluster, "deploy", ns, "cpu-model")["spec"]["replicas"] == 2,
        20,
        "replicas back to spec.replicas",
    )  # type: ignore[index]
    wait_ready(cluster, ns, "cpu-model")


def test_keda_scaledobject_is_accepted_by_the_real_crd(
    cluster: Any, operator: OperatorProcess, ns: str
) -> None:
    # minReplicas 1: with 0 the KEDA HTTP add-on (its CRD is installed) owns the ScaledObject
    apply(
        cluster,
        md_doc("keda", ns, autoscaling={**load_case("keda")["spec"]["autoscaling"], "minReplicas": 1}),
    )
    so = wait_for(lambda: get(cluster, "scaledobjects.keda.sh", ns, "keda-zero"), 30, "ScaledObject created")
    assert so["spec"]["minReplicaCount"] == 1
    assert so["spec"]["triggers"][0]["type"] == "prometheus"
    dep = wait_for(lambda: get(cluster, "deploy", ns, "keda-zero"), 20, "Deployment created")
    ours = [mf for mf in dep["metadata"]["managedFields"] if mf["manager"] == "modeldeploy-operator"]
    assert ours and all("f:replicas" not in mf["fieldsV1"].get("f:spec", {}) for mf in ours)


def test_insufficient_gpu_is_diagnosed_within_seconds(
    cluster: Any, operator: OperatorProcess, ns: str
) -> None:
    t0 = time.monotonic()
    apply(cluster, md_doc("gpu", ns, resources={"gpu": 16}, replicas=1))

    def diagnosed() -> dict[str, Any] | None:
        c = cond(get(cluster, "md", ns, "resnet"), "Ready")
        return c if c.get("reason") == "InsufficientGPU" else None

    c = wait_for(diagnosed, 30, "Ready=False reason InsufficientGPU")
    took = time.monotonic() - t0
    assert c["status"] == "False"
    assert "nvidia.com/gpu" in c["message"]
    md = get(cluster, "md", ns, "resnet")
    assert cond(md, "Degraded")["status"] == "True"
    assert md["status"]["models"][0]["versions"][0]["state"] == "Pending"  # type: ignore[index]
    assert took < 30
    print(f"InsufficientGPU diagnosed after {took:.1f}s")


def test_drift_is_repaired_and_foreign_fields_are_kept(
    cluster: Any, operator: OperatorProcess, ns: str
) -> None:
    apply(cluster, md_doc("cpu", ns))
    wait_ready(cluster, ns, "cpu-model")
    image = get(cluster, "deploy", ns, "cpu-model")["spec"]["template"]["spec"]["containers"][0]["image"]  # type: ignore[index]
    svc_uid = get(cluster, "svc", ns, "cpu-model")["metadata"]["uid"]  # type: ignore[index]

    cluster.kubectl("annotate", "deploy/cpu-model", "-n", ns, "other-tool.example.com/note=keep-me")
    cluster.kubectl("delete", "svc/cpu-model", "-n", ns)
    cluster.kubectl("set", "image", "deploy/cpu-model", "-n", ns, "triton=example.com/evil:1")

    svc = wait_for(
        lambda: (s := get(cluster, "svc", ns, "cpu-model")) and s["metadata"]["uid"] != svc_uid and s,
        RESYNC_SECONDS * 3,
        "Service re-created",
    )
    assert svc["spec"]["ports"][0]["port"] == 8000

    def image_restored() -> bool:
        dep = get(cluster, "deploy", ns, "cpu-model") or {}
        return dep["spec"]["template"]["spec"]["containers"][0]["image"] == image

    wait_for(image_restored, RESYNC_SECONDS * 3, "Deployment image restored")
    dep = get(cluster, "deploy", ns, "cpu-model")
    assert dep["metadata"]["annotations"]["other-tool.example.com/note"] == "keep-me"  # type: ignore[index]
    wait_ready(cluster, ns, "cpu-model")


def test_in_place_version_change_does_not_roll_pods(cluster: Any, operator: OperatorProcess, ns: str) -> None:
    apply(cluster, md_doc("cpu", ns))
    wait_ready(cluster, ns, "cpu-model")
    before = get(cluster, "deploy", ns, "cpu-model")
    model = load_case("cpu")["spec"]["models"][0]
    apply(cluster, md_doc("cpu", ns, models=[{**model, "versionPolicy": {"all": True}}]))

    def manifest_versions() -> list[int] | None:
        cm = get(cluster, "cm", ns, "cpu-model-models") or {}
        doc = json.loads(cm["data"]["manifest.json"])
        pol = doc["models"][0]["versionPolicy"]
        return [1, 2] if pol.get("all") else None

    wait_for(manifest_versions, 20, "manifest with both versions")

    def propagating() -> dict[str, Any] | None:
        md = get(cluster, "md", ns, "cpu-model")
        return md if cond(md, "Ready").get("reason") == "VersionsPropagating" else None

    # The pods are still Ready on the old manifest: not Ready until the kubelet-sync window passed.
    md = wait_for(
        propagating,
        20,
        "Ready=False reason VersionsPropagating",
        explain=lambda: propagation_facts(cluster, ns),
    )
    assert cond(md, "Progressing")["status"] == "True" and cond(md, "Reconciling")["status"] == "True"
    assert {v["version"]: v["state"] for v in md["status"]["models"][0]["versions"]} == {
        1: "Loading",
        2: "Ready",
    }
    md = wait_ready(cluster, ns, "cpu-model")
    after = get(cluster, "deploy", ns, "cpu-model")
    assert after["metadata"]["generation"] == before["metadata"]["generation"]  # type: ignore[index]
    assert md["status"]["servedVersions"] == "simple:1,2"
    events = cluster.kubectl(
        "get", "events", "-n", ns, "--field-selector", "reason=VersionsChanged", "-o", "name"
    ).stdout
    assert events.strip(), "a VersionsChanged event"


@pytest.mark.slow
def test_no_writes_during_a_quiet_minute(cluster: Any, operator: OperatorProcess, ns: str) -> None:
    apply(cluster, md_doc("gpu", ns))
    apply(cluster, md_doc("hpa", ns))
    wait_ready(cluster, ns, "resnet")
    # the HPA first raises the Deployment to minReplicas (a real change the status must follow)
    wait_for(
        lambda: (get(cluster, "md", ns, "hpa-queue") or {}).get("status", {}).get("readyReplicas") == 2,
        60,
        "HPA at minReplicas",
    )
    wait_ready(cluster, ns, "hpa-queue")
    time.sleep(RESYNC_SECONDS + 2)  # let in-flight status refreshes settle
    # The HPA controller keeps writing the HPA's status (no metrics API here): not ours, not compared.
    rvs = {
        k: v
        for k, v in resource_versions(cluster, ns).items()
        if not k.startswith("HorizontalPodAutoscaler/")
    }
    assert {
        "ModelDeployment/resnet",
        "Deployment/resnet",
        "PodDisruptionBudget/hpa-queue",
        "ServiceMonitor/resnet",
    } <= set(rvs)
    line = audit_lines(cluster)
    resyncs = operator.metric('modeldeploy_reconcile_total{result="ok",trigger="resync"}')
    time.sleep(60)
    writes = [
        f"{e['verb']} {e['objectRef'].get('resource')}/{e['objectRef'].get('name')} "
        f"{e['objectRef'].get('subresource') or ''} by {e['user']['username']} ({e.get('userAgent', '')})"
        for e in audit_writes(cluster, line, ns)
        if e["objectRef"].get("resource") in OWNED_RESOURCES
        and not e["user"]["username"].startswith("system:")  # controllers (HPA status, its events)
    ]
    fired = operator.metric('modeldeploy_reconcile_total{result="ok",trigger="resync"}') - resyncs
    # At least three resync passes over both objects ran in the quiet minute (one per
    # RESYNC_SECONDS when idle; a loaded 2-core machine stretches each pass), and none wrote.
    assert fired >= 2 * 3, f"the resync timer fired only {fired} times"
    assert writes == [], "writes during a no-op minute:\n" + "\n".join(writes)
    after = {
        k: v
        for k, v in resource_versions(cluster, ns).items()
        if not k.startswith("HorizontalPodAutoscaler/")
    }
    assert after == rvs
    print(f"{fired:.0f} resyncs, 0 writes in 60 s")


def test_children_are_created_without_a_get_and_a_taken_name_is_not_taken_over(
    cluster: Any, operator: OperatorProcess, ns: str
) -> None:
    """#12: a child that neither our store nor the metadata-only watch of every name not ours holds is
    created by its apply alone, no GET first; a name someone else's object holds is read first
    (a forced apply would take it over) and refused, naming its controller."""
    owner = json.loads(
        cluster.kubectl("create", "configmap", "someone", "-n", ns, "-o", "json").stdout
    )  # a live owner, or the garbage collector deletes the foreign Service
    ref = {"apiVersion": "v1", "kind": "ConfigMap", "name": "someone", "uid": owner["metadata"]["uid"]}
    foreign = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "taken", "namespace": ns, "ownerReferences": [{**ref, "controller": True}]},
        "spec": {"ports": [{"port": 80}]},
    }
    cluster.kubectl("create", "-f", "-", input=json.dumps(foreign))
    created = ("ConfigMap", "Service", "Deployment", "NetworkPolicy")  # the cpu case's children
    wait_for(  # the names watches have listed (a gauge of each from its first LIST on)
        lambda: all(f'modeldeploy_cache_objects{{kind="{k}:names"}}' in operator.metrics() for k in created),
        60,
        "the names stores synced",
    )

    # (ConfigMap and Service names come and go with other tests' namespaces: kube-root-ca.crt, ...)
    def names_held() -> dict[str, float]:  # (one scrape of /metrics)
        m = operator.metrics()
        return {
            k: m[f'modeldeploy_cache_objects{{kind="{k}:names"}}'] for k in ("Deployment", "NetworkPolicy")
        }

    names = names_held()
    line = audit_lines(cluster)
    apply(cluster, md_doc("cpu", ns))
    apply(cluster, md_doc("cpu", ns, name="taken"))
    wait_ready(cluster, ns, "cpu-model")
    wait_for(
        lambda: cond(get(cluster, "md", ns, "taken"), "Ready").get("reason") == "ApplyRejected", 60, "refusal"
    )
    msg = cond(get(cluster, "md", ns, "taken"), "Ready")["message"]
    assert "Service" in msg and "controlled by ConfigMap/someone" in msg, msg
    svc = get(cluster, "service", ns, "taken")
    assert svc is not None and svc["metadata"]["ownerReferences"] == [{**ref, "controller": True}]
    assert [p["port"] for p in svc["spec"]["ports"]] == [80]
    gets = [
        f"{(e.get('objectRef') or {}).get('resource')}/{(e.get('objectRef') or {}).get('name')}"
        for e in audit_events(cluster, line, ns)
        if e.get("verb") == "get"
        and e.get("stage") == "ResponseComplete"
        and str(e.get("userAgent", "")).startswith(OPERATOR_UAS)
        and (e.get("objectRef") or {}).get("resource") != "modeldeployments"
    ]
    assert "services/taken" in gets, f"the taken name was not read first (are reads logged?): {gets}"
    # the names watches hold only names that are not ours: our children (and their Deployment's six
    # status writes on the way to Available) never reach them
    after = names_held()
    assert after == names, (names, after)
    plurals = {"configmaps", "services", "deployments", "networkpolicies"}
    assert not [g for g in gets if g.split("/")[0] in plurals and g.split("/")[1].startswith("cpu-model")], (
        gets
    )


def test_delete_garbage_collects_children(cluster: Any, operator: OperatorProcess, ns: str) -> None:
    apply(cluster, md_doc("hpa", ns))
    md = wait_ready(cluster, ns, "hpa-queue")
    assert md["metadata"].get("finalizers") in (None, []), (
        "no finalizers: deletion never waits for the operator"
    )
    cluster.kubectl("delete", "md/hpa-queue", "-n", ns, "--wait=true", "--timeout=30s")
    assert get(cluster, "md", ns, "hpa-queue") is None

    def gone() -> bool:
        out = cluster.kubectl(
            "get",
            f"{CHILD_KINDS},servicemonitors",
            "-n",
            ns,
            "-l",
            "modeldeploy.io/deployment=hpa-queue",
            "-o",
            "name",
        ).stdout
        return not out.strip()

    wait_for(gone, 60, "children garbage-collected")


def test_operator_restart_converges_without_duplicates(
    cluster: Any, operator: OperatorProcess, ns: str
) -> None:
    apply(cluster, md_doc("cpu", ns, name="first"))
    wait_ready(cluster, ns, "first")
    assert operator.stop() == 0
    try:
        apply(cluster, md_doc("cpu", ns, name="first", replicas=2))  # changed while the operator was down
        apply(cluster, md_doc("cpu", ns, name="second"))  # created while the operator was down
        time.sleep(2)
        assert get(cluster, "deploy", ns, "second") is None
    finally:
        operator.start()
    first = wait_ready(cluster, ns, "first")
    wait_ready(cluster, ns, "second")
    assert first["status"]["replicas"] == 2
    deps = cluster.kubectl("get", "deploy", "-n", ns, "-o", "name").stdout.split()
    assert sorted(deps) == ["deployment.apps/first", "deployment.apps/second"]
    cms = cluster.kubectl(
        "get", "cm", "-n", ns, "-l", "app.kubernetes.io/managed-by=modeldeploy-operator", "-o", "name"
    ).stdout.split()
    assert sorted(cms) == ["configmap/first-models", "configmap/second-models"]
    rss = json.loads(cluster.kubectl("get", "rs", "-n", ns, "-o", "json").stdout)["items"]
    assert len([r for r in rss if r["metadata"]["name"].startswith("first-")]) == 1, (
        "no pod-template change on restart"
    )


def test_operator_metrics_endpoint(cluster: Any, operator: OperatorProcess) -> None:
    m = operator.metrics()
    assert any(k.startswith("modeldeploy_reconcile_total") for k in m)
    assert any(k.startswith("modeldeploy_reconcile_duration_seconds_bucket") for k in m)
    assert any(k.startswith('modeldeploy_managed_modeldeployments{condition="Ready"') for k in m)
    assert any(k.startswith("modeldeploy_handler_latency_seconds") for k in m)
