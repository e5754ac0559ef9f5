"""The status of a ModelDeployment, computed (purely) from what is live.

:func:`compute_status` gathers the live facts into one :class:`StatusInputs`, derives the per-version
states (:func:`version_states`), then computes each condition in a function of its own:
:func:`ready_condition`, :func:`models_ready_condition`, :func:`progressing_condition`,
:func:`degraded_condition` (plus :func:`kstatus_conditions`). Each returns a :class:`Verdict`
(status, reason, message); ``lastTransitionTime`` of a condition only changes when its ``status``
changes. The caller patches the status only when the result differs from the current status.

``Ready`` is True only when the Deployment has rolled out the current pod template to every desired
replica and they are available (and no model version failed).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

from modeldeploy.api.v1alpha1 import ModelDeployment, ModelDeploymentStatus, ModelSpec
from modeldeploy.reconcile.cache_status import new_corrupt_entries
from modeldeploy.reconcile.diagnose import Diagnosis
from modeldeploy.render.common import HTTPSCALEDOBJECT_CRD, Note, selector_string, wants_http_addon
from modeldeploy.render.service import backend_service_name, endpoints
from modeldeploy_runtime.agentapi import AgentStatus, VersionReport

#: (model name, version) -> aggregated agent report, see :func:`_agent_versions`.
AgentStates = dict[tuple[str, int], dict[str, Any]]


def now_rfc3339() -> str:
    return dt.datetime.now(dt.UTC).replace(microsecond=0).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class AgentReport:
    """Optional: per-pod agent ``/status`` reports (when the operator queries the agents)."""

    #: pod name -> the agent's typed /status
    pods: dict[str, AgentStatus] = field(default_factory=dict)


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
    #: the Deployment's progress deadline passed (its Progressing condition's message), or ""
    deadline_exceeded: str = ""
    #: the Deployment controller once finished this rollout (Progressing: NewReplicaSetAvailable):
    #: pods that are not Ready afterwards are PodsNotReady, before that the rollout is RollingOut
    settled: bool = False

    @property
    def complete(self) -> bool:
        return (
            self.exists
            and self.observed
            and self.updated >= self.want
            and self.replicas == self.updated
            and self.available >= self.want
        )

    @property
    def scaled_to_zero(self) -> bool:
        return self.want == 0 and self.exists and self.replicas == 0

    @classmethod
    def of(cls, deployment: dict[str, Any] | None, fallback_want: int) -> Rollout:
        if not deployment:
            return cls(fallback_want, 0, 0, 0, 0, False, False)
        st = deployment.get("status") or {}
        spec = deployment.get("spec") or {}
        gen = int(deployment.get("metadata", {}).get("generation") or 0)
        want = spec.get("replicas")
        progressing: dict[str, Any] = next(
            (c for c in st.get("conditions") or [] if c.get("type") == "Progressing"), {}
        )
        deadline = ""
        if progressing.get("reason") == "ProgressDeadlineExceeded":
            deadline = str(progressing.get("message") or "progress deadline exceeded")
        return cls(
            want=int(fallback_want if want is None else want),
            replicas=int(st.get("replicas") or 0),
            updated=int(st.get("updatedReplicas") or 0),
            ready=int(st.get("readyReplicas") or 0),
            available=int(st.get("availableReplicas") or 0),
            observed=int(st.get("observedGeneration") or 0) >= gen,
            exists=True,
            deadline_exceeded=deadline,
            settled=progressing.get("reason") == "NewReplicaSetAvailable",
        )


@dataclass(frozen=True)
class Verdict:
    """One condition's outcome, before it is stamped with generation and transition time."""

    status: bool | None
    reason: str
    message: str


@dataclass(frozen=True)
class StatusInputs:
    """Everything the status is computed from (typed; built by :func:`compute_status`)."""

    md: ModelDeployment
    rollout: Rollout
    #: some pod is Running (not terminating)
    running: bool
    diagnosis: Diagnosis | None
    notes: list[Note]
    #: aggregated agent reports, None without agent queries
    agents: AgentStates | None
    #: why pod readiness does not yet prove a just-changed in-place manifest, or None
    propagating: str | None
    #: seconds since the model manifest last changed (agent queries only)
    manifest_age: float | None
    #: (model, version) pairs Ready in the previous status
    was_ready: frozenset[tuple[str, int]]
    #: host:port of the KEDA HTTP add-on interceptor the Service is routed through, or None
    interceptor: str | None = None

    @property
    def old_pods_serving(self) -> bool:
        """A ``rolling`` rollout under way while pods (of the previous revision) are available."""
        ro = self.rollout
        return self.md.spec.rollout.strategy == "rolling" and not ro.complete and ro.available > 0

    @property
    def load_overdue(self) -> bool:
        """An in-place load has outlasted rollout.readinessGate.timeoutSeconds."""
        spec = self.md.spec
        return (
            spec.rollout.strategy == "inPlace"
            and self.manifest_age is not None
            and self.manifest_age > spec.rollout.readinessGate.timeoutSeconds
        )


@dataclass
class VersionStates:
    """Per model and version states, with the summaries the conditions are computed from."""

    models: list[dict[str, Any]] = field(default_factory=list)
    expected: int = 0
    ready: int = 0
    served: list[str] = field(default_factory=list)

    @property
    def failures(self) -> list[str]:
        return [
            f"{m['name']} version {v['version']}: {v['reason']}: {v['message']}".rstrip(": ")
            for m in self.models
            for v in m["versions"]
            if v["state"] == "Failed"
        ]

    @property
    def failed(self) -> bool:
        return bool(self.failures)

    @property
    def all_ready(self) -> bool:
        return self.expected > 0 and self.ready == self.expected

    @property
    def summary(self) -> str:
        return f"{self.ready}/{self.expected} versions ready"


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


def _agent_versions(report: AgentReport | None, manifest_generation: int | None) -> AgentStates | None:
    """Aggregate agent reports: (model, version) -> {state, reason, message, ready, stale}.

    The worst state over the pods wins (Failed, then anything not Ready); ``ready`` counts the pods
    serving the version. ``stale`` names a pod whose agent still runs a manifest older than
    ``manifest_generation`` (the kubelet has not synced the ConfigMap volume yet), so its report
    cannot prove the versions of the newer manifest."""
    if report is None or not report.pods:
        return None
    agg: AgentStates = {}
    for pod, doc in sorted(report.pods.items()):
        generation = doc.appliedGeneration
        stale = manifest_generation is not None and generation < manifest_generation
        for m in doc.models:
            for v in m.versions:
                cur = agg.setdefault(
                    (m.name, v.version),
                    {"state": "Ready", "reason": "", "message": "", "ready": 0, "stale": "", "fetch": {}},
                )
                _merge_agent_version(cur, pod, v)
                if stale and not cur["stale"]:
                    cur["stale"] = (
                        f"pod {pod} still runs manifest generation {generation} < {manifest_generation}"
                    )
    return agg


#: FetchReport.origin -> the VersionFetchStatus counter it adds to.
FETCH_COUNTERS = {"cache": "fromCache", "download": "downloaded", "repository": "local", "localCopy": "local"}


def _count_fetch(fetch: dict[str, int], v: VersionReport) -> None:
    """Add one pod's account of how it got the version (``status.models[].versions[].fetch``)."""
    counter = FETCH_COUNTERS.get(v.fetch.origin) if v.fetch is not None else None
    if v.fetch is None or counter is None:
        return
    fetch[counter] = fetch.get(counter, 0) + 1
    if counter == "downloaded":
        fetch["bytesDownloaded"] = fetch.get("bytesDownloaded", 0) + max(0, v.fetch.bytes)


def _merge_agent_version(cur: dict[str, Any], pod: str, v: VersionReport) -> None:
    _count_fetch(cur["fetch"], v)
    if v.state == "Ready":
        cur["ready"] += 1
    elif v.state == "Failed" or cur["state"] != "Failed":
        cur["state"] = v.state
        cur["reason"] = v.reason
        cur["message"] = f"pod {pod}: {v.message}".strip()


# ------------------------------------------------------------------------------ per version
def _entry(version: int, state: str, reason: str, message: str = "", **extra: Any) -> dict[str, Any]:
    return {"version": version, "state": state, "reason": reason, "message": message, **extra}


def _unwanted_version(inp: StatusInputs, key: tuple[str, int]) -> dict[str, Any]:
    """A declared version outside the version policy: Unloaded, unless the agents still serve it
    (e.g. while the version that replaces it fails to load)."""
    a = (inp.agents or {}).get(key)
    if a is not None and a["state"] == "Ready":
        return _entry(key[1], "Ready", "StillServing",
                      "no longer wanted; served until the wanted versions are Ready",
                      readyReplicas=a["ready"])  # fmt: skip
    if inp.old_pods_serving and key in inp.was_ready:
        return _entry(key[1], "Ready", "StillServing",
                      "no longer wanted; the pods of the previous revision serve it until the rollout "
                      "completes")  # fmt: skip
    return _entry(key[1], "Unloaded", "NotInVersionPolicy")


def _from_agents(inp: StatusInputs, key: tuple[str, int], a: dict[str, Any]) -> dict[str, Any]:
    entry = _entry(key[1], a["state"], a["reason"], a["message"], readyReplicas=a["ready"])
    if a.get("fetch"):  # every counter, as the API server defaults them (no rewrite per refresh)
        entry["fetch"] = {"fromCache": 0, "downloaded": 0, "local": 0, "bytesDownloaded": 0, **a["fetch"]}
    if a["state"] == "Ready" and not inp.rollout.complete:
        entry.update(state="Loading", reason="RollingOut")
    elif a["state"] == "Ready" and a["stale"] and key not in inp.was_ready:
        entry.update(state="Loading", reason="ManifestPropagating", message=a["stale"])
    return entry


def _from_pods(inp: StatusInputs, key: tuple[str, int]) -> dict[str, Any]:
    """Without agent reports: what the Deployment and the pods' readiness prove."""
    ro, v = inp.rollout, key[1]
    if ro.want == 0:
        return _entry(v, "Pending", "ScaledToZero", "no replicas")
    if ro.complete and inp.propagating and key not in inp.was_ready:
        return _entry(v, "Loading", "ManifestPropagating")
    if ro.complete:
        return _entry(v, "Ready", "Loaded", readyReplicas=ro.available)
    if inp.running:
        return _entry(v, "Loading", "PodsStarting")
    return _entry(v, "Pending", inp.diagnosis.reason if inp.diagnosis else "PodsPending")


def _wanted_version(inp: StatusInputs, key: tuple[str, int]) -> dict[str, Any]:
    if inp.agents is not None and key in inp.agents:
        entry = _from_agents(inp, key, inp.agents[key])
    elif inp.agents is not None and inp.rollout.want > 0:
        entry = _entry(key[1], "Loading", "AgentPending", "no agent reports this version yet")
    else:
        entry = _from_pods(inp, key)
    return _rollout_stalled(inp, key, _load_timeout(inp, key, entry))


def _rollout_stalled(inp: StatusInputs, key: tuple[str, int], entry: dict[str, Any]) -> dict[str, Any]:
    """``rolling``: a new version whose pods did not become Ready by the Deployment's progress
    deadline is Failed, with the Deployment's and the new pods' account of why."""
    ro = inp.rollout
    if not ro.deadline_exceeded or entry["state"] not in ("Loading", "Pending"):
        return entry
    if inp.md.spec.rollout.strategy != "rolling" or key in inp.was_ready:
        return entry
    why = inp.diagnosis.message if inp.diagnosis else ro.deadline_exceeded
    return _entry(key[1], "Failed", "ProgressDeadlineExceeded",
                  f"new pods not Ready within the progress deadline: {why}")  # fmt: skip


def _load_timeout(inp: StatusInputs, key: tuple[str, int], entry: dict[str, Any]) -> dict[str, Any]:
    """A wanted version still not Ready after readinessGate.timeoutSeconds is Failed (LoadTimeout),
    unless it was serving before (a blip, say an agent restart, is no timeout)."""
    if not (
        inp.load_overdue
        and inp.agents is not None
        and inp.rollout.complete
        and entry["state"] in ("Loading", "Pending")
        and key not in inp.was_ready
    ):
        return entry
    timeout = inp.md.spec.rollout.readinessGate.timeoutSeconds
    return _entry(key[1], "Failed", "LoadTimeout",
                  f"not Ready {inp.manifest_age or 0:.0f}s after the model manifest changed "
                  f"(rollout.readinessGate.timeoutSeconds: {timeout}); "
                  f"last: {entry['reason']} {entry['message']}".strip())  # fmt: skip


def _model_versions(inp: StatusInputs, m: ModelSpec, out: VersionStates) -> None:
    desired = m.desired_versions()
    versions: list[dict[str, Any]] = []
    ready: list[str] = []
    for v in m.declared_versions():
        key = (m.name, v)
        if v in desired:
            out.expected += 1
            entry = _wanted_version(inp, key)
            out.ready += entry["state"] == "Ready"
        else:
            entry = _unwanted_version(inp, key)
        if entry["state"] == "Ready":
            ready.append(str(v))
        versions.append(entry)
    if ready:
        out.served.append(f"{m.name}:{','.join(ready)}")
    out.models.append({"name": m.name, "versions": versions})


def version_states(inp: StatusInputs) -> VersionStates:
    """The state of every declared version of every model."""
    out = VersionStates()
    for m in inp.md.spec.models:
        _model_versions(inp, m, out)
    return out


# ------------------------------------------------------------------------------- conditions
def _fully_ready(inp: StatusInputs, vs: VersionStates) -> bool:
    return inp.rollout.complete and vs.all_ready and not vs.failed


def _not_ready_why(inp: StatusInputs, vs: VersionStates) -> tuple[str, str]:
    """Ready=False: the most telling reason (a diagnosed failure first, then what is in progress)."""
    ro = inp.rollout
    if inp.diagnosis and inp.old_pods_serving:
        return inp.diagnosis.reason, f"{_rollout_of(inp)} stalled: {inp.diagnosis.message}"
    if inp.diagnosis:
        return inp.diagnosis.reason, inp.diagnosis.message
    if vs.failed and inp.old_pods_serving:
        return "ModelLoadFailed", f"{_rollout_of(inp)} stalled: {'; '.join(vs.failures)}"
    if vs.failed:
        return "ModelLoadFailed", "; ".join(vs.failures)
    if inp.agents is not None and ro.complete:
        return "VersionsLoading", f"{vs.summary} (reported by the agents)"
    if inp.propagating and ro.complete:
        return "VersionsPropagating", inp.propagating
    if not ro.exists:
        return "DeploymentMissing", f"deployment {inp.md.name} does not exist yet"
    # one reason from create to Ready (no RollingOut -> PodsNotReady flip when the Deployment
    # controller has created the pods): PodsNotReady only after the Deployment once completed.
    # A spec the Deployment controller has not observed yet is a rollout starting: its status
    # (settled, all updated) still describes the previous rollout.
    rolling = not ro.observed or ro.updated < ro.want or ro.replicas != ro.updated or not ro.settled
    reason = "RollingOut" if rolling else "PodsNotReady"
    return reason, f"{ro.available}/{ro.want} replicas available, {ro.updated} updated"


def _rollout_of(inp: StatusInputs) -> str:
    """``rolling out simple:3 (old pods keep serving)``: what a rolling rollout is trying to serve."""
    wanted = " ".join(f"{m.name}:{','.join(map(str, m.desired_versions()))}" for m in inp.md.spec.models)
    return f"rolling out {wanted} ({inp.rollout.available} available pod(s) of the previous revision keep serving)"


def ready_condition(inp: StatusInputs, vs: VersionStates) -> Verdict:
    ro = inp.rollout
    if ro.scaled_to_zero:
        return Verdict(True, "ScaledToZero", "no replicas requested; nothing is serving")
    if _fully_ready(inp, vs):
        return Verdict(
            True, "Available", f"{ro.available}/{ro.want} replicas available, serving {' '.join(vs.served)}"
        )
    return Verdict(False, *_not_ready_why(inp, vs))


def models_ready_condition(inp: StatusInputs, vs: VersionStates) -> Verdict:
    if inp.rollout.scaled_to_zero:
        return Verdict(False, "ScaledToZero", "no replicas")
    if _fully_ready(inp, vs):
        return Verdict(True, "AllVersionsReady", vs.summary)
    if vs.failed:
        return Verdict(
            False, "ModelLoadFailed", inp.diagnosis.message if inp.diagnosis else "; ".join(vs.failures)
        )
    if inp.diagnosis and not inp.running:
        return Verdict(False, inp.diagnosis.reason, inp.diagnosis.message)
    return Verdict(False, "VersionsLoading" if inp.running else "VersionsPending", vs.summary)


def progressing_condition(inp: StatusInputs, vs: VersionStates) -> Verdict:
    ro = inp.rollout
    deadline = inp.diagnosis and inp.diagnosis.reason == "ProgressDeadlineExceeded"
    if ro.deadline_exceeded or deadline:
        why = inp.diagnosis.message if inp.diagnosis else ro.deadline_exceeded
        return Verdict(False, "ProgressDeadlineExceeded", why)
    if ro.complete and inp.propagating and not vs.all_ready:
        return Verdict(True, "VersionsPropagating", inp.propagating)
    if ro.complete and inp.agents is not None and not vs.all_ready and not vs.failed:
        return Verdict(True, "VersionsLoading", vs.summary)
    if ro.complete:
        return Verdict(False, "Complete", "rollout complete")
    return Verdict(True, "RollingOut", f"{ro.updated}/{ro.want} replicas updated, {ro.available} available")


def degraded_condition(inp: StatusInputs, vs: VersionStates) -> Verdict:
    if inp.diagnosis:
        return Verdict(True, inp.diagnosis.reason, inp.diagnosis.message)
    if vs.failed:
        return Verdict(True, "ModelLoadFailed", "; ".join(vs.failures))
    bad = [n for n in inp.notes if n.degraded]
    if bad:
        return Verdict(True, bad[0].reason, "; ".join(n.message for n in bad))
    return Verdict(False, "AsExpected", "; ".join(n.message for n in inp.notes if not n.degraded))


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


def _was_ready(previous: dict[str, Any] | None) -> frozenset[tuple[str, int]]:
    return frozenset(
        (str(m.get("name")), int(v.get("version")))
        for m in (previous or {}).get("models") or []
        for v in m.get("versions") or []
        if v.get("state") == "Ready"
    )


def _running(pods: list[dict[str, Any]]) -> bool:
    return any(
        (p.get("status") or {}).get("phase") == "Running" and not p["metadata"].get("deletionTimestamp")
        for p in pods
    )


def _pod_ready(pod: dict[str, Any]) -> bool:
    conds = (pod.get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conds)


def awaiting_count(deployment: dict[str, Any] | None, pods: list[dict[str, Any]]) -> bool:
    """Whether all that is left of a start is the Deployment controller counting Ready pods: the
    Deployment has as many live pods as it wants and every one of them is Ready (nothing is
    pending or loading), and no ``minReadySeconds`` holds them back on purpose. A state the next
    moment replaces (the Deployment turns Available), though under load that moment can last
    seconds."""
    spec = (deployment or {}).get("spec") or {}
    if not deployment or spec.get("minReadySeconds"):
        return False
    want = spec.get("replicas", 1)
    live = [p for p in pods if not p["metadata"].get("deletionTimestamp")]
    return bool(want) and len(live) >= want and all(_pod_ready(p) for p in live)


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
    interceptor: str | None = None,
) -> dict[str, Any]:
    """``interceptor``: the KEDA HTTP add-on interceptor (host:port) the Service is routed through
    (scale from zero on a request), or None.

    ``manifest_age``: seconds since the model manifest last changed; with agent reports and an
    ``inPlace`` rollout, a wanted version still not Ready after ``rollout.readinessGate.timeoutSeconds``
    is Failed (LoadTimeout), so a load that hangs ends in Degraded instead of loading forever.

    ``propagating``: why pod readiness does not yet prove the versions of a just-changed manifest
    (in-place rollouts, see Reconciler._manifest_propagating). While set, versions that were not
    Ready before are Loading, and Ready/Progressing say the rollout is still under way."""
    spec = md.spec
    inp = StatusInputs(
        md=md,
        rollout=Rollout.of(deployment, spec.autoscaling.minReplicas if spec.autoscaling else spec.replicas),
        running=_running(pods),
        diagnosis=diagnosis,
        notes=list(notes or []),
        agents=_agent_versions(agents, manifest_generation),
        propagating=propagating,
        manifest_age=manifest_age,
        was_ready=_was_ready(previous),
        interceptor=interceptor,
    )
    typed = assemble_status(inp, version_states(inp), previous, now or now_rfc3339())
    return typed.model_dump(mode="json", exclude_unset=True)


def assemble_status(
    inp: StatusInputs, vs: VersionStates, previous: dict[str, Any] | None, now: str
) -> ModelDeploymentStatus:
    """The typed status: the four conditions (plus kstatus'), versions and summaries (validated
    against the same model the CRD's status schema is generated from)."""
    gen, ro, md = inp.md.generation, inp.rollout, inp.md
    prev = {c.get("type"): c for c in (previous or {}).get("conditions") or []}
    verdicts = {
        "Ready": ready_condition(inp, vs),
        "ModelsReady": models_ready_condition(inp, vs),
        "Progressing": progressing_condition(inp, vs),
        "Degraded": degraded_condition(inp, vs),
    }
    conds = {t: _condition(t, v.status, v.reason, v.message, gen, prev, now) for t, v in verdicts.items()}
    status: dict[str, Any] = {
        "observedGeneration": gen,
        "conditions": [
            *conds.values(),
            *kstatus_conditions(conds["Ready"], conds["Degraded"], gen, prev, now),
        ],
        "replicas": ro.replicas,
        "readyReplicas": ro.ready,
        "updatedReplicas": ro.updated,
        "selector": selector_string(md),
        "endpoints": endpoints(md, _port_of(inp.interceptor)),
        "models": vs.models,
        "versionsReady": f"{vs.ready}/{vs.expected}",
        "replicasSummary": f"{ro.ready}/{ro.want}",
        "gpus": md.spec.resources.gpu_summary(),
    }
    if vs.served:
        status["servedVersions"] = " ".join(vs.served)
    if wants_http_addon(md):
        status["scaleFromZero"] = scale_from_zero(md, inp.interceptor)
    return ModelDeploymentStatus.model_validate(status)


def _port_of(interceptor: str | None) -> int | None:
    if interceptor is None:
        return None
    port = interceptor.rpartition(":")[2]
    return int(port) if port.isdigit() else None


def scale_from_zero(md: ModelDeployment, interceptor: str | None) -> dict[str, Any]:
    """``status.scaleFromZero``: whether a request can wake the deployment, and through what."""
    if interceptor is None:
        return {"route": "Unavailable",
                "message": f"the KEDA HTTP add-on ({HTTPSCALEDOBJECT_CRD}) is not installed: requests "
                           "cannot wake the deployment from zero replicas"}  # fmt: skip
    http = endpoints(md, _port_of(interceptor))["http"]
    return {"route": "Interceptor", "interceptor": interceptor, "backendService": backend_service_name(md),
            "message": f"service {md.name} is an ExternalName alias of the interceptor: HTTP requests to "
                       f"{http} wake the deployment; gRPC and metrics go to {backend_service_name(md)} "
                       "directly and do not"}  # fmt: skip


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


def _condition_states(status: dict[str, Any]) -> dict[Any, Any]:
    return {c.get("type"): c.get("status") for c in status.get("conditions") or []}


def urgent_change(current: dict[str, Any] | None, new: dict[str, Any]) -> bool:
    """Whether going from ``current`` to ``new`` says something a reader must see at once: the first
    status, a new generation observed, a condition turning True/False/appearing/going (Ready,
    Degraded, Progressing, kstatus' Stalled/Reconciling), other versions served, a new corrupt cache
    entry. Everything else is progress (:func:`visible_progress`) or detail, written at most once per
    interval (Reconciler._deferred)."""
    if not current:
        return True
    if current.get("observedGeneration") != new.get("observedGeneration"):
        return True
    if _condition_states(current) != _condition_states(new):
        return True
    if current.get("servedVersions") != new.get("servedVersions"):
        return True
    return bool(new_corrupt_entries(current, new))


def _condition_reasons(status: dict[str, Any]) -> dict[Any, Any]:
    return {c.get("type"): c.get("reason") for c in status.get("conditions") or []}


def visible_progress(current: dict[str, Any], new: dict[str, Any]) -> bool:
    """Whether a change that is not urgent is progress a reader should see within seconds: the
    READY replicas and VERSIONS columns of ``kubectl get modeldeployments`` moved, or some
    condition's reason changed (Ready RollingOut -> VersionsPropagating, Degraded naming another
    problem, ModelsReady VersionsPending -> VersionsLoading): what a human or kstatus reads never
    lags by more than the progress interval. The rest (condition messages, replica/updated counts,
    per-version detail) can wait longer."""
    if any(current.get(k) != new.get(k) for k in ("readyReplicas", "replicasSummary", "versionsReady")):
        return True
    return _condition_reasons(current) != _condition_reasons(new)
