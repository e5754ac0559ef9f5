"""The status of a ModelDeployment, computed (purely) from what is live.

``Ready`` is True only when the Deployment has rolled out the current pod template to every desired
replica and they are available (and no model version failed). ``lastTransitionTime`` of a condition
only changes when its ``status`` changes. The caller patches the status only when the result differs
from the current status.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

from modeldeploy.api.v1alpha1 import ModelDeployment
from modeldeploy.reconcile.diagnose import Diagnosis
from modeldeploy.render.common import Note, selector_string
from modeldeploy.render.service import endpoints


def now_rfc3339() -> str:
    return dt.datetime.now(dt.UTC).replace(microsecond=0).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class AgentReport:
    """Optional: per-pod agent /status documents (only when agent queries are enabled)."""

    #: pod name -> /status JSON
    pods: dict[str, dict[str, Any]] = field(default_factory=dict)


@dataclass
class Rollout:
    """What the live Deployment says about the rollout."""

    want: int
    replicas: int
    updated: int
    ready: int
    available: int
    observed: bool
    exists: bool

    @property
    def complete(self) -> bool:
        return (
            self.exists
            and self.observed
            and self.updated >= self.want
            and self.replicas == self.updated
            and self.available >= self.want
        )

    @classmethod
    def of(cls, deployment: dict[str, Any] | None, fallback_want: int) -> Rollout:
        if not deployment:
            return cls(fallback_want, 0, 0, 0, 0, False, False)
        st = deployment.get("status") or {}
        spec = deployment.get("spec") or {}
        gen = int(deployment.get("metadata", {}).get("generation") or 0)
        return cls(
            want=int(
                spec.get("replicas", fallback_want) if spec.get("replicas") is not None else fallback_want
            ),
            replicas=int(st.get("replicas") or 0),
            updated=int(st.get("updatedReplicas") or 0),
            ready=int(st.get("readyReplicas") or 0),
            available=int(st.get("availableReplicas") or 0),
            observed=int(st.get("observedGeneration") or 0) >= gen,
            exists=True,
        )


def _condition(
    type_: str,
    status: bool | None,
    reason: str,
    message: str,
    generation: int,
    previous: dict[str, Any],
    now: str,
) -> dict[str, Any]:
    s = "Unknown" if status is None else ("True" if status else "False")
    prev = previous.get(type_)
    ltt = prev.get("lastTransitionTime") if prev and prev.get("status") == s else None
    return {
        "type": type_,
        "status": s,
        "observedGeneration": generation,
        "lastTransitionTime": ltt or now,
        "reason": reason,
        "message": message,
    }


def _agent_versions(
    report: AgentReport | None, manifest_generation: int | None
) -> dict[tuple[str, int], dict[str, Any]] | None:
    """Aggregate agent reports: (model, version) -> {state, reason, message, ready, stale}.

    The worst state over the pods wins (Failed, then anything not Ready); ``ready`` counts the pods
    serving the version. ``stale`` names a pod whose agent still runs a manifest older than
    ``manifest_generation`` (the kubelet has not synced the ConfigMap volume yet), so its report
    cannot prove the versions of the newer manifest."""
    if report is None or not report.pods:
        return None
    agg: dict[tuple[str, int], dict[str, Any]] = {}
    for pod, doc in sorted(report.pods.items()):
        generation = int(doc.get("generation") or 0)
        stale = manifest_generation is not None and generation < manifest_generation
        for m in doc.get("models") or []:
            for v in m.get("versions") or []:
                key = (str(m.get("name")), int(v.get("version")))
                state = str(v.get("state") or "Pending")
                cur = agg.setdefault(
                    key, {"state": "Ready", "reason": "", "message": "", "ready": 0, "stale": ""}
                )
                if state == "Ready":
                    cur["ready"] += 1
                if stale and not cur["stale"]:
                    cur["stale"] = (
                        f"pod {pod} still runs manifest generation {generation} < {manifest_generation}"
                    )
                if state != "Ready" and (state == "Failed" or cur["state"] != "Failed"):
                    cur["state"] = state
                    cur["reason"] = str(v.get("reason") or "")
                    cur["message"] = f"pod {pod}: {v.get('message') or ''}".strip()
    return agg


def kstatus_conditions(
    ready: dict[str, Any], degraded: dict[str, Any], generation: int, previous: dict[str, Any], now: str
) -> list[dict[str, Any]]:
    """``Reconciling`` / ``Stalled`` for kstatus (Flux, kpt, cli-utils), which reads only those two
    (plus observedGeneration). "Abnormal-true" conditions: present only while True.

    * Stalled: not Ready and Degraded, i.e. it will not get better without a change (InsufficientGPU,
      ImagePullBackOff, CrashLoopBackOff, ModelLoadFailed, ProgressDeadlineExceeded, InvalidSpec, ...).
    * Reconciling: not Ready and not stalled (rolling out, versions loading, scaling up).
    """
    if ready["status"] == "True":
        return []
    if degraded["status"] == "True":
        return [
            _condition("Stalled", True, degraded["reason"], degraded["message"], generation, previous, now)
        ]
    return [_condition("Reconciling", True, ready["reason"], ready["message"], generation, previous, now)]


def compute_status(
    md: ModelDeployment,
    deployment: dict[str, Any] | None,
    pods: list[dict[str, Any]],
    diagnosis: Diagnosis | None,
    *,
    notes: list[Note] | None = None,
    previous: dict[str, Any] | None = None,
    now: str | None = None,
    agents: AgentReport | None = None,
    manifest_generation: int | None = None,
    propagating: str | None = None,
    manifest_age: float | None = None,
) -> dict[str, Any]:
    """``manifest_age``: seconds since the model manifest last changed; with agent reports and an
    ``inPlace`` rollout, a wanted version still not Ready after ``rollout.readinessGate.timeoutSeconds``
    is Failed (LoadTimeout), so a load that hangs ends in Degraded instead of loading forever.

    ``propagating``: why pod readiness does not yet prove the versions of a just-changed manifest
    (in-place rollouts, see Reconciler._manifest_propagating). While set, versions that were not
    Ready before are Loading, and Ready/Progressing say the rollout is still under way."""
    now = now or now_rfc3339()
    notes = notes or []
    gen = md.generation
    prev_conds = {c.get("type"): c for c in (previous or {}).get("conditions") or []}
    spec = md.spec
    fallback_want = spec.autoscaling.minReplicas if spec.autoscaling else spec.replicas
    ro = Rollout.of(deployment, fallback_want)
    running = [
        p
        for p in pods
        if (p.get("status") or {}).get("phase") == "Running" and not p["metadata"].get("deletionTimestamp")
    ]
    failed = diagnosis.failed_versions if diagnosis else {}
    agent_states = _agent_versions(agents, manifest_generation)
    gate = spec.rollout.readinessGate
    load_overdue = (
        spec.rollout.strategy == "inPlace" and manifest_age is not None and manifest_age > gate.timeoutSeconds
    )
    was_ready = {
        (m.get("name"), v.get("version"))
        for m in (previous or {}).get("models") or []
        for v in m.get("versions") or []
        if v.get("state") == "Ready"
    }

    # ---- per model / version
    models_out: list[dict[str, Any]] = []
    expected = ready_count = 0
    served: list[str] = []
    for m in spec.models:
        desired = m.desired_versions()
        versions: list[dict[str, Any]] = []
        ready_versions: list[str] = []
        for v in m.declared_versions():
            key = (m.name, v)
            if v not in desired:
                a = (agent_states or {}).get(key)
                if a is not None and a["state"] == "Ready":
                    # the agents keep serving it, e.g. while the version that replaces it fails to load
                    versions.append({"version": v, "state": "Ready", "reason": "StillServing",
                                     "message": "no longer wanted; served until the wanted versions are Ready",
                                     "readyReplicas": a["ready"]})  # fmt: skip
                    ready_versions.append(str(v))
                else:
                    versions.append(
                        {"version": v, "state": "Unloaded", "reason": "NotInVersionPolicy", "message": ""}
                    )
                continue
            expected += 1
            entry: dict[str, Any]
            if key in failed:
                entry = {"version": v, "state": "Failed", "reason": "ModelLoadFailed", "message": failed[key]}
            elif agent_states is not None and key in agent_states:
                a = agent_states[key]
                entry = {"version": v, "state": a["state"], "reason": a["reason"], "message": a["message"]}
                entry["readyReplicas"] = a["ready"]
                if a["state"] == "Ready" and not ro.complete:
                    entry["state"] = "Loading"
                    entry["reason"] = "RollingOut"
                elif a["state"] == "Ready" and a["stale"] and key not in was_ready:
                    entry.update(state="Loading", reason="ManifestPropagating", message=a["stale"])
            elif agent_states is not None and ro.want > 0:
                entry = {"version": v, "state": "Loading", "reason": "AgentPending",
                         "message": "no agent reports this version yet"}  # fmt: skip
            elif ro.want == 0:
                entry = {"version": v, "state": "Pending", "reason": "ScaledToZero", "message": "no replicas"}
            elif ro.complete and propagating and key not in was_ready:
                entry = {"version": v, "state": "Loading", "reason": "ManifestPropagating", "message": ""}
            elif ro.complete:
                entry = {
                    "version": v,
                    "state": "Ready",
                    "reason": "Loaded",
                    "message": "",
                    "readyReplicas": ro.available,
                }
            elif running:
                entry = {"version": v, "state": "Loading", "reason": "PodsStarting", "message": ""}
            else:
                reason = diagnosis.reason if diagnosis else "PodsPending"
                entry = {"version": v, "state": "Pending", "reason": reason, "message": ""}
            if (
                load_overdue
                and agent_states is not None
                and ro.complete
                and entry["state"] in ("Loading", "Pending")
                and key not in was_ready  # a blip (say, an agent restart) of a serving version is no timeout
            ):
                entry = {"version": v, "state": "Failed", "reason": "LoadTimeout",
                         "message": f"not Ready {manifest_age:.0f}s after the model manifest changed "
                                    f"(rollout.readinessGate.timeoutSeconds: {gate.timeoutSeconds}); "
                                    f"last: {entry['reason']} {entry['message']}".strip()}  # fmt: skip
            if entry["state"] == "Ready":
                ready_count += 1
                ready_versions.append(str(v))
            versions.append(entry)
        if ready_versions:
            served.append(f"{m.name}:{','.join(ready_versions)}")
        models_out.append({"name": m.name, "versions": versions})

    failures = [
        f"{m['name']} version {v['version']}: {v['reason']}: {v['message']}".rstrip(": ")
        for m in models_out
        for v in m["versions"]
        if v["state"] == "Failed"
    ]
    model_failed = bool(failures)
    all_ready = expected > 0 and ready_count == expected

    # ---- conditions
    degraded_notes = [n for n in notes if n.degraded]
    info_notes = "; ".join(n.message for n in notes if not n.degraded)
    if ro.want == 0 and ro.exists and ro.replicas == 0:
        ready = _condition(
            "Ready", True, "ScaledToZero", "no replicas requested; nothing is serving", gen, prev_conds, now
        )
        models_ready = _condition("ModelsReady", False, "ScaledToZero", "no replicas", gen, prev_conds, now)
    elif ro.complete and all_ready and not model_failed:
        msg = f"{ro.available}/{ro.want} replicas available, serving {' '.join(served)}"
        ready = _condition("Ready", True, "Available", msg, gen, prev_conds, now)
        models_ready = _condition(
            "ModelsReady",
            True,
            "AllVersionsReady",
            f"{ready_count}/{expected} versions ready",
            gen,
            prev_conds,
            now,
        )
    else:
        if diagnosis:
            reason, msg = diagnosis.reason, diagnosis.message
        elif model_failed:
            reason, msg = "ModelLoadFailed", "; ".join(failures)
        elif agent_states is not None and ro.complete:
            reason, msg = (
                "VersionsLoading",
                f"{ready_count}/{expected} versions ready (reported by the agents)",
            )
        elif propagating and ro.complete:
            reason, msg = "VersionsPropagating", propagating
        elif not ro.exists:
            reason, msg = "DeploymentMissing", f"deployment {md.name} does not exist yet"
        else:
            reason = "RollingOut" if ro.updated < ro.want or ro.replicas != ro.updated else "PodsNotReady"
            msg = f"{ro.available}/{ro.want} replicas available, {ro.updated} updated"
        ready = _condition("Ready", False, reason, msg, gen, prev_conds, now)
        if model_failed:
            mr_reason, mr_msg = (
                "ModelLoadFailed",
                diagnosis.message if diagnosis else "; ".join(failures),
            )
        elif diagnosis and not running:
            mr_reason, mr_msg = diagnosis.reason, diagnosis.message
        else:
            mr_reason, mr_msg = (
                ("VersionsLoading" if running else "VersionsPending"),
                f"{ready_count}/{expected} versions ready",
            )
        models_ready = _condition("ModelsReady", False, mr_reason, mr_msg, gen, prev_conds, now)

    if diagnosis and diagnosis.reason == "ProgressDeadlineExceeded":
        progressing = _condition(
            "Progressing", False, "ProgressDeadlineExceeded", diagnosis.message, gen, prev_conds, now
        )
    elif ro.complete and propagating and not all_ready:
        progressing = _condition(
            "Progressing", True, "VersionsPropagating", propagating, gen, prev_conds, now
        )
    elif ro.complete and agent_states is not None and not all_ready and not model_failed:
        progressing = _condition(
            "Progressing", True, "VersionsLoading", f"{ready_count}/{expected} versions ready",
            gen, prev_conds, now,
        )  # fmt: skip
    elif ro.complete:
        progressing = _condition("Progressing", False, "Complete", "rollout complete", gen, prev_conds, now)
    else:
        progressing = _condition(
            "Progressing",
            True,
            "RollingOut",
            f"{ro.updated}/{ro.want} replicas updated, {ro.available} available",
            gen,
            prev_conds,
            now,
        )

    if diagnosis:
        degraded = _condition("Degraded", True, diagnosis.reason, diagnosis.message, gen, prev_conds, now)
    elif model_failed:
        degraded = _condition("Degraded", True, "ModelLoadFailed", "; ".join(failures), gen, prev_conds, now)
    elif degraded_notes:
        degraded = _condition(
            "Degraded",
            True,
            degraded_notes[0].reason,
            "; ".join(n.message for n in degraded_notes),
            gen,
            prev_conds,
            now,
        )
    else:
        degraded = _condition("Degraded", False, "AsExpected", info_notes, gen, prev_conds, now)

    status: dict[str, Any] = {
        "observedGeneration": gen,
        "conditions": [
            ready,
            models_ready,
            progressing,
            degraded,
            *kstatus_conditions(ready, degraded, gen, prev_conds, now),
        ],
        "replicas": ro.replicas,
        "readyReplicas": ro.ready,
        "updatedReplicas": ro.updated,
        "selector": selector_string(md),
        "endpoints": endpoints(md),
        "models": models_out,
        "versionsReady": f"{ready_count}/{expected}",
        "replicasSummary": f"{ro.ready}/{ro.want}",
        "gpus": spec.resources.gpu_summary(),
    }
    if served:
        status["servedVersions"] = " ".join(served)
    return status


def invalid_status(
    md_body: dict[str, Any],
    message: str,
    previous: dict[str, Any] | None = None,
    now: str | None = None,
    reason: str = "InvalidSpec",
) -> dict[str, Any]:
    """Status for a spec the operator cannot act on (Ready=False, reason InvalidSpec, or
    ApplyRejected when the API server refused a child for a reason that may pass)."""
    now = now or now_rfc3339()
    gen = int(md_body.get("metadata", {}).get("generation") or 0)
    prev_conds = {c.get("type"): c for c in (previous or {}).get("conditions") or []}
    out = dict(previous or {})
    out["observedGeneration"] = gen
    ready = _condition("Ready", False, reason, message, gen, prev_conds, now)
    degraded = _condition("Degraded", True, reason, message, gen, prev_conds, now)
    out["conditions"] = [
        ready,
        _condition("ModelsReady", False, reason, message, gen, prev_conds, now),
        _condition("Progressing", False, reason, message, gen, prev_conds, now),
        degraded,
        *kstatus_conditions(ready, degraded, gen, prev_conds, now),
    ]
    return out


def status_patch(current: dict[str, Any] | None, desired: dict[str, Any]) -> dict[str, Any] | None:
    """A JSON merge patch turning ``current`` into ``desired`` (top-level keys), or None if equal."""
    current = current or {}
    if current == desired:
        return None
    patch: dict[str, Any] = {k: v for k, v in desired.items() if current.get(k) != v}
    for k in current:
        if k not in desired:
            patch[k] = None
    return patch or None
