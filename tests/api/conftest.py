"""Fixtures of the API tests that talk to the real API server: the CRD installed, a namespace."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from modeldeploy.api import v1alpha1 as api

from .catalogue import REPO

CRD_FILE = REPO / "crds" / "modeldeploy.io_modeldeployments.yaml"


@pytest.fixture(scope="session")
def crd_installed(cluster: Any) -> str:
    cluster.kubectl(
        "apply",
        "--server-side",
        "--force-conflicts",
        "--field-manager=modeldeploy-tests",
        "-f",
        str(CRD_FILE),
    )
    cluster.wait_established(api.CRD_NAME)
    return api.CRD_NAME


@pytest.fixture(scope="session")
def api_ns(cluster: Any, crd_installed: str) -> Iterator[str]:
    with cluster.scratch_namespace(f"api-{uuid.uuid4().hex[:6]}") as name:
        yield name
