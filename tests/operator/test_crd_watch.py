"""CRDs installed or removed while the operator runs (#12): the operator watches the CRDs it renders
for (by name) rather than reading them every 30 s, so a KEDA CRD installed after it started leads
to the ScaledObject within seconds, with no resync (the resync interval here is an hour), and its
removal shows in the status just as soon."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from opsupport import OperatorProcess, wait_for
from sharedpaths import upstream_crd_dir
from test_operator_cluster import apply, get, load_case, md_doc

pytestmark = [pytest.mark.integration, pytest.mark.cluster]

KEDA_CRD = "scaledobjects.keda.sh"
RESYNC_OK = 'modeldeploy_reconcile_total{result="ok",trigger="resync"}'
#: From the CRD established to the ScaledObject written (a watch event + one reconcile; generous
#: for a loaded 2-core machine).
LIMIT_S = 15.0


def install_keda_crd(cluster: Any) -> None:
    cluster.kubectl("apply", "--server-side", "-f", str(upstream_crd_dir() / "keda.sh_scaledobjects.yaml"))
    cluster.kubectl("wait", "--for=condition=Established", f"crd/{KEDA_CRD}", "--timeout=60s")


@pytest.fixture
def without_keda_crd(cluster: Any, shared_crds: list[str]) -> Iterator[None]:
    cluster.kubectl("delete", "crd", KEDA_CRD, "--wait=true")
    try:
        yield
    finally:
        install_keda_crd(cluster)  # the other tests of the session expect it


def _not_installed_message(md: dict[str, Any] | None) -> str | None:
    for c in ((md or {}).get("status") or {}).get("conditions") or []:
        if f"{KEDA_CRD} is not installed" in c.get("message", ""):
            return str(c["message"])
    return None


def test_a_crd_installed_or_removed_later_is_picked_up_without_a_resync(
    cluster: Any, modeldeploy_crd: str, without_keda_crd: None, tmp_path_factory: pytest.TempPathFactory
) -> None:
    env = cluster.env()
    env.pop("MODELDEPLOY_TRITON_IMAGE", None)
    env.pop("MODELDEPLOY_RUNTIME_IMAGE", None)
    ns = f"crdwatch-{uuid.uuid4().hex[:6]}"
    op = OperatorProcess(env, tmp_path_factory.mktemp("operator-crd"), resync=3600, namespace=ns)
    labels = {"pod-security.kubernetes.io/enforce": "restricted"}
    with cluster.scratch_namespace(ns, labels), op.running():
        # minReplicas 1: a KEDA ScaledObject (0 would hand it to the HTTP add-on)
        autoscaling = {**load_case("keda")["spec"]["autoscaling"], "minReplicas": 1}
        apply(cluster, md_doc("keda", ns, autoscaling=autoscaling))
        wait_for(
            lambda: _not_installed_message(get(cluster, "md", ns, "keda-zero")), 90, "status: KEDA missing"
        )
        assert get(cluster, "deploy", ns, "keda-zero") is not None

        install_keda_crd(cluster)
        t0 = time.monotonic()
        so = wait_for(lambda: get(cluster, KEDA_CRD, ns, "keda-zero"), LIMIT_S, "ScaledObject after the CRD")
        took = time.monotonic() - t0
        assert so["spec"]["minReplicaCount"] == 1
        assert so["metadata"]["ownerReferences"][0]["kind"] == "ModelDeployment"
        wait_for(
            lambda: _not_installed_message(get(cluster, "md", ns, "keda-zero")) is None,
            LIMIT_S,
            "status no longer says KEDA is missing",
        )
        print(f"\nKEDA CRD established -> ScaledObject in {took:.2f} s")

        cluster.kubectl("delete", "crd", KEDA_CRD, "--wait=true")
        t1 = time.monotonic()
        wait_for(
            lambda: _not_installed_message(get(cluster, "md", ns, "keda-zero")), LIMIT_S, "status: KEDA gone"
        )
        print(f"KEDA CRD deleted -> status says so in {time.monotonic() - t1:.2f} s")
        assert op.metric(RESYNC_OK) == 0, "a resync ran: the change may not have come from the watch"
