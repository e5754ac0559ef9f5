"""Why is a ModelDeployment not Ready? Pure functions over the live Deployment and its pods.

Reasons (most specific first): ``CrashLoopBackOff``, ``ImagePullBackOff``,
``CreateContainerConfigError``, ``InsufficientGPU`` / ``Unschedulable`` (the pods' ``PodScheduled``
condition), pods that cannot even be created (the Deployment's ``ReplicaFailure`` condition:
``ServiceAccountNotFound``, ``PriorityClassNotFound``, ``QuotaExceeded``, ``PodCreateForbidden``,
``FailedCreate``), ``ProgressDeadlineExceeded`` (the Deployment's ``Progressing`` condition). A model
version that fails to load is not a pod problem (the pod keeps serving the previous version and stays
Ready): the agents report it on ``/status`` and status.py turns it into ``ModelLoadFailed``/``LoadTimeout``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

FAILURE_REASONS = (
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


@dataclass
class Diagnosis:
    reason: str
    message: str


def _clip(msg: str) -> str:
    msg = " ".join(msg.split())
    return msg if len(msg) <= MAX_MESSAGE else msg[: MAX_MESSAGE - 3] + "..."


def _pod_name(pod: dict[str, Any]) -> str:
    return str(pod.get("metadata", {}).get("name", ""))


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
    gpu_resource: str | None = None,
) -> Diagnosis | None:
    """The most specific failure, or None when nothing is wrong (or it is just progressing)."""
    found: list[Diagnosis] = []
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
        best = Diagnosis(best.reason, _clip(f"{best.message} (and {len(others)} more pod(s))"))
    return best
