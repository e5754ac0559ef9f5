"""Watch-fed caches (informer style): one in-memory store per owned kind, kept by LIST + WATCH.

Each :class:`Informer` is a thread that lists its selection once (server-side label selector: only
our objects cross the wire and stay in memory), then follows a watch from the list's
resourceVersion, with bookmarks, re-opening it when the server ends it (``timeoutSeconds``). A watch
that cannot resume (410 Gone) or breaks (an API-server restart, a network error) leads to a fresh
LIST, so the store is never left stale: until that LIST succeeded the informer says it is not
synced and readers go to the API instead. Every change the store sees — through the watch or as the
difference a re-LIST found — is passed to ``on_event(kind, old, new)`` (``new`` None: deleted).

Writers keep the store current with :meth:`Informer.put`/:meth:`Informer.drop` (write-through of
the API server's answer), so a read right after our own write does not see the older version.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable
from typing import Any

from modeldeploy.reconcile.kube import Kube, KubeError, Resource

log = logging.getLogger("modeldeploy.informer")

Key = tuple[str, str]
#: (kind, old object or None, new object or None): called on the informer's thread; keep it short.
EventSink = Callable[[str, dict[str, Any] | None, dict[str, Any] | None], None]


class Gone(Exception):
    """The watch cannot resume from its resourceVersion (HTTP 410): list again."""


def _key(obj: dict[str, Any]) -> Key:
    meta = obj["metadata"]
    return str(meta.get("namespace") or ""), str(meta["name"])


def _rv(obj: dict[str, Any] | None) -> int | None:
    try:
        return int((obj or {}).get("metadata", {}).get("resourceVersion") or "")
    except ValueError:
        return None


def parse_selector(selector: str | None) -> dict[str, str] | None:
    """``k=v,k2=v2`` as a dict; None for anything else (set-based selectors are not evaluated here)."""
    out: dict[str, str] = {}
    for part in (selector or "").split(","):
        if not part:
            continue
        k, sep, v = part.partition("=")
        if not sep or v.startswith("=") or k.endswith("!") or not k:
            return None
        out[k.strip()] = v.strip()
    return out


def matches(obj: dict[str, Any], selector: dict[str, str]) -> bool:
    labels = obj.get("metadata", {}).get("labels") or {}
    return all(labels.get(k) == v for k, v in selector.items())


class Informer:
    """LIST + WATCH of one kind in one namespace (or all, filtered by ``in_scope``)."""

    def __init__(
        self,
        kube: Kube,
        res: Resource,
        namespace: str | None,
        label_selector: str,
        on_event: EventSink | None = None,
        in_scope: Callable[[str], bool] = lambda _ns: True,
        strip: Iterable[str] = (),
        watch_timeout: int = 300,
        field_selector: str | None = None,
    ) -> None:
        self.kube = kube
        self.res = res
        self.namespace = namespace
        self.label_selector = label_selector
        self.selector = parse_selector(label_selector) or {}
        #: server-side only (e.g. ``metadata.name=X``: one object, within RBAC's resourceNames)
        self.field_selector = field_selector
        self.on_event = on_event
        self.in_scope = in_scope
        self.strip = tuple(strip)  # metadata fields not kept (memory), e.g. managedFields of pods
        self.watch_timeout = watch_timeout
        self._objs: dict[Key, dict[str, Any]] = {}
        self._lock = threading.Lock()
        self._synced = threading.Event()
        self._stop = threading.Event()
        self.relists = 0
        self._thread = threading.Thread(
            target=self._run,
            name=f"informer-{res.plural}-{field_selector or namespace or 'all'}",
            daemon=True,
        )

    # ----------------------------------------------------------------- reads
    @property
    def synced(self) -> bool:
        return self._synced.is_set()

    def wait_synced(self, timeout: float) -> bool:
        return self._synced.wait(timeout)

    def covers(self, namespace: str | None, selector: dict[str, str] | None = None) -> bool:
        """Whether this store holds every object of ``namespace`` matching ``selector``."""
        if not self.synced:
            return False
        if self.namespace is not None and namespace != self.namespace:
            return False
        if namespace is not None and not self.in_scope(namespace):
            return False
        # our selection must be implied by the caller's: each of our labels required by it
        return selector is not None and all(selector.get(k) == v for k, v in self.selector.items())

    def get(self, namespace: str, name: str) -> dict[str, Any] | None:
        with self._lock:
            return self._objs.get((namespace, name))

    def list(self, namespace: str | None, selector: dict[str, str]) -> list[dict[str, Any]]:
        with self._lock:
            items = list(self._objs.values())
        return [
            o
            for o in items
            if (namespace is None or o["metadata"].get("namespace") == namespace) and matches(o, selector)
        ]

    def __len__(self) -> int:
        with self._lock:
            return len(self._objs)

    # ---------------------------------------------------------- write-through
    def put(self, obj: dict[str, Any]) -> None:
        """Our own write's result: keep it unless the store already has a newer version."""
        if not matches(obj, self.selector) or not self.in_scope(_key(obj)[0]):
            return
        self._upsert(obj, notify=False)

    def drop(self, namespace: str, name: str) -> None:
        with self._lock:
            self._objs.pop((namespace, name), None)

    # ---------------------------------------------------------------- thread
    def start(self) -> Informer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        backoff = 0.5
        while not self._stop.is_set():
            try:
                rv = self._relist()
                backoff = 0.5
                while not self._stop.is_set():
                    rv = self._follow(rv)
            except Gone:
                log.info("%s: watch expired; listing again", self.res.plural)
            except Exception as exc:  # the API server went away, a network error, ...
                self._synced.clear()  # readers go to the API until the store is listed again
                log.warning("%s watch failed (%s); listing again in %.1fs", self.res.plural, exc, backoff)
                self._stop.wait(backoff)
                backoff = min(backoff * 2, 10.0)

    def _relist(self) -> str:
        items, rv = self.kube.list_with_version(
            self.res, self.namespace, label_selector=self.label_selector, field_selector=self.field_selector
        )
        fresh = {_key(o): self._trim(o) for o in items if self.in_scope(_key(o)[0])}
        with self._lock:
            old, self._objs = self._objs, fresh
        self.relists += 1
        self._synced.set()
        if self.on_event is not None:  # what changed while we were not watching
            for k, new in fresh.items():
                if _rv(old.get(k)) != _rv(new):
                    self._notify(old.get(k), new)
            for k, gone in old.items():
                if k not in fresh:
                    self._notify(gone, None)
        return rv

    def _follow(self, rv: str) -> str:
        for ev in self.kube.watch(
            self.res,
            self.namespace,
            rv,
            label_selector=self.label_selector,
            field_selector=self.field_selector,
            timeout_seconds=self.watch_timeout,
        ):
            if self._stop.is_set():
                break
            kind, obj = ev.get("type"), ev.get("object") or {}
            if kind == "ERROR":
                if obj.get("code") == 410:
                    raise Gone()
                raise KubeError(int(obj.get("code") or 0), "WATCH", self.res.plural, str(obj.get("message")))
            rv = str(obj.get("metadata", {}).get("resourceVersion") or rv)
            if kind == "BOOKMARK" or not self.in_scope(_key(obj)[0]):
                continue
            if kind == "DELETED":
                with self._lock:
                    old = self._objs.pop(_key(obj), None)
                self._notify(old, None)
            else:
                self._upsert(obj, notify=True)
        return rv

    def _upsert(self, obj: dict[str, Any], notify: bool) -> None:
        obj = self._trim(obj)
        k = _key(obj)
        with self._lock:
            old = self._objs.get(k)
            old_rv, new_rv = _rv(old), _rv(obj)
            if old_rv is not None and new_rv is not None and new_rv < old_rv:
                return  # older than what we hold (our write-through got here first)
            self._objs[k] = obj
        if notify and old_rv != new_rv:
            self._notify(old, obj)

    def _trim(self, obj: dict[str, Any]) -> dict[str, Any]:
        for f in self.strip:
            obj.get("metadata", {}).pop(f, None)
        return obj

    def _notify(self, old: dict[str, Any] | None, new: dict[str, Any] | None) -> None:
        if self.on_event is None:
            return
        try:
            self.on_event(self.res.kind, old, new)
        except Exception:
            log.exception("%s event handler failed", self.res.plural)
