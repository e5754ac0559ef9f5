"""Status computation: conditions, per-version states, transitions, patches."""

from __future__ import annotations

from typing import Any

from opsupport import load_case

from modeldeploy.api.v1alpha1 import ModelDeployment, ModelDeploymentStatus
from modeldeploy.reconcile.diagnose import Diagnosis
from modeldeploy.reconcile.status import compute_status, invalid_status, status_patch
from modeldeploy.render.common import Note
from modeldeploy_runtime.agentapi import AgentStatus

T0, T1 = "2026-01-01T00:00:00Z", "2026-01-01T00:05:00Z"


def md(case: str = "cpu", **spec: Any) -> ModelDeployment:
    body = load_case(case)
    body["spec"].update(spec)
    return ModelDeployment.from_body(body)


def deployment(
    want: int = 1,
    *,
    updated: int | None = None,
    available: int | None = None,
    generation: int = 2,
    observed: int = 2,
    total: int | None = None,
) -> dict[str, Any]:
    updated = want if updated is None else updated
    available = want if available is None else available
    return {
        "metadata": {"name": "cpu-model", "generation": generation},
        "spec": {"replicas": want},
        "status": {
            "observedGeneration": observed,
            "replicas": want if total is None else total,
            "updatedReplicas": updated,
            "readyReplicas": available,
            "availableReplicas": available,
        },
    }


def running_pod() -> dict[str, Any]:
    return {"metadata": {"name": "p"}, "status": {"phase": "Running"}}


def conds(st: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["type"]: c for c in st["conditions"]}


def test_ready_when_rolled_out_and_available() -> None:
    st = compute_status(md(), deployment(1), [running_pod()], None, now=T0)
    c = conds(st)
    assert c["Ready"]["status"] == "True" and c["Ready"]["reason"] == "Available"
    assert c["ModelsReady"]["status"] == "True"
    assert c["Progressing"]["status"] == "False" and c["Progressing"]["reason"] == "Complete"
    assert c["Degraded"]["status"] == "False"
    assert st["observedGeneration"] == 1 and all(x["observedGeneration"] == 1 for x in st["conditions"])
    assert st["models"] == [
        {
            "name": "simple",
            "versions": [
                {"version": 1, "state": "Unloaded", "reason": "NotInVersionPolicy", "message": ""},
                {"version": 2, "state": "Ready", "reason": "Loaded", "message": "", "readyReplicas": 1},
            ],
        }
    ]
    assert (
        st["versionsReady"] == "1/1" and st["servedVersions"] == "simple:2" and st["replicasSummary"] == "1/1"
    )
    assert st["endpoints"] == {
        "http": "http://cpu-model.models.svc:8000",
        "grpc": "cpu-model.models.svc:8001",
    }
    assert st["selector"] == "app.kubernetes.io/name=triton,modeldeploy.io/deployment=cpu-model"
    ModelDeploymentStatus.model_validate(st)  # the CRD's status schema accepts it


def test_not_ready_while_rolling_out_or_controller_lagging() -> None:
    for dep in (deployment(2, updated=1, available=1), deployment(1, observed=1), deployment(2, total=3)):
        c = conds(compute_status(md(), dep, [running_pod()], None, now=T0))
        assert c["Ready"]["status"] == "False", dep
        assert c["Progressing"]["status"] == "True"


def test_a_template_change_not_yet_observed_is_rolling_out_not_pods_not_ready() -> None:
    """Right after a new pod template is written, the Deployment's status still describes the
    previous, finished rollout (NewReplicaSetAvailable, all updated): Ready says RollingOut (seen
    for about 5 s after an operator upgrade rolled the pods), not PodsNotReady."""
    from modeldeploy.reconcile.status import ready_condition, version_states

    finished = {"type": "Progressing", "status": "True", "reason": "NewReplicaSetAvailable"}
    dep = deployment(1, available=0, generation=3, observed=2)
    dep["status"]["conditions"] = [finished]
    inp = inputs(dep=dep)
    v = ready_condition(inp, version_states(inp))
    assert (v.status, v.reason) == (False, "RollingOut"), v
    # observed and finished, yet a pod is not Ready: that one is PodsNotReady
    dep = deployment(1, available=0, generation=3, observed=3)
    dep["status"]["conditions"] = [finished]
    inp = inputs(dep=dep)
    v = ready_condition(inp, version_states(inp))
    assert (v.status, v.reason) == (False, "PodsNotReady"), v


def test_last_transition_time_only_moves_on_status_changes() -> None:
    first = compute_status(md(), deployment(1), [running_pod()], None, now=T0)
    again = compute_status(md(), deployment(1), [running_pod()], None, previous=first, now=T1)
    assert again == first and status_patch(first, again) is None
    broken = compute_status(md(), deployment(1, available=0), [running_pod()], None, previous=first, now=T1)
    assert conds(broken)["Ready"]["lastTransitionTime"] == T1
    assert conds(broken)["Progressing"]["lastTransitionTime"] == T1
    # Degraded stayed False: its time is kept even though its message may change
    assert conds(broken)["Degraded"]["lastTransitionTime"] == T0


def test_diagnosis_goes_into_ready_and_degraded() -> None:
    d = Diagnosis("InsufficientGPU", "pod x: not enough GPUs")
    st = compute_status(md("gpu"), deployment(2, available=0, updated=2), [], d, now=T0)
    c = conds(st)
    assert (c["Ready"]["status"], c["Ready"]["reason"]) == ("False", "InsufficientGPU")
    assert (c["Degraded"]["status"], c["Degraded"]["reason"]) == ("True", "InsufficientGPU")
    assert st["models"][0]["versions"][0]["state"] == "Pending"
    assert st["models"][0]["versions"][0]["reason"] == "InsufficientGPU"


def test_model_load_failed_comes_from_the_agents_while_pods_stay_ready() -> None:
    """Readiness means serving: the pod (and the Deployment) stay Ready on the old version, the
    agents' typed report says which version failed and why."""
    from modeldeploy.reconcile.status import AgentReport

    report = AgentReport(pods={"p": agent_doc(3, (1, "Ready", "", ""), (2, "Failed", "LoadFailed", "bad"))})
    st = compute_status(
        md(), deployment(1), [running_pod()], None, now=T0, agents=report, manifest_generation=3
    )
    v1, v2 = st["models"][0]["versions"]
    assert (v2["state"], v2["reason"], v2["message"]) == ("Failed", "LoadFailed", "pod p: bad")
    assert (v1["state"], v1["reason"]) == ("Ready", "StillServing")
    c = conds(st)
    assert c["ModelsReady"]["reason"] == "ModelLoadFailed" and c["Ready"]["reason"] == "ModelLoadFailed"
    assert (
        c["Degraded"]["status"] == "True"
        and "simple version 2: LoadFailed: pod p: bad" in c["Degraded"]["message"]
    )
    assert st["readyReplicas"] == 1 and st["servedVersions"] == "simple:1"


def test_progress_deadline_stops_progressing() -> None:
    d = Diagnosis("ProgressDeadlineExceeded", "deployment m: timed out")
    c = conds(compute_status(md(), deployment(1, available=0), [], d, now=T0))
    assert (c["Progressing"]["status"], c["Progressing"]["reason"]) == ("False", "ProgressDeadlineExceeded")


def test_scaled_to_zero_is_ready_but_models_not() -> None:
    st = compute_status(md("keda"), deployment(0), [], None, now=T0)
    c = conds(st)
    assert (c["Ready"]["status"], c["Ready"]["reason"]) == ("True", "ScaledToZero")
    assert c["ModelsReady"]["status"] == "False"


def test_missing_deployment() -> None:
    c = conds(compute_status(md(), None, [], None, now=T0))
    assert (c["Ready"]["status"], c["Ready"]["reason"]) == ("False", "DeploymentMissing")


def test_notes_degrade_only_when_marked() -> None:
    info = Note("ServiceMonitorSkipped", "no CRD", degraded=False)
    bad = Note("AutoscalerUnavailable", "no KEDA", degraded=True)
    c = conds(compute_status(md(), deployment(1), [running_pod()], None, notes=[info], now=T0))
    assert c["Degraded"]["status"] == "False" and c["Degraded"]["message"] == "no CRD"
    c = conds(compute_status(md(), deployment(1), [running_pod()], None, notes=[bad], now=T0))
    assert (c["Degraded"]["status"], c["Degraded"]["reason"]) == ("True", "AutoscalerUnavailable")


def test_invalid_status_and_patch() -> None:
    body = load_case("cpu")
    body["metadata"]["generation"] = 4
    st = invalid_status(body, "spec.podLabels['bad key']: invalid key", now=T0)
    c = conds(st)
    assert (c["Ready"]["status"], c["Ready"]["reason"]) == ("False", "InvalidSpec")
    assert "podLabels" in c["Ready"]["message"] and st["observedGeneration"] == 4
    assert status_patch({"a": 1, "b": 2}, {"a": 1, "c": 3}) == {"c": 3, "b": None}
    assert status_patch({"a": 1}, {"a": 1}) is None


def kstatus(st: dict[str, Any]) -> str:
    """What sigs.k8s.io/cli-utils kstatus (Flux's health checks) computes for a custom resource:
    it reads only observedGeneration and the Reconciling / Stalled conditions."""
    c = conds(st)
    if st.get("observedGeneration") != 1:
        return "InProgress"
    if c.get("Stalled", {}).get("status") == "True":
        return "Failed"
    if c.get("Reconciling", {}).get("status") == "True":
        return "InProgress"
    return "Current"


def test_kstatus_conditions_follow_ready_and_degraded() -> None:
    ready = compute_status(md(), deployment(1), [running_pod()], None, now=T0)
    assert "Reconciling" not in conds(ready) and "Stalled" not in conds(ready)
    assert kstatus(ready) == "Current"

    rolling = compute_status(md(), deployment(2, updated=1, available=1), [running_pod()], None, now=T0)
    assert conds(rolling)["Reconciling"]["status"] == "True" and "Stalled" not in conds(rolling)
    assert kstatus(rolling) == "InProgress"

    d = Diagnosis("InsufficientGPU", "pod x: not enough GPUs")
    stuck = compute_status(md("gpu"), deployment(2, available=0), [], d, previous=rolling, now=T1)
    s = conds(stuck)["Stalled"]
    assert (s["status"], s["reason"], s["message"]) == ("True", "InsufficientGPU", "pod x: not enough GPUs")
    assert "Reconciling" not in conds(stuck) and kstatus(stuck) == "Failed"
    ModelDeploymentStatus.model_validate(stuck)

    invalid = invalid_status({"metadata": {"generation": 1}}, "spec.x: bad", previous=ready, now=T1)
    assert conds(invalid)["Stalled"]["reason"] == "InvalidSpec" and kstatus(invalid) == "Failed"


def test_in_place_manifest_change_is_not_ready_until_it_has_propagated() -> None:
    """Right after an in-place version change the pods are still Ready on the old manifest: the new
    version is Loading and the ModelDeployment is Progressing, not Ready, until the window passes."""
    one = md()
    before = compute_status(one, deployment(1), [running_pod()], None, now=T0)
    assert conds(before)["Ready"]["status"] == "True"
    model = load_case("cpu")["spec"]["models"][0]
    both = md(models=[{**model, "versionPolicy": {"all": True}}])
    why = "the model manifest changed 3s ago; ..."
    st = compute_status(both, deployment(1), [running_pod()], None, previous=before, now=T1, propagating=why)
    c = conds(st)
    assert (c["Ready"]["status"], c["Ready"]["reason"], c["Ready"]["message"]) == (
        "False",
        "VersionsPropagating",
        why,
    )
    assert (c["Progressing"]["status"], c["Progressing"]["reason"]) == ("True", "VersionsPropagating")
    assert c["Reconciling"]["status"] == "True" and "Stalled" not in c
    states = {v["version"]: (v["state"], v["reason"]) for v in st["models"][0]["versions"]}
    assert states == {1: ("Loading", "ManifestPropagating"), 2: ("Ready", "Loaded")}
    done = compute_status(both, deployment(1), [running_pod()], None, previous=st, now=T1)
    assert conds(done)["Ready"]["status"] == "True" and done["servedVersions"] == "simple:1,2"
    ModelDeploymentStatus.model_validate(st)


def agent_doc(generation: int, *versions: tuple[int, str, str, str]) -> AgentStatus:
    """An agent's typed /status: versions as (version, state, reason, message), manifest
    ``generation`` applied."""
    vs = [{"version": v, "state": s, "reason": r, "message": m} for v, s, r, m in versions]
    return AgentStatus.model_validate(
        {
            "generation": generation,
            "appliedGeneration": generation,
            "models": [{"name": "simple", "versions": vs}],
        }
    )


def test_agent_reports_drive_version_states_and_conditions() -> None:
    """With --query-agents the agents' /status is the truth about versions: a version no agent
    serves yet is Loading, a failed one makes the ModelDeployment Degraded with the agent's reason
    while the version it replaces keeps serving, and a report from an agent still on an older
    manifest proves nothing new."""
    from modeldeploy.reconcile.status import AgentReport

    spec = md()  # versions 1 and 2, versionPolicy latest: 1 -> only 2 is wanted
    pods = [running_pod()]

    def status(*versions: tuple[int, str, str, str], gen: int = 3, previous: Any = None) -> dict[str, Any]:
        report = AgentReport(pods={"p": agent_doc(gen, *versions)})
        st = compute_status(spec, deployment(1), pods, None, previous=previous, now=T0, agents=report,
                            manifest_generation=3)  # fmt: skip
        ModelDeploymentStatus.model_validate(st)
        return st

    def states(st: dict[str, Any]) -> dict[int, tuple[str, str]]:
        return {v["version"]: (v["state"], v["reason"]) for v in st["models"][0]["versions"]}

    ok = status((2, "Ready", "", ""))
    assert conds(ok)["Ready"]["status"] == "True" and ok["servedVersions"] == "simple:2"
    assert states(ok) == {1: ("Unloaded", "NotInVersionPolicy"), 2: ("Ready", "")}

    loading = status((1, "Ready", "", ""), (2, "Loading", "", ""))
    c = conds(loading)
    assert (c["Ready"]["status"], c["Ready"]["reason"]) == ("False", "VersionsLoading")
    assert (c["Progressing"]["status"], c["Progressing"]["reason"]) == ("True", "VersionsLoading")
    assert states(loading) == {1: ("Ready", "StillServing"), 2: ("Loading", "")}
    assert loading["servedVersions"] == "simple:1" and loading["versionsReady"] == "0/1"

    bad = status((1, "Ready", "", ""), (2, "Failed", "DigestMismatch", "sha256 abc != def"))
    c = conds(bad)
    want = "simple version 2: DigestMismatch: pod p: sha256 abc != def"
    assert (c["Ready"]["status"], c["Ready"]["reason"], c["Ready"]["message"]) == (
        "False",
        "ModelLoadFailed",
        want,
    )
    assert (c["Degraded"]["status"], c["Degraded"]["reason"]) == ("True", "ModelLoadFailed")
    assert c["ModelsReady"]["reason"] == "ModelLoadFailed" and c["Stalled"]["status"] == "True"
    assert bad["servedVersions"] == "simple:1"  # the previous version keeps serving, and says so

    assert states(status()) == {1: ("Unloaded", "NotInVersionPolicy"), 2: ("Loading", "AgentPending")}

    stale = status((2, "Ready", "", ""), gen=2)
    assert states(stale)[2] == ("Loading", "ManifestPropagating")
    assert "generation 2 < 3" in stale["models"][0]["versions"][1]["message"]
    assert conds(stale)["Ready"]["status"] == "False"
    # a version that was Ready before the manifest changed stays Ready while the agent catches up
    assert conds(status((2, "Ready", "", ""), gen=2, previous=ok))["Ready"]["status"] == "True"


def test_in_place_load_that_outlasts_the_readiness_gate_timeout_fails() -> None:
    """rollout.readinessGate.timeoutSeconds bounds an in-place load watched through the agents: a
    wanted version still Loading that long after the manifest changed is Failed (LoadTimeout) and the
    ModelDeployment Degraded, while the version it replaces keeps serving; before the deadline, and
    for rolling rollouts, it is just Loading."""
    from modeldeploy.reconcile.status import AgentReport

    report = AgentReport(pods={"p": agent_doc(3, (1, "Ready", "", ""), (2, "Loading", "Loading", "loading"))})

    def status(age: float, strategy: str = "inPlace") -> dict[str, Any]:
        spec = md(rollout={"strategy": strategy, "readinessGate": {"timeoutSeconds": 60}})
        st = compute_status(spec, deployment(1), [running_pod()], None, now=T0, agents=report,
                            manifest_generation=3, manifest_age=age)  # fmt: skip
        ModelDeploymentStatus.model_validate(st)
        return st

    early = status(59)
    assert early["models"][0]["versions"][1]["state"] == "Loading"
    assert conds(early)["Degraded"]["status"] == "False"
    late = status(61)
    v2 = late["models"][0]["versions"][1]
    assert (v2["state"], v2["reason"]) == ("Failed", "LoadTimeout")
    assert "timeoutSeconds: 60" in v2["message"] and "last: Loading pod p: loading" in v2["message"]
    c = conds(late)
    assert (c["Degraded"]["status"], c["Degraded"]["reason"]) == ("True", "ModelLoadFailed")
    assert c["Ready"]["reason"] == "ModelLoadFailed" and late["servedVersions"] == "simple:1"
    assert status(61, "rolling")["models"][0]["versions"][1]["state"] == "Loading"


def test_load_timeout_does_not_fire_for_a_version_that_was_serving() -> None:
    """A version Ready in the previous status that an agent briefly reports as Pending (say, after
    the agent restarted) is Loading, not a LoadTimeout, however old the manifest is."""
    from modeldeploy.reconcile.status import AgentReport

    spec = md(rollout={"strategy": "inPlace", "readinessGate": {"timeoutSeconds": 60}})

    def status(state: str, previous: Any = None) -> dict[str, Any]:
        report = AgentReport(pods={"p": agent_doc(3, (2, state, "", ""))})
        return compute_status(spec, deployment(1), [running_pod()], None, now=T0, agents=report,
                              manifest_generation=3, manifest_age=86400, previous=previous)  # fmt: skip

    serving = status("Ready")
    assert conds(serving)["Ready"]["status"] == "True"
    blip = status("Pending", previous=serving)
    assert blip["models"][0]["versions"][1]["state"] == "Pending"
    assert conds(blip)["Degraded"]["status"] == "False"
    assert status("Pending")["models"][0]["versions"][1]["reason"] == "LoadTimeout"


# ------------------------------------------------------------ the split: one function per condition
def inputs(spec: ModelDeployment | None = None, dep: dict[str, Any] | None = None, **kw: Any) -> Any:
    from modeldeploy.reconcile.status import Rollout, StatusInputs

    fields: dict[str, Any] = dict(running=True, diagnosis=None, notes=[], agents=None, propagating=None,
                                  manifest_age=None, was_ready=frozenset())  # fmt: skip
    fields.update(kw)
    return StatusInputs(
        md=spec or md(), rollout=Rollout.of(deployment(1) if dep is None else dep, 1), **fields
    )


def test_each_condition_is_one_function_of_typed_inputs() -> None:
    from modeldeploy.reconcile.status import (
        Verdict,
        degraded_condition,
        models_ready_condition,
        progressing_condition,
        ready_condition,
        version_states,
    )

    ok = inputs()
    vs = version_states(ok)
    assert (vs.expected, vs.ready, vs.served, vs.failed) == (1, 1, ["simple:2"], False)
    assert ready_condition(ok, vs) == Verdict(True, "Available", "1/1 replicas available, serving simple:2")
    assert models_ready_condition(ok, vs) == Verdict(True, "AllVersionsReady", "1/1 versions ready")
    assert progressing_condition(ok, vs) == Verdict(False, "Complete", "rollout complete")
    assert degraded_condition(ok, vs) == Verdict(False, "AsExpected", "")

    gpu = Diagnosis("InsufficientGPU", "pod p: not enough GPUs")
    stuck = inputs(dep=deployment(1, available=0), running=False, diagnosis=gpu)
    vs = version_states(stuck)
    assert vs.models[0]["versions"][1]["state"] == "Pending" and not vs.all_ready
    assert ready_condition(stuck, vs) == Verdict(False, "InsufficientGPU", "pod p: not enough GPUs")
    assert models_ready_condition(stuck, vs) == Verdict(False, "InsufficientGPU", "pod p: not enough GPUs")
    assert progressing_condition(stuck, vs) == Verdict(
        True, "RollingOut", "1/1 replicas updated, 0 available"
    )
    assert degraded_condition(stuck, vs) == Verdict(True, "InsufficientGPU", "pod p: not enough GPUs")

    why = "the model manifest changed 3s ago"
    moving = inputs(propagating=why)
    vs = version_states(moving)
    assert ready_condition(moving, vs) == Verdict(False, "VersionsPropagating", why)
    assert progressing_condition(moving, vs) == Verdict(True, "VersionsPropagating", why)


def rolling_deployment(deadline: bool) -> dict[str, Any]:
    """2 replicas wanted; one new pod (surged) not Ready, the 2 old ones available."""
    dep = deployment(2, updated=1, available=2, total=3)
    if deadline:
        dep["status"]["conditions"] = [{"type": "Progressing", "status": "False",
                                        "reason": "ProgressDeadlineExceeded",
                                        "message": 'ReplicaSet "m-2" has timed out progressing.'}]  # fmt: skip
    return dep


def test_rolling_rollout_keeps_the_old_version_served_and_names_the_stalled_version() -> None:
    """rolling v1 -> v2: while the new pod is not Ready the old pods keep serving v1 (StillServing)
    and v2 is Loading; at the Deployment's progress deadline v2 is Failed and every condition says
    which version the stalled rollout was rolling out, and why."""
    spec = md(rollout={"strategy": "rolling"})  # versions 1, 2; latest: 1 -> v2 wanted
    previous = {"models": [{"name": "simple", "versions": [{"version": 1, "state": "Ready"}]}]}
    pods = [running_pod()]

    moving = compute_status(spec, rolling_deployment(False), pods, None, previous=previous, now=T0)
    states = {v["version"]: (v["state"], v["reason"]) for v in moving["models"][0]["versions"]}
    assert states == {1: ("Ready", "StillServing"), 2: ("Loading", "PodsStarting")}
    assert moving["servedVersions"] == "simple:1" and moving["versionsReady"] == "0/1"
    c = conds(moving)
    assert (c["Ready"]["status"], c["Ready"]["reason"]) == ("False", "RollingOut")
    assert (c["Progressing"]["status"], c["Degraded"]["status"]) == ("True", "False")
    ModelDeploymentStatus.model_validate(moving)

    d = Diagnosis("ProgressDeadlineExceeded", 'deployment cpu-model: ReplicaSet "m-2" has timed out '
                  "progressing.; pod m-2-x: containers with unready status: [agent]")  # fmt: skip
    stalled = compute_status(spec, rolling_deployment(True), pods, d, previous=moving, now=T1)
    v = {v["version"]: v for v in stalled["models"][0]["versions"]}
    assert (v[1]["state"], v[1]["reason"]) == ("Ready", "StillServing")
    assert (v[2]["state"], v[2]["reason"]) == ("Failed", "ProgressDeadlineExceeded")
    assert v[2]["message"] == f"new pods not Ready within the progress deadline: {d.message}"
    c = conds(stalled)
    assert (c["Ready"]["status"], c["Ready"]["reason"]) == ("False", "ProgressDeadlineExceeded")
    assert c["Ready"]["message"] == (
        "rolling out simple:2 (2 available pod(s) of the previous revision keep serving) stalled: "
        + d.message
    )
    assert (c["Progressing"]["status"], c["Progressing"]["reason"]) == ("False", "ProgressDeadlineExceeded")
    assert (c["Degraded"]["status"], c["Degraded"]["reason"]) == ("True", "ProgressDeadlineExceeded")
    assert c["Stalled"]["status"] == "True" and stalled["servedVersions"] == "simple:1"
    ModelDeploymentStatus.model_validate(stalled)

    # inPlace has no old revision: an unwanted version is not claimed to be served
    inplace = compute_status(md(), rolling_deployment(False), pods, None, previous=previous, now=T0)
    assert inplace["models"][0]["versions"][0]["state"] == "Unloaded"


def test_a_pod_that_cannot_be_created_is_degraded() -> None:
    from modeldeploy.reconcile.diagnose import diagnose

    dep = deployment(1, available=0, updated=0, total=0)
    msg = 'pods "x" is forbidden: error looking up service account models/robot: serviceaccount "robot" not found'
    dep["status"]["conditions"] = [{"type": "ReplicaFailure", "status": "True", "reason": "FailedCreate",
                                    "message": msg}]  # fmt: skip
    st = compute_status(md(), dep, [], diagnose(dep, [], []), now=T0)
    c = conds(st)
    assert (c["Degraded"]["status"], c["Degraded"]["reason"]) == ("True", "ServiceAccountNotFound")
    assert c["Degraded"]["message"] == f"deployment cpu-model cannot create pods: {msg}"
    assert (c["Ready"]["reason"], c["Stalled"]["reason"]) == (
        "ServiceAccountNotFound",
        "ServiceAccountNotFound",
    )


def test_each_version_says_how_many_pods_started_from_the_cache_or_downloaded() -> None:
    """status.models[].versions[].fetch: per wanted version, pods that read it from the shared
    cache, downloaded it (and the bytes), or had it already, from the agents' FetchReports."""
    from modeldeploy.reconcile.status import AgentReport

    def doc(origin: str | None, nbytes: int = 0) -> AgentStatus:
        v: dict[str, Any] = {"version": 2, "state": "Ready"}
        if origin:
            v["fetch"] = {"origin": origin, "bytes": nbytes, "seconds": 0.1}
        return AgentStatus.model_validate(
            {"generation": 3, "appliedGeneration": 3, "models": [{"name": "simple", "versions": [v]}]}
        )

    pods = {"a": doc("cache"), "b": doc("download", 1000), "c": doc("download", 24),
            "d": doc("repository"), "e": doc(None)}  # fmt: skip
    st = compute_status(md(), deployment(5), [running_pod()], None, now=T0,
                        agents=AgentReport(pods=pods), manifest_generation=3)  # fmt: skip
    ModelDeploymentStatus.model_validate(st)
    v2 = st["models"][0]["versions"][1]
    assert v2["state"] == "Ready" and v2["readyReplicas"] == 5
    assert v2["fetch"] == {"fromCache": 1, "downloaded": 2, "local": 1, "bytesDownloaded": 1024}
    only_cache = compute_status(md(), deployment(1), [running_pod()], None, now=T0,
                                agents=AgentReport(pods={"a": doc("cache")}), manifest_generation=3)  # fmt: skip
    assert only_cache["models"][0]["versions"][1]["fetch"] == {
        "fromCache": 1, "downloaded": 0, "local": 0, "bytesDownloaded": 0,
    }  # fmt: skip
    none = compute_status(md(), deployment(1), [running_pod()], None, now=T0,
                          agents=AgentReport(pods={"e": doc(None)}), manifest_generation=3)  # fmt: skip
    assert "fetch" not in none["models"][0]["versions"][1]
