"""The reconciler: render, compare with live, apply what differs, delete what is no longer wanted,
compute and (only when it changed) write the status. Blocking; called from kopf's sync handlers.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import socket
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from modeldeploy import metrics
from modeldeploy.api.v1alpha1 import API_VERSION, KIND, ModelDeployment, ModelDeploymentSpec, SpecError
from modeldeploy.reconcile import agents
from modeldeploy.reconcile.cache import OWNED, PART_OF, crd_established
from modeldeploy.reconcile.cache_status import cache_status, new_corrupt_entries
from modeldeploy.reconcile.diagnose import Diagnosis, diagnose
from modeldeploy.reconcile.diff import in_effect
from modeldeploy.reconcile.kube import (
    BY_KIND,
    CONFIGMAP,
    CRD,
    DEPLOYMENT,
    EVENT,
    JOB,
    MODELDEPLOYMENT,
    POD,
    REPLICASET,
    Kube,
    KubeError,
)
from modeldeploy.reconcile.provenance import add_provenance
from modeldeploy.reconcile.rejections import describe, is_permanent, is_rejection
from modeldeploy.reconcile.status import (
    AgentReport,
    awaiting_count,
    compute_status,
    invalid_status,
    now_rfc3339,
    status_patch,
    urgent_change,
    visible_progress,
)
from modeldeploy.render import RenderOptions, child_kind, child_name, render_children
from modeldeploy.render.common import (
    COMPONENT_LABEL,
    DEFAULT_KEDA_INTERCEPTOR,
    FIELD_MANAGER,
    MANIFEST_CHANGED_ANNOTATION,
    OWNER_LABEL,
    ROUTED_NOTE,
    SCALEDOBJECT_CRD,
    SERVICEMONITOR_CRD,
    RenderError,
    check_names,
    selector_string,
)
from modeldeploy.render.httpscaledobject import HTTPSCALEDOBJECT_CRD
from modeldeploy.render.manifest import carries_push_key, manifest_configmap_name
from modeldeploy.render.prefetch import prefetch_job_name
from modeldeploy_runtime.manifest import MANIFEST_KEY, ModelManifest
from modeldeploy_runtime.pushsign import PushSigner

log = logging.getLogger("modeldeploy.reconcile")

#: Child kinds that need a CRD (skipped when it is not installed).
KIND_CRD = {
    "ScaledObject": SCALEDOBJECT_CRD,
    "HTTPScaledObject": HTTPSCALEDOBJECT_CRD,
    "ServiceMonitor": SERVICEMONITOR_CRD,
}
CRD_NAMES = tuple(KIND_CRD.values())
#: Field manager that holds spec.replicas between us and the autoscaler.
HANDOVER_MANAGER = "modeldeploy-operator-handover"
#: A scheduled refresh runs this long after the transition is due (so that it is past, not at, it).
DUE_SLACK_SECONDS = 0.25
#: Parsed specs kept (the most recently used objects'), at most (about 9 KB each). With 64, a
#: burst of 300 parsed a spec again in most of its status refreshes (#12: a tenth of the
#: operator's CPU). With 2,048 (every object of a burst of 1,000), RSS after deleting the 1,000
#: stayed 34.3 MiB over idle (the target is 30; 24.5 with 64): the specs' small objects, allocated
#: all through the burst, pin the allocator's arenas.
SPEC_CACHE = 256
#: A parsed spec not used for this long goes at the next parse (so at idle, with the resync every
#: 30 s, the cache empties instead of holding a spec per object for good beside the stores).
SPEC_IDLE_SECONDS = 20.0
#: The children on the way to running pods (#12, staged creates): what a pod mounts or needs
#: before it starts (the cache sharers and prefetch Job, the manifest ConfigMap, the
#: NetworkPolicy that fences it) and the Deployment itself.
POD_PATH_KINDS = frozenset({"CacheSharers", "Job", "ConfigMap", "NetworkPolicy", "Deployment"})
OPTIONAL_KINDS = (
    "BackendService",
    "HorizontalPodAutoscaler",
    "ScaledObject",
    "HTTPScaledObject",
    "PodDisruptionBudget",
    "ServiceMonitor",
    "NetworkPolicy",
)


class InvalidSpec(Exception):
    """The spec cannot be acted on; the status says why. Not retried until the spec changes."""


class ApplyRejected(Exception):
    """The API server rejected a rendered child (HTTP 4xx other than conflicts)."""


@dataclass
class OperatorConfig:
    resync_seconds: float = 30.0
    #: The work queue's worker threads: reconciles of different objects in parallel up to this.
    workers: int = 16
    #: Of those, how many may run resync-only reconciles at once (a pass marks every object; more in
    #: parallel would only take the CPU from the watches and the status refreshes).
    resync_workers: int = 2
    #: Besides them, threads that run status refreshes only (the status lag): a refresh is a little
    #: CPU and one status PATCH, so these mostly wait on the API server; when a batch of Deployments
    #: turns Available at once, their number bounds how many Ready=True writes are in flight.
    status_workers: int = 8
    #: Talk to each pod's runtime agent over the pod IP: read its /status (the per-version truth in
    #: the status) and push changed manifests to it (reconcile/agents.py). Needs pod IPs reachable.
    query_agents: bool = True
    status_debounce_seconds: float = 0.3
    #: A child changed by someone else (seen through the watches): reconcile its owner this soon.
    repair_debounce_seconds: float = 0.2
    post_events: bool = True
    #: Status writes per object (status.urgent_change, status.visible_progress): the first status of
    #: a generation, condition flips (Ready, Degraded, ...), served versions and new corrupt cache
    #: entries are written at once; a change of any condition's reason or of the READY/VERSIONS
    #: columns at most ``status_progress_seconds`` after the last write; other detail (messages,
    #: replica/updated counts) at most once per ``status_detail_seconds``, or with the next write
    #: that is due anyway. A held-back change has a refresh scheduled for when it is due. 0 and 0:
    #: every change at once.
    status_progress_seconds: float = 5.0
    status_detail_seconds: float = 30.0
    #: progress is written once it has lasted this long (at most status_progress_seconds), so a
    #: state that the next moment replaces (Ready coming) costs no write of its own. As long as the
    #: progress interval: under load the Deployment counts a Ready pod available seconds later
    #: (1 s let a third status write through for most objects at N = 1,000), and a reader still
    #: sees every lasting change within the progress interval.
    status_settle_seconds: float = 5.0
    #: Staged creates (#12): a ModelDeployment created while the work queue holds more runs than
    #: there are workers (a burst) gets the children on its pods' path first (POD_PATH_KINDS); the
    #: rest (Services, PDB, autoscalers, ServiceMonitor) and its first status follow in a run of
    #: its own this much later, behind the burst's other creates, so every Deployment is written
    #: (and its pods start) before the children nobody waits for. 0: no staging.
    stage_seconds: float = 5.0
    crd_cache_seconds: float = 30.0
    #: Namespaces in scope (exact names or globs); empty: all.
    namespaces: list[str] = field(default_factory=list)
    #: In-place rollouts: pods see a changed manifest only after the kubelet syncs the ConfigMap
    #: volume (up to about a minute), so for this long after a change their readiness does not yet
    #: prove the new versions are served. 0 disables the window.
    manifest_sync_seconds: float = 90.0
    #: Where the operator runs: the NetworkPolicies let only this namespace reach the agent port.
    operator_namespace: str = "modeldeploy-system"
    #: ``host:port`` of the KEDA HTTP add-on's interceptor proxy Service: with autoscaling.mode keda
    #: and minReplicas 0 the ModelDeployment's Service becomes an ExternalName alias of it.
    keda_interceptor: str = DEFAULT_KEDA_INTERCEPTOR

    @classmethod
    def from_env(cls) -> OperatorConfig:
        return cls(
            resync_seconds=float(os.environ.get("MODELDEPLOY_RESYNC_SECONDS", "30")),
            workers=int(os.environ.get("MODELDEPLOY_WORKERS", "16")),
            status_workers=int(os.environ.get("MODELDEPLOY_STATUS_WORKERS", "8")),
            namespaces=[n for n in os.environ.get("MODELDEPLOY_NAMESPACES", "").split(",") if n],
            query_agents=os.environ.get("MODELDEPLOY_QUERY_AGENTS", "true") not in ("0", "false", "no"),
            manifest_sync_seconds=float(os.environ.get("MODELDEPLOY_MANIFEST_SYNC_SECONDS", "90")),
            status_progress_seconds=float(os.environ.get("MODELDEPLOY_STATUS_PROGRESS_SECONDS", "5")),
            status_detail_seconds=float(os.environ.get("MODELDEPLOY_STATUS_DETAIL_SECONDS", "30")),
            stage_seconds=float(os.environ.get("MODELDEPLOY_STAGE_SECONDS", "5")),
            operator_namespace=os.environ.get("POD_NAMESPACE") or "modeldeploy-system",
            keda_interceptor=os.environ.get("MODELDEPLOY_KEDA_INTERCEPTOR") or DEFAULT_KEDA_INTERCEPTOR,
        )


@dataclass
class Outcome:
    changes: list[str] = field(default_factory=list)
    status_written: bool = False


def parse_time(value: Any) -> dt.datetime | None:
    """An RFC 3339 timestamp from the API (``2026-01-01T00:00:00Z``), or None."""
    if not value:
        return None
    try:
        return dt.datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return None


def _manifest_state(cm: dict[str, Any] | None) -> tuple[int | None, float | None]:
    """The generation of the manifest in ``cm`` and its age in seconds (since it last changed:
    :func:`manifest_changed_time`)."""
    live = _manifest_models(cm)
    changed = manifest_changed_time(cm)
    age = (dt.datetime.now(dt.UTC) - changed).total_seconds() if changed is not None else None
    return (live[1] if live else None), age


def propagation_window(
    changed: dt.datetime,
    created: dt.datetime | None,
    now: dt.datetime,
    window: float,
    started: list[dt.datetime | None],
) -> tuple[str | None, float | None]:
    """Why pods may still serve the manifest from before its last change (or None), and the
    seconds left of the ``window``. ``changed``: our last write of the manifest ConfigMap;
    ``created``: when the ConfigMap was created (a change in its creation second has no older
    content a pod could have read: a pod does not start before its ConfigMap volume exists);
    ``started``: the pods' start times. A pod may have read the old manifest if it started no later
    than the change: the API server's times have whole seconds only, so a pod started in the same
    second as the change counts as old (saying "propagating" a few seconds too long is safe; saying
    Ready before the pod has the new versions is not)."""
    age = (now - changed).total_seconds()
    if age >= window or (created is not None and changed <= created):
        return None, None
    if not any(t is not None and t <= changed for t in started):
        return None, None
    why = (
        f"the model manifest changed {age:.0f}s ago; pods started before that serve the new versions "
        f"only once the kubelet has synced the ConfigMap volume (allowing {window:.0f}s)"
    )
    return why, window - age


def _rfc3339(t: dt.datetime) -> str:
    return t.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def same_manifest(live: dict[str, Any] | None, desired: dict[str, Any]) -> bool:
    """Whether the live manifest ConfigMap already holds ``desired``'s manifest (whatever else
    changed beside it: labels, the push key)."""
    return live is not None and (live.get("data") or {}).get(MANIFEST_KEY) == (desired.get("data") or {}).get(
        MANIFEST_KEY
    )


def stamp_manifest_changed(
    desired: dict[str, Any], live: dict[str, Any] | None, now: dt.datetime
) -> dict[str, Any]:
    """The in-place manifest ConfigMap ``desired`` with MANIFEST_CHANGED_ANNOTATION: kept from
    ``live`` while its manifest is the same (a rewrite for the push key only is no manifest change:
    pods keep proving the versions they serve), ``now`` when the manifest is new or changed. A
    ConfigMap written before the annotation existed counts from our last write of it."""
    same = same_manifest(live, desired)
    have = ((live or {}).get("metadata", {}).get("annotations") or {}).get(MANIFEST_CHANGED_ANNOTATION)
    if same and have:
        stamp = str(have)
    else:
        written = manager_write_time(live, FIELD_MANAGER) if same else None
        stamp = _rfc3339(written or now)
    out = dict(desired)
    meta = out["metadata"] = dict(out["metadata"])
    meta["annotations"] = {**(meta.get("annotations") or {}), MANIFEST_CHANGED_ANNOTATION: stamp}
    return out


def manifest_changed_time(cm: dict[str, Any] | None) -> dt.datetime | None:
    """When the manifest in ``cm`` last changed: its MANIFEST_CHANGED_ANNOTATION, or (a ConfigMap
    from before it) our field manager's last write."""
    stamp = ((cm or {}).get("metadata", {}).get("annotations") or {}).get(MANIFEST_CHANGED_ANNOTATION)
    return parse_time(stamp) or manager_write_time(cm, FIELD_MANAGER)


def manager_write_time(obj: dict[str, Any] | None, manager: str) -> dt.datetime | None:
    """When ``manager`` last changed ``obj`` (its managedFields entry, main resource only)."""
    times = [
        parse_time(mf.get("time"))
        for mf in (obj or {}).get("metadata", {}).get("managedFields") or []
        if mf.get("manager") == manager and not mf.get("subresource")
    ]
    found = [t for t in times if t is not None]
    return max(found) if found else None


def owned_by(obj: dict[str, Any], uid: str) -> bool:
    return any(r.get("uid") == uid for r in obj.get("metadata", {}).get("ownerReferences") or [])


def _manifest_models(cm: dict[str, Any] | None) -> tuple[Any, int] | None:
    if not cm:
        return None
    try:
        m = ModelManifest.from_json((cm.get("data") or {}).get(MANIFEST_KEY, ""))
    except Exception:
        return None
    return [x.model_dump(mode="json") for x in m.models], m.generation


@dataclass
class _Pass:
    """The state of one reconcile pass over the children."""

    md: ModelDeployment
    body: dict[str, Any]
    key: str
    live_cm: dict[str, Any] | None
    manifest_generation: int | None
    outcome: Outcome = field(default_factory=Outcome)
    live_dep: dict[str, Any] | None = None
    scaled: tuple[Any, Any] | None = None

    @property
    def uid(self) -> str:
        return str(self.body["metadata"].get("uid", ""))

    def note_deployment(
        self, live: dict[str, Any] | None, new: dict[str, Any], desired: dict[str, Any]
    ) -> None:
        self.live_dep = new
        if live is None:
            return
        old_r = (live.get("spec") or {}).get("replicas")
        new_r = (desired.get("spec") or {}).get("replicas")
        if new_r is not None and old_r != new_r:
            self.scaled = (old_r, new_r)


def _manifest_generation(md: ModelDeployment, live_cm: dict[str, Any] | None) -> int:
    """The generation to write into the manifest: the live one while the model set is unchanged (no
    ConfigMap write, and an immutable rolling revision stays as it is), else the spec's."""
    prev = _manifest_models(live_cm)
    if prev is not None and prev[0] == [x.model_dump(mode="json") for x in _render_manifest_models(md)]:
        return int(prev[1])
    return md.generation


def pod_selector(md: ModelDeployment) -> str:
    """The model pods (the Deployment's selector), with the label the pod cache is kept by."""
    return f"{selector_string(md)},{PART_OF}"


def mounted_configmaps(replicasets: list[dict[str, Any]]) -> set[str]:
    """ConfigMaps mounted by the pod templates of the ReplicaSets that have (or want) pods."""
    out: set[str] = set()
    for rs in replicasets:
        want = (rs.get("spec") or {}).get("replicas") or 0
        have = (rs.get("status") or {}).get("replicas") or 0
        if not want and not have:
            continue
        for vol in ((rs.get("spec") or {}).get("template") or {}).get("spec", {}).get("volumes") or []:
            if vol.get("configMap", {}).get("name"):
                out.add(vol["configMap"]["name"])
    return out


class _KeyLock:
    __slots__ = ("lock", "users")

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.users = 0


class Reconciler:
    def __init__(
        self, kube: Kube, config: OperatorConfig | None = None, signer: PushSigner | None = None
    ) -> None:
        self.kube = kube
        self.config = config or OperatorConfig()
        #: the operator's manifest-push key (reconcile/pushkey.py, obtained once at startup; a key of
        #: this object only when none is given): pushes are signed with it, its public half goes
        #: into the in-place manifest ConfigMaps
        self.signer = signer or PushSigner.generate()
        #: per ModelDeployment being worked on: its lock and how many threads hold or wait for it
        self._locks: dict[str, _KeyLock] = {}
        self._locks_guard = threading.Lock()
        self._crds: tuple[float, frozenset[str]] | None = None
        #: per ModelDeployment: optional child kinds known to be absent (skip GETs on resync)
        self._absent: dict[str, set[str]] = {}
        #: per ModelDeployment: the generation whose spec was found invalid
        self._invalid: dict[str, int] = {}
        #: per ModelDeployment: the generation one of whose children the API server refused (403/404:
        #: may pass later, so resyncs retry; the status keeps saying why meanwhile)
        self._rejected: dict[str, int] = {}
        #: per ModelDeployment: (uid, generation) of the last pass that brought every child to that
        #: generation's rendered state. A body older than it is stale (a resync's listed copy, say):
        #: never applied; and the status claims a generation only once it is here.
        self._applied: dict[str, tuple[str, int]] = {}
        #: per ModelDeployment: when (``clock``) this operator last wrote its status
        self._status_at: dict[str, float] = {}
        #: the established CRDs whose kinds' stores were last started (crds())
        self._crds_watched: frozenset[str] | None = None
        #: key -> when a reconcile not of the resync last finished (see :meth:`reconciled_within`)
        self._event_reconciled: dict[str, float] = {}
        #: per ModelDeployment: when a held-back progress change was first seen since the last write
        self._progress_since: dict[str, float] = {}
        #: ModelDeployments this process posted a Warning event for since they were last Ready: their
        #: next Ready=True gets a Normal ``Ready`` event (a recovery a human wants to see)
        self._warned: set[str] = set()
        self.clock: Callable[[], float] = time.monotonic
        self.instance = os.environ.get("HOSTNAME") or socket.gethostname()
        #: (namespace, name, seconds): refresh the status then (set by the handlers: the work queue)
        self.schedule: Callable[[str, str, float], None] | None = None
        #: (namespace, name, seconds): run the rest of a staged create (trigger ``finish``) then;
        #: and whether the work queue has a backlog now (both set by the handlers: the work queue).
        #: Without them no create is staged.
        self.finish_later: Callable[[str, str, float], None] | None = None
        self.backlogged: Callable[[], bool] = lambda: False
        #: keys whose create was staged and whose finish run has not completed
        self._staged: set[str] = set()
        #: the specs parsed last, ``key -> (uid, generation, spec)``: a generation's spec never
        #: changes, so the refreshes that follow a reconcile (or each other) do not parse it again.
        #: At most SPEC_CACHE entries, least recently used out (a parsed spec is about 9 KB: not one
        #: per object for good beside the stores)
        self._specs: OrderedDict[str, tuple[str, int, ModelDeploymentSpec, float]] = OrderedDict()
        self._specs_lock = threading.Lock()
        #: per ModelDeployment: the render notes of ``(uid, generation, crds)`` (they depend on
        #: nothing else), from its last reconcile or refresh: a refresh renders no children for them
        self._notes_of: dict[str, tuple[tuple[str, int, frozenset[str]], list[Any]]] = {}
        self.pusher = agents.Pusher(self.signer)

    # ------------------------------------------------------------- helpers
    @contextmanager
    def lock(self, key: str) -> Iterator[None]:
        """One thread at a time per object. The lock lives only while some thread holds or waits
        for it: refreshes of a deleted object (its children's deletion events) leave nothing behind."""
        with self._locks_guard:
            kl = self._locks.get(key)
            if kl is None:
                kl = self._locks[key] = _KeyLock()
            kl.users += 1
        try:
            with kl.lock:
                yield
        finally:
            with self._locks_guard:
                kl.users -= 1
                if not kl.users:
                    del self._locks[key]

    def crds(self) -> frozenset[str]:
        """The established CRDs among those we render for: from their watches where the kube keeps
        them (the operator: no API read), else read at most every ``crd_cache_seconds``."""
        found = self.kube.established_crds(CRD_NAMES)
        if found is None:
            found = self._crds_read()
        if found != self._crds_watched:  # (the stores of their kinds: only when that changes)
            self.kube.watch_kinds([BY_KIND[kind] for kind, crd in KIND_CRD.items() if crd in found])
            self.kube.unwatch_kinds([BY_KIND[kind] for kind, crd in KIND_CRD.items() if crd not in found])
            self._crds_watched = found
        return found

    def _crds_read(self) -> frozenset[str]:
        now = time.monotonic()
        if self._crds and now - self._crds[0] < self.config.crd_cache_seconds:
            return self._crds[1]
        found = frozenset(n for n in KIND_CRD.values() if crd_established(self.kube.get(CRD, None, n)))
        self._crds = (now, found)
        return found

    def reconciled_within(self, namespace: str, name: str, seconds: float) -> bool:
        """Whether a reconcile on an event (a spec change, a drift repair: not the resync) compared
        the object's children with its spec in the last ``seconds``. The resync, a backstop for
        missed events, skips such an object that pass: after a burst of creations it would
        otherwise reconcile each again, for nothing, while the burst's pods start. Every object is
        still compared at least once per two intervals; idle ones, once per interval."""
        at = self._event_reconciled.get(f"{namespace}/{name}")
        return at is not None and self.clock() - at < seconds

    def forget(self, namespace: str, name: str) -> None:
        key = f"{namespace}/{name}"
        self._event_reconciled.pop(key, None)
        self._absent.pop(key, None)
        self._invalid.pop(key, None)
        self._rejected.pop(key, None)
        self._applied.pop(key, None)
        self._status_at.pop(key, None)
        self._progress_since.pop(key, None)
        with self._specs_lock:
            self._specs.pop(key, None)
        self._notes_of.pop(key, None)
        self._warned.discard(key)
        self._staged.discard(key)

    def awaiting_finish(self, namespace: str, name: str) -> bool:
        """Whether the object's create was staged and the rest of its children are not written yet."""
        return f"{namespace}/{name}" in self._staged

    # ----------------------------------------------------------- reconcile
    def reconcile(self, body: dict[str, Any], trigger: str = "update") -> Outcome:
        meta = body.get("metadata") or {}
        ns, name = str(meta.get("namespace")), str(meta.get("name"))
        key = f"{ns}/{name}"
        start = time.monotonic()
        with self.lock(key):
            try:
                latest = self._latest(body, key)
                if latest is None:
                    return Outcome()  # gone meanwhile
                out = self._reconcile(latest, trigger, key)
                metrics.RECONCILES.labels(trigger=trigger, result="ok").inc()
                if trigger != "resync":
                    self._event_reconciled[key] = self.clock()
                return out
            except InvalidSpec:
                metrics.RECONCILES.labels(trigger=trigger, result="invalid").inc()
                metrics.RECONCILE_ERRORS.labels(reason="invalid_spec").inc()
                raise
            except KubeError as exc:
                metrics.RECONCILES.labels(trigger=trigger, result="error").inc()
                metrics.RECONCILE_ERRORS.labels(
                    reason="conflict" if exc.status == 409 else ("transient" if exc.retryable else "error")
                ).inc()
                raise
            except Exception:
                metrics.RECONCILES.labels(trigger=trigger, result="error").inc()
                metrics.RECONCILE_ERRORS.labels(reason="error").inc()
                raise
            finally:
                metrics.RECONCILE_DURATION.labels(trigger=trigger).observe(time.monotonic() - start)

    def _latest(self, body: dict[str, Any], key: str) -> dict[str, Any] | None:
        """``body``, unless a newer generation of the same object was already applied: then the
        object as it is now (a spec change that landed after ``body`` was read must not be reverted)."""
        meta = body["metadata"]
        applied = self._applied.get(key)
        generation = body_generation(body)
        if applied is None or applied[0] != meta.get("uid") or generation >= applied[1]:
            return body
        log.info(
            "%s: generation %d is older than the applied %d: reading the latest", key, generation, applied[1]
        )
        latest = self.kube.get(MODELDEPLOYMENT, meta["namespace"], meta["name"])
        if latest is not None and body_generation(latest) < applied[1]:
            latest = self.kube.get_live(MODELDEPLOYMENT, meta["namespace"], meta["name"])  # cache behind
        if latest is None or latest["metadata"].get("uid") != meta.get("uid"):
            return None
        if latest["metadata"].get("deletionTimestamp"):
            return None
        return latest

    def _parse(self, body: dict[str, Any], key: str) -> ModelDeployment:
        """The spec, or InvalidSpec (after writing why into the status)."""
        try:
            md = self._model(body, key)
            check_names(md)
        except (SpecError, RenderError) as exc:
            msg = "; ".join(exc.errors) if isinstance(exc, SpecError) else str(exc)
            self._write_invalid(body, msg)
            self._invalid[key] = body_generation(body)
            raise InvalidSpec(msg) from None
        return md

    def parse(self, body: dict[str, Any]) -> ModelDeployment:
        """``body``'s spec parsed (SpecError if invalid), kept for the object's next runs."""
        meta = body.get("metadata") or {}
        return self._model(body, f"{meta.get('namespace')}/{meta.get('name')}")

    def _model(self, body: dict[str, Any], key: str) -> ModelDeployment:
        """``ModelDeployment.from_body(body)`` (raises SpecError), with the spec parsed once per
        generation: the object's uid and generation name its spec (the API server moves the
        generation on every spec change); metadata is always the body's own. ``status`` is left
        out (nothing computed from ``md`` reads it: the previous status comes from the body)."""
        meta = body.get("metadata") or {}
        uid, generation = str(meta.get("uid", "")), body_generation(body)
        now = self.clock()
        with self._specs_lock:
            cached = self._specs.get(key)
            if cached is not None:
                cached = self._specs[key] = (*cached[:3], now)
                self._specs.move_to_end(key)
        if cached is None or cached[:2] != (uid, generation) or not uid:
            md = ModelDeployment.from_body(body)
            with self._specs_lock:
                self._specs[key] = (uid, generation, md.spec, now)
                self._specs.move_to_end(key)
                # least recently used first: out while too many, or unused for SPEC_IDLE_SECONDS
                while len(self._specs) > SPEC_CACHE or (
                    next(iter(self._specs.values()))[3] < now - SPEC_IDLE_SECONDS
                ):
                    self._specs.popitem(last=False)
            return md
        return ModelDeployment.model_construct(
            apiVersion=body.get("apiVersion", API_VERSION),
            kind=body.get("kind", KIND),
            metadata=dict(meta),
            spec=cached[2],
            status=None,
        )

    def _reconcile(self, body: dict[str, Any], trigger: str, key: str) -> Outcome:
        if trigger == "finish":
            # under way: a pod event from now on asks for no other finish run (one that fails is
            # retried by the queue with its trigger)
            self._staged.discard(key)
        md = self._parse(body, key)
        if trigger in ("resync", "drift") and self._invalid.get(key) == md.generation:
            return Outcome()  # rejected before; wait for a spec change rather than retrying per tick
        self._invalid.pop(key, None)
        absent = self._absent.setdefault(key, set())
        if trigger != "resync":
            absent.clear()
        crds = self.crds()
        live_cm = self.kube.get(CONFIGMAP, md.namespace, manifest_configmap_name(md))
        opts = RenderOptions(
            crds=crds,
            manifest_generation=_manifest_generation(md, live_cm),
            operator_namespace=self.config.operator_namespace,
            keda_interceptor=self.config.keda_interceptor,
            cache_sharers=self._cache_sharers(md),
            push_public_key=self.signer.public_pem,
        )
        try:
            children = render_children(md, opts)
        except RenderError as exc:
            self._write_invalid(body, str(exc))
            raise InvalidSpec(str(exc)) from None
        self._notes_of[key] = (_notes_key(md, crds), list(opts.notes))

        run = _Pass(md=md, body=body, key=key, live_cm=live_cm, manifest_generation=opts.manifest_generation)
        held = self._held_for_prefetch(md, live_cm)
        staged = self._stages(body, trigger)
        for kind, desired in children.items():
            crd = KIND_CRD.get(kind)
            if crd and crd not in crds:
                continue
            if kind in held:
                run.outcome.changes.append(f"holding {kind}: the prefetch Job is filling the cache")
                continue
            if staged and kind not in POD_PATH_KINDS:
                continue
            if desired is None:
                self._delete_unwanted(run, kind, absent)
            else:
                absent.discard(kind)
                self._sync_child(run, kind, desired)

        if staged and self.finish_later is not None:
            # the rest (and the first status: _applied is not set, so no refresh claims this
            # generation before every child carries it) in a run of its own, behind the burst
            self._staged.add(key)
            self.finish_later(md.namespace, md.name, self.config.stage_seconds)
            run.outcome.changes.append("staged: the other children follow")
            return run.outcome
        self._rejected.pop(key, None)
        self._staged.discard(key)
        self._applied[key] = (run.uid, md.generation)
        # No event for a created Deployment: the status says it (Events only for transitions a human
        # cares about: Scaled, VersionsChanged, a recovery to Ready, every Warning).
        if run.scaled:
            self._event(body, "Normal", "Scaled", f"replicas {run.scaled[0]} -> {run.scaled[1]}")
        try:
            run.outcome.changes.extend(self._collect_manifests(md))
            if md.spec.cache is not None or trigger != "resync":  # resyncs of cache-less ones: no LIST
                run.outcome.changes.extend(self._collect_prefetch_jobs(md))
        except KubeError as exc:  # housekeeping: never in the way of the status
            log.warning("%s: could not collect unused manifest ConfigMaps or prefetch Jobs: %s", key, exc)
        if trigger == "drift" and not run.outcome.changes:
            return run.outcome  # nothing to repair: the status follows the children's own events
        run.outcome.status_written = self._refresh(
            md_body=body, ns=md.namespace, name=md.name, notes=opts.notes, live_dep=run.live_dep
        )
        return run.outcome

    def _stages(self, body: dict[str, Any], trigger: str) -> bool:
        """Whether this pass writes only the children on the pods' path (see
        OperatorConfig.stage_seconds): a new object's create, in a backlog."""
        return (
            trigger == "create"
            and self.config.stage_seconds > 0
            and self.finish_later is not None
            and not body.get("status")
            and self.backlogged()
        )

    def _cache_sharers(self, md: ModelDeployment) -> tuple[str, ...] | None:
        """The namespace's live ModelDeployments whose spec.cache names md's claim, for md's
        evicting prefetch Job (only with maxSize; read from the ModelDeployment store once the
        watch has synced, else one LIST of the namespace's ModelDeployments)."""
        c = md.spec.cache
        if c is None or not c.prefetch or c.maxSize is None:
            return None
        return tuple(
            sorted(
                str(b["metadata"]["name"])
                for b in self.kube.list(MODELDEPLOYMENT, md.namespace)
                if not b["metadata"].get("deletionTimestamp")
                and ((b.get("spec") or {}).get("cache") or {}).get("claimName") == c.claimName
            )
        )

    def _delete_unwanted(self, run: _Pass, kind: str, absent: set[str]) -> None:
        """Delete our child of ``kind`` (no longer wanted); remember it is absent until a spec change."""
        if kind in absent:
            return
        res, ns, name = BY_KIND[child_kind(kind)], run.md.namespace, child_name(run.md, kind)
        live = self.kube.get(res, ns, name)
        if live is not None and owned_by(live, run.uid):
            self.kube.delete(res, ns, name, uid=live["metadata"].get("uid"))
            metrics.CHILD_WRITES.labels(kind=kind, action="delete").inc()
            run.outcome.changes.append(f"deleted {kind}")
        absent.add(kind)

    def _sync_child(self, run: _Pass, kind: str, desired: dict[str, Any]) -> None:
        """Apply ``desired`` unless the live object already has it in effect."""
        res, ns = BY_KIND[child_kind(kind)], run.md.namespace
        name = desired["metadata"]["name"]
        live = run.live_cm if kind == "ConfigMap" else self.kube.get(res, ns, name)
        if live is None and self.kube.reads_cached and not self.kube.known_absent(res, ns, name):
            # not in our store but maybe taken: confirm before creating (an object we do not own has
            # no label of ours and so is in no store of ours, and a forced apply would take it over;
            # our store may not have our own creation yet)
            live = self.kube.get_live(res, ns, name)
        if kind == "ConfigMap" and carries_push_key(run.md):
            desired = stamp_manifest_changed(desired, live, dt.datetime.now(dt.UTC))
        if live is not None and not owned_by(live, run.uid):
            refs = live["metadata"].get("ownerReferences") or []
            if any(r.get("controller") for r in refs):
                owners = ", ".join(f"{r.get('kind')}/{r.get('name')}" for r in refs)
                msg = (
                    f"metadata.name: {kind} {ns}/{desired['metadata']['name']} already exists and is "
                    f"controlled by {owners}"
                )
                self._write_invalid(run.body, msg, reason="ApplyRejected")
                self._rejected[run.key] = run.md.generation
                raise ApplyRejected(msg)
        ok, why = in_effect(desired, live)
        if ok:
            if kind == "Deployment":
                run.live_dep = live
            return
        if kind == "Deployment" and live is not None and "replicas" not in desired["spec"]:
            self._hand_over_replicas(live)
        new = self._apply_checked(run, kind, desired)
        metrics.CHILD_WRITES.labels(kind=kind, action="apply").inc()
        run.outcome.changes.append(f"applied {kind} ({why})")
        log.info("%s: applied %s (%s)", run.key, kind, why)
        if kind == "Deployment":
            run.note_deployment(live, new, desired)
        if kind == "ConfigMap":
            self._manifest_written(run, live, desired)

    def _manifest_written(self, run: _Pass, live: dict[str, Any] | None, desired: dict[str, Any]) -> None:
        """After an apply of the manifest ConfigMap: a new manifest (in place, a rewrite of the
        ConfigMap; rolling, a new revision's ConfigMap) is worth an event, and in place it is handed
        to the running agents at once. A repaired label or a new push key beside it is neither."""
        md = run.md
        revised = live is not None or (md.spec.rollout.strategy == "rolling" and bool(run.body.get("status")))
        if not revised or run.manifest_generation != md.generation:
            return
        if same_manifest(live, desired):
            return
        self._event(run.body, "Normal", "VersionsChanged", f"model versions now {_versions_summary(md)}")
        if live is not None:  # an in-place rewrite: hand it to the running agents now
            self._push_manifest(md, desired)

    def _push_manifest(self, md: ModelDeployment, configmap: dict[str, Any]) -> None:
        """In place: hand the changed manifest to the running agents now (in the background)
        rather than waiting for the kubelet to sync the ConfigMap volume."""
        if not self.config.query_agents or md.spec.rollout.strategy != "inPlace":
            return
        pods = self.kube.list(POD, md.namespace, label_selector=pod_selector(md))
        manifest = ModelManifest.from_json(configmap["data"][MANIFEST_KEY])
        self.pusher.submit(md, pods, manifest)

    def _apply_checked(self, run: _Pass, kind: str, desired: dict[str, Any]) -> dict[str, Any]:
        try:
            return self.kube.apply(desired, BY_KIND[child_kind(kind)])
        except KubeError as exc:
            self._child_rejected(run.body, run.key, run.md.generation, kind, desired["metadata"]["name"], exc)
            raise

    def _collect_manifests(self, md: ModelDeployment) -> list[str]:
        """Delete our manifest ConfigMaps that neither the current spec nor any ReplicaSet with pods
        uses: the revisions a rolling rollout left behind (and ``<name>-models`` after a switch to
        ``rolling``). A revision whose old pods still run keeps its ConfigMap until they are gone."""
        ns, uid = md.namespace, str(md.metadata.get("uid", ""))
        cms = self.kube.list(
            CONFIGMAP, ns, label_selector=f"{OWNED},{OWNER_LABEL}={md.name},{COMPONENT_LABEL}=model-manifest"
        )
        keep = {manifest_configmap_name(md)}
        stale = [c for c in cms if owned_by(c, uid) and c["metadata"]["name"] not in keep]
        if not stale:
            return []
        keep |= mounted_configmaps(self.kube.list(REPLICASET, ns, label_selector=selector_string(md)))
        deleted = []
        for cm in stale:
            name = cm["metadata"]["name"]
            if name not in keep:
                self.kube.delete(CONFIGMAP, ns, name, uid=cm["metadata"].get("uid"))
                metrics.CHILD_WRITES.labels(kind="ConfigMap", action="delete").inc()
                log.info("%s/%s: deleted unused manifest ConfigMap %s", ns, md.name, name)
                deleted.append(f"deleted ConfigMap {name}")
        return deleted

    def _collect_prefetch_jobs(self, md: ModelDeployment) -> list[str]:
        """Delete our prefetch Jobs other than the current one (their versions are no longer
        wanted, or spec.cache is gone), running or finished, with their pods. The current Job stays
        while its versions are wanted: its completion is the cache's recorded state (status.cache,
        the rollout hold), and deleting it would make the reconciler run it again."""
        c = md.spec.cache
        keep = prefetch_job_name(md) if c is not None and c.prefetch else None
        ns, uid = md.namespace, str(md.metadata.get("uid", ""))
        # with the store's own selection (OWNED), so the store answers: no LIST per reconcile
        jobs = self.kube.list(
            JOB, ns, label_selector=f"{OWNED},{OWNER_LABEL}={md.name},{COMPONENT_LABEL}=prefetch"
        )
        deleted = []
        for job in jobs:
            name = job["metadata"]["name"]
            if name == keep or not owned_by(job, uid) or job["metadata"].get("deletionTimestamp"):
                continue
            self.kube.delete(JOB, ns, name, uid=job["metadata"].get("uid"))
            metrics.CHILD_WRITES.labels(kind="Job", action="delete").inc()
            log.info("%s/%s: deleted prefetch Job %s (its versions are no longer wanted)", ns, md.name, name)
            deleted.append(f"deleted Job {name}")
        return deleted

    def _child_rejected(
        self, body: dict[str, Any], key: str, generation: int, kind: str, name: str, exc: KubeError
    ) -> None:
        """A refused child ends in Ready=False naming the spec field and the child, plus a Warning
        event (raises InvalidSpec / ApplyRejected); a transient error just returns (retried)."""
        if not is_rejection(exc):
            return
        msg = describe(kind, name, exc)
        if is_permanent(exc):
            self._write_invalid(body, msg)
            self._invalid[key] = generation
            raise InvalidSpec(msg) from None
        self._write_invalid(body, msg, reason="ApplyRejected")
        self._rejected[key] = generation
        raise ApplyRejected(msg) from None

    def _hand_over_replicas(self, live: dict[str, Any]) -> None:
        """Autoscaling was switched on: before our applied body drops ``spec.replicas`` (which would
        reset it to the default 1), hand the current value to a separate field manager, so the
        field keeps its value until the autoscaler takes it over."""
        owns = any(
            mf.get("manager") == FIELD_MANAGER
            and mf.get("operation") == "Apply"
            and "f:replicas" in (mf.get("fieldsV1") or {}).get("f:spec", {})
            for mf in live["metadata"].get("managedFields") or []
        )
        replicas = (live.get("spec") or {}).get("replicas")
        if not owns or replicas is None:
            return
        meta = live["metadata"]
        body = {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": meta["name"], "namespace": meta["namespace"]},
            "spec": {"replicas": replicas},
        }
        self.kube.apply(body, DEPLOYMENT, manager=HANDOVER_MANAGER)
        metrics.CHILD_WRITES.labels(kind="Deployment", action="handover").inc()

    # -------------------------------------------------------------- status
    def refresh_status(self, namespace: str, name: str) -> bool:
        """Recompute the status from the live world; write it only when it changed."""
        with self.lock(f"{namespace}/{name}"):
            return self._refresh(None, namespace, name, notes=None, live_dep=None)

    def _refresh(
        self,
        md_body: dict[str, Any] | None,
        ns: str,
        name: str,
        notes: list[Any] | None,
        live_dep: dict[str, Any] | None,
    ) -> bool:
        body, stale_status = _newest(self.kube.get(MODELDEPLOYMENT, ns, name), md_body)
        if body is None or body["metadata"].get("deletionTimestamp"):
            return False
        key = f"{ns}/{name}"
        try:
            md = self._model(body, key)
        except SpecError:
            return False  # reconcile reports InvalidSpec
        if md.generation in (self._invalid.get(key), self._rejected.get(key)):
            return False  # a child was refused: keep Ready=False (never Ready without that child)
        if self._applied.get(key) != (str(body["metadata"].get("uid", "")), md.generation):
            # The children do not (yet) carry this generation's rendered state: its reconcile is
            # pending or running. Saying observedGeneration = it (and Ready) now would be a lie.
            return False
        if notes is None:
            notes = self._notes(md)
        dep = live_dep or self.kube.get(DEPLOYMENT, ns, name)
        pods = self.kube.list(POD, ns, label_selector=pod_selector(md)) if dep else []
        diag = diagnose(dep, pods, _gpu_request(md))
        reports = AgentReport(pods=agents.query(pods)) if self.config.query_agents else None
        # Without agent reports pod readiness (serving) cannot prove new versions: the window applies.
        window = bool(dep) and not (reports and reports.pods) and self._window_applies(md)
        cm = (
            self.kube.get(CONFIGMAP, ns, manifest_configmap_name(md))
            if self.config.query_agents or window
            else None
        )  # read (and decoded from the store) once for both uses
        manifest_generation, manifest_age = _manifest_state(cm) if self.config.query_agents else (None, None)
        propagating, window_left = self._manifest_propagating(cm, pods) if window else (None, None)
        current = body.get("status") or {}
        new = compute_status(
            md,
            dep,
            pods,
            diag,
            notes=notes,
            previous=current,
            agents=reports,
            manifest_generation=manifest_generation,
            manifest_age=manifest_age,
            propagating=propagating,
            interceptor=self.config.keda_interceptor if any(n.reason == ROUTED_NOTE for n in notes) else None,
        )
        add_provenance(new, reports)  # digest + signer of each served version (#15)
        cache = self._cache_status(md, reports)
        if cache is not None:
            new["cache"] = cache
        conds = {c["type"]: c["status"] for c in new["conditions"]}
        self._schedule(md, [window_left, self._load_timeout_left(md, manifest_age, conds)])
        patch = status_patch(current, new)
        if stale_status:  # the status we hold may be behind the stored one: say all of it
            patch = {**{k: None for k in current}, **new}
        if patch is None:
            self._progress_since.pop(key, None)
            return False
        settling = awaiting_count(dep, pods)
        if self._deferred(md, key, current, new, settling) or not self._patch_status(ns, name, patch):
            return False
        self._status_at[key] = self.clock()
        self._progress_since.pop(key, None)
        metrics.STATUS_WRITES.inc()
        self._transition_events(body, current, new, diag)
        return True

    def _deferred(
        self, md: ModelDeployment, key: str, current: dict[str, Any], new: dict[str, Any], settling: bool
    ) -> bool:
        """Whether to hold back a status change that is not urgent (status.urgent_change): within
        its interval (progress or detail, see OperatorConfig) of this operator's last status write
        of the object it waits, and a refresh is scheduled for when it is due, so it shows by then
        even if nothing else happens (a change that turns urgent meanwhile goes at once). Progress
        also waits until it has lasted ``status_settle_seconds``: a transitional state is written
        with what follows. ``settling`` (status.awaiting_count: every pod the Deployment wants is
        Ready, and only the Deployment controller's count is missing) is transitional however long
        the controller takes under load: its progress waits up to the detail interval."""
        last = self._status_at.get(key)
        if last is None or urgent_change(current, new):
            return False
        cfg = self.config
        now = self.clock()
        progress = visible_progress(current, new)
        due = last + max(cfg.status_detail_seconds, cfg.status_progress_seconds)
        if not progress:  # what was progress went back: a new one settles from when it shows
            self._progress_since.pop(key, None)
        else:
            since = self._progress_since.setdefault(key, now)
            settle = min(cfg.status_settle_seconds, cfg.status_progress_seconds)
            if settling:
                settle = max(settle, cfg.status_detail_seconds)
            due = max(last + cfg.status_progress_seconds, since + settle)
        wait = due - now
        if wait <= 0:
            return False
        self._schedule(md, [wait])
        metrics.STATUS_DEFERRED.labels(change="progress" if progress else "detail").inc()
        return True

    def _held_for_prefetch(self, md: ModelDeployment, live_cm: dict[str, Any] | None) -> set[str]:
        """Kinds not applied yet because the prefetch Job of the wanted versions has not finished:
        pods are asked to load a version only once the cache holds it (a failed Job releases them:
        pods then download). A new deployment starts at once (nothing to hold back)."""
        c = md.spec.cache
        if c is None or not c.prefetch or live_cm is None:
            return set()
        job = self.kube.get(JOB, md.namespace, prefetch_job_name(md))
        conds = ((job or {}).get("status") or {}).get("conditions") or []
        if any(x.get("type") in ("Complete", "Failed") and x.get("status") == "True" for x in conds):
            return set()
        # in place the manifest carries the versions; rolling, the pod template's hash of it too
        return {"ConfigMap", "Deployment"} if md.spec.rollout.strategy == "rolling" else {"ConfigMap"}

    def _cache_status(self, md: ModelDeployment, reports: AgentReport | None) -> dict[str, Any] | None:
        if md.spec.cache is None:
            return None
        job_name = prefetch_job_name(md)
        job = self.kube.get(JOB, md.namespace, job_name) if md.spec.cache.prefetch else None
        pods = (
            self.kube.list(POD, md.namespace, label_selector=f"{PART_OF},job-name={job_name}") if job else []
        )
        return cache_status(md, job, pods, reports.pods if reports else None)

    def _window_applies(self, md: ModelDeployment) -> bool:
        """Whether ``md``'s status waits out the manifest propagation window after a change."""
        return self.config.manifest_sync_seconds > 0 and md.spec.rollout.strategy == "inPlace"

    def _manifest_propagating(
        self, cm: dict[str, Any] | None, pods: list[dict[str, Any]]
    ) -> tuple[str | None, float | None]:
        """Why pod readiness does not yet prove the new versions after an in-place change of the
        manifest ConfigMap ``cm`` (or None), and the seconds until that window ends. The change
        time is when its manifest last changed (:func:`manifest_changed_time`, not a rewrite for
        the push key); pods started in a later second read the new manifest
        (:func:`propagation_window`)."""
        changed = manifest_changed_time(cm)
        if changed is None:
            return None, None
        created = parse_time((cm or {}).get("metadata", {}).get("creationTimestamp"))
        started = [parse_time((p.get("status") or {}).get("startTime")) for p in pods]
        now = dt.datetime.now(dt.UTC)
        return propagation_window(changed, created, now, self.config.manifest_sync_seconds, started)

    def _load_timeout_left(
        self, md: ModelDeployment, manifest_age: float | None, conds: dict[str, str]
    ) -> float | None:
        """Seconds until an in-place load watched through the agents times out (None: nothing due)."""
        if manifest_age is None or md.spec.rollout.strategy != "inPlace" or conds.get("Ready") == "True":
            return None
        left = md.spec.rollout.readinessGate.timeoutSeconds - manifest_age
        return left if left >= 0 else None

    def _schedule(self, md: ModelDeployment, due: list[float | None]) -> None:
        """Ask for a status refresh when the earliest time-based transition falls due."""
        pending = [d for d in due if d is not None]
        if pending and self.schedule is not None:
            self.schedule(md.namespace, md.name, min(pending) + DUE_SLACK_SECONDS)

    def _notes(self, md: ModelDeployment) -> list[Any]:
        """The render notes of ``md`` (from the last render of its generation with these CRDs)."""
        crds = self.crds()
        key, want = f"{md.namespace}/{md.name}", _notes_key(md, crds)
        cached = self._notes_of.get(key)
        if cached is not None and cached[0] == want:
            return list(cached[1])
        opts = RenderOptions(crds=crds, keda_interceptor=self.config.keda_interceptor)
        try:
            render_children(md, opts)
        except RenderError:
            return []
        self._notes_of[key] = (want, list(opts.notes))
        return list(opts.notes)

    def _write_invalid(self, body: dict[str, Any], message: str, reason: str = "InvalidSpec") -> None:
        current = body.get("status") or {}
        new = invalid_status(body, message, previous=current, reason=reason)
        meta = body["metadata"]
        patch = status_patch(current, new)
        if patch is None or not self._patch_status(meta["namespace"], meta["name"], patch):
            return
        metrics.STATUS_WRITES.inc()
        self._event(body, "Warning", reason, message)

    def _patch_status(self, ns: str, name: str, patch: dict[str, Any]) -> bool:
        """Write a status patch; False when the object is gone (deleted while we worked on it:
        nothing to report, and nothing to retry)."""
        try:
            self.kube.patch_status(MODELDEPLOYMENT, ns, name, patch)
        except KubeError as exc:
            if exc.status == 404:
                return False
            raise
        return True

    # -------------------------------------------------------------- events
    def _transition_events(
        self, body: dict[str, Any], old: dict[str, Any], new: dict[str, Any], diag: Diagnosis | None
    ) -> None:
        def ready(st: dict[str, Any]) -> tuple[str, str]:
            for c in st.get("conditions") or []:
                if c.get("type") == "Ready":
                    return str(c.get("status")), str(c.get("reason"))
            return "Unknown", ""

        (os_, oreason), (ns_, nreason) = ready(old), ready(new)
        key = f"{body['metadata']['namespace']}/{body['metadata']['name']}"
        if ns_ == "True" and os_ != "True":
            # the first Ready after a create is in the status alone; Ready after a Warning diagnosis
            # (posted by this process, or a Degraded status) is a recovery worth an event
            if key in self._warned or _degraded(old):
                self._event(body, "Normal", "Ready", f"serving {new.get('servedVersions', '')}".strip())
            self._warned.discard(key)
        elif diag is not None and (os_, oreason) != (ns_, nreason):
            self._event(body, "Warning", diag.reason, diag.message)
        for ev in new_corrupt_entries(old, new):
            self._event(body, "Warning", str(ev["event"]), f"{ev.get('pod', '')}: {ev.get('message', '')}")

    def _event(self, body: dict[str, Any], type_: str, reason: str, message: str) -> None:
        if not self.config.post_events:
            return
        meta = body["metadata"]
        if type_ == "Warning":
            self._warned.add(f"{meta['namespace']}/{meta['name']}")
        now = now_rfc3339()
        ev = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"generateName": f"{meta['name']}.", "namespace": meta["namespace"]},
            "involvedObject": {
                "apiVersion": API_VERSION,
                "kind": KIND,
                "name": meta["name"],
                "namespace": meta["namespace"],
                "uid": meta.get("uid"),
            },
            "type": type_,
            "reason": reason,
            "message": message[:1024],
            "source": {"component": FIELD_MANAGER},
            "reportingComponent": f"modeldeploy.io/{FIELD_MANAGER}",
            "reportingInstance": self.instance[:128],
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
        }
        try:
            self.kube.create(EVENT, meta["namespace"], ev)
        except KubeError as exc:
            log.warning("could not post event %s on %s/%s: %s", reason, meta["namespace"], meta["name"], exc)


def _newest(
    cached: dict[str, Any] | None, reconciled: dict[str, Any] | None
) -> tuple[dict[str, Any] | None, bool]:
    """The body a status refresh starts from, and whether its status may be out of date.

    After a reconcile the store's copy may still be of the previous generation (kopf's watch
    handed us the new one first). Refreshing from that copy would find the new generation "not
    applied" and write nothing, leaving the status of the old generation until some child
    changes. So the reconciled body wins when it is newer; its status may then lag the stored
    one, and the caller writes the status whole rather than as a diff against it."""
    if reconciled is None:
        return cached, False
    if cached is None:  # the store has not seen it yet (just created)
        return reconciled, True
    same = cached["metadata"].get("uid") == reconciled["metadata"].get("uid")
    if same and body_generation(reconciled) > body_generation(cached):
        return reconciled, True
    return cached, False


def _notes_key(md: ModelDeployment, crds: frozenset[str]) -> tuple[str, int, frozenset[str]]:
    """What a ModelDeployment's render notes depend on (besides the operator's fixed config)."""
    return str(md.metadata.get("uid", "")), md.generation, crds


def body_generation(body: dict[str, Any]) -> int:
    """``metadata.generation`` of an API object (0 when unset)."""
    return int(body["metadata"].get("generation") or 0)


def _render_manifest_models(md: ModelDeployment) -> list[Any]:
    from modeldeploy.render.manifest import build_manifest

    return list(build_manifest(md).models)


def _degraded(status: dict[str, Any]) -> bool:
    return any(
        c.get("type") == "Degraded" and c.get("status") == "True" for c in status.get("conditions") or []
    )


def _versions_summary(md: ModelDeployment) -> str:
    return " ".join(f"{m.name}:{','.join(map(str, m.desired_versions()))}" for m in md.spec.models)


def _gpu_request(md: ModelDeployment) -> str | None:
    r = md.spec.resources
    res = r.gpu_resource_name()
    return f"{r.gpu_count()} {res}" if res else None


def dumps(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True)
