"""The operator's reads from watch-fed stores: :class:`CachedKube` is a :class:`Kube` whose ``get`` and
``list`` answer from an :class:`~modeldeploy.reconcile.informer.Informer` when one covers the request
and has synced, and from the API server otherwise; its writes go to the API server and their answers
into the store (write-through). ``get_live`` always asks the API server (used before creating a
child: an object we do not own carries no label of ours and so is in no store).

Kinds kept (in the namespaces in scope; server-side label selectors): ModelDeployments (all), and our
children by ``app.kubernetes.io/managed-by``: ConfigMaps, Services, Deployments, HPAs, PDBs,
NetworkPolicies, Jobs, plus ScaledObjects, HTTPScaledObjects and ServiceMonitors once their CRD is
established; pods by ``app.kubernetes.io/part-of=modeldeploy`` (model and prefetch pods), without
their managedFields. Other objects are kept as their watch events carried them (their JSON as sent,
compressed: not encoded again). The CRDs the operator renders for (KEDA's, the HTTP add-on's,
prometheus-operator's ServiceMonitor) are watched one by one (``fieldSelector=metadata.name=<crd>``:
a CRD installed or removed later is seen at once, without a GET per reconcile or timer). Secrets are not watched: the operator creates its two Secrets once and keeps
the push token in memory, so it needs no list/watch on Secrets (least privilege).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from modeldeploy.reconcile.informer import EventSink, Informer, StoreTracker, implies, parse_selector
from modeldeploy.reconcile.kube import (
    CONFIGMAP,
    CRD,
    DEPLOYMENT,
    HPA,
    JOB,
    MODELDEPLOYMENT,
    NETWORKPOLICY,
    PDB,
    POD,
    SERVICE,
    Keys,
    Kube,
    Resource,
)
from modeldeploy.render.common import FIELD_MANAGER, MANAGED_BY, MANAGED_BY_LABEL, OWNER_LABEL

PART_OF = "app.kubernetes.io/part-of=modeldeploy"
OWNED = f"{MANAGED_BY_LABEL}={MANAGED_BY}"
#: kind -> (label selector of its watch, metadata fields not kept). Pods go without their
#: managedFields: each status refresh decodes the pods of its object, and with them a N = 300 burst
#: spent more decoding those lists than encoding each pod event again costs
SELECTIONS: dict[str, tuple[str, tuple[str, ...]]] = {
    MODELDEPLOYMENT.kind: ("", ()),
    POD.kind: (PART_OF, ("managedFields",)),
}
#: Kinds whose events the operator reads the new version of only (a pod's marks its owner for a
#: status refresh: handlers.State.child_event): their stores do not decode the previous version
NEW_ONLY_EVENTS = frozenset({POD.kind})
BASE_KINDS = (MODELDEPLOYMENT, CONFIGMAP, SERVICE, DEPLOYMENT, HPA, PDB, NETWORKPOLICY, JOB, POD)
#: Children kinds whose every name in scope is kept too (metadata-only watches, anyone's objects):
#: a child absent from our store and from these is created without a GET first (known_absent)
NAMED_KINDS = (CONFIGMAP, SERVICE, DEPLOYMENT, HPA, PDB, NETWORKPOLICY, JOB)
#: The names watches' selector: every object our stores (OWNED) do not hold. Ours would only repeat
#: what those stores say, and each of their events (a Deployment's status, six writes on its way to
#: Available) cost the API server a metadata conversion and encoding, and us a decode, per event.
NOT_OWNED = f"{MANAGED_BY_LABEL}!={MANAGED_BY}"


def store_answers(kind: str, label_selector: str | None) -> bool:
    """Whether a synced store of ``kind`` answers a list with ``label_selector`` (else it goes to
    the API server as a LIST): the selector must require each label of the store's watch."""
    selection = parse_selector(SELECTIONS.get(kind, (OWNED, ()))[0]) or {}
    return implies(parse_selector(label_selector), selection)


def crd_established(crd: dict[str, Any] | None) -> bool:
    return any(
        c.get("type") == "Established" and c.get("status") == "True"
        for c in ((crd or {}).get("status") or {}).get("conditions") or []
    )


def _exact(namespaces: Sequence[str]) -> list[str] | None:
    """The namespaces to watch one by one, or None: watch all (globs or no restriction)."""
    if namespaces and not any(set(ns) & set("*?[]!") for ns in namespaces):
        return list(namespaces)
    return None


class CachedKube(Kube):
    def __init__(
        self,
        kube: Kube,
        namespaces: Sequence[str] = (),
        in_scope: Callable[[str], bool] = lambda _ns: True,
        on_event: EventSink | None = None,
        watch_kube: Kube | None = None,
        trackers: Mapping[str, StoreTracker] | None = None,
    ) -> None:
        super().__init__(kube.api, kube.timeout)
        self.watch_kube = watch_kube or kube  # long-lived watches: best on a connection pool of their own
        self.exact = _exact(namespaces)
        self.in_scope = in_scope
        self.on_event = on_event
        self.trackers = dict(trackers or {})  # kind -> what follows the kind's stores (metrics)
        self._informers: dict[tuple[str, str | None], Informer] = {}
        self._crd_informers: dict[str, Informer] = {}  # CRD name -> its watch
        self._names: dict[tuple[str, str | None], Informer] = {}  # every name of a NAMED_KINDS kind
        #: (kind, namespace, name) -> our writes of it under way (see :meth:`writing`)
        self._writing: dict[tuple[str, str, str], int] = {}
        self._lock = threading.Lock()

    # --------------------------------------------------------------- informers
    def start(self, kinds: Sequence[Resource] = BASE_KINDS) -> CachedKube:
        self.watch_kinds(kinds)
        return self

    def stop(self) -> None:
        with self._lock:
            informers = [*self._informers.values(), *self._crd_informers.values(), *self._names.values()]
        for inf in informers:
            inf.stop()

    def unwatch_kinds(self, kinds: Sequence[Resource]) -> None:
        """Stop keeping ``kinds`` (their CRD was removed: a LIST would only answer 404)."""
        gone = {res.kind for res in kinds}
        with self._lock:
            keys = [k for k in self._informers if k[0] in gone]
            stopped = [self._informers.pop(k) for k in keys]
        for inf in stopped:
            inf.stop()

    def watch_crds(self, names: Sequence[str]) -> None:
        """Keep the CRDs ``names`` (one watch each, by name; idempotent); their changes go to
        ``on_event`` as kind ``CustomResourceDefinition``."""
        for name in names:
            with self._lock:
                if name in self._crd_informers:
                    continue
                inf = Informer(
                    self.watch_kube,
                    CRD,
                    None,
                    "",
                    self.on_event,
                    in_scope=lambda _ns: True,
                    strip=("managedFields",),
                    field_selector=f"metadata.name={name}",
                )
                self._crd_informers[name] = inf
            inf.start()

    def established_crds(self, names: Sequence[str]) -> frozenset[str] | None:
        """Which of ``names`` are established, from their watches (None until each has listed)."""
        with self._lock:
            known = all(n in self._crd_informers for n in names)
        if not known:
            self.watch_crds(names)
        with self._lock:
            infs = [(n, self._crd_informers[n]) for n in names]
        if not all(inf.synced for _, inf in infs):
            return None
        return frozenset(n for n, inf in infs if crd_established(inf.get("", n)))

    def watch_kinds(self, kinds: Sequence[Resource]) -> None:
        """Start keeping ``kinds`` (idempotent; called again when a CRD appears)."""
        for res in kinds:
            selector, strip = SELECTIONS.get(res.kind, (OWNED, ()))
            scopes: list[str | None] = list(self.exact) if self.exact else [None]
            for ns in scopes:
                with self._lock:
                    if (res.kind, ns) in self._informers:
                        continue
                    inf = Informer(
                        self.watch_kube,
                        res,
                        ns,
                        selector,
                        self.on_event,
                        in_scope=self.in_scope,
                        strip=strip,
                        index_key=OWNER_LABEL,  # pods and children of one ModelDeployment: no scan
                        tracker=self.trackers.get(res.kind),
                        notify_old=res.kind not in NEW_ONLY_EVENTS,
                    )
                    self._informers[(res.kind, ns)] = inf
                inf.start()
                if res in NAMED_KINDS:
                    self._watch_names(res, ns)

    def _watch_names(self, res: Resource, ns: str | None) -> None:
        with self._lock:
            if (res.kind, ns) in self._names:
                return
            inf = Informer(
                self.watch_kube, res, ns, NOT_OWNED, None, in_scope=self.in_scope, metadata_only=True
            )
            self._names[(res.kind, ns)] = inf
        inf.start()

    def known_absent(self, res: Resource, namespace: str, name: str) -> bool:
        """No object of ``res`` named ``name`` in ``namespace`` that is not ours, per the
        metadata-only watch of every such name (NOT_OWNED), once it has listed; ours are in the
        store :meth:`get` reads (the caller looked there first): creating it takes nobody's object.
        A name taken since the watch's last event is not seen; the apply then merges into it, as
        one made before that GET would."""
        with self._lock:
            inf = self._names.get(self._scope_key(res, namespace))
        return inf is not None and inf.covers(namespace, {}) and not inf.has(namespace, name)

    def informers(self) -> list[Informer]:
        with self._lock:
            return list(self._informers.values())

    def wait_synced(self, timeout: float) -> bool:
        with self._lock:
            names = list(self._names.values())
        return all(inf.wait_synced(timeout) for inf in [*self.informers(), *names])

    def _scope_key(self, res: Resource, namespace: str | None) -> tuple[str, str | None]:
        """The key of ``res``'s store holding ``namespace``: per namespace, or one for all."""
        return res.kind, namespace if self.exact else None

    def _informer(self, res: Resource, namespace: str | None) -> Informer | None:
        with self._lock:
            return self._informers.get(self._scope_key(res, namespace))

    # --------------------------------------------------------------------- reads
    def get(self, res: Resource, namespace: str | None, name: str) -> dict[str, Any] | None:
        inf = self._informer(res, namespace)
        if inf is not None and namespace is not None and inf.covers(namespace, inf.selector):
            return inf.get(namespace, name)
        return super().get(res, namespace, name)

    def get_live(self, res: Resource, namespace: str | None, name: str) -> dict[str, Any] | None:
        obj = super().get(res, namespace, name)
        inf = self._informer(res, namespace)
        if obj is not None and inf is not None:
            inf.put(obj)
        return obj

    def list(
        self,
        res: Resource,
        namespace: str | None = None,
        *,
        label_selector: str | None = None,
        field_selector: str | None = None,
    ) -> list[dict[str, Any]]:
        selector = parse_selector(label_selector)
        inf = self._informer(res, namespace)
        if (
            inf is not None
            and selector is not None
            and not field_selector
            and inf.covers(namespace, selector)
        ):
            return inf.list(namespace, selector)
        return super().list(res, namespace, label_selector=label_selector, field_selector=field_selector)

    def list_keys(self, res: Resource, namespace: str | None = None) -> Keys:
        inf = self._informer(res, namespace)
        if inf is not None and inf.covers(namespace, inf.selector):
            return inf.keys(namespace)  # no object decoded
        return super().list_keys(res, namespace)

    @property
    def reads_cached(self) -> bool:
        return True

    # -------------------------------------------------------------------- writes
    def writing(self, kind: str, namespace: str, name: str) -> bool:
        """Whether an apply of ours to that object is under way, its answer not yet in the store.
        The watch often delivers the write's own event first (a new child's ADDED before the
        create's answer, under load): that event is not drift, and treating it as drift cost a
        reconcile of the owner per such race (a quarter of all objects in a burst of 300). A
        change by someone else that lands after our write and is seen meanwhile is not lost:
        :meth:`apply` finds the store ahead of its answer and hands both to ``on_event``."""
        with self._lock:
            return (kind, namespace, name) in self._writing

    def apply(
        self,
        obj: dict[str, Any],
        res: Resource | None = None,
        *,
        force: bool = True,
        manager: str = FIELD_MANAGER,
    ) -> dict[str, Any]:
        from modeldeploy.reconcile.kube import BY_KIND

        res = res or BY_KIND[obj["kind"]]
        meta = obj["metadata"]
        key = (res.kind, str(meta.get("namespace") or ""), str(meta["name"]))
        with self._lock:
            self._writing[key] = self._writing.get(key, 0) + 1
        try:
            out, raw = super().apply_answer(obj, res, force=force, manager=manager)
            newer = self._store(res, out, raw)  # before the write stops counting as under way
        finally:
            with self._lock:
                left = self._writing.pop(key) - 1
                if left:
                    self._writing[key] = left
        self._report(res, out, newer)
        return out

    def delete(self, res: Resource, namespace: str | None, name: str, uid: str | None = None) -> bool:
        done = super().delete(res, namespace, name, uid)
        inf = self._informer(res, namespace)
        if inf is not None and namespace is not None:
            inf.drop(namespace, name)
        return done

    def patch_status(self, res: Resource, namespace: str, name: str, patch: dict[str, Any]) -> dict[str, Any]:
        out, raw = super().patch_status_answer(res, namespace, name, patch)
        self._report(res, out, self._store(res, out, raw))
        return out

    def create(self, res: Resource, namespace: str | None, obj: dict[str, Any]) -> dict[str, Any]:
        out = super().create(res, namespace, obj)
        self._put(res, out)
        return out

    def _put(self, res: Resource | None, obj: dict[str, Any]) -> None:
        self._report(res, obj, self._store(res, obj))

    def _store(
        self, res: Resource | None, obj: dict[str, Any], raw: bytes | None = None
    ) -> dict[str, Any] | None:
        """Our write's answer (``raw``: as sent) into its store; the newer version the store holds
        instead, if any."""
        from modeldeploy.reconcile.kube import BY_KIND

        res = res or BY_KIND.get(str(obj.get("kind")))
        meta = obj.get("metadata") or {}
        inf = self._informer(res, meta.get("namespace")) if res is not None else None
        if inf is None or not meta.get("name"):
            return None
        return inf.put(obj, raw)

    def _report(self, res: Resource | None, obj: dict[str, Any], newer: dict[str, Any] | None) -> None:
        """The watch brought a later version than our write's answer while we wrote (its event may
        have been taken for our write's: see writing): from our answer to it is someone else's change."""
        if newer is not None and self.on_event is not None:
            self.on_event(str((res.kind if res else None) or obj.get("kind")), obj, newer)
