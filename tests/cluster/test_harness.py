"""The test harness says why it failed (issue #11, item 7): failing cluster commands carry their
stderr, CRD waits survive a fresh CRD's null conditions, and each cluster has its own kubectl cache."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import pytest

from modeldeploy.cluster.local import ClusterError, CommandError

pytestmark = [pytest.mark.integration, pytest.mark.cluster]


def _crd(group: str, plural: str) -> dict[str, Any]:
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{plural}.{group}"},
        "spec": {
            "group": group,
            "names": {"kind": plural.capitalize().rstrip("s"), "plural": plural},
            "scope": "Namespaced",
            "versions": [
                {
                    "name": "v1",
                    "served": True,
                    "storage": True,
                    "schema": {
                        "openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
                    },
                }
            ],
        },
    }


def test_failing_kubectl_raises_with_its_stderr(cluster: Any) -> None:
    with pytest.raises(CommandError) as info:
        cluster.kubectl("get", "nosuchkinds.example.invalid")
    text = str(info.value)
    assert "nosuchkinds.example.invalid" in text and "exited 1" in text
    assert "doesn't have a resource type" in text, text  # kubectl's own stderr is in the message


def test_wait_established_right_after_create(cluster: Any) -> None:
    """Created and waited for at once, several times: a CRD whose status.conditions is still null
    (kubectl wait exits 1 on it) is waited for, not failed."""
    group = f"h{uuid.uuid4().hex[:8]}.example.com"
    crds = [_crd(group, f"things{i}s") for i in range(4)]
    names = [c["metadata"]["name"] for c in crds]
    try:
        for crd in crds:
            cluster.kubectl("create", "-f", "-", input=json.dumps(crd))
        cluster.wait_established(*names, timeout=120)
        for n in names:
            conds = json.loads(cluster.kubectl("get", "crd", n, "-o", "json").stdout)["status"]["conditions"]
            assert any(c["type"] == "Established" and c["status"] == "True" for c in conds)
    finally:
        cluster.kubectl("delete", "crd", *names, "--wait=false", check=False)


def test_wait_established_names_what_it_saw(cluster: Any) -> None:
    with pytest.raises(ClusterError) as info:
        cluster.wait_established("absent.example.invalid", timeout=3)
    assert "absent.example.invalid" in str(info.value) and "NotFound" in str(info.value)


def test_kubectl_cache_is_per_cluster(cluster: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """kubectl's discovery cache lives in the cluster's own folder, never in the shared
    ~/.kube/cache (keyed by host:port, which local clusters reuse)."""
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("KUBECACHEDIR", raising=False)
    cluster.kubectl("get", "crd")
    cluster.kubectl("api-resources")
    assert not (tmp_path / ".kube" / "cache").exists()
    assert cluster.env()["KUBECACHEDIR"] == str(cluster.kube_cache_dir)
    assert (cluster.kube_cache_dir / "discovery").is_dir()
