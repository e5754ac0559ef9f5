"""spec.cache: the prefetch Job, the read-only cache mount of the model pods, status.cache (pure)."""

from __future__ import annotations

import copy
import json
from typing import Any

from opsupport import load_case

from modeldeploy.api.v1alpha1 import ModelDeployment
from modeldeploy.reconcile.cache_status import cache_status
from modeldeploy.render import render_children
from modeldeploy.render.common import RenderOptions, selector_labels
from modeldeploy.render.deployment import render_deployment
from modeldeploy.render.prefetch import (
    CACHE_MOUNT,
    MANIFEST_ENV,
    SHARERS_KEY,
    SHARERS_MOUNT,
    prefetch_job_name,
    render_prefetch_job,
)
from modeldeploy_runtime.pushsign import OWNER_ENV

D1, D2 = "a" * 64, "b" * 64


def md_with_cache(**cache: Any) -> ModelDeployment:
    body = load_case("cpu")
    body["metadata"]["uid"] = "u-1"
    body["spec"]["models"][0]["versions"] = [{"version": 1, "sha256": D1}, {"version": 2}]
    body["spec"]["models"][0]["credentials"] = {"secretName": "store-keys"}
    body["spec"]["models"][0]["versionPolicy"] = {"all": True}
    body["spec"]["cache"] = {"claimName": "model-cache", **cache}
    return ModelDeployment.from_body(copy.deepcopy(body))


def test_prefetch_job_runs_the_runtime_in_prefetch_mode_with_the_claim_read_write() -> None:
    md = md_with_cache()
    job = render_children(md)["Job"]
    assert job is not None and job["metadata"]["name"] == prefetch_job_name(md)
    pod = job["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    assert c["command"] == ["modeldeploy-runtime"] and c["args"][0] == "prefetch"
    manifest = json.loads(next(e["value"] for e in c["env"] if e["name"] == MANIFEST_ENV))
    assert [v["version"] for v in manifest["models"][0]["versions"]] == [1, 2] and manifest["generation"] == 0
    assert [e["name"] for e in c["env"]] == [MANIFEST_ENV]  # credentials: a mounted Secret (reference)
    assert {"name": "model-cache", "persistentVolumeClaim": {"claimName": "model-cache"}} in pod["volumes"]
    assert {"name": "credentials-0", "secret": {"secretName": "store-keys"}} in pod["volumes"]
    # PodSecurity restricted
    assert pod["securityContext"]["runAsNonRoot"] and pod["securityContext"]["seccompProfile"]
    sc = c["securityContext"]
    assert sc["allowPrivilegeEscalation"] is False and sc["capabilities"] == {"drop": ["ALL"]}
    assert pod["restartPolicy"] == "Never" and pod["automountServiceAccountToken"] is False
    # its pods never match the model pods' selector (Service endpoints, status)
    labels = job["spec"]["template"]["metadata"]["labels"]
    assert not set(selector_labels(md).items()) <= set(labels.items())


def test_job_name_follows_the_versions_only() -> None:
    a = md_with_cache()
    b = md_with_cache()
    b.spec.replicas = 7
    b.metadata["generation"] = 9
    assert prefetch_job_name(a) == prefetch_job_name(b)
    c = md_with_cache()
    c.spec.models[0].versions[1].sha256 = D2
    assert prefetch_job_name(c) != prefetch_job_name(a)
    # maxSize: the Job evicts above it (another limit is another Job: its template is immutable)
    limited = md_with_cache(maxSize="2Gi")
    job = render_prefetch_job(limited)
    assert job is not None and prefetch_job_name(limited) != prefetch_job_name(a)
    args = job["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[args.index("--max-bytes") + 1] == str(2 << 30)
    assert args[args.index("--owner") + 1] == f"{a.namespace}/{a.name}"  # its refs in the cache
    assert "--max-bytes" not in render_children(a)["Job"]["spec"]["template"]["spec"]["containers"][0]["args"]  # type: ignore[index]
    assert render_prefetch_job(md_with_cache(prefetch=False)) is None
    plain = ModelDeployment.from_body(load_case("cpu"))
    assert render_children(plain)["Job"] is None


def test_evicting_job_reads_the_live_users_of_its_claim_from_a_configmap() -> None:
    md = md_with_cache(maxSize="2Gi")
    opts = RenderOptions(cache_sharers=("zeta", "alpha"))
    children = render_children(md, opts)
    cm, job = children["CacheSharers"], children["Job"]
    assert cm is not None and job is not None
    assert cm["kind"] == "ConfigMap" and cm["metadata"]["name"] == f"{md.name}-cache-sharers"
    assert cm["metadata"]["ownerReferences"][0]["uid"] == "u-1"  # goes with its ModelDeployment
    assert json.loads(cm["data"][SHARERS_KEY]) == {
        "namespace": md.namespace,
        "claimName": "model-cache",
        "modelDeployments": sorted(["alpha", "zeta", md.name]),  # itself always included
    }
    pod = job["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    assert c["args"][-2:] == ["--sharers-file", f"{SHARERS_MOUNT}/{SHARERS_KEY}"]
    assert {"name": "cache-sharers", "mountPath": SHARERS_MOUNT, "readOnly": True} in c["volumeMounts"]
    assert {"name": "cache-sharers", "configMap": {"name": cm["metadata"]["name"], "optional": True}} in pod[
        "volumes"
    ]
    # others coming and going rewrite the ConfigMap, never the Job (a new Job re-verifies everything)
    other = render_children(md, RenderOptions(cache_sharers=("alpha",)))
    assert other["Job"] == job and other["CacheSharers"] != cm
    # unknown users (mdctl render) or no eviction: no ConfigMap, so no refs file is ever removed
    assert render_children(md)["CacheSharers"] is None
    plain = md_with_cache()
    assert render_children(plain, opts)["CacheSharers"] is None
    plain_job = render_prefetch_job(plain)
    assert (
        plain_job is not None
        and "--sharers-file" not in plain_job["spec"]["template"]["spec"]["containers"][0]["args"]
    )
    assert not any(v["name"] == "cache-sharers" for v in plain_job["spec"]["template"]["spec"]["volumes"])


def test_model_pods_mount_the_cache_read_only() -> None:
    md = md_with_cache()
    pod = render_deployment(md)["spec"]["template"]["spec"]
    assert {
        "name": "model-cache",
        "persistentVolumeClaim": {"claimName": "model-cache", "readOnly": True},
    } in pod["volumes"]
    for c in pod["initContainers"] + [c for c in pod["containers"] if c["name"] == "agent"]:
        assert {"name": "model-cache", "mountPath": CACHE_MOUNT, "readOnly": True} in c["volumeMounts"]
        assert {"name": "MODELDEPLOY_CACHE_DIR", "value": CACHE_MOUNT} in c["env"]
        assert {"name": "MODELDEPLOY_CACHE_READONLY", "value": "1"} in c["env"]
    triton = next(c for c in pod["containers"] if c["name"] == "triton")
    assert all(m["name"] != "model-cache" for m in triton["volumeMounts"])
    # the cache's env comes on top of the sidecar's own (whose pushes it takes), not instead of it
    agent = next(c for c in pod["containers"] if c["name"] == "agent")
    assert agent["env"][0] == {"name": OWNER_ENV, "value": f"{md.namespace}/{md.name}/u-1"}
    assert "secretKeyRef" not in json.dumps(pod)


def test_cache_status_from_the_job() -> None:
    md = md_with_cache()
    name = prefetch_job_name(md)
    assert cache_status(md, None, [])["state"] == "Prefetching"  # type: ignore[index]
    running = {"status": {"active": 1}}
    assert cache_status(md, running, [])["state"] == "Prefetching"  # type: ignore[index]
    done = {"status": {"completionTime": "2026-01-01T00:00:00Z",
                       "conditions": [{"type": "Complete", "status": "True"}]}}  # fmt: skip
    pod = {"status": {"containerStatuses": [{"name": "prefetch", "state": {"terminated": {
        "message": json.dumps({"ok": True, "bytes": 1234, "entries": 1})}}}]}}  # fmt: skip
    st = cache_status(md, done, [pod])
    assert st == {"claimName": "model-cache", "job": name, "state": "Ready", "bytes": 1234, "entries": 1,
                  "versionsPresent": [f"simple:1@{D1[:12]}"],  # version 2 pins no digest
                  "lastVerification": "2026-01-01T00:00:00Z", "message": ""}  # fmt: skip
    failed = {
        "status": {"conditions": [{"type": "Failed", "status": "True", "message": "BackoffLimitExceeded"}]}
    }
    st = cache_status(md, failed, [])
    assert st is not None and st["state"] == "Failed" and "download" in st["message"]
    assert cache_status(md_with_cache(prefetch=False), None, [])["state"] == "NotPrefetched"  # type: ignore[index]


def agent_with_cache(entries: list[tuple[str, int, str | None]], events: list[dict[str, str]]) -> Any:
    from modeldeploy_runtime.agentapi import AgentStatus

    return AgentStatus.model_validate({"cache": {
        "root": CACHE_MOUNT,
        "entries": [{"digest": d, "bytes": b, "lastVerified": t} for d, b, t in entries],
        "events": events,
    }})  # fmt: skip


def test_cache_status_from_the_agents_reports() -> None:
    """The agents' view of the cache completes status.cache: entries and bytes per digest (counted
    once however many pods see them), the wanted versions present, the latest verification, and the
    corrupt entries an agent found (hits and misses stay out of the status)."""
    from modeldeploy.api.v1alpha1 import CacheStatus
    from modeldeploy.reconcile.cache_status import new_corrupt_entries

    md = md_with_cache()
    running = {"status": {"active": 1}}
    flipped = {"time": "2026-01-01T00:02:00Z", "digest": D1, "event": "CorruptEntry",
               "message": "cache entry sha256/aaaa... is corrupt: model.onnx: sha256 ..."}  # fmt: skip
    refetched = {**flipped, "time": "2026-01-01T00:02:01Z", "event": "CorruptEntryRefetched"}
    hit = {"time": "2026-01-01T00:03:00Z", "digest": D1, "event": "Hit", "message": "served"}
    agents = {
        "pod-a": agent_with_cache([(D1, 100, "2026-01-01T00:01:00Z"), (D2, 7, None)], [flipped, refetched]),
        "pod-b": agent_with_cache([(D1, 100, "2026-01-01T00:04:00Z")], [hit]),
        "pod-c": agent_with_cache([], []).model_copy(update={"cache": None}),  # no cache mounted
    }
    st = cache_status(md, running, [], agents)
    assert st is not None
    CacheStatus.model_validate(st)
    assert st["state"] == "Prefetching"  # the Job's state; the figures are the agents'
    assert (st["entries"], st["bytes"]) == (2, 107)
    assert st["versionsPresent"] == [f"simple:1@{D1[:12]}"]  # D2 is in the cache but not wanted
    assert st["lastVerification"] == "2026-01-01T00:04:00Z"
    assert [(e["event"], e["pod"]) for e in st["corruptEntries"]] == [
        ("CorruptEntry", "pod-a"),
        ("CorruptEntryRefetched", "pod-a"),
    ]
    # one Warning event per corrupt record the previous status did not have
    assert new_corrupt_entries({}, {"cache": st}) == st["corruptEntries"]
    assert new_corrupt_entries({"cache": st}, {"cache": st}) == []
    # without any cache report: the Job's account only
    assert cache_status(md, running, [], {"pod-c": agents["pod-c"]}) == cache_status(md, running, [])
    # the Job's termination message carries the corrupt entries it found
    done = {"status": {"completionTime": "2026-01-01T00:00:00Z",
                       "conditions": [{"type": "Complete", "status": "True"}]}}  # fmt: skip
    pod = {"status": {"containerStatuses": [{"name": "prefetch", "state": {"terminated": {
        "message": json.dumps({"ok": True, "bytes": 5, "entries": 1, "corrupt": [flipped]})}}}]}}  # fmt: skip
    st = cache_status(md, done, [pod])
    assert st is not None and st["corruptEntries"][0]["pod"] == f"job/{prefetch_job_name(md)}"
