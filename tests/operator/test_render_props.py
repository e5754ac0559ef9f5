"""Properties of the rendered children that matter beyond the goldens."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from opsupport import load_case

from modeldeploy.api import v1alpha1 as api
from modeldeploy.api.v1alpha1 import ModelDeployment, SpecError
from modeldeploy.render import RenderOptions, render_children
from modeldeploy.render.common import MANIFEST_HASH_ANNOTATION, SCALEDOBJECT_CRD, SERVICEMONITOR_CRD
from modeldeploy.render.deployment import render_deployment, triton_args
from modeldeploy.render.manifest import build_manifest, render_configmap
from modeldeploy_runtime.control import CONTROL_KEY_DIR, CONTROL_KEY_ENV, CONTROL_KEY_FILE, triton_launch
from modeldeploy_runtime.manifest import MANIFEST_KEY
from modeldeploy_runtime.pushsign import OWNER_ENV, PUSH_KEY_FILE, PushSigner, owner_id


def md_of(case: str, **spec_changes: Any) -> ModelDeployment:
    body = load_case(case)
    body["spec"].update(copy.deepcopy(spec_changes))
    return ModelDeployment.from_body(body)


def containers(dep: dict[str, Any]) -> list[dict[str, Any]]:
    pod = dep["spec"]["template"]["spec"]
    return pod["initContainers"] + pod["containers"]


@pytest.mark.parametrize(
    "case", ["cpu", "gpu", "mig", "multi-model", "hpa", "keda", "llm-vllm-tp8", "llm-transformers"]
)
def test_pod_is_podsecurity_restricted(case: str) -> None:
    dep = render_deployment(md_of(case))
    pod = dep["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    for c in containers(dep):
        sc = c["securityContext"]
        assert sc["allowPrivilegeEscalation"] is False, c["name"]
        assert sc["capabilities"] == {"drop": ["ALL"]}, c["name"]
    allowed = {"configMap", "emptyDir", "secret", "persistentVolumeClaim"}
    for v in pod["volumes"]:
        assert set(v) - {"name"} <= allowed, v


def test_gpu_resources_toleration_and_product_affinity() -> None:
    dep = render_deployment(md_of("gpu"))
    pod = dep["spec"]["template"]["spec"]
    triton = pod["containers"][0]
    assert triton["resources"]["requests"]["nvidia.com/gpu"] == "1"
    assert triton["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod["tolerations"]
    terms = pod["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"][
        "nodeSelectorTerms"
    ]
    assert terms == [
        {
            "matchExpressions": [
                {"key": "nvidia.com/gpu.product", "operator": "In", "values": ["NVIDIA-H100-80GB-HBM3"]}
            ]
        }
    ]
    dshm = next(v for v in pod["volumes"] if v["name"] == "dshm")
    assert dshm["emptyDir"] == {"medium": "Memory", "sizeLimit": "2Gi"}


def test_product_affinity_is_anded_into_user_terms() -> None:
    user = {
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [
                    {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["a"]}]}
                ]
            }
        }
    }
    md = md_of("gpu", scheduling={"affinity": user})
    pod = render_deployment(md)["spec"]["template"]["spec"]
    exprs = pod["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"][
        "nodeSelectorTerms"
    ][0]["matchExpressions"]
    assert [e["key"] for e in exprs] == ["zone", "nvidia.com/gpu.product"]
    assert api.dump(md.spec.scheduling.affinity) == user  # the spec is not mutated


def test_mig_requests_the_mig_resource() -> None:
    pod = render_deployment(md_of("mig"))["spec"]["template"]["spec"]
    res = pod["containers"][0]["resources"]
    assert res["limits"] == {"nvidia.com/mig-1g.10gb": "1"}
    assert "nvidia.com/gpu" not in res["requests"]


def test_cpu_model_has_no_gpu_anything() -> None:
    pod = render_deployment(md_of("cpu"))["spec"]["template"]["spec"]
    assert "tolerations" not in pod and "affinity" not in pod
    assert "nvidia.com/gpu" not in str(pod["containers"][0]["resources"])


def test_triton_args_and_agent_probe_follow_the_contract() -> None:
    md = md_of("gpu", server={"ports": {"http": 9000, "grpc": 9001, "metrics": 9002}})
    pod = render_deployment(md)["spec"]["template"]["spec"]
    triton, agent = pod["containers"]
    assert triton["args"][:6] == [
        "--model-repository=/models",
        "--model-control-mode=explicit",
        "--strict-readiness=true",
        "--http-port=9000",
        "--grpc-port=9001",
        "--metrics-port=9002",
    ]
    # restricted to the pod's own control key, read from the file the init agent wrote
    assert (triton["command"], triton["args"]) == triton_launch(triton_args(md))
    assert not any("restricted" in a for a in triton["args"])
    # readiness means serving (some READY version of every model), not "every wanted version"
    assert agent["readinessProbe"]["httpGet"] == {"path": "/serving", "port": "agent"}
    # whose pushes the agent takes: this object (namespace/name/uid), a plain value
    assert agent["env"] == [{"name": OWNER_ENV, "value": owner_id(md.namespace, md.name, md.metadata["uid"])}]
    assert "env" not in pod["initContainers"][0]
    assert "--triton-url" in agent["args"] and "http://127.0.0.1:9000" in agent["args"]
    assert pod["initContainers"][0]["args"][:3] == ["agent", "--mode", "init"]


@pytest.mark.parametrize("case", ["cpu", "gpu", "trust", "llm-vllm-tp1"])
def test_no_keys_secret_and_the_control_key_stays_in_the_pod(case: str) -> None:
    """No Secret of the operator's is referenced (no secretKeyRef at all), no control key in any
    env; the key lives in an in-memory emptyDir that the init agent writes (read-write), and that
    Triton and the sidecar only read."""
    md = md_of(case)
    pod = render_deployment(md)["spec"]["template"]["spec"]
    every = pod["initContainers"] + pod["containers"]
    assert "secretKeyRef" not in str(pod) and "-keys" not in str(pod).replace("model-keys", "")
    assert all(e["name"] != CONTROL_KEY_ENV for c in every for e in c.get("env") or [])
    assert {"name": "control-key", "emptyDir": {"medium": "Memory", "sizeLimit": "1Mi"}} in pod["volumes"]
    mounts = {c["name"]: [m for m in c["volumeMounts"] if m["name"] == "control-key"] for c in every}
    assert mounts["fetch-models"] == [{"name": "control-key", "mountPath": CONTROL_KEY_DIR}]
    for name in ("triton", "agent"):
        assert mounts[name] == [{"name": "control-key", "mountPath": CONTROL_KEY_DIR, "readOnly": True}]
    assert all(not v for k, v in mounts.items() if k not in ("fetch-models", "triton", "agent"))
    for c in pod["initContainers"][0], next(c for c in every if c["name"] == "agent"):
        i = c["args"].index("--control-key-file")
        assert c["args"][i + 1] == CONTROL_KEY_FILE


def test_the_push_key_is_in_the_configmap_and_never_in_the_pod_template() -> None:
    """In place: the ConfigMap carries the operator's public key beside the manifest, projected
    into the agents' manifest volume; a different key changes that ConfigMap entry only: the
    Deployment (pod template and its hash) is the same, so a new key rolls no pods."""
    md = md_of("cpu")
    a, b = PushSigner.generate(), PushSigner.generate()
    ka, kb = (render_children(md, RenderOptions(push_public_key=k.public_pem)) for k in (a, b))
    assert ka["Deployment"] == kb["Deployment"]
    assert ka["Deployment"] == render_children(md, RenderOptions())["Deployment"]
    cma, cmb = ka["ConfigMap"], kb["ConfigMap"]
    assert cma is not None and cmb is not None
    assert cma["data"] == {MANIFEST_KEY: cmb["data"][MANIFEST_KEY], PUSH_KEY_FILE: a.public_pem}
    assert cmb["data"][PUSH_KEY_FILE] == b.public_pem
    pod = render_deployment(md)["spec"]["template"]["spec"]
    (vol,) = [v for v in pod["volumes"] if v["name"] == "model-manifest"]
    assert vol["configMap"]["items"] == [
        {"key": MANIFEST_KEY, "path": MANIFEST_KEY},
        {"key": PUSH_KEY_FILE, "path": PUSH_KEY_FILE},
    ]
    # rolling revisions are never pushed to and immutable: no key, none projected, same hash
    rolling = md_of("gpu")
    assert rolling.spec.rollout.strategy == "rolling"
    ra, rb = (render_children(rolling, RenderOptions(push_public_key=k.public_pem)) for k in (a, b))
    assert ra == rb
    assert ra["ConfigMap"] is not None and set(ra["ConfigMap"]["data"]) == {MANIFEST_KEY}
    pod = render_deployment(rolling)["spec"]["template"]["spec"]
    (vol,) = [v for v in pod["volumes"] if v["name"] == "model-manifest"]
    assert vol["configMap"]["items"] == [{"key": MANIFEST_KEY, "path": MANIFEST_KEY}]
    assert render_configmap(md)["data"][PUSH_KEY_FILE] == ""  # no key given: pushes are refused


def test_autoscaling_leaves_replicas_to_the_autoscaler() -> None:
    assert "replicas" not in render_deployment(md_of("hpa"))["spec"]
    assert "replicas" not in render_deployment(md_of("keda"))["spec"]
    assert render_deployment(md_of("cpu", replicas=4))["spec"]["replicas"] == 4


def test_inplace_version_change_keeps_the_pod_template() -> None:
    a = md_of("cpu")
    b = md_of("cpu", models=[{**load_case("cpu")["spec"]["models"][0], "versionPolicy": {"all": True}}])
    assert build_manifest(a) != build_manifest(b)
    assert render_deployment(a)["spec"]["template"] == render_deployment(b)["spec"]["template"]
    ca, cb = render_children(a)["ConfigMap"], render_children(b)["ConfigMap"]
    assert ca is not None and cb is not None and ca["data"] != cb["data"]


def test_rolling_version_change_rolls_the_pods() -> None:
    model = load_case("cpu")["spec"]["models"][0]
    a = md_of("cpu", rollout={"strategy": "rolling"})
    b = md_of("cpu", rollout={"strategy": "rolling"}, models=[{**model, "versionPolicy": {"all": True}}])
    ta, tb = (render_deployment(x)["spec"]["template"]["metadata"]["annotations"] for x in (a, b))
    assert ta[MANIFEST_HASH_ANNOTATION] != tb[MANIFEST_HASH_ANNOTATION]
    # scaling is not a version change: same hash, even though the generation differs
    c = md_of("cpu", rollout={"strategy": "rolling"}, replicas=5)
    c.metadata["generation"] = 7
    assert render_deployment(c)["spec"]["template"] == render_deployment(a)["spec"]["template"]


def manifest_volume(dep: dict[str, Any]) -> str:
    vols = dep["spec"]["template"]["spec"]["volumes"]
    return str(next(v["configMap"]["name"] for v in vols if v["name"] == "model-manifest"))


def test_rolling_revisions_have_immutable_content_addressed_configmaps() -> None:
    """rolling: each manifest is its own immutable ConfigMap <name>-models-<hash>, mounted by the pod
    template (so old pods keep theirs); inPlace: one mutable <name>-models. Scaling (a new generation,
    same models) keeps the revision."""
    model = load_case("cpu")["spec"]["models"][0]
    a = md_of("cpu", rollout={"strategy": "rolling"})
    b = md_of("cpu", rollout={"strategy": "rolling"}, models=[{**model, "versionPolicy": {"all": True}}])
    ca, cb = render_children(a)["ConfigMap"], render_children(b)["ConfigMap"]
    assert ca is not None and cb is not None
    assert ca["immutable"] is True and cb["immutable"] is True
    na, nb = ca["metadata"]["name"], cb["metadata"]["name"]
    assert na != nb and na.startswith("cpu-model-models-") and nb.startswith("cpu-model-models-")
    assert manifest_volume(render_deployment(a)) == na and manifest_volume(render_deployment(b)) == nb
    scaled = md_of("cpu", rollout={"strategy": "rolling"}, replicas=5)
    scaled.metadata["generation"] = 7
    assert render_children(scaled)["ConfigMap"]["metadata"]["name"] == na  # type: ignore[index]
    inplace = render_children(md_of("cpu"))["ConfigMap"]
    assert inplace is not None and "immutable" not in inplace
    assert inplace["metadata"]["name"] == "cpu-model-models"
    longest = md_of("cpu", rollout={"strategy": "rolling"})
    longest.metadata["name"] = "m" * 63
    name = render_children(longest)["ConfigMap"]["metadata"]["name"]  # type: ignore[index]
    assert len(name) == 63 + len("-models-") + 10 <= 253


def test_which_children_are_wanted() -> None:
    kinds = lambda md: {k for k, v in render_children(md).items() if v is not None}  # noqa: E731
    assert kinds(md_of("cpu")) == {"ConfigMap", "Service", "Deployment", "NetworkPolicy"}
    assert kinds(md_of("gpu")) == {
        "ConfigMap",
        "Service",
        "Deployment",
        "PodDisruptionBudget",
        "ServiceMonitor",
        "NetworkPolicy",
    }
    assert "HorizontalPodAutoscaler" in kinds(md_of("hpa")) and "PodDisruptionBudget" in kinds(md_of("hpa"))
    # minReplicas 0: the KEDA HTTP add-on wakes it on a request and owns the ScaledObject
    assert {"HTTPScaledObject"} <= kinds(md_of("keda")) and "ScaledObject" not in kinds(md_of("keda"))
    assert "PodDisruptionBudget" not in kinds(md_of("keda"))
    keda_one = md_of("keda", autoscaling={**load_case("keda")["spec"]["autoscaling"], "minReplicas": 1})
    assert "ScaledObject" in kinds(keda_one) and "HTTPScaledObject" not in kinds(keda_one)


def test_missing_crds_are_skipped_with_notes() -> None:
    opts = RenderOptions(crds=frozenset())
    out = render_children(md_of("keda"), opts)
    assert out["ScaledObject"] is None and out["ServiceMonitor"] is None
    reasons = {n.reason: n for n in opts.notes}
    assert reasons["AutoscalerUnavailable"].degraded
    assert not reasons["ServiceMonitorSkipped"].degraded
    assert SCALEDOBJECT_CRD in reasons["AutoscalerUnavailable"].message
    assert SERVICEMONITOR_CRD in reasons["ServiceMonitorSkipped"].message


def test_every_child_is_owned_and_labelled() -> None:
    md = md_of("keda")
    for kind, body in render_children(md).items():
        if body is None:
            continue
        meta = body["metadata"]
        assert meta["ownerReferences"][0]["uid"] == md.metadata["uid"], kind
        assert meta["ownerReferences"][0]["controller"] is True
        assert meta["labels"]["modeldeploy.io/deployment"] == md.name
        assert meta["annotations"]["modeldeploy.io/applied-hash"]


@pytest.mark.parametrize(
    ("field", "key"),
    [
        ("podLabels", "bad key"),
        ("podAnnotations", "Example.COM/x"),
        ("podLabels", "-leading"),
        ("podAnnotations", "x" * 64),
    ],
)
def test_invalid_map_keys_are_spec_errors_naming_the_field(field: str, key: str) -> None:
    """Label/annotation keys are checked when the spec is parsed (and by the CRD's CEL rule)."""
    with pytest.raises(SpecError) as err:
        md_of("cpu", **{field: {key: "v"}})
    assert any(e.startswith(f"spec.{field}:") and "qualified names" in e for e in err.value.errors)


def test_valid_map_keys_render() -> None:
    md = md_of("cpu", podLabels={"team": "a", "example.com/tier": "b"}, podAnnotations={"a.b/c_d.e": "x"})
    assert render_children(md)["Deployment"] is not None


def test_credentials_are_referenced_never_inlined() -> None:
    out = render_children(md_of("gpu"))
    cm = out["ConfigMap"]
    assert cm is not None
    assert "/var/run/secrets/modeldeploy/s3-creds" in cm["data"]["manifest.json"]
    pod = out["Deployment"]["spec"]["template"]["spec"]  # type: ignore[index]
    triton = pod["containers"][0]
    assert all(m["name"] != "credentials-0" for m in triton["volumeMounts"]), "Triton must not see the Secret"
    assert {"name": "credentials-0", "secret": {"secretName": "s3-creds"}} in pod["volumes"]


def test_rollout_settings_reach_the_deployment() -> None:
    rollout = {"strategy": "rolling", "maxSurge": "50%", "maxUnavailable": 1,
               "readinessGate": {"timeoutSeconds": 120, "minReadySeconds": 15}}  # fmt: skip
    spec = render_deployment(md_of("cpu", rollout=rollout, server={"startupTimeoutSeconds": 30}))["spec"]
    assert spec["strategy"] == {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxSurge": "50%", "maxUnavailable": 1},
    }
    assert spec["minReadySeconds"] == 15
    assert spec["progressDeadlineSeconds"] == 120 + 60 + 15
    inplace = render_deployment(md_of("cpu", rollout={**rollout, "strategy": "inPlace"}))["spec"]
    assert inplace["minReadySeconds"] == 0  # in place, versions switch inside the running pods


def test_scale_from_zero_routes_the_service_through_the_keda_interceptor() -> None:
    """minReplicas 0 with the HTTP add-on: <name> is an ExternalName alias of the configured
    interceptor (its port), <name>-backend carries the pods' ports and is what the HTTPScaledObject
    targets, the NetworkPolicy lets the interceptor's namespace reach the HTTP port, and the status
    endpoints follow. Without the add-on's CRD, or with minReplicas 1, the Service is the usual one."""
    from modeldeploy.api.v1alpha1 import ModelDeploymentStatus
    from modeldeploy.reconcile.status import compute_status
    from modeldeploy.render.common import ROUTED_NOTE, RenderError

    md = md_of("keda", networkPolicy={"enabled": True})
    opts = RenderOptions(keda_interceptor="interceptor.autoscale.svc.cluster.local:9080")
    out = render_children(md, opts)
    svc, backend, hso = out["Service"], out["BackendService"], out["HTTPScaledObject"]
    assert svc is not None and backend is not None and hso is not None
    assert svc["spec"]["type"] == "ExternalName" and "selector" not in svc["spec"]
    assert svc["spec"]["externalName"] == "interceptor.autoscale.svc.cluster.local"
    assert [p["port"] for p in svc["spec"]["ports"]] == [9080]
    assert backend["metadata"]["name"] == f"{md.name}-backend" and backend["spec"]["type"] == "ClusterIP"
    assert {p["name"] for p in backend["spec"]["ports"]} == {"http", "grpc", "metrics"}
    assert hso["spec"]["scaleTargetRef"]["service"] == f"{md.name}-backend"
    assert md.name in hso["spec"]["hosts"] and f"{md.name}.{md.namespace}.svc" in hso["spec"]["hosts"]
    np = out["NetworkPolicy"]
    assert np is not None
    assert {"from": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "autoscale"}}}],
            "ports": [{"protocol": "TCP", "port": md.spec.server.ports.http}]} in np["spec"]["ingress"]  # fmt: skip
    assert any(n.reason == ROUTED_NOTE for n in opts.notes)

    st = compute_status(md, None, [], None, notes=opts.notes, interceptor=opts.keda_interceptor)
    ModelDeploymentStatus.model_validate(st)
    assert st["endpoints"]["http"] == f"http://{md.name}.{md.namespace}.svc:9080"
    assert st["endpoints"]["grpc"].startswith(f"{md.name}-backend.{md.namespace}.svc:")
    assert st["scaleFromZero"]["route"] == "Interceptor"
    assert st["scaleFromZero"]["backendService"] == f"{md.name}-backend"

    plain = render_children(md, RenderOptions(crds=frozenset({SCALEDOBJECT_CRD, SERVICEMONITOR_CRD})))
    assert plain["Service"] is not None and plain["Service"]["spec"]["type"] == "ClusterIP"
    assert plain["BackendService"] is None and plain["HTTPScaledObject"] is None
    st = compute_status(md, None, [], None)
    assert st["scaleFromZero"]["route"] == "Unavailable"
    assert st["endpoints"]["http"] == f"http://{md.name}.{md.namespace}.svc:{md.spec.server.ports.http}"
    one = md_of("keda", autoscaling={**load_case("keda")["spec"]["autoscaling"], "minReplicas": 1})
    assert render_children(one)["BackendService"] is None and "scaleFromZero" not in compute_status(
        one, None, [], None
    )

    with pytest.raises(RenderError, match="host:port"):
        render_children(md, RenderOptions(keda_interceptor="no-port"))
