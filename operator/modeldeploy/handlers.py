"""kopf handlers (thin): everything else lives in :mod:`modeldeploy.reconcile`.

* create/update/resume -> one ``reconcile`` (apply what differs, delete what is no longer wanted);
* reads come from watch-fed stores (reconcile/cache.py, reconcile/informer.py): the
  ModelDeployments and every kind of child the operator owns, pods of its label;
* a child created, edited or deleted by someone else (seen through those watches) -> a debounced
  reconcile of its owner, which puts it back (drift repair within about a second);
* every ``resync_seconds`` a resync loop (not kopf timers: those add a finalizer to every object)
  runs the same reconcile over the cached ModelDeployments, level-based: it compares the stores with
  the desired state and writes only on a real difference, with no API read;
* events of our Deployments, pods and Jobs -> a debounced status refresh of the owner (a
  Deployment's ``ReplicaFailure``/``FailedCreate`` or progress deadline is in the status within seconds);
* time-based transitions (end of a propagation window, a load timeout) -> a status refresh
  scheduled for when they fall due.

kopf's "last handled configuration" is kept in memory (:class:`MemoryDiffBase`), so kopf writes
nothing to the object when a change is handled; its progress annotations (``modeldeploy.io/…``)
appear only while a handler is being retried; kopf posts k8s Events only for warnings. No finalizers:
children go by owner-reference garbage collection.

Usable with ``mdctl operator run`` (which calls :func:`register` on a fresh registry) and with
``kopf run -m modeldeploy.handlers`` (module import registers into kopf's default registry, with
settings from the environment: KUBECONFIG, MODELDEPLOY_RESYNC_SECONDS, MODELDEPLOY_NAMESPACES (comma
separated, globs allowed; must match kopf's --namespace), MODELDEPLOY_QUERY_AGENTS (default true)).

Talking to the agents (reading /status, pushing manifests) is blocking HTTP with short timeouts: it
runs in the reconcile's thread (kopf runs sync handlers in its executor, never on the event loop), in
the status refresher's threads, and, for pushes, on the reconciler's own push pool.
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any

import kopf

from modeldeploy import metrics
from modeldeploy.api.v1alpha1 import GROUP, PLURAL, VERSION
from modeldeploy.reconcile.cache import CachedKube
from modeldeploy.reconcile.kube import MODELDEPLOYMENT, Kube, KubeError
from modeldeploy.reconcile.reconciler import ApplyRejected, InvalidSpec, OperatorConfig, Reconciler
from modeldeploy.reconcile.refresher import StatusRefresher
from modeldeploy.reconcile.resync import ResyncLoop, in_scope
from modeldeploy.render.common import FIELD_MANAGER, OWNER_LABEL

INSTANCE_LABEL = "app.kubernetes.io/instance"  # the prefetch pods' owner

log = logging.getLogger("modeldeploy.handlers")


def _latency_since_change(body: Any) -> float | None:
    """Seconds since the last write to the object by someone else than the operator."""
    latest = None
    for mf in body.get("metadata", {}).get("managedFields") or []:
        if mf.get("manager") == FIELD_MANAGER or mf.get("subresource") or not mf.get("time"):
            continue
        t = dt.datetime.fromisoformat(str(mf["time"]).replace("Z", "+00:00"))
        latest = t if latest is None or t > latest else latest
    if latest is None:
        return None
    return max(0.0, (dt.datetime.now(dt.UTC) - latest).total_seconds())


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
_META = ("labels", "annotations", "ownerReferences")


def content_changed(old: dict[str, Any] | None, new: dict[str, Any] | None) -> bool:
    """Whether a child's event may be drift (deleted, created, or its spec/data/metadata edited)."""
    if old is None or new is None:
        return True
    om, nm = old.get("metadata") or {}, new.get("metadata") or {}
    return any(old.get(k) != new.get(k) for k in _CONTENT) or any(om.get(k) != nm.get(k) for k in _META)


class MemoryDiffBase(kopf.DiffBaseStorage):
    """kopf's "last handled" essence of each ModelDeployment, kept in memory rather than written
    into an annotation of the object (one write per object and spec change saved). After a restart
    kopf finds none and handles every object as created, which runs the same reconcile as resuming."""

    def __init__(self) -> None:
        super().__init__()
        self._essences: dict[str, kopf.BodyEssence] = {}

    def fetch(self, *, body: kopf.Body) -> kopf.BodyEssence | None:
        return self._essences.get(str(body.get("metadata", {}).get("uid")))

    def store(self, *, body: kopf.Body, patch: kopf.Patch, essence: kopf.BodyEssence) -> None:
        self._essences[str(body.get("metadata", {}).get("uid"))] = essence

    def forget(self, uid: str) -> None:
        self._essences.pop(uid, None)


class ProgressAnnotations(kopf.AnnotationsProgressStorage):
    """kopf's progress annotations (present only while a handler is being retried), without the
    one-time ``<prefix>/kopf-managed`` marker kopf adds to every object it handles: nothing reads
    it, and writing it was one patch of every new ModelDeployment."""

    def _store_marker(self, prefix: str, patch: kopf.Patch, body: kopf.Body) -> None:
        return None


class State:
    """The per-process objects the handlers share (created at kopf startup)."""

    def __init__(self, config: OperatorConfig) -> None:
        self.config = config
        self.cache: CachedKube | None = None
        self.reconciler: Reconciler | None = None
        self.refresher: StatusRefresher | None = None
        self.repairs: StatusRefresher | None = None
        self.resync: ResyncLoop | None = None
        self.diffbase = MemoryDiffBase()

    def start(self, api_client: Any | None = None) -> None:
        api = api_client or _load_client()
        namespaces = self.config.namespaces
        self.cache = CachedKube(
            Kube(api),
            namespaces,
            lambda ns: in_scope(ns, namespaces),
            on_event=self.child_event,
            watch_kube=Kube(_watch_client(api)),
        )
        self.reconciler = Reconciler(self.cache, self.config)
        self.refresher = StatusRefresher(
            self.reconciler.refresh_status, debounce=self.config.status_debounce_seconds
        ).start()
        # drift seen through the watches: one reconcile of the owner per debounce window
        self.repairs = StatusRefresher(self.repair, debounce=self.config.repair_debounce_seconds).start()
        self.reconciler.pusher.done = self.refresher.mark  # a push round done: re-read the agents
        self.reconciler.schedule = self.refresher.mark_in  # time-based transitions, on time
        self.cache.start()
        reconciler = self.reconciler

        def resync(body: dict[str, Any]) -> None:
            try:
                reconciler.reconcile(body, trigger="resync")
            except (InvalidSpec, ApplyRejected):
                pass  # already in the status; InvalidSpec waits for a spec change, ApplyRejected for the next resync

        self.resync = ResyncLoop(self.cache, resync, self.config.resync_seconds, namespaces).start()

    def child_event(self, kind: str, old: dict[str, Any] | None, new: dict[str, Any] | None) -> None:
        """A change seen by a watch (on the informer's thread: only marks owners)."""
        if kind == "ModelDeployment":
            return  # kopf's handlers take spec changes
        meta = (new or old or {}).get("metadata") or {}
        labels = meta.get("labels") or {}
        owner = labels.get(OWNER_LABEL) or (labels.get(INSTANCE_LABEL) if kind == "Pod" else None)
        ns = meta.get("namespace")
        if not owner or not ns:
            return
        if kind in ("Pod", "Deployment", "Job") and self.refresher is not None:
            self.refresher.mark(ns, owner)
        if kind != "Pod" and self.repairs is not None and (kind == "Job" or content_changed(old, new)):
            self.repairs.mark(ns, owner)

    def repair(self, namespace: str, name: str) -> None:
        """Reconcile an owner whose child changed (from the cache: no API read when nothing differs)."""
        if self.cache is None or self.reconciler is None:
            return
        body = self.cache.get(MODELDEPLOYMENT, namespace, name)
        if body is None or body["metadata"].get("deletionTimestamp"):
            return
        try:
            self.reconciler.reconcile(body, trigger="drift")
        except (InvalidSpec, ApplyRejected):
            pass  # in the status already

    def stop(self) -> None:
        if self.reconciler:
            self.reconciler.pusher.stop()
        for loop in (self.refresher, self.repairs):
            if loop:
                loop.stop()
        if self.resync:
            self.resync.stop()
        if self.cache:
            self.cache.stop()


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
        state.start(api_client)

    @kopf.on.login(registry=registry)
    def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
        # in-cluster ServiceAccount, else KUBECONFIG (a fresh registry has no default login handlers)
        return kopf.login_via_client(**kwargs)

    @kopf.on.cleanup(registry=registry)
    def cleanup(**_: Any) -> None:
        state.stop()

    def _run(body: Any, trigger: str, retry: int = 0) -> None:
        assert state.reconciler is not None
        try:
            state.reconciler.reconcile(dict(body), trigger=trigger)
        except InvalidSpec as exc:
            raise kopf.PermanentError(f"InvalidSpec: {exc}") from None
        except ApplyRejected as exc:
            # In the status already; the resync loop retries at its normal rate (it may pass later).
            raise kopf.PermanentError(f"ApplyRejected: {exc}") from None
        except KubeError as exc:
            if exc.retryable or exc.status == 403:
                raise kopf.TemporaryError(str(exc), delay=min(60, 2 ** min(retry, 6))) from None
            raise kopf.TemporaryError(str(exc), delay=30) from None

    @kopf.on.resume(GROUP, VERSION, PLURAL, registry=registry)
    @kopf.on.create(GROUP, VERSION, PLURAL, registry=registry)
    @kopf.on.update(GROUP, VERSION, PLURAL, registry=registry)
    def reconcile(body: kopf.Body, reason: str, retry: int, **_: Any) -> None:
        lat = _latency_since_change(body)
        if lat is not None and reason in ("create", "update"):
            metrics.HANDLER_LATENCY.labels(trigger=str(reason)).observe(lat)
        _run(body, str(reason), retry)

    @kopf.on.event(GROUP, VERSION, PLURAL, registry=registry)
    def md_event(type: str | None, body: kopf.Body, **_: Any) -> None:
        if type == "DELETED" and state.reconciler is not None:
            state.reconciler.forget(body["metadata"]["namespace"], body["metadata"]["name"])
            state.diffbase.forget(str(body["metadata"].get("uid")))

    return state


# `kopf run -m modeldeploy.handlers`: register into kopf's default registry.
DEFAULT_STATE = register(kopf.get_default_registry(), OperatorConfig.from_env())
