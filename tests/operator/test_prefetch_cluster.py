"""spec.cache on the real control plane: the prefetch Job is admitted under PodSecurity
``restricted``, the operator reports Prefetching while it cannot finish (its claim is not bound
yet), then observes its completion (KWOK completes Jobs' pods) and reports the cache Ready."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
from opsupport import OperatorProcess, wait_for
from test_operator_cluster import apply, get, md_doc

pytestmark = [pytest.mark.integration, pytest.mark.cluster]

DIGEST, DIGEST2 = "c" * 64, "d" * 64


def _manifest_versions(cluster: Any, ns: str) -> list[int]:
    cm = get(cluster, "configmap", ns, "cpu-model-models")
    assert cm is not None
    manifest = json.loads(next(iter(cm["data"].values())))
    return [v["version"] for v in manifest["models"][0]["versions"]]


def _cache_state(cluster: Any, ns: str, want: str) -> dict[str, Any] | None:
    md = get(cluster, "md", ns, "cpu-model")
    cache = ((md or {}).get("status") or {}).get("cache") or {}
    return cache if cache.get("state") == want else None


def test_prefetch_job_admitted_observed_and_reported(
    cluster: Any, operator: OperatorProcess, ns: str
) -> None:
    sc = f"manual-{uuid.uuid4().hex[:6]}"  # no provisioner: the claim stays Pending until the PV exists
    pvc = {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": "model-cache", "namespace": ns},
           "spec": {"accessModes": ["ReadWriteMany"], "storageClassName": sc,
                    "resources": {"requests": {"storage": "1Gi"}}}}  # fmt: skip
    cluster.kubectl("apply", "-f", "-", input=json.dumps(pvc))
    models = [{"name": "simple", "format": "onnx", "source": "s3://models/simple",
               "versions": [{"version": 1, "sha256": DIGEST}]}]  # fmt: skip
    apply(cluster, md_doc("cpu", ns, models=models, cache={"claimName": "model-cache"}))

    st = wait_for(lambda: _cache_state(cluster, ns, "Prefetching"), 60, "status.cache Prefetching")
    job_name = st["job"]
    job = wait_for(lambda: get(cluster, "jobs.batch", ns, job_name), 30, "prefetch Job")
    assert job["metadata"]["ownerReferences"][0]["kind"] == "ModelDeployment"
    # the Job's pod passed PodSecurity restricted admission (a violating pod is never created)
    pods = wait_for(
        lambda: json.loads(
            cluster.kubectl("get", "pods", "-n", ns, "-l", f"job-name={job_name}", "-o", "json").stdout
        )["items"],
        30,
        "prefetch pod created",
    )
    assert pods[0]["spec"]["containers"][0]["args"][0] == "prefetch"
    assert _manifest_versions(cluster, ns) == [1]  # a new deployment starts at once

    # a new version while the cache cannot be filled: the pods are not asked to load it yet
    models[0]["versions"].append({"version": 2, "sha256": DIGEST2})
    apply(cluster, md_doc("cpu", ns, models=models, cache={"claimName": "model-cache"}))
    st = wait_for(
        lambda: (s := _cache_state(cluster, ns, "Prefetching")) and s["job"] != job_name and s,
        60,
        "second Job",
    )
    first_job, job_name = job_name, st["job"]
    wait_for(lambda: get(cluster, "jobs.batch", ns, job_name), 30, "second prefetch Job")
    assert _manifest_versions(cluster, ns) == [1]  # held back while the Job runs
    # the first Job's versions are no longer wanted: the operator deletes it (and its pod)
    wait_for(lambda: get(cluster, "jobs.batch", ns, first_job) is None, 60, "first prefetch Job deleted")

    pv = {"apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": f"cache-{ns}"[:63]},
          "spec": {"capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteMany"], "storageClassName": sc,
                   "persistentVolumeReclaimPolicy": "Delete", "hostPath": {"path": f"/tmp/{ns}"},
                   "claimRef": {"namespace": ns, "name": "model-cache"}}}  # fmt: skip
    cluster.kubectl("apply", "-f", "-", input=json.dumps(pv))
    try:
        st = wait_for(
            lambda: _cache_state(cluster, ns, "Ready"), 120, "status.cache Ready after the Job completed"
        )
        assert st["job"] == job_name and st["claimName"] == "model-cache"
        assert st["versionsPresent"] == [f"simple:2@{DIGEST2[:12]}"] and st["lastVerification"]
        wait_for(
            lambda: _manifest_versions(cluster, ns) == [1, 2], 60, "manifest released after the prefetch"
        )
        job = get(cluster, "jobs.batch", ns, job_name)
        assert job is not None  # the current Job stays: its completion is the cache's recorded state
        assert any(c["type"] == "Complete" and c["status"] == "True" for c in job["status"]["conditions"])
        # the model pods mount the same claim read-only
        dep = get(cluster, "deploy", ns, "cpu-model")
        vols = dep["spec"]["template"]["spec"]["volumes"]  # type: ignore[index]
        assert {
            "name": "model-cache",
            "persistentVolumeClaim": {"claimName": "model-cache", "readOnly": True},
        } in vols
        # no cache any more: the last prefetch Job goes too
        apply(cluster, md_doc("cpu", ns, models=models))
        wait_for(lambda: get(cluster, "jobs.batch", ns, job_name) is None, 60, "last prefetch Job deleted")
    finally:
        cluster.kubectl("delete", "pv", pv["metadata"]["name"], "--wait=false", check=False)


def _sharers(cluster: Any, ns: str, md: str) -> list[str] | None:
    cm = get(cluster, "configmap", ns, f"{md}-cache-sharers")
    return json.loads(cm["data"]["sharers.json"])["modelDeployments"] if cm else None


def test_evicting_jobs_learn_which_deployments_still_use_the_claim(
    cluster: Any, operator: OperatorProcess, ns: str
) -> None:
    models = [{"name": "simple", "format": "onnx", "source": "s3://models/simple",
               "versions": [{"version": 1, "sha256": DIGEST}]}]  # fmt: skip
    shared = {"claimName": "model-cache", "maxSize": "1Gi"}
    for name, cache in (("a", shared), ("b", shared), ("c", {**shared, "claimName": "other-cache"})):
        apply(cluster, md_doc("cpu", ns, name=name, models=models, cache=cache))
    wait_for(lambda: _sharers(cluster, ns, "a") == ["a", "b"], 60, "a's list: a and b share model-cache")
    wait_for(lambda: _sharers(cluster, ns, "b") == ["a", "b"], 60, "b's list")
    assert wait_for(lambda: _sharers(cluster, ns, "c"), 60, "c's list") == ["c"]  # another claim
    job_name = wait_for(
        lambda: (((get(cluster, "md", ns, "a") or {}).get("status") or {}).get("cache") or {}).get("job"),
        60,
        "a's Job in status.cache",
    )
    job = wait_for(lambda: get(cluster, "jobs.batch", ns, job_name), 30, "a's prefetch Job")
    vols = {v["name"]: v for v in job["spec"]["template"]["spec"]["volumes"]}
    assert vols["cache-sharers"]["configMap"]["name"] == "a-cache-sharers"  # read by the evicting Job
    assert vols["cache-sharers"]["configMap"]["optional"] is True

    cluster.kubectl("delete", "md", "b", "-n", ns)  # no finalizer: gone at once
    wait_for(lambda: _sharers(cluster, ns, "a") == ["a"], 60, "b dropped from a's list")
    again = get(cluster, "jobs.batch", ns, job_name)  # the same Job: the list is not part of it
    assert again is not None and again["metadata"]["uid"] == job["metadata"]["uid"]
    apply(cluster, md_doc("cpu", ns, name="a", models=models, cache={"claimName": "model-cache"}))
    wait_for(lambda: _sharers(cluster, ns, "a") is None, 60, "no maxSize: no list")
