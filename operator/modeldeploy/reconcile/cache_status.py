"""``status.cache``: the shared model cache as seen through its prefetch Job (pure: objects in).

KWOK (the local control plane's nodes) completes a Job's pods without running them, so the figures
the prefetch container writes into its termination message (bytes, entries) are reported only when
present; the state, the Job, the versions and the verification time come from the Job itself.
"""

from __future__ import annotations

import json
import time
from typing import Any

from modeldeploy.api.v1alpha1 import CacheStatus, ModelDeployment
from modeldeploy.render.prefetch import PREFETCH_CONTAINER, prefetch_job_name
from modeldeploy_runtime.agentapi import AgentStatus

#: Cache events that go into the status (the rest, Hit/Miss/Published, stay in the agents' /status).
CORRUPT_EVENTS = ("CorruptEntry", "CorruptEntryRefetched")
MAX_CORRUPT = 10


def cached_versions(md: ModelDeployment, digests: set[str] | None = None) -> list[str]:
    """The wanted versions a prefetch stores (those pinning a sha256), as model:version@sha256[:12];
    with ``digests``, only those whose digest is among them."""
    out = []
    for m in md.spec.models:
        by_num = {v.version: v for v in m.versions}
        for num in m.desired_versions():
            digest = by_num[num].sha256
            if digest and (digests is None or digest in digests):
                out.append(f"{m.name}:{num}@{digest[:12]}")
    return out


def _rfc3339(value: float | str | None) -> str | None:
    if value is None or isinstance(value, str):
        return value or None
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(value))


def from_agents(md: ModelDeployment, agents: dict[str, AgentStatus]) -> dict[str, Any]:
    """What the agents see of the cache: entries, bytes, versionsPresent, lastVerification,
    corruptEntries (empty when no agent reports a cache)."""
    sizes: dict[str, int] = {}
    verified: list[str] = []
    corrupt: dict[tuple[str, str, str], dict[str, Any]] = {}
    seen = False
    for pod, doc in sorted(agents.items()):
        if doc.cache is None:
            continue
        seen = True
        for e in doc.cache.entries:
            sizes[e.digest] = max(sizes.get(e.digest, 0), e.bytes)
            when = _rfc3339(e.lastVerified)
            if when:
                verified.append(when)
        for ev in doc.cache.events:
            if ev.get("event") in CORRUPT_EVENTS:
                key = (str(ev.get("time", "")), str(ev.get("digest", "")), str(ev.get("event")))
                corrupt.setdefault(key, {"time": key[0], "digest": key[1], "event": key[2], "pod": pod,
                                         "message": str(ev.get("message", ""))[:1024]})  # fmt: skip
    if not seen:
        return {}
    out: dict[str, Any] = {
        "entries": len(sizes),
        "bytes": sum(sizes.values()),
        "versionsPresent": cached_versions(md, set(sizes)),
    }
    if verified:
        out["lastVerification"] = max(verified)
    if corrupt:
        out["corruptEntries"] = [corrupt[k] for k in sorted(corrupt)][-MAX_CORRUPT:]
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
    md: ModelDeployment,
    job: dict[str, Any] | None,
    pods: list[dict[str, Any]],
    agents: dict[str, AgentStatus] | None = None,
) -> dict[str, Any] | None:
    """``status.cache``: the Job's account, completed by the agents' view when they report one
    (typed: validated against the status model the CRD is generated from)."""
    out = _from_job(md, job, pods)
    if out is None:
        return None
    seen = from_agents(md, agents or {})
    if seen:
        job_time, agent_time = out.get("lastVerification"), seen.get("lastVerification")
        if out.get("state") != "Ready":  # versions the Job has not stored are present only as seen
            out.pop("versionsPresent", None)
        if out.get("state") == "Ready":
            seen["versionsPresent"] = sorted(set(seen["versionsPresent"]) | set(out["versionsPresent"]))
        job_corrupt = out.get("corruptEntries") or []
        out.update(seen)
        if job_corrupt:
            both = job_corrupt + (seen.get("corruptEntries") or [])
            out["corruptEntries"] = sorted(both, key=lambda e: e["time"])[-MAX_CORRUPT:]
        if job_time and (not agent_time or job_time > agent_time):
            out["lastVerification"] = job_time
    # with the defaults (message ""), as the API server stores them: an unchanged cache compares equal
    return CacheStatus.model_validate(out).model_dump(mode="json", exclude_none=True)


def _from_job(
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
    if isinstance(report.get("entries"), int):
        out["entries"] = report["entries"]
    corrupt = [
        {**{k: str(e.get(k, "")) for k in ("time", "digest", "event", "message")}, "pod": f"job/{name}"}
        for e in report.get("corrupt") or []
        if isinstance(e, dict) and e.get("event") in CORRUPT_EVENTS
    ]
    if corrupt:
        out["corruptEntries"] = corrupt[-MAX_CORRUPT:]
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


def new_corrupt_entries(old: dict[str, Any], new: dict[str, Any]) -> list[dict[str, Any]]:
    """Corrupt-entry records in the new status that the old one did not have (one Warning event each)."""

    def records(st: dict[str, Any]) -> list[dict[str, Any]]:
        return list((st.get("cache") or {}).get("corruptEntries") or [])

    seen = {(e.get("time"), e.get("digest"), e.get("event")) for e in records(old)}
    return [e for e in records(new) if (e.get("time"), e.get("digest"), e.get("event")) not in seen]
