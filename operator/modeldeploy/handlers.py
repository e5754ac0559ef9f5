"""kopf handlers (thin): everything else lives in :mod:`modeldeploy.reconcile`.

Every trigger below only *marks* the object in one work queue (reconcile/workqueue.py): marks that
arrive before it runs coalesce into one run, one object is never run by two threads at once (a mark
while it runs queues it once more), ``workers`` objects run in parallel at most, and a run that
failed on a retryable error is retried after a per-object backoff (0.5 s doubling to 60 s).

* create/update/resume -> one ``reconcile`` (apply what differs, delete what is no longer wanted):
  the ``async`` handler marks the object and returns (:func:`handle_change`): the queue retries a
  failed run, and the run writes the status;
* reads come from watch-fed stores (reconcile/cache.py, reconcile/informer.py): the
  ModelDeployments and every kind of child the operator owns, pods of its label;
* a child created, edited or deleted by someone else (seen through those watches) -> a debounced
  reconcile of its owner, which puts it back (drift repair within about a second); the event of a
  write of ours that the watch delivers before the write's answer is not drift;
* a ModelDeployment gone from its store -> its queued runs and kept state are dropped;
* every ``resync_seconds`` a resync loop (not kopf timers: those add a finalizer to every object)
  runs the same reconcile over the cached ModelDeployments, level-based: it compares the stores with
  the desired state and writes only on a real difference, with no API read (an object that a
  reconcile on an event compared within the interval is skipped that pass);
* events of our Deployments, pods and Jobs -> a debounced status refresh of the owner (a
  Deployment's ``ReplicaFailure``/``FailedCreate`` or progress deadline is in the status within seconds);
* time-based transitions (end of a propagation window, a load timeout) -> a status refresh
  scheduled for when they fall due;
* a CRD we render for (KEDA, HTTP add-on, ServiceMonitor) established or removed, seen through its
  watch -> a reconcile and status refresh of every ModelDeployment.

kopf's "last handled configuration" is kept in memory (:class:`MemoryDiffBase`), so kopf writes
nothing to the object when a change is handled; kopf never retries the handler (the queue retries
runs), so its progress annotations (``modeldeploy.io/…``) are not written either; kopf posts k8s
Events only for warnings. No finalizers:
children go by owner-reference garbage collection.

Usable with ``mdctl operator run`` (which calls :func:`register` on a fresh registry) and with
``kopf run -m modeldeploy.handlers`` (module import registers into kopf's default registry, with
settings from the environment: KUBECONFIG, MODELDEPLOY_RESYNC_SECONDS, MODELDEPLOY_NAMESPACES (comma
separated, globs allowed; must match kopf's --namespace), MODELDEPLOY_QUERY_AGENTS (default true), MODELDEPLOY_WORKERS (default 16),
MODELDEPLOY_STATUS_WORKERS (default 8: threads for status refreshes only), POD_NAMESPACE (the
operator's namespace, where the Secret ``modeldeploy-push-key`` holds the key manifest pushes are
signed with), MODELDEPLOY_PUSH_KEY_FILE (a PEM key file instead of that Secret): reconcile/pushkey.py).

Talking to the agents (reading /status, pushing manifests) is blocking HTTP with short timeouts: it
runs in the work queue's threads (never on the event loop: the async kopf handler only marks the
object) and, for pushes, on the reconciler's own push pool.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import threading
import zlib
from collections.abc import Iterable, Mapping
from typing import Any, cast

import kopf

from modeldeploy import metrics
from modeldeploy.api.v1alpha1 import GROUP, PLURAL, VERSION, ModelDeployment, SpecError
from modeldeploy.reconcile import pushkey
from modeldeploy.reconcile.cache import CachedKube, crd_established
from modeldeploy.reconcile.informer import Entry
from modeldeploy.reconcile.kube import CRD, MODELDEPLOYMENT, REQUEST_KINDS, Kube
from modeldeploy.reconcile.reconciler import (
    KIND_CRD,
    ApplyRejected,
    InvalidSpec,
    OperatorConfig,
    Reconciler,
    body_generation,
    parse_time,
)
from modeldeploy.reconcile.resync import ResyncLoop, in_scope
from modeldeploy.reconcile.workqueue import WorkQueue
from modeldeploy.render import CHILD_KINDS, child_kind
from modeldeploy.render.common import FIELD_MANAGER, OWNER_LABEL

INSTANCE_LABEL = "app.kubernetes.io/instance"  # the prefetch pods' owner

log = logging.getLogger("modeldeploy.handlers")


def _latency_since_change(body: Any) -> float | None:
    """Seconds since the last write to the object by someone else than the operator."""
    latest = _last_write(body, others_only=True)
    if latest is None:
        return None
    return max(0.0, (dt.datetime.now(dt.UTC) - latest).total_seconds())


def _last_write(body: Any, *, others_only: bool = False) -> dt.datetime | None:
    """The time of the object's last write, from its managedFields (``others_only``: leaving out
    the operator's own writes and status writes)."""
    times = [
        parse_time(mf.get("time"))
        for mf in body.get("metadata", {}).get("managedFields") or []
        if not (others_only and (mf.get("manager") == FIELD_MANAGER or mf.get("subresource")))
    ]
    return max((t for t in times if t is not None), default=None)


def _load_client() -> Any:
    from kubernetes import client, config

    try:
        config.load_incluster_config()
    except config.ConfigException:
        config.load_kube_config()
    cfg = client.Configuration.get_default_copy()
    cfg.connection_pool_maxsize = 32
    return client.ApiClient(cfg)


def _watch_client(api_client: Any) -> Any:
    """An ApiClient of its own for the long-lived watches (they hold a pooled connection each)."""
    from kubernetes import client

    return client.ApiClient(api_client.configuration)


#: What a hand edit of a child can change (its status and bookkeeping are not ours to repair).
_CONTENT = ("spec", "data", "binaryData", "stringData")
_META = ("labels", "ownerReferences")
#: Annotations that a controller of the cluster keeps on our children and we never render (the
#: Deployment controller's ``deployment.kubernetes.io/revision``): a change of theirs is not drift.
_FOREIGN_ANNOTATIONS = ("deployment.kubernetes.io/",)


def _own_annotations(meta: dict[str, Any]) -> dict[str, Any]:
    return {
        k: v for k, v in (meta.get("annotations") or {}).items() if not k.startswith(_FOREIGN_ANNOTATIONS)
    }


def content_changed(old: dict[str, Any] | None, new: dict[str, Any] | None) -> bool:
    """Whether a child's event may be drift (deleted, created, or its spec/data/metadata edited;
    not the Deployment controller numbering a revision, one reconcile of every new object saved)."""
    if old is None or new is None:
        return True
    om, nm = old.get("metadata") or {}, new.get("metadata") or {}
    if any(old.get(k) != new.get(k) for k in _CONTENT) or any(om.get(k) != nm.get(k) for k in _META):
        return True
    return _own_annotations(om) != _own_annotations(nm)


class MemoryDiffBase(kopf.DiffBaseStorage):
    """kopf's "last handled" essence of each ModelDeployment, kept in memory rather than written
    into an annotation of the object (one write per object and spec change saved). After a restart
    kopf finds none and handles every object as created, which runs the same reconcile as resuming."""

    def __init__(self) -> None:
        super().__init__()
        #: uid -> the essence as compressed JSON (one allocation per object, not a tree of dicts)
        self._essences: dict[str, bytes] = {}

    def fetch(self, *, body: kopf.Body) -> kopf.BodyEssence | None:
        blob = self._essences.get(str(body.get("metadata", {}).get("uid")))
        return cast(kopf.BodyEssence, json.loads(zlib.decompress(blob))) if blob is not None else None

    def store(self, *, body: kopf.Body, patch: kopf.Patch, essence: kopf.BodyEssence) -> None:
        blob = zlib.compress(json.dumps(essence, separators=(",", ":")).encode(), 1)
        self._essences[str(body.get("metadata", {}).get("uid"))] = blob

    def forget(self, uid: str) -> None:
        self._essences.pop(uid, None)

    def build(self, *, body: kopf.Body, extra_fields: Iterable[Any] | None = None) -> kopf.BodyEssence:
        """kopf's essence (spec, labels, annotations), built from those alone: kopf's own
        ``build`` deep-copies the whole body first, status and managedFields included, on every
        event of every object (our status writes too), then drops them (#12: a fifth of kopf's CPU)."""
        if extra_fields:
            return super().build(body=body, extra_fields=extra_fields)
        meta = body.get("metadata") or {}
        kept = {k: v for k, v in body.items() if k not in ("metadata", "status")}
        kept["metadata"] = {k: meta[k] for k in ("labels", "annotations") if k in meta}
        return super().build(body=cast(kopf.Body, kept))


class ProgressAnnotations(kopf.AnnotationsProgressStorage):
    """kopf's progress annotations (written only while a handler is being retried: never, as the
    handler does not fail but for a spec that can never work), without the
    one-time ``<prefix>/kopf-managed`` marker kopf adds to every object it handles: nothing reads
    it, and writing it was one patch of every new ModelDeployment."""

    def _store_marker(self, prefix: str, patch: kopf.Patch, body: kopf.Body) -> None:
        return None


#: Reasons of a mark, most significant first: the reconcile of a run is labelled by the first present.
#: ``refresh`` alone recomputes only the status.
#: In order of precedence when one run serves several marks. ``finish``: the rest of a staged
#: create (OperatorConfig.stage_seconds), a full pass, first so that a create mark with it (a
#: re-created object) is not staged again.
TRIGGERS = ("finish", "create", "update", "resume", "drift", "resync")
SPEC_TRIGGERS = ("create", "update", "resume")
#: The reason of the run that forgets a deleted object's state (State.forget).
FORGET = "forget"
Key = tuple[str, str]


class State:
    """The per-process objects the handlers share (created at kopf startup)."""

    def __init__(self, config: OperatorConfig) -> None:
        self.config = config
        self.cache: CachedKube | None = None
        self.reconciler: Reconciler | None = None
        self.queue: WorkQueue | None = None
        self.resync: ResyncLoop | None = None
        self.diffbase = MemoryDiffBase()
        #: per key: the newest body kopf handed us (the store may not have seen it yet), packed,
        #: with its generation
        self._bodies: dict[Key, tuple[int, Entry]] = {}
        self._bodies_lock = threading.Lock()
        #: keys with a create queued and not yet taken by a run: while there are any, a burst's
        #: Deployments are still being written (see child_event)
        self._creating: set[Key] = set()
        #: staged objects whose pod got on a node while creates were queued: moved ahead (tier 1)
        #: when the last queued create is taken, in the order their pods got there
        self._on_node: dict[Key, None] = {}
        #: a staged object's pod ran while creates were queued (a burst too large for the creates to
        #: be written before the first pods start): from then until no create is queued, a pod on a
        #: node moves its object's finish run ahead at once
        self._overlap = False
        self._creating_lock = threading.Lock()

    def start(self, api_client: Any | None = None) -> None:
        metrics.prime(TRIGGERS, REQUEST_KINDS, {child_kind(k) for k in CHILD_KINDS})
        api = api_client or _load_client()
        namespaces = self.config.namespaces
        kube = Kube(api)
        # once per start, none per object: the key the manifest pushes are signed with
        signer = pushkey.obtain(kube, self.config.operator_namespace)
        self.cache = CachedKube(
            kube,
            namespaces,
            lambda ns: in_scope(ns, namespaces),
            on_event=self.child_event,
            watch_kube=Kube(_watch_client(api)),
            trackers={MODELDEPLOYMENT.kind: metrics.CONDITIONS},  # /metrics' condition counts
        )
        self.reconciler = Reconciler(self.cache, self.config, signer=signer)
        self.queue = WorkQueue(
            self.process,
            workers=self.config.workers,
            light_workers=self.config.status_workers,  # refreshes never wait behind reconciles
            light=frozenset({"refresh"}),
            background=frozenset({"resync"}),
            background_workers=self.config.resync_workers,
            permanent=(InvalidSpec, ApplyRejected),
            on_start=_observe_latency,
        ).start()
        queue = self.queue
        # a push round done: re-read the agents
        self.reconciler.pusher.done = lambda ns, name: self.refresh(ns, name)
        self.reconciler.schedule = self.schedule  # time-based transitions, on time
        workers = self.config.workers
        self.reconciler.finish_later = lambda ns, name, seconds: queue.nudge((ns, name), "finish", seconds)
        self.reconciler.backlogged = lambda: queue.depth() > workers
        self.cache.start()
        self.cache.watch_crds(list(KIND_CRD.values()))  # a CRD installed later: see crd_event
        self.resync = ResyncLoop(
            self.cache,
            lambda key: queue.nudge(key, "resync"),
            self.config.resync_seconds,
            namespaces,
        ).start()

    def mark(self, body: Mapping[str, Any], reason: str) -> None:
        """Queue a reconcile of a ModelDeployment kopf handed us (a spec change: urgent, not held
        back by a backoff). Nobody waits for the run, so no Future is made (:meth:`WorkQueue.nudge`)."""
        assert self.queue is not None
        key = self.hand(body)
        if reason == "create":
            with self._creating_lock:
                self._creating.add(key)
        self.queue.nudge(key, reason, urgent=True)

    def hand(self, body: Mapping[str, Any]) -> Key:
        """Keep the body kopf handed us for the next run of its key, unless one of a newer
        generation is kept already. Packed (one allocation, not kopf's event) until the run takes it."""
        plain = dict(body)
        key, generation = _key(plain), body_generation(plain)
        with self._bodies_lock:
            cur = self._bodies.get(key)
            if cur is None or generation >= cur[0]:
                self._bodies[key] = (generation, Entry.pack(plain))
        return key

    def validate(self, body: Mapping[str, Any]) -> None:
        """Parse the spec (SpecError if it can never work), into the reconciler's parsed specs."""
        if self.reconciler is None:
            ModelDeployment.from_body(dict(body))
        else:
            self.reconciler.parse(dict(body))

    def schedule(self, namespace: str, name: str, seconds: float) -> None:
        if self.queue is not None:
            self.queue.nudge_in((namespace, name), seconds)

    def refresh(self, namespace: str, name: str) -> None:
        if self.queue is not None:
            self.queue.nudge((namespace, name), "refresh", self.config.status_debounce_seconds)

    def child_event(self, kind: str, old: dict[str, Any] | None, new: dict[str, Any] | None) -> None:
        """A change seen by a watch (on the informer's thread: only marks owners)."""
        if self.queue is None:
            return
        if new is not None and kind in ("Deployment", "ModelDeployment"):
            _observe_event_age(kind, new)
        if kind == "ModelDeployment":
            # kopf's handlers take spec changes. The store catching up with a generation whose
            # status is not written yet is worth a (light) refresh: the reconcile may have found
            # the store behind it. Gone from the store: gone (no kopf event handler, which kopf
            # ran for every event of every object, our status writes too).
            if new is None and old is not None:
                self.forget(*_key(old))
                self.diffbase.forget(str(old["metadata"].get("uid")))
            elif new is not None and body_generation(new) != (new.get("status") or {}).get(
                "observedGeneration"
            ):
                self.refresh(*_key(new))
            return
        if kind == CRD.kind:
            self.crd_event(old, new)
            return
        meta = (new or old or {}).get("metadata") or {}
        labels = meta.get("labels") or {}
        owner = labels.get(OWNER_LABEL) or (labels.get(INSTANCE_LABEL) if kind == "Pod" else None)
        ns = meta.get("namespace")
        if not owner or not ns:
            return
        if kind == "Pod" and self.reconciler and self.reconciler.awaiting_finish(ns, owner):
            # a staged create's pod is on its way: the rest of its children and its first status go
            # ahead of the other staged objects' finish runs, so they are written before the
            # Deployment counts the pod available
            tier = self._finish_tier((ns, owner), new)
            if tier:
                self.queue.nudge((ns, owner), "finish", front=tier)
        if kind == "Deployment" and _availability(old) != _availability(new):
            # Ready follows the Deployment's availability: no debounce (it only gathers pod events)
            self.queue.nudge((ns, owner), "refresh", 0.0)
        elif kind in ("Pod", "Deployment", "Job"):
            self.refresh(ns, owner)
        if kind == "Pod" or not (
            kind == "Job" or content_changed(old, new)
        ):  # pods: new only (NEW_ONLY_EVENTS)
            return
        if new is not None and self.cache is not None and self.cache.writing(kind, ns, meta.get("name", "")):
            return  # our own write's event, ahead of its answer (CachedKube.writing)
        # drift seen through the watches: one reconcile of the owner per debounce window
        self.queue.nudge((ns, owner), "drift", self.config.repair_debounce_seconds)

    def crd_event(self, old: dict[str, Any] | None, new: dict[str, Any] | None) -> None:
        """A CRD we render for was installed, established or removed: every ModelDeployment's
        children (and notes) may change. One drift repair + status refresh of each, queued."""
        if crd_established(old) == crd_established(new) or self.cache is None or self.queue is None:
            return
        name = ((new or old or {}).get("metadata") or {}).get("name")
        log.info("CRD %s %s", name, "established" if crd_established(new) else "gone")
        if self.resync is None:
            return
        keys = self.resync.keys()
        self.queue.mark_all(keys, "drift")
        self.queue.mark_all(keys, "refresh")

    def body(self, key: Key) -> dict[str, Any] | None:
        """The newest body of ``key``: the store's, or kopf's if that is of a newer generation."""
        assert self.cache is not None
        stored = self.cache.get(MODELDEPLOYMENT, *key)
        with self._bodies_lock:
            packed = self._bodies.pop(key, None)
        if packed is None:
            return stored
        handed = packed[1].unpack()
        if stored is None:
            return None if handed["metadata"].get("deletionTimestamp") else handed
        same = stored["metadata"].get("uid") == handed["metadata"].get("uid")
        return handed if same and body_generation(handed) > body_generation(stored) else stored

    def _finish_tier(self, key: Key, pod: dict[str, Any] | None) -> int:
        """How far ahead a staged object's finish run goes for this event of its pod (a queue
        ``front`` tier; 0: not moved). Once the pod runs: ahead of all (tier 2). Once it is on a
        node: ahead of the finish runs of objects whose pods are not (tier 1), so finish runs follow
        the pods' progress rather than the burst's order (runs in the same tier: the earliest moved
        first). But while creates are queued, on a node counts only once some staged object's pod
        ran meanwhile (a burst too large for its creates to be written before pods start): a
        finish run ahead of the creates holds back other objects' Deployments (operator reaction
        p50 16.6 s instead of 5.2 s at N = 300), so until then such pods are moved when the last
        queued create is taken. Not only once the pod runs: KWOK marks a pod Running and Ready at
        once, which leaves the Deployment controller's delay as the lead (status lag up to 1.7 s
        at N = 300; at N = 1,000, pods ran long before the creates were done: 5.4 s)."""
        if _running(pod):
            with self._creating_lock:
                flush = bool(self._creating) and not self._overlap
                self._overlap = self._overlap or flush
            if flush:
                self._promote_on_node()
            return 2
        if not ((pod or {}).get("spec") or {}).get("nodeName"):
            return 0
        with self._creating_lock:
            if self._creating and not self._overlap:
                self._on_node[key] = None  # moved when the last queued create is taken
                return 0
        return 1

    def _created(self, key: Key) -> None:
        """A run took ``key``'s queued create: the last one moves the finish runs of the staged
        objects whose pods got on a node meanwhile ahead (see _finish_tier)."""
        with self._creating_lock:
            self._creating.discard(key)
            if self._creating:
                return
            self._overlap = False  # the burst's creates are written
        self._promote_on_node()

    def _promote_on_node(self) -> None:
        """Move the finish runs of the staged objects whose pods got on a node while creates were
        queued ahead (tier 1), in the order their pods got there."""
        with self._creating_lock:
            waiting, self._on_node = list(self._on_node), {}
        if self.queue is not None and self.reconciler is not None:
            for k in waiting:
                if self.reconciler.awaiting_finish(*k):
                    self.queue.nudge(k, "finish", front=1)

    def process(self, key: Key, reasons: frozenset[str]) -> Any:
        """One run of the queue for ``key``: a reconcile if any trigger asks for one, else (or also,
        when a drift repair found nothing to change) a status refresh."""
        assert self.reconciler is not None
        if "create" in reasons:
            self._created(key)
        if FORGET in reasons:
            self.reconciler.forget(*key)
            if reasons == {FORGET}:
                return None
        trigger = next((t for t in TRIGGERS if t in reasons), None)
        if trigger is None:
            return self.reconciler.refresh_status(*key)
        if trigger == "resync" and self.reconciler.reconciled_within(*key, self.config.resync_seconds):
            # compared on an event within the interval (Reconciler.reconciled_within); a status
            # refresh queued with the resync still runs
            return self.reconciler.refresh_status(*key) if "refresh" in reasons else None
        body = self.body(key)
        if body is None or body["metadata"].get("deletionTimestamp"):
            return None
        outcome = self.reconciler.reconcile(body, trigger=trigger)
        if trigger == "drift" and "refresh" in reasons and not outcome.changes:
            self.reconciler.refresh_status(*key)
        return outcome

    def forget(self, namespace: str, name: str) -> None:
        """The object is gone (its store's DELETED event): drop its queued runs, and forget its state
        in a run of its own. The queue never runs a key twice at once, so that run comes after any
        run of the object that was under way when it went, which may still have recorded state of
        it (its applied generation, its status write time): forgetting at once, on the event loop,
        left that behind. (Its count on /metrics follows the ModelDeployment store, not the runs:
        metrics.ConditionTracker.)"""
        with self._bodies_lock:
            self._bodies.pop((namespace, name), None)
        with self._creating_lock:
            self._creating.discard((namespace, name))
            self._on_node.pop((namespace, name), None)
        if self.queue is not None:
            self.queue.discard((namespace, name))
            self.queue.nudge((namespace, name), FORGET)
        elif self.reconciler is not None:
            self.reconciler.forget(namespace, name)

    def stop(self) -> None:
        if self.reconciler:
            self.reconciler.pusher.stop()
        if self.queue:
            self.queue.stop()
        if self.resync:
            self.resync.stop()
        if self.cache:
            self.cache.stop()


def _key(body: dict[str, Any]) -> Key:
    meta = body["metadata"]
    return str(meta["namespace"]), str(meta["name"])


def _running(pod: dict[str, Any] | None) -> bool:
    """A pod whose containers started (Running, or Ready already)."""
    st = (pod or {}).get("status") or {}
    return st.get("phase") == "Running" or any(
        c.get("type") == "Ready" and c.get("status") == "True" for c in st.get("conditions") or []
    )


def _availability(dep: dict[str, Any] | None) -> tuple[Any, ...]:
    """What of a Deployment's status Ready is judged by: its replica counts and Available."""
    st = (dep or {}).get("status") or {}
    available = next(
        (c.get("status") for c in st.get("conditions") or [] if c.get("type") == "Available"), None
    )
    return (st.get("availableReplicas"), st.get("readyReplicas"), st.get("updatedReplicas"), available)


def _observe_event_age(kind: str, obj: dict[str, Any]) -> None:
    """How late a watch event reaches us (from its last write's managedFields time)."""
    written = _last_write(obj)
    if written is not None:
        metrics.WATCH_EVENT_AGE.labels(kind=kind).observe((dt.datetime.now(dt.UTC) - written).total_seconds())


def _observe_latency(key: Key, reasons: frozenset[str], waited: float) -> None:
    if reasons == {"refresh"}:  # a status refresh alone (the status lag's share in the queue)
        metrics.HANDLER_LATENCY.labels(trigger="refresh").observe(waited)
    elif reasons & {"drift", "refresh"} and not reasons & set(SPEC_TRIGGERS):
        metrics.HANDLER_LATENCY.labels(trigger="child-event").observe(waited)


async def handle_change(state: State, body: Mapping[str, Any], reason: str) -> None:
    """kopf's create/update/resume handler: mark the object in the queue and return. The run is
    not awaited: the queue retries a failed run with its per-object backoff, and the run writes the
    status (``Ready=False`` with the reason). Awaiting it kept kopf's machinery for the object (its
    worker, cause, body, patch and handler state: about 55 KB of small objects) alive until the run
    was done, for every object of a burst at once, and the allocator kept that peak after the
    objects were gone (#12). A spec that can never work ends here too, as kopf's PermanentError."""
    lat = _latency_since_change(body)
    if lat is not None and reason in ("create", "update"):
        metrics.HANDLER_LATENCY.labels(trigger=reason).observe(lat)
    state.mark(body, reason)
    try:
        state.validate(body)  # about 0.1 ms, on the event loop; the run then finds it parsed
    except SpecError as exc:
        raise kopf.PermanentError(f"InvalidSpec: {'; '.join(exc.errors)}") from None


#: How long kopf keeps an idle per-object worker (kopf's default: 5 s). A new event simply starts
#: a new one; the handlers do the real work in the operator's own work queue.
KOPF_IDLE_SECONDS = 0.5


def register(registry: kopf.OperatorRegistry, config: OperatorConfig, api_client: Any | None = None) -> State:
    state = State(config)

    @kopf.on.startup(registry=registry)
    def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
        settings.persistence.progress_storage = ProgressAnnotations(prefix="modeldeploy.io")
        settings.persistence.diffbase_storage = state.diffbase
        settings.posting.level = logging.WARNING
        if config.namespaces and not any(set(ns) & set("*?[]!,") for ns in config.namespaces):
            # Exact namespaces: no cluster-wide namespace/CRD scanning, which would need RBAC to
            # list namespaces (the chart grants none) and cost ~30 s of forbidden retries at start.
            settings.scanning.disabled = True
        settings.execution.max_workers = 16
        settings.watching.server_timeout = 300
        settings.watching.client_timeout = 330
        settings.networking.request_timeout = 60
        # kopf keeps a worker (task, queue, the object's last raw body) per object for
        # ``idle_timeout`` after its last event (5 s by default): a burst of 1,000 creations or
        # deletions held 1,000 of them at once, and what they left pins allocator arenas (#12).
        settings.queueing.idle_timeout = KOPF_IDLE_SECONDS
        state.start(api_client)

    @kopf.on.login(registry=registry)
    def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
        # in-cluster ServiceAccount, else KUBECONFIG (a fresh registry has no default login handlers)
        return kopf.login_via_client(**kwargs)

    @kopf.on.cleanup(registry=registry)
    def cleanup(**_: Any) -> None:
        state.stop()

    @kopf.on.resume(GROUP, VERSION, PLURAL, registry=registry)
    @kopf.on.create(GROUP, VERSION, PLURAL, registry=registry)
    @kopf.on.update(GROUP, VERSION, PLURAL, registry=registry)
    async def reconcile(body: kopf.Body, reason: str, **_: Any) -> None:
        await handle_change(state, body, str(reason))

    return state


# `kopf run -m modeldeploy.handlers`: register into kopf's default registry.
DEFAULT_STATE = register(kopf.get_default_registry(), OperatorConfig.from_env())
