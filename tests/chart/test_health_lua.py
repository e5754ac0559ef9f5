"""The Argo CD health check over hand-written ModelDeployment statuses (Lua 5.1, as in Argo CD)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from .health_lua import HEALTH_LUA, argocd_health

REPO = Path(__file__).resolve().parents[2]


def md(generation: int = 2, status: dict[str, Any] | None = None) -> dict[str, Any]:
    obj: dict[str, Any] = {
        "apiVersion": "modeldeploy.io/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": "resnet", "namespace": "models", "generation": generation},
        "spec": {"models": [{"name": "resnet50"}]},
    }
    if status is not None:
        obj["status"] = status
    return obj


def cond(ctype: str, status: str, reason: str = "", message: str = "") -> dict[str, str]:
    c = {"type": ctype, "status": status, "lastTransitionTime": "2025-01-01T00:00:00Z"}
    if reason:
        c["reason"] = reason
    if message:
        c["message"] = message
    return c


READY = cond("Ready", "True", "AllModelsReady", "2/2 replicas serve every expected model version")
MODELS_READY = cond("ModelsReady", "True", "AllVersionsReady", "resnet50: v1, v2 ready")
NOT_PROGRESSING = cond("Progressing", "False", "RolloutComplete", "rollout complete")
NOT_DEGRADED = cond("Degraded", "False", "AsExpected")

CASES = [
    ("no status yet", md(1, None), "Progressing", "Waiting for the modeldeploy operator to report status"),
    (
        "generation not observed yet",
        md(3, {"observedGeneration": 2, "conditions": [READY, MODELS_READY, NOT_PROGRESSING, NOT_DEGRADED]}),
        "Progressing",
        "Waiting for the operator to observe generation 3 (observed 2)",
    ),
    (
        "status without observedGeneration",
        md(1, {"conditions": [READY]}),
        "Progressing",
        "Waiting for the operator to observe generation 1",
    ),
    (
        "ready and current",
        md(2, {"observedGeneration": 2, "conditions": [READY, MODELS_READY, NOT_PROGRESSING, NOT_DEGRADED]}),
        "Healthy",
        "2/2 replicas serve every expected model version",
    ),
    (
        "ready without a message",
        md(2, {"observedGeneration": 2, "conditions": [cond("Ready", "True")]}),
        "Healthy",
        "All models are ready",
    ),
    (
        "rolling a new model version while the old one serves",
        md(
            5,
            {
                "observedGeneration": 5,
                "conditions": [
                    READY,
                    cond("ModelsReady", "False", "Loading", "resnet50 v3: Loading"),
                    cond("Progressing", "True", "RollingUpdate", "1/2 replicas updated"),
                    NOT_DEGRADED,
                ],
            },
        ),
        "Progressing",
        "1/2 replicas updated",
    ),
    (
        "first rollout, nothing ready yet",
        md(
            1,
            {
                "observedGeneration": 1,
                "conditions": [
                    cond("Ready", "False", "ModelsLoading", "0/1 replicas ready"),
                    cond("Progressing", "True", "NewReplicaSet", ""),
                ],
            },
        ),
        "Progressing",
        "NewReplicaSet",
    ),
    (
        "degraded: a model version failed to load",
        md(
            4,
            {
                "observedGeneration": 4,
                "conditions": [
                    cond("Ready", "False", "ModelFailed", "resnet50 v2 failed"),
                    cond("ModelsReady", "False", "ModelFailed", "resnet50 v2: Failed"),
                    cond("Progressing", "True", "RollingUpdate", "waiting"),
                    cond("Degraded", "True", "ModelFailed", "resnet50 v2: failed to load: invalid model.pt"),
                ],
            },
        ),
        "Degraded",
        "resnet50 v2: failed to load: invalid model.pt",
    ),
    (
        "degraded wins even while ready",
        md(
            2,
            {
                "observedGeneration": 2,
                "conditions": [
                    READY,
                    cond("Degraded", "True", "ReplicaUnavailable", "1/3 replicas unavailable"),
                ],
            },
        ),
        "Degraded",
        "1/3 replicas unavailable",
    ),
    (
        "degraded without message falls back to the reason",
        md(2, {"observedGeneration": 2, "conditions": [cond("Degraded", "True", "InvalidSpec")]}),
        "Degraded",
        "InvalidSpec",
    ),
    (
        "not ready and no longer progressing",
        md(
            2,
            {
                "observedGeneration": 2,
                "conditions": [
                    cond(
                        "Ready", "False", "ProgressDeadlineExceeded", "replicas did not become ready in 600s"
                    ),
                    cond("Progressing", "False", "ProgressDeadlineExceeded", "deadline exceeded"),
                ],
            },
        ),
        "Degraded",
        "replicas did not become ready in 600s",
    ),
    (
        "kstatus Stalled",
        md(
            2,
            {
                "observedGeneration": 2,
                "conditions": [cond("Stalled", "True", "InvalidSpec", "bad source URL")],
            },
        ),
        "Degraded",
        "bad source URL",
    ),
    (
        "kstatus Reconciling",
        md(
            2,
            {
                "observedGeneration": 2,
                "conditions": [cond("Reconciling", "True", "Scaling", "scaling 1 -> 3")],
            },
        ),
        "Progressing",
        "scaling 1 -> 3",
    ),
    (
        "status with no conditions",
        md(1, {"observedGeneration": 1}),
        "Progressing",
        "Waiting for the models to become ready",
    ),
    (
        "Ready Unknown",
        md(
            1,
            {"observedGeneration": 1, "conditions": [cond("Ready", "Unknown", "Reconciling", "reconciling")]},
        ),
        "Progressing",
        "reconciling",
    ),
]


@pytest.mark.parametrize(("obj", "status", "message"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_health(obj: dict[str, Any], status: str, message: str) -> None:
    assert argocd_health(obj) == {"status": status, "message": message}


def test_script_is_lua51_and_sandbox_safe() -> None:
    src = HEALTH_LUA.read_text()
    for forbidden in ("goto ", "//", "require", "os.", "io.", "<const>", "<close>"):
        assert forbidden not in src.replace("-- ", ""), forbidden
    assert src.rstrip().endswith("return hs")


def test_interpreter_can_fail() -> None:
    """The harness really runs Lua 5.1: a 5.3 integer division is a syntax error there."""
    with pytest.raises(Exception, match=r"unexpected symbol|syntax"):
        argocd_health(md(), "local x = 3 // 2\nreturn {status='Healthy'}")


def test_docs_snippet_matches_the_script() -> None:
    """docs/gitops.md ships the script as the argocd-cm resource.customizations snippet, verbatim
    (indented); so does examples/gitops/argocd/argocd-cm-health.yaml."""
    script = HEALTH_LUA.read_text()
    for doc in (
        REPO / "docs" / "gitops.md",
        REPO / "examples" / "gitops" / "argocd" / "argocd-cm-health.yaml",
    ):
        text = doc.read_text()
        m = re.search(r"modeldeploy\.io_ModelDeployment: \|\n((?:(?: {4,}.*)?\n)+)", text)
        assert m, f"{doc}: no resource.customizations.health.modeldeploy.io_ModelDeployment block"
        block = m.group(1)
        indent = len(block) - len(block.lstrip(" "))
        lines = [ln[indent:] if ln.strip() else "" for ln in block.splitlines()]
        assert "\n".join(lines).strip() + "\n" == script, (
            f"{doc}: the embedded health check differs from {HEALTH_LUA}"
        )
