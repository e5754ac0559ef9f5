"""Scale from zero on a request (KEDA HTTP add-on) against the real control plane: the rendered
HTTPScaledObject is admitted by the add-on's unmodified v0.15.0 CRD; without that CRD the status
says that requests cannot wake the deployment."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from opsupport import OperatorProcess, wait_for
from sharedpaths import upstream_crd_dir
from test_operator_cluster import apply, cond, get, md_doc

pytestmark = [pytest.mark.integration, pytest.mark.cluster]

HTTP_CRD = "httpscaledobjects.http.keda.sh"


def _service_type(cluster: Any, ns: str, name: str, want: str) -> dict[str, Any] | None:
    svc = get(cluster, "service", ns, name)
    return svc if svc is not None and svc["spec"].get("type") == want else None


def test_httpscaledobject_admitted_by_the_real_crd(cluster: Any, operator: OperatorProcess, ns: str) -> None:
    # minReplicas 1 first: the usual ClusterIP Service, which minReplicas 0 turns into the route
    autoscaling = {**md_doc("keda", ns)["spec"]["autoscaling"], "minReplicas": 1}
    apply(cluster, md_doc("keda", ns, autoscaling=autoscaling))
    wait_for(lambda: _service_type(cluster, ns, "keda-zero", "ClusterIP"), 90, "ClusterIP Service")
    apply(cluster, md_doc("keda", ns))
    # another test may have removed the CRD and installed it again (the operator watches it)
    hso = wait_for(
        lambda: get(cluster, "httpscaledobjects.http.keda.sh", ns, "keda-zero"), 90, "HTTPScaledObject"
    )
    assert hso["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1", "kind": "Deployment", "name": "keda-zero", "service": "keda-zero-backend",
        "port": 8000,
    }  # fmt: skip
    assert hso["spec"]["replicas"] == {"min": 0, "max": 5}
    assert hso["spec"]["hosts"][0] == f"keda-zero.{ns}.svc"
    assert hso["spec"]["scalingMetric"] == {"concurrency": {"targetValue": 10}}
    assert hso["metadata"]["ownerReferences"][0]["kind"] == "ModelDeployment"
    # the add-on creates and owns the KEDA ScaledObject: the operator renders none
    assert get(cluster, "scaledobjects.keda.sh", ns, "keda-zero") is None

    def explained() -> dict[str, Any] | None:
        c = cond(get(cluster, "md", ns, "keda-zero"), "Degraded")
        return c if "wake the deployment from zero" in c.get("message", "") else None

    assert wait_for(explained, 60, "status names the wake-up path")["status"] == "False"

    # the Service became an ExternalName alias of the interceptor (admitted by the API server, its
    # ClusterIP released); the pods' ports are on <name>-backend, the HTTPScaledObject's target
    svc = wait_for(lambda: _service_type(cluster, ns, "keda-zero", "ExternalName"), 60, "ExternalName")
    assert svc["spec"]["externalName"] == "keda-add-ons-http-interceptor-proxy.keda.svc.cluster.local"
    assert svc["spec"].get("clusterIP") in (None, "") and "selector" not in svc["spec"]
    backend = wait_for(lambda: _service_type(cluster, ns, "keda-zero-backend", "ClusterIP"), 60, "backend")
    assert (
        backend["spec"]["clusterIP"]
        and backend["spec"]["selector"]["modeldeploy.io/deployment"] == "keda-zero"
    )
    assert {p["name"] for p in backend["spec"]["ports"]} == {"http", "grpc", "metrics"}

    def routed() -> dict[str, Any] | None:
        st = (get(cluster, "md", ns, "keda-zero") or {}).get("status") or {}
        return st if (st.get("scaleFromZero") or {}).get("route") == "Interceptor" else None

    st = wait_for(routed, 60, "status.scaleFromZero.route Interceptor")
    assert st["scaleFromZero"]["backendService"] == "keda-zero-backend"
    assert st["endpoints"]["http"] == f"http://keda-zero.{ns}.svc:8080"
    assert st["endpoints"]["grpc"] == f"keda-zero-backend.{ns}.svc:8001"

    # back to minReplicas 1: a ClusterIP Service again, the backend Service deleted
    apply(cluster, md_doc("keda", ns, autoscaling=autoscaling))
    wait_for(lambda: _service_type(cluster, ns, "keda-zero", "ClusterIP"), 60, "ClusterIP again")
    wait_for(lambda: get(cluster, "service", ns, "keda-zero-backend") is None, 60, "backend deleted")


@pytest.fixture
def without_http_crd(cluster: Any, shared_crds: list[str]) -> Iterator[None]:
    cluster.kubectl("delete", "crd", HTTP_CRD, "--wait=true")
    try:
        yield
    finally:
        cluster.kubectl(
            "apply", "--server-side", "-f", str(upstream_crd_dir() / "http.keda.sh_httpscaledobjects.yaml")
        )
        cluster.kubectl("wait", "--for=condition=Established", f"crd/{HTTP_CRD}", "--timeout=60s")


def test_without_the_http_addon_status_says_requests_cannot_wake(
    cluster: Any, modeldeploy_crd: str, without_http_crd: None, tmp_path_factory: pytest.TempPathFactory
) -> None:
    # its own operator (fresh CRD discovery) on namespaces the session operator does not watch
    env = cluster.env()
    env.pop("MODELDEPLOY_TRITON_IMAGE", None)
    env.pop("MODELDEPLOY_RUNTIME_IMAGE", None)
    name = f"mdzero-{uuid.uuid4().hex[:6]}"
    labels = {
        "pod-security.kubernetes.io/enforce": "restricted",
        "pod-security.kubernetes.io/enforce-version": "latest",
    }
    op = OperatorProcess(env, tmp_path_factory.mktemp("operator-zero"), namespace="mdzero-*")
    with cluster.scratch_namespace(name, labels), op.running():
        apply(cluster, md_doc("keda", name))

        def explained() -> dict[str, Any] | None:
            c = cond(get(cluster, "md", name, "keda-zero"), "Degraded")
            return c if c.get("reason") == "ScaleFromZeroUnavailable" else None

        c = wait_for(explained, 90, "Degraded=True ScaleFromZeroUnavailable")
        assert c["status"] == "True"
        assert (
            "requests cannot wake the deployment" in c["message"]
            and "spec.autoscaling.minReplicas" in c["message"]
        )
        # the metric-driven ScaledObject is still there (scales up once metrics exist)
        so = wait_for(lambda: get(cluster, "scaledobjects.keda.sh", name, "keda-zero"), 30, "ScaledObject")
        assert so["spec"]["minReplicaCount"] == 0
