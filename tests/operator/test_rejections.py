"""Which API server refusals of a child are the spec's fault, and which spec field they point at."""

from __future__ import annotations

import pytest

from modeldeploy.reconcile.kube import KubeError
from modeldeploy.reconcile.rejections import describe, is_permanent, is_rejection, spec_field

#: Server-side apply of a Deployment whose pod template has a key unknown to the schema (what a
#: misspelt key in a free-form affinity used to produce).
TYPED_PATCH_500 = (
    "failed to create typed patch object (/v1, Kind=Deployment) apps/v1, Kind=Deployment: "
    ".spec.template.spec.affinity.nodeAffinity.requiredDuringScheduling: field not declared in schema"
)
HPA_422 = (
    'HorizontalPodAutoscaler.autoscaling "m" is invalid: spec.behavior.scaleDown.stabilizationWindowSeconds: '
    "Invalid value: 7200: must be less than or equal to 3600"
)


@pytest.mark.parametrize(
    ("status", "message", "rejected", "permanent"),
    [
        (422, HPA_422, True, True),
        (400, "bad request", True, True),
        (500, TYPED_PATCH_500, True, True),
        (403, "exceeded quota: q, requested: count/horizontalpodautoscalers.autoscaling=1", True, False),
        (404, 'namespaces "x" not found', True, False),
        (409, "the object has been modified", False, False),
        (429, "too many requests", False, False),
        (408, "request timeout", False, False),
        (500, "etcdserver: request timed out", False, False),
        (503, "the server is currently unable to handle the request", False, False),
        (0, "connection refused", False, False),
    ],
)
def test_classification(status: int, message: str, rejected: bool, permanent: bool) -> None:
    exc = KubeError(status, "PATCH", "/x", message)
    assert is_rejection(exc) is rejected
    assert is_permanent(exc) is permanent


@pytest.mark.parametrize(
    ("kind", "message", "field"),
    [
        ("Deployment", TYPED_PATCH_500, "spec.scheduling.affinity"),
        ("HorizontalPodAutoscaler", HPA_422, "spec.autoscaling.cooldownSeconds"),
        (
            "Deployment",
            'Deployment.apps "m" is invalid: spec.template.spec.containers[0].resources.requests: Invalid value',
            "spec.resources",
        ),
        (
            "Deployment",
            'Deployment.apps "m" is invalid: metadata.annotations: Too long: must have at most 262144 bytes, '
            "spec.template.metadata.annotations: Too long: must have at most 262144 bytes",
            "spec.podAnnotations",  # the first path that maps to a spec field
        ),
        ("Deployment", "spec.template.metadata.annotations: Too long", "spec.podAnnotations"),
        (
            "Deployment",
            'Deployment.apps "m" is invalid: spec.template.annotations: Too long: may not be more than 262144 bytes',
            "spec.podAnnotations",
        ),
        ("HorizontalPodAutoscaler", "admission webhook denied the request", "spec.autoscaling"),
        ("ScaledObject", "spec.triggers[0].metadata: bad", "spec.autoscaling.metric"),
        ("Service", "spec.ports[1].port: Duplicate value", "spec.server.ports"),
    ],
)
def test_spec_field(kind: str, message: str, field: str) -> None:
    assert spec_field(kind, message) == field


def test_describe_names_field_child_and_message() -> None:
    text = describe("HorizontalPodAutoscaler", "m", KubeError(422, "PATCH", "/x", HPA_422))
    assert text.startswith(
        "spec.autoscaling.cooldownSeconds: the API server rejected HorizontalPodAutoscaler m"
    )
    assert "HTTP 422" in text and "must be less than or equal to 3600" in text
