"""When the API server refuses a rendered child: is that the spec's fault, and which spec field?

The CRD rejects what it can at ``kubectl apply`` time; what still gets through (a value only the
child's own validation knows about, an admission webhook, a quota) comes back as an HTTP error when
the operator applies the child. A refusal that retrying cannot fix must end in ``Ready=False`` with
a message naming the spec field and the child, not in an endless silent retry.
"""

from __future__ import annotations

import re

from modeldeploy.reconcile.kube import KubeError

#: Words in a 500 response that mean "try again" (etcd or the API server struggling), as opposed to
#: a 500 about the request itself (e.g. server-side apply's "failed to create typed patch object").
_TRANSIENT_500 = (
    "timeout",
    "timed out",
    "deadline",
    "try again",
    "etcdserver",
    "connection refused",
    "connection reset",
    "unavailable",
    "too many requests",
    "storage is (re)initializing",
)

#: Child field path prefix (indices removed) -> the spec field it is rendered from; longest first.
_FIELD_MAP: dict[str, tuple[tuple[str, str], ...]] = {
    "Deployment": (
        ("spec.template.spec.affinity", "spec.scheduling.affinity"),
        ("spec.template.spec.tolerations", "spec.scheduling.tolerations"),
        ("spec.template.spec.topologySpreadConstraints", "spec.scheduling.topologySpreadConstraints"),
        ("spec.template.spec.nodeSelector", "spec.scheduling.nodeSelector"),
        ("spec.template.spec.priorityClassName", "spec.scheduling.priorityClassName"),
        ("spec.template.spec.serviceAccountName", "spec.serviceAccountName"),
        ("spec.template.spec.imagePullSecrets", "spec.server.imagePullSecrets"),
        ("spec.template.spec.containers.resources", "spec.resources"),
        ("spec.template.spec.containers", "spec.server"),
        ("spec.template.spec.initContainers", "spec.runtime"),
        ("spec.template.spec.volumes", "spec.server"),
        ("spec.template.metadata.labels", "spec.podLabels"),
        ("spec.template.metadata.annotations", "spec.podAnnotations"),
        ("spec.template.labels", "spec.podLabels"),  # how the API server names the template's metadata
        ("spec.template.annotations", "spec.podAnnotations"),
        ("spec.minReadySeconds", "spec.rollout.readinessGate.minReadySeconds"),
        ("spec.progressDeadlineSeconds", "spec.rollout.readinessGate.timeoutSeconds"),
        ("spec.strategy", "spec.rollout"),
        ("spec.replicas", "spec.replicas"),
    ),
    "HorizontalPodAutoscaler": (
        ("spec.behavior", "spec.autoscaling.cooldownSeconds"),
        ("spec.metrics", "spec.autoscaling.metric"),
        ("spec.minReplicas", "spec.autoscaling.minReplicas"),
        ("spec.maxReplicas", "spec.autoscaling.maxReplicas"),
    ),
    "ScaledObject": (
        ("spec.triggers", "spec.autoscaling.metric"),
        ("spec.cooldownPeriod", "spec.autoscaling.cooldownSeconds"),
        ("spec.advanced", "spec.autoscaling.cooldownSeconds"),
    ),
    "Service": (("spec.ports", "spec.server.ports"),),
    "ServiceMonitor": (("spec.endpoints", "spec.monitoring.interval"),),
}
#: Where to point when the message names no child field.
_DEFAULT_FIELD = {
    "Deployment": "spec",
    "HorizontalPodAutoscaler": "spec.autoscaling",
    "ScaledObject": "spec.autoscaling",
    "Service": "spec.server.ports",
    "ServiceMonitor": "spec.monitoring",
    "PodDisruptionBudget": "spec.replicas",
    "ConfigMap": "spec.models",
}
_PATH = re.compile(r"(?<![\w.])\.?((?:spec|metadata)(?:\.[A-Za-z0-9_-]+|\[[^\]]*\])+)")


def is_rejection(exc: KubeError) -> bool:
    """The API server refused the request itself: every 4xx except timeouts (408), conflicts (409)
    and rate limiting (429), and a 500 that is not about the server's own health."""
    if 400 <= exc.status < 500:
        return exc.status not in (408, 409, 429)
    if exc.status == 500:
        text = exc.message.lower()
        return not any(word in text for word in _TRANSIENT_500)
    return False


def is_permanent(exc: KubeError) -> bool:
    """A rejection that only a spec change can fix (invalid values), as opposed to one that may go
    away by itself (403 forbidden, e.g. a quota; 404, e.g. a namespace being deleted)."""
    return is_rejection(exc) and exc.status not in (403, 404)


def child_fields(message: str) -> list[str]:
    """The child field paths in an API server message (``spec.template.spec.affinity...``)."""
    return [m.group(1) for m in _PATH.finditer(message)]


def spec_field(kind: str, message: str) -> str:
    """The ModelDeployment spec field a child's refused field is rendered from: the first path in
    the message that maps to one, else the spec section the child is rendered from."""
    for path in child_fields(message):
        plain = re.sub(r"\[[^\]]*\]", "", path)
        for prefix, field in _FIELD_MAP.get(kind, ()):
            if plain == prefix or plain.startswith(prefix + "."):
                return field
    return _DEFAULT_FIELD.get(kind, "spec")


def describe(kind: str, name: str, exc: KubeError) -> str:
    """``<spec field>: the API server rejected <Kind> <name> (HTTP n): <its message>``."""
    return f"{spec_field(kind, exc.message)}: the API server rejected {kind} {name} (HTTP {exc.status}): {exc.message}"
