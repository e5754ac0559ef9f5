"""Shared pytest fixtures.

Cluster fixtures talk to a real local control plane (etcd, kube-apiserver, controller-manager,
scheduler, KWOK) started by modeldeploy.cluster.local — the same code as `mdctl cluster up`.

* ``cluster`` (session): a LocalCluster. Each pytest process starts its own on free ports, unless
  ``MODELDEPLOY_TEST_KUBECONFIG`` points at an already running one (handy while developing:
  ``mdctl cluster up`` once, then ``export MODELDEPLOY_TEST_KUBECONFIG=$(mdctl cluster kubeconfig)``).
* ``namespace`` (function): a fresh namespace name, deleted afterwards.
* ``k8s_api`` (session): an admin ``kubernetes.client.ApiClient``.
* ``shared_crds`` (session): installs the unmodified KEDA / prometheus-operator CRDs from
  ../shared/crds (or their copy in tests/fixtures/upstream-crds when no shared/ folder is found).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sharedpaths import upstream_crd_dir

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO


@pytest.fixture(scope="session")
def cluster() -> Iterator[object]:
    from modeldeploy.cluster.local import LocalCluster

    existing = os.environ.get("MODELDEPLOY_TEST_KUBECONFIG")
    if existing:
        yield LocalCluster.attach(Path(existing))
        return
    c = LocalCluster(name=f"pytest-{os.getpid()}", ephemeral=True)
    c.up()
    try:
        yield c
    finally:
        c.down()


@pytest.fixture(scope="session")
def k8s_api(cluster):  # type: ignore[no-untyped-def]
    return cluster.api_client()


@pytest.fixture
def namespace(cluster, request) -> Iterator[str]:  # type: ignore[no-untyped-def]
    base = "".join(ch if ch.isalnum() else "-" for ch in request.node.name.lower())[:40].strip("-")
    with cluster.scratch_namespace(f"{base}-{uuid.uuid4().hex[:5]}") as name:
        yield name


@pytest.fixture(scope="session")
def shared_crds(cluster) -> list[str]:  # type: ignore[no-untyped-def]
    crd_dir = upstream_crd_dir()
    files = sorted(crd_dir.glob("*.yaml"))
    assert files, f"no CRDs found in {crd_dir}"
    for f in files:
        cluster.kubectl("apply", "--server-side", "-f", str(f))
    names = [
        "scaledobjects.keda.sh",
        "servicemonitors.monitoring.coreos.com",
        "podmonitors.monitoring.coreos.com",
        "httpscaledobjects.http.keda.sh",
    ]
    cluster.wait_established(*names)
    return names


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """`cluster` and `triton` tests need real components: they are integration tests by definition,
    so `-m "not integration"` (make unit) never starts a control plane or a tritonserver."""
    for item in items:
        if item.get_closest_marker("cluster") or item.get_closest_marker("triton"):
            item.add_marker(pytest.mark.integration)
