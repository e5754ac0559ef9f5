"""``status.cache``: the shared model cache as seen through its prefetch Job (pure: objects in).

KWOK (the local control plane's nodes) completes a Job's pods without running them, so the figures
the prefetch container writes into its termination message (bytes, entries) are reported only when
present; the state, the Job, the versions and the verification time come from the Job itself.
"""

from __future__ import annotations

import json
from typing import Any

from modeldeploy.api.v1alpha1 import ModelDeployment
from modeldeploy.render.prefetch import PREFETCH_CONTAINER, prefetch_job_name


def cached_versions(md: ModelDeployment) -> list[str]:
    """The wanted versions a prefetch stores (those pinning a sha256), as model:version@sha256[:12]."""
    out = []
    for m in md.spec.models:
        by_num = {v.version: v for v in m.versions}
        for num in m.desired_versions():
            digest = by_num[num].sha256
            if digest:
                out.append(f"{m.name}:{num}@{digest[:12]}")
    return out


def _job_condition(job: dict[str, Any], type_: str) -> dict[str, Any] | None:
    for c in (job.get("status") or {}).get("conditions") or []:
        if c.get("type") == type_ and c.get("status") == "True":
            return dict(c)
    return None


def _termination_report(pods: list[dict[str, Any]]) -> dict[str, Any]:
    for p in pods:
        for cs in (p.get("status") or {}).get("containerStatuses") or []:
            if cs.get("name") != PREFETCH_CONTAINER:
                continue
            msg = ((cs.get("state") or {}).get("terminated") or {}).get("message")
            try:
                data = json.loads(msg) if msg else None
            except ValueError:
                data = None
            if isinstance(data, dict):
                return data
    return {}


def cache_status(
    md: ModelDeployment, job: dict[str, Any] | None, pods: list[dict[str, Any]]
) -> dict[str, Any] | None:
    c = md.spec.cache
    if c is None:
        return None
    if not c.prefetch:
        return {"claimName": c.claimName, "state": "NotPrefetched",
                "message": "spec.cache.prefetch is false: pods download what the cache lacks"}  # fmt: skip
    name = prefetch_job_name(md)
    out: dict[str, Any] = {"claimName": c.claimName, "job": name}
    if job is None:
        return {**out, "state": "Prefetching", "message": f"creating the prefetch Job {name}"}
    report = _termination_report(pods)
    if isinstance(report.get("bytes"), int):
        out["bytes"] = report["bytes"]
    done = _job_condition(job, "Complete")
    if done is not None:
        out.update(state="Ready", versionsPresent=cached_versions(md))
        when = (job.get("status") or {}).get("completionTime") or done.get("lastTransitionTime")
        if when:
            out["lastVerification"] = when
        return out
    failed = _job_condition(job, "Failed")
    if failed is not None:
        why = failed.get("message") or failed.get("reason") or "the prefetch Job failed"
        return {**out, "state": "Failed", "message": f"{why}; pods download the versions the cache lacks"}
    return {**out, "state": "Prefetching", "message": f"the prefetch Job {name} is filling the cache"}
