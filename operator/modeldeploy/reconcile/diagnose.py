"""Why is a ModelDeployment not Ready? Pure functions over the live Deployment, pods and events.

Reasons (most specific first): ``ModelLoadFailed`` (the runtime agent's exec readiness probe output,
found in the kubelet's ``Unhealthy`` events), ``CrashLoopBackOff``, ``ImagePullBackOff``,
``CreateContainerConfigError``, ``InsufficientGPU`` / ``Unschedulable`` (the pods' ``PodScheduled``
condition), pods that cannot even be created (the Deployment's ``ReplicaFailure`` condition:
``ServiceAccountNotFound``, ``PriorityClassNotFound``, ``QuotaExceeded``, ``PodCreateForbidden``,
``FailedCreate``), ``ProgressDeadlineExceeded`` (the Deployment's ``Progressing`` condition).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from modeldeploy.render.deployment import AGENT_CONTAINER

FAILURE_REASONS = (
    "ModelLoadFailed",
    "CrashLoopBackOff",
    "ImagePullBackOff",
    "CreateContainerConfigError",
    "InsufficientGPU",
    "Unschedulable",
    "ServiceAccountNotFound",
    "PriorityClassNotFound",
    "QuotaExceeded",
    "PodCreateForbidden",
    "FailedCreate",
    "ProgressDeadlineExceeded",
)
_PRIORITY = {r: i for i, r in enumerate(FAILURE_REASONS)}
_IMAGE_PULL = {"ImagePullBackOff", "ErrImagePull", "InvalidImageName", "ErrImageNeverPull"}
MAX_MESSAGE = 1000

#: ``model <name> version <n>`` (also ``model=<name> version=<n>``, quotes optional).
_MODEL_VERSION = re.compile(
    r"model[\s:=]+['\"]?(?P<model>[A-Za-z0-9][A-Za-z0-9_.-]*?)['\"]?[\s,:]+version[\s:=]+(?P<version>\d+)",
    re.IGNORECASE,
)


@dataclass
class Diagnosis:
    reason: str
    message: str
    #: (model, version) -> message, for ModelLoadFailed
    failed_versions: dict[tuple[str, int], str] = field(default_factory=dict)


def _clip(msg: str) -> str:
    msg = " ".join(msg.split())
    return msg if len(msg) <= MAX_MESSAGE else msg[: MAX_MESSAGE - 3] + "..."


def parse_agent_failures(output: str) -> dict[tuple[str, int], str]:
    """Failed model versions named in the output of ``modeldeploy-runtime health``.

    Understands the agent's ``/status`` JSON (versions with ``state: Failed``) and text lines such as
    ``model resnet version 2: Failed: ModelLoadFailed: <message>``."""
    failed: dict[tuple[str, int], str] = {}
    start = output.find("{")
    if start >= 0:
        try:
            doc = json.loads(output[start:])
        except ValueError:
            doc = None
        if isinstance(doc, dict):
            # /ready-style body: {"ready": false, "failed": [{"model", "version", "reason", "message"}]}
            for f in doc.get("failed") or []:
                if isinstance(f, dict) and (f.get("model") or f.get("name")) and f.get("version") is not None:
                    msg = ": ".join(str(x) for x in (f.get("reason"), f.get("message")) if x)
                    failed[(str(f.get("model") or f.get("name")), int(f["version"]))] = _clip(
                        msg or "load failed"
                    )
            # /status-style body: {"models": [{"name", "versions": [{"version", "state", ...}]}]}
            for m in doc.get("models") or []:
                for v in m.get("versions") or []:
                    if v.get("state") == "Failed":
                        msg = ": ".join(x for x in (v.get("reason"), v.get("message")) if x)
                        failed[(str(m.get("name")), int(v.get("version")))] = _clip(msg or "load failed")
            if failed:
                return failed
    for line in output.splitlines():
        if "fail" not in line.lower():
            continue
        for match in _MODEL_VERSION.finditer(line):
            failed[(match.group("model"), int(match.group("version")))] = _clip(line.strip())
    return failed


def _pod_name(pod: dict[str, Any]) -> str:
    return str(pod.get("metadata", {}).get("name", ""))


def _container_ready(pod: dict[str, Any], container: str) -> bool | None:
    for cs in (pod.get("status") or {}).get("containerStatuses") or []:
        if cs.get("name") == container:
            return bool(cs.get("ready"))
    return None


def _event_time(ev: dict[str, Any]) -> str:
    series = ev.get("series") or {}
    return str(
        series.get("lastObservedTime")
        or ev.get("lastTimestamp")
        or ev.get("eventTime")
        or ev.get("firstTimestamp")
        or ""
    )


def model_load_failures(pods: list[dict[str, Any]], events: list[dict[str, Any]]) -> Diagnosis | None:
    """ModelLoadFailed from Unhealthy events of the agent's readiness probe on pods not ready now."""
    not_ready = {_pod_name(p) for p in pods if _container_ready(p, AGENT_CONTAINER) is False}
    if not not_ready:
        return None
    latest: dict[str, dict[str, Any]] = {}
    for ev in events:
        obj = ev.get("involvedObject") or ev.get("regarding") or {}
        name = obj.get("name")
        if ev.get("reason") != "Unhealthy" or name not in not_ready:
            continue
        if AGENT_CONTAINER not in str(obj.get("fieldPath", AGENT_CONTAINER)):
            continue
        msg = str(ev.get("message") or ev.get("note") or "")
        if "readiness probe" not in msg.lower():
            continue
        if name not in latest or _event_time(ev) >= _event_time(latest[name]):
            latest[name] = ev
    failed: dict[tuple[str, int], str] = {}
    pods_failing: list[str] = []
    for name, ev in sorted(latest.items()):
        found = parse_agent_failures(str(ev.get("message") or ev.get("note") or ""))
        if found:
            pods_failing.append(name)
            failed.update(found)
    if not failed:
        return None
    parts = [f"{m} version {v}: {msg}" for (m, v), msg in sorted(failed.items())]
    return Diagnosis(
        "ModelLoadFailed",
        _clip(f"pod {pods_failing[0]}: " + "; ".join(parts)),
        failed_versions=failed,
    )


def pod_problems(pods: list[dict[str, Any]], gpu_resource: str | None = None) -> list[Diagnosis]:
    out: list[Diagnosis] = []
    for pod in pods:
        if pod.get("metadata", {}).get("deletionTimestamp"):
            continue
        name = _pod_name(pod)
        status = pod.get("status") or {}
        for cond in status.get("conditions") or []:
            if cond.get("type") == "PodScheduled" and cond.get("status") == "False":
                msg = str(cond.get("message") or "")
                if cond.get("reason") == "Unschedulable":
                    gpu = "nvidia.com/gpu" in msg or "nvidia.com/mig-" in msg
                    if gpu:
                        need = f" (each pod requests {gpu_resource})" if gpu_resource else ""
                        out.append(
                            Diagnosis("InsufficientGPU", _clip(f"pod {name}: not enough GPUs{need}: {msg}"))
                        )
                    else:
                        out.append(Diagnosis("Unschedulable", _clip(f"pod {name}: {msg}")))
        statuses = (status.get("initContainerStatuses") or []) + (status.get("containerStatuses") or [])
        for cs in statuses:
            waiting = (cs.get("state") or {}).get("waiting") or {}
            reason = waiting.get("reason")
            cname = cs.get("name")
            if reason in _IMAGE_PULL:
                out.append(
                    Diagnosis(
                        "ImagePullBackOff",
                        _clip(
                            f"pod {name} container {cname}: {reason}: image {cs.get('image')}: {waiting.get('message', '')}"
                        ),
                    )
                )
            elif reason == "CrashLoopBackOff":
                last = (cs.get("lastState") or {}).get("terminated") or {}
                detail = f"exit code {last.get('exitCode')}" if last else ""
                if last.get("message") or last.get("reason"):
                    detail += f" ({last.get('reason') or ''}: {last.get('message') or ''})"
                out.append(
                    Diagnosis(
                        "CrashLoopBackOff",
                        _clip(
                            f"pod {name} container {cname} keeps crashing: {detail} {waiting.get('message', '')}"
                        ),
                    )
                )
            elif reason == "CreateContainerConfigError":
                out.append(
                    Diagnosis(
                        "CreateContainerConfigError",
                        _clip(f"pod {name} container {cname}: {waiting.get('message', '')}"),
                    )
                )
    return out


#: ReplicaFailure messages (the API server's reason for refusing the pod) -> a precise reason.
_CREATE_FAILURES = (
    (re.compile(r"service ?account", re.IGNORECASE), "ServiceAccountNotFound"),
    (re.compile(r"priority ?class", re.IGNORECASE), "PriorityClassNotFound"),
    (re.compile(r"exceeded quota|quota", re.IGNORECASE), "QuotaExceeded"),
    (re.compile(r"forbidden", re.IGNORECASE), "PodCreateForbidden"),
)


def replica_failure(deployment: dict[str, Any]) -> Diagnosis | None:
    """The Deployment's ``ReplicaFailure=True`` (its ReplicaSet cannot create pods: a missing
    ServiceAccount or PriorityClass, a quota, an admission webhook...), with the API server's message."""
    for cond in (deployment.get("status") or {}).get("conditions") or []:
        if cond.get("type") != "ReplicaFailure" or cond.get("status") != "True":
            continue
        msg = str(cond.get("message") or cond.get("reason") or "")
        reason = next((r for rx, r in _CREATE_FAILURES if rx.search(msg)), "FailedCreate")
        return Diagnosis(
            reason, _clip(f"deployment {deployment['metadata']['name']} cannot create pods: {msg}")
        )
    return None


def deployment_problem(deployment: dict[str, Any] | None) -> Diagnosis | None:
    if not deployment:
        return None
    failure = replica_failure(deployment)
    if failure:
        return failure
    for cond in (deployment.get("status") or {}).get("conditions") or []:
        if cond.get("type") == "Progressing" and cond.get("reason") == "ProgressDeadlineExceeded":
            return Diagnosis(
                "ProgressDeadlineExceeded",
                _clip(f"deployment {deployment['metadata']['name']}: {cond.get('message', '')}"),
            )
    return None


def _unready_pods(pods: list[dict[str, Any]], limit: int = 2) -> str:
    """``; pod p: containers with unready status: [agent]``: what the pods that are not Ready say."""
    out = []
    for pod in pods:
        if pod.get("metadata", {}).get("deletionTimestamp"):
            continue
        for cond in (pod.get("status") or {}).get("conditions") or []:
            if cond.get("type") == "Ready" and cond.get("status") != "True":
                out.append(
                    f"pod {_pod_name(pod)}: {cond.get('message') or cond.get('reason') or 'not Ready'}"
                )
    return "".join(f"; {x}" for x in out[:limit])


def diagnose(
    deployment: dict[str, Any] | None,
    pods: list[dict[str, Any]],
    events: list[dict[str, Any]],
    gpu_resource: str | None = None,
) -> Diagnosis | None:
    """The most specific failure, or None when nothing is wrong (or it is just progressing)."""
    found: list[Diagnosis] = []
    mlf = model_load_failures(pods, events)
    if mlf:
        found.append(mlf)
    found.extend(pod_problems(pods, gpu_resource))
    dp = deployment_problem(deployment)
    if dp and dp.reason == "ProgressDeadlineExceeded":
        dp = Diagnosis(dp.reason, _clip(f"{dp.message}{_unready_pods(pods)}"))
    if dp:
        found.append(dp)
    if not found:
        return None
    found.sort(key=lambda d: _PRIORITY.get(d.reason, 99))
    best = found[0]
    others = [d for d in found[1:] if d.reason == best.reason]
    if others:
        best = Diagnosis(
            best.reason, _clip(f"{best.message} (and {len(others)} more pod(s))"), best.failed_versions
        )
    return best


def needs_events(pods: list[dict[str, Any]]) -> bool:
    """Events are only read when some pod's agent is running but not ready (saves API calls)."""
    return any(_container_ready(p, AGENT_CONTAINER) is False for p in pods)
