"""Names, labels, owner references and small helpers shared by every render function.

Render functions are pure: a parsed :class:`ModelDeployment` (plus :class:`RenderOptions`) in, plain
dicts out, exactly the bodies the operator server-side-applies. Nothing here talks to the cluster.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from typing import Any

from modeldeploy import __version__
from modeldeploy.api.v1alpha1 import API_VERSION, KIND, ModelDeployment, operator_rule_errors
from modeldeploy_runtime.pushsign import owner_id

FIELD_MANAGER = "modeldeploy-operator"
#: Label on every child (and every pod): the name of the owning ModelDeployment.
OWNER_LABEL = "modeldeploy.io/deployment"
MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
COMPONENT_LABEL = "app.kubernetes.io/component"
MANAGED_BY = FIELD_MANAGER
#: Annotation on every child: a hash of the body we applied (detects fields we stopped rendering).
APPLIED_HASH_ANNOTATION = "modeldeploy.io/applied-hash"
#: Pod-template annotation (rolling strategy only): hash of the model manifest.
MANIFEST_HASH_ANNOTATION = "modeldeploy.io/manifest-hash"
#: On the in-place manifest ConfigMap: when its manifest last changed (RFC 3339, whole seconds; set
#: by the reconciler, reconcile/reconciler.py ``stamp_manifest_changed``). A rewrite of the
#: ConfigMap for another reason (a new push key beside the manifest) keeps it, so the propagation
#: window and the load timeout count from the manifest's change, not from the last write.
MANIFEST_CHANGED_ANNOTATION = "modeldeploy.io/manifest-changed"
MANIFEST_MOUNT_DIR = "/etc/modeldeploy"
MODEL_REPOSITORY = "/models"
CREDENTIALS_MOUNT_ROOT = "/var/run/secrets/modeldeploy"

SERVICEMONITOR_CRD = "servicemonitors.monitoring.coreos.com"
SCALEDOBJECT_CRD = "scaledobjects.keda.sh"
HTTPSCALEDOBJECT_CRD = "httpscaledobjects.http.keda.sh"
#: The KEDA HTTP add-on's interceptor proxy Service (its Helm chart's default name and port).
DEFAULT_KEDA_INTERCEPTOR = "keda-add-ons-http-interceptor-proxy.keda.svc.cluster.local:8080"
#: Note reason while the Service is routed through the interceptor (the status reads it).
ROUTED_NOTE = "ScaleFromZeroOnRequest"

_DNS1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")


class RenderError(ValueError):
    """The object is valid for the CRD but cannot be rendered (e.g. a name Services reject).

    ``field`` names the offending field (``metadata.name``, ``spec.…``)."""

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        super().__init__(f"{field}: {message}")


@dataclass(frozen=True)
class Note:
    """Something the renderer left out, reported in the status (``degraded``: Degraded=True)."""

    reason: str
    message: str
    degraded: bool = False


@dataclass(frozen=True)
class RenderOptions:
    """What the renderer needs to know about the cluster and the live state."""

    #: CRDs available in the cluster (names like ``servicemonitors.monitoring.coreos.com``).
    #: ``None`` means "assume everything is installed" (``mdctl render``).
    crds: frozenset[str] | None = None
    #: ``generation`` written into the model manifest (default: the ModelDeployment's generation).
    manifest_generation: int | None = None
    #: The operator's namespace: the only one whose pods may reach the agent port (NetworkPolicy).
    operator_namespace: str = "modeldeploy-system"
    #: ``host:port`` of the KEDA HTTP add-on's interceptor proxy Service (operator config).
    keda_interceptor: str = DEFAULT_KEDA_INTERCEPTOR
    #: Names of the namespace's live ModelDeployments whose ``spec.cache`` names the same claim
    #: (the operator lists them for a ModelDeployment with ``spec.cache.maxSize``); ``None``:
    #: unknown (``mdctl render``), then no sharers ConfigMap is rendered and no refs are removed.
    cache_sharers: tuple[str, ...] | None = None
    #: The operator's manifest-push public key (PEM, not secret: reconcile/pushkey.py), written into
    #: the in-place manifest ConfigMap beside the manifest. Never in a pod template, so a new key
    #: rewrites ConfigMaps but rolls no pods. Empty (``mdctl render``): the agents refuse pushes.
    push_public_key: str = ""
    #: Extra notes gathered while rendering (e.g. "ServiceMonitor CRD not installed").
    notes: list[Note] = field(default_factory=list, compare=False)

    def has_crd(self, name: str) -> bool:
        return self.crds is None or name in self.crds

    @property
    def interceptor_host(self) -> str:
        return self.keda_interceptor.rpartition(":")[0] or self.keda_interceptor

    @property
    def interceptor_port(self) -> int:
        host, _, port = self.keda_interceptor.rpartition(":")
        return int(port) if host and port.isdigit() else 8080

    @property
    def interceptor_namespace(self) -> str:
        """``<service>.<namespace>.svc...``: the namespace (the NetworkPolicy lets it reach http)."""
        parts = self.interceptor_host.split(".")
        return parts[1] if len(parts) > 1 else "keda"


def wants_http_addon(md: ModelDeployment) -> bool:
    """``autoscaling.mode: keda`` with ``minReplicas: 0``: requests must be able to wake it."""
    a = md.spec.autoscaling
    return a is not None and a.mode == "keda" and a.minReplicas == 0


def uses_http_addon(md: ModelDeployment, opts: RenderOptions) -> bool:
    """Whether scaling from zero is handed to the HTTP add-on (wanted and its CRD installed): then
    the Service is routed through the add-on's interceptor."""
    return wants_http_addon(md) and opts.has_crd(HTTPSCALEDOBJECT_CRD)


def check_interceptor(opts: RenderOptions) -> None:
    """The operator's interceptor setting names a Service (``host:port``)."""
    host, _, port = opts.keda_interceptor.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise RenderError(
            "spec.autoscaling",
            f"the operator's KEDA interceptor setting {opts.keda_interceptor!r} is not host:port",
        )


def check_names(md: ModelDeployment) -> None:
    """Names must fit every child (the Service name is a DNS-1035 label: <= 63 chars, no dots), and
    the spec must keep the rules the CRD cannot check (``__operator_rules__``: requests <= limits,
    a CPU request for CPU autoscaling)."""
    name = md.name
    if not name:
        raise RenderError("metadata.name", "is required")
    if len(name) > 63 or not _DNS1035.match(name):
        raise RenderError(
            "metadata.name",
            f"{name!r} must be a DNS-1035 label (lowercase letters, digits and '-', starting with a "
            "letter, at most 63 characters): it names the Service of the Triton pods",
        )
    check_keys(md)
    # Rules the CRD cannot check (they compare number-or-string quantities): the first broken one.
    problems = operator_rule_errors(md.spec)
    if problems:
        raise RenderError(*problems[0])


_QUALIFIED_NAME = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]{0,61})?[A-Za-z0-9]$")
_PREFIX = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


def key_problem(key: str) -> str | None:
    """Why ``key`` is not a valid label/annotation key (``[prefix/]name``), or None."""
    prefix, _, name = key.rpartition("/")
    if prefix and (len(prefix) > 253 or not _PREFIX.match(prefix)):
        return "the prefix must be a DNS subdomain"
    if not name or len(name) > 63 or not _QUALIFIED_NAME.match(name):
        return "the name must be at most 63 characters: letters, digits, '-', '_' or '.', starting and ending alphanumeric"
    return None


def check_keys(md: ModelDeployment) -> None:
    """Label/annotation keys: the CRD cannot validate map keys, the API server rejects bad ones."""
    spec = md.spec
    maps = {
        "spec.podLabels": spec.podLabels,
        "spec.podAnnotations": spec.podAnnotations,
        "spec.monitoring.labels": spec.monitoring.labels,
        "spec.scheduling.nodeSelector": spec.scheduling.nodeSelector,
    }
    for path, m in maps.items():
        for k in m or {}:
            why = key_problem(k)
            if why:
                raise RenderError(f"{path}[{k!r}]", f"invalid key: {why}")


def selector_labels(md: ModelDeployment) -> dict[str, str]:
    """The pods' selector (immutable in the Deployment: never add keys here)."""
    return {"app.kubernetes.io/name": "triton", OWNER_LABEL: md.name}


def selector_string(md: ModelDeployment) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted(selector_labels(md).items()))


def common_labels(md: ModelDeployment, component: str = "inference-server") -> dict[str, str]:
    return {
        "app.kubernetes.io/name": "triton",
        "app.kubernetes.io/instance": md.name,
        COMPONENT_LABEL: component,
        "app.kubernetes.io/part-of": "modeldeploy",
        MANAGED_BY_LABEL: MANAGED_BY,
        "app.kubernetes.io/version": __version__,
        OWNER_LABEL: md.name,
    }


def owner_reference(md: ModelDeployment) -> dict[str, Any]:
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "name": md.name,
        "uid": str(md.metadata.get("uid", "")),
        "controller": True,
        "blockOwnerDeletion": True,
    }


def push_owner(md: ModelDeployment) -> str:
    """The identity the operator's manifest pushes to ``md``'s agents are signed for (the agent
    container's ``MODELDEPLOY_OWNER``): namespace, name and uid, so a push for one object is no
    good for another, nor for a later object of the same name."""
    return owner_id(md.namespace, md.name, str(md.metadata.get("uid", "")))


def metadata(
    md: ModelDeployment,
    name: str,
    *,
    component: str = "inference-server",
    labels: dict[str, str] | None = None,
) -> dict[str, Any]:
    meta: dict[str, Any] = {
        "name": name,
        "namespace": md.namespace,
        "labels": {**common_labels(md, component), **(labels or {})},
        "ownerReferences": [owner_reference(md)],
    }
    return meta


def configmap_name(md: ModelDeployment) -> str:
    return f"{md.name}-models"


def stable_hash(obj: Any, length: int = 16) -> str:
    data = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(data.encode()).hexdigest()[:length]


def with_applied_hash(obj: dict[str, Any]) -> dict[str, Any]:
    """Stamp ``obj`` with the hash of its own body (annotation ``modeldeploy.io/applied-hash``)."""
    body: dict[str, Any] = json.loads(json.dumps(obj))
    body.setdefault("metadata", {}).setdefault("annotations", {}).pop(APPLIED_HASH_ANNOTATION, None)
    h = stable_hash(body)
    body["metadata"]["annotations"][APPLIED_HASH_ANNOTATION] = h
    return body


def quantity_str(q: int | str) -> str:
    return str(q)


#: The non-root uid/gid every rendered pod runs as.
RUN_AS_USER = 1000


def pod_security() -> dict[str, Any]:
    """The pod-level securityContext of every pod we render (PodSecurity ``restricted``)."""
    return {
        "runAsNonRoot": True,
        "runAsUser": RUN_AS_USER,
        "runAsGroup": RUN_AS_USER,
        "fsGroup": RUN_AS_USER,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def container_security(read_only_root: bool = False) -> dict[str, Any]:
    """The securityContext of every container we render (PodSecurity ``restricted``)."""
    ctx: dict[str, Any] = {
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
        "runAsNonRoot": True,
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    if read_only_root:
        ctx["readOnlyRootFilesystem"] = True
    return ctx


def credential_secrets(md: ModelDeployment) -> list[str]:
    """The storage-credential Secrets the models name, each once, in spec order (mounted by
    reference into the containers that fetch)."""
    names: list[str] = []
    for m in md.spec.models:
        if m.credentials is not None and m.credentials.secretName not in names:
            names.append(m.credentials.secretName)
    return names
