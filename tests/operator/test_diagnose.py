"""Diagnosis of common failures from pods and the Deployment."""

from __future__ import annotations

from typing import Any

import pytest

from modeldeploy.reconcile.diagnose import diagnose


def pod(
    name: str = "m-1",
    *,
    scheduled: dict[str, Any] | None = None,
    containers: list[dict[str, Any]] | None = None,
    init: list[dict[str, Any]] | None = None,
    phase: str = "Running",
) -> dict[str, Any]:
    status: dict[str, Any] = {"phase": phase, "conditions": []}
    if scheduled is not None:
        status["conditions"].append({"type": "PodScheduled", **scheduled})
    if containers is not None:
        status["containerStatuses"] = containers
    if init is not None:
        status["initContainerStatuses"] = init
    return {"metadata": {"name": name}, "status": status}


AGENT_NOT_READY = [{"name": "triton", "ready": True}, {"name": "agent", "ready": False}]


def test_insufficient_gpu_from_pod_scheduled() -> None:
    msg = "0/3 nodes are available: 1 node(s) didn't match Pod's node affinity/selector, 2 Insufficient nvidia.com/gpu."
    d = diagnose(
        None,
        [pod(scheduled={"status": "False", "reason": "Unschedulable", "message": msg}, phase="Pending")],
        "16 nvidia.com/gpu",
    )
    assert d is not None and d.reason == "InsufficientGPU"
    assert "16 nvidia.com/gpu" in d.message and "Insufficient nvidia.com/gpu" in d.message


def test_mig_shortage_is_insufficient_gpu_too() -> None:
    msg = "0/2 nodes are available: 2 Insufficient nvidia.com/mig-1g.10gb."
    d = diagnose(None, [pod(scheduled={"status": "False", "reason": "Unschedulable", "message": msg})])
    assert d is not None and d.reason == "InsufficientGPU"


def test_other_scheduling_failures_are_unschedulable() -> None:
    msg = "0/3 nodes are available: 3 node(s) didn't match Pod's node affinity/selector."
    d = diagnose(None, [pod(scheduled={"status": "False", "reason": "Unschedulable", "message": msg})])
    assert d is not None and d.reason == "Unschedulable" and "node affinity" in d.message


def test_image_pull_backoff_in_init_container() -> None:
    init = [
        {
            "name": "fetch-models",
            "image": "ghcr.io/x/runtime:bad",
            "state": {"waiting": {"reason": "ErrImagePull", "message": "not found"}},
        }
    ]
    d = diagnose(None, [pod(init=init, phase="Pending")])
    assert d is not None and d.reason == "ImagePullBackOff"
    assert "fetch-models" in d.message and "ghcr.io/x/runtime:bad" in d.message


def test_crash_loop_names_the_container_and_exit_code() -> None:
    cs = [
        {
            "name": "triton",
            "state": {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off 5m"}},
            "lastState": {"terminated": {"exitCode": 139, "reason": "Error"}},
        }
    ]
    d = diagnose(None, [pod(containers=cs)])
    assert d is not None and d.reason == "CrashLoopBackOff"
    assert "triton" in d.message and "139" in d.message


def test_progress_deadline_exceeded() -> None:
    dep = {
        "metadata": {"name": "m"},
        "status": {
            "conditions": [
                {
                    "type": "Progressing",
                    "status": "False",
                    "reason": "ProgressDeadlineExceeded",
                    "message": 'ReplicaSet "m-1" has timed out progressing.',
                }
            ]
        },
    }
    d = diagnose(dep, [])
    assert d is not None and d.reason == "ProgressDeadlineExceeded" and "timed out" in d.message


def test_an_agent_not_ready_is_no_pod_problem() -> None:
    """A version that fails to load is reported by the agents' /status (status.py), not diagnosed
    from pods: a pod whose agent is not ready (not serving yet) is just not ready."""
    assert diagnose(None, [pod(containers=AGENT_NOT_READY)]) is None


def test_healthy_pods_have_no_diagnosis() -> None:
    ready = [{"name": "triton", "ready": True, "state": {"running": {}}}, {"name": "agent", "ready": True}]
    assert diagnose({"metadata": {"name": "m"}, "status": {}}, [pod(containers=ready)]) is None


def replica_failure(message: str) -> dict[str, Any]:
    return {
        "metadata": {"name": "m"},
        "status": {
            "conditions": [
                {"type": "Progressing", "status": "True", "reason": "ReplicaSetUpdated"},
                {"type": "ReplicaFailure", "status": "True", "reason": "FailedCreate", "message": message},
            ]
        },
    }


@pytest.mark.parametrize(
    ("message", "reason"),
    [
        (
            'pods "m-1-x" is forbidden: error looking up service account ns/robot: serviceaccount "robot" '
            "not found",
            "ServiceAccountNotFound",
        ),
        ('pods "m-1-x" is forbidden: no PriorityClass with name urgent was found', "PriorityClassNotFound"),
        (
            'pods "m-1-x" is forbidden: exceeded quota: compute, requested: requests.cpu=2, used: '
            "requests.cpu=8, limited: requests.cpu=8",
            "QuotaExceeded",
        ),
        ('pods "m-1-x" is forbidden: violates PodSecurity "restricted:latest"', "PodCreateForbidden"),
        ("Internal error occurred: failed calling webhook", "FailedCreate"),
    ],
)
def test_pods_that_cannot_be_created_name_the_precise_reason(message: str, reason: str) -> None:
    """The Deployment's ReplicaFailure (its ReplicaSet could not create a pod) with the API server's
    message, ranked above a later progress deadline: it says why nothing progresses."""
    dep = replica_failure(message)
    dep["status"]["conditions"][0] = {
        "type": "Progressing",
        "status": "False",
        "reason": "ProgressDeadlineExceeded",
        "message": 'ReplicaSet "m-1" has timed out progressing.',
    }
    d = diagnose(dep, [])
    assert d is not None and d.reason == reason
    assert d.message == f"deployment m cannot create pods: {message}"
    assert diagnose(replica_failure(message), []) == d


def test_a_resolved_replica_failure_is_no_failure() -> None:
    dep = replica_failure("x")
    dep["status"]["conditions"][1]["status"] = "False"
    assert diagnose(dep, []) is None


def test_progress_deadline_names_what_the_unready_pods_say() -> None:
    dep = {
        "metadata": {"name": "m"},
        "status": {"conditions": [{"type": "Progressing", "status": "False",
                                   "reason": "ProgressDeadlineExceeded", "message": "timed out"}]},
    }  # fmt: skip
    stuck = pod("m-2-new")
    stuck["status"]["conditions"] = [
        {"type": "Ready", "status": "False", "message": "containers with unready status: [agent]"}
    ]
    ready = pod("m-1-old")
    ready["status"]["conditions"] = [{"type": "Ready", "status": "True"}]
    d = diagnose(dep, [ready, stuck])
    assert d is not None and d.reason == "ProgressDeadlineExceeded"
    assert d.message == "deployment m: timed out; pod m-2-new: containers with unready status: [agent]"
