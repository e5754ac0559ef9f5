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

Memory: an object is kept as its compressed JSON (:class:`Entry`: zlib level 1, about 9 KB for a
ModelDeployment and all its children, against about 170 KB as Python dicts), with its
resourceVersion, labels (interned ``key=value`` strings) and deletion mark beside it so that
ordering, label selection and a resync pass's keys need no decoding. A read
decodes a fresh copy (0.02-0.3 ms an object), which callers may change freely. One large
allocation an object (not thousands of small ones) is what lets the process give the memory back
after objects are deleted; :func:`release_memory` hands freed heap pages back to the system when a
store shrank a lot (:mod:`modeldeploy.memory`).
"""

from __future__ import annotations

import logging
import sys
import threading
import zlib
from collections.abc import Callable, Iterable
from typing import Any, NamedTuple, Protocol

from modeldeploy import memory, metrics
from modeldeploy.reconcile import jsoncodec
from modeldeploy.reconcile.kube import RAW_OBJECT, Keys, Kube, KubeError, Resource

log = logging.getLogger("modeldeploy.informer")

Key = tuple[str, str]
#: (kind, old object or None, new object or None): called on the informer's thread; keep it short.
EventSink = Callable[[str, dict[str, Any] | None, dict[str, Any] | None], None]


class StoreTracker(Protocol):
    """Follows what a store holds (e.g. :class:`modeldeploy.metrics.ConditionTracker`): told, under
    the store's lock and so in the store's own order, of each object kept (as ``summary(obj)``,
    worked out beforehand) and each one let go (None). Both must be quick and must not call back."""

    def summary(self, obj: dict[str, Any]) -> Any: ...

    def stored(self, key: Key, summary: Any) -> None: ...


class Gone(Exception):
    """The watch cannot resume from its resourceVersion (HTTP 410): list again."""


def _key(obj: dict[str, Any]) -> Key:
    meta = obj["metadata"]
    return str(meta.get("namespace") or ""), str(meta["name"])


def _rv(obj: dict[str, Any] | None) -> int | None:
    return _int((obj or {}).get("metadata", {}).get("resourceVersion"))


def _int(rv: str | None) -> int | None:
    """A resourceVersion as a number (the API server's are etcd revisions), or None."""
    try:
        return int(rv or "")
    except ValueError:
        return None


class Entry(NamedTuple):
    """One stored object: its resourceVersion, labels and whether it is being deleted, and the
    object as compressed JSON."""

    rv: int | None
    #: ``key=value`` of each label, interned: the strings are shared by every entry with the label
    #: (one tuple an entry, not a dict and its strings: fewer small long-lived allocations)
    labels: tuple[str, ...]
    blob: bytes
    deleting: bool = False

    @classmethod
    def pack(cls, obj: dict[str, Any], raw: bytes | None = None) -> Entry:
        """``raw``: ``obj`` as JSON already (a watch event's, :data:`RAW_OBJECT`), kept as it is
        rather than encoded again (the encoding was a tenth of the operator's CPU in a burst)."""
        meta = obj.get("metadata") or {}
        labels = tuple(sys.intern(f"{k}={v}") for k, v in (meta.get("labels") or {}).items())
        blob = zlib.compress(raw if raw is not None else jsoncodec.dumps(obj), 1)
        return cls(_rv(obj), labels, blob, bool(meta.get("deletionTimestamp")))

    def has_labels(self, selector: dict[str, str]) -> bool:
        return all(f"{k}={v}" in self.labels for k, v in selector.items())

    def unpack(self) -> dict[str, Any]:
        out: dict[str, Any] = jsoncodec.loads(zlib.decompress(self.blob))
        return out


def release_memory() -> None:
    """Give freed heap pages back to the system (see :mod:`modeldeploy.memory`)."""
    memory.release()


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


def implies(selector: dict[str, str] | None, selection: dict[str, str]) -> bool:
    """Whether every object ``selector`` matches is within a store's ``selection``: each label of
    the selection is required by the selector (a set-based selector, None, never is)."""
    return selector is not None and labels_match(selector, selection)


def matches(obj: dict[str, Any], selector: dict[str, str]) -> bool:
    return labels_match(obj.get("metadata", {}).get("labels") or {}, selector)


def labels_match(labels: dict[str, str], selector: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


#: What a store of names only keeps of each object's metadata.
_NAME_FIELDS = ("name", "namespace", "resourceVersion", "uid", "deletionTimestamp")

#: A store that shrank by this many objects since its last high-water mark hands memory back.
RELEASE_AFTER = 200


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
        index_key: str | None = None,
        tracker: StoreTracker | None = None,
        metadata_only: bool = False,
        notify_old: bool = True,
    ) -> None:
        self.kube = kube
        #: whether ``on_event`` gets the previous version of a changed object (decoding it is a
        #: cost); without, ``old`` is None but on deletion (a sink that only reads the new version)
        self.notify_old = notify_old
        #: a store of names only: metadata-only LIST and WATCH (no spec, data or status crosses the
        #: wire), and of the metadata only what tells that the name is taken (see :meth:`has`)
        self.metadata_only = metadata_only
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
        self._objs: dict[Key, Entry] = {}
        #: ``index_key=value`` (the interned label string of the entries) -> the keys carrying it, so
        #: a list whose selector names ``index_key`` reads those entries, not the whole store
        self.index_key = index_key
        self._index: dict[str, tuple[Key, ...]] = {}
        self.tracker = tracker
        self._high = 0  # most objects held since memory was last handed back
        #: how far the store is known to follow the API server: the resourceVersion of the LIST or
        #: of the watch's latest event (everything of ours up to it has been delivered)
        self._seen: int | None = None
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
        return implies(selector, self.selector)

    def has(self, namespace: str, name: str) -> bool:
        """Whether the store holds ``namespace/name`` (nothing decoded)."""
        with self._lock:
            return (namespace, name) in self._objs

    def get(self, namespace: str, name: str) -> dict[str, Any] | None:
        """A fresh copy of the stored object (the caller may change it)."""
        with self._lock:
            entry = self._objs.get((namespace, name))
        return entry.unpack() if entry is not None else None

    def list(self, namespace: str | None, selector: dict[str, str]) -> list[dict[str, Any]]:
        with self._lock:
            if self.index_key is not None and self.index_key in selector:
                found = self._index.get(f"{self.index_key}={selector[self.index_key]}", ())
                items = [(k, self._objs[k]) for k in found]
            else:
                items = list(self._objs.items())
        return [
            e.unpack()
            for (ns, _name), e in items
            if (namespace is None or ns == namespace) and e.has_labels(selector)
        ]

    def keys(self, namespace: str | None) -> Keys:
        """(namespace, name) of each stored object not being deleted, without decoding any."""
        with self._lock:
            return [
                k
                for k, e in self._objs.items()
                if (namespace is None or k[0] == namespace) and not e.deleting
            ]

    # ------------------------------------------------------------------ index
    def _indexed(self, entry: Entry) -> str | None:
        """The entry's ``index_key=value`` label (the interned string it holds), or None."""
        if self.index_key is None:
            return None
        prefix = f"{self.index_key}="
        return next((lb for lb in entry.labels if lb.startswith(prefix)), None)

    def _index_swap(self, k: Key, old: Entry | None, new: Entry | None) -> None:
        """Keep the index in step with ``_objs[k]`` going from ``old`` to ``new`` (under the lock)."""
        before = self._indexed(old) if old is not None else None
        after = self._indexed(new) if new is not None else None
        if before == after:
            return
        if before is not None:
            rest = tuple(x for x in self._index.get(before, ()) if x != k)
            if rest:
                self._index[before] = rest
            else:
                self._index.pop(before, None)
        if after is not None:
            self._index[after] = (*self._index.get(after, ()), k)

    def _reindex(self) -> None:
        """Build the index of the whole store anew (under the lock; after a LIST swapped it)."""
        index: dict[str, list[Key]] = {}
        for k, entry in self._objs.items():
            label = self._indexed(entry)
            if label is not None:
                index.setdefault(label, []).append(k)
        self._index = {label: tuple(keys) for label, keys in index.items()}

    def __len__(self) -> int:
        with self._lock:
            return len(self._objs)

    # ---------------------------------------------------------- write-through
    def put(self, obj: dict[str, Any], raw: bytes | None = None) -> dict[str, Any] | None:
        """Our own write's result (``raw``: its JSON as the API server sent it): keep it unless the store already has a newer version, or the
        watch has delivered past it and the object is not held: then it was deleted since (say
        by the garbage collector, its owner gone while we wrote it), and keeping it would hold
        an object that no event will ever remove. Returns the newer version held, if any."""
        if not matches(obj, self.selector) or not self.in_scope(_key(obj)[0]):
            return None
        newer = self._upsert(obj, notify=False, raw=raw)
        return newer.unpack() if newer is not None else None

    def drop(self, namespace: str, name: str) -> None:
        with self._lock:
            gone = self._objs.pop((namespace, name), None)
            self._index_swap((namespace, name), gone, None)
            if gone is not None and self.tracker is not None:
                self.tracker.stored((namespace, name), None)
        if gone is not None:
            self._count(-1)
        self._shrunk()

    def _count(self, delta: int) -> None:
        kind = f"{self.res.kind}:names" if self.metadata_only else self.res.kind
        gauge = metrics.CACHE_OBJECTS.labels(kind=kind)  # exported from the first LIST on
        if delta:
            gauge.inc(delta)

    def _shrunk(self) -> None:
        """After many deletions, hand the freed memory back (once per shrink of RELEASE_AFTER):
        the store's tables too (a dict keeps the table of its largest size after its keys are
        deleted: about 40 KB at 1,000 objects, per store and index), then the heap's free pages."""
        with self._lock:
            n = len(self._objs)
            self._high = max(self._high, n)
            release = self._high - n >= RELEASE_AFTER
            if release:
                self._high = n
                self._objs = dict(self._objs)
                self._index = dict(self._index)
        if release:
            release_memory()

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
        """LIST (in pages: one page of decoded objects alive at a time), swap the store for the
        result, and pass on what changed since the previous store."""
        fresh: dict[Key, Entry] = {}
        summaries: dict[Key, Any] = {}
        rv = ""
        for page, page_rv in self.kube.list_pages(
            self.res,
            self.namespace,
            label_selector=self.label_selector,
            field_selector=self.field_selector,
            metadata_only=self.metadata_only,
        ):
            rv = page_rv
            for obj in page:
                if self.in_scope(_key(obj)[0]):
                    fresh[_key(obj)] = Entry.pack(self._trim(obj))
                    if self.tracker is not None:
                        summaries[_key(obj)] = self.tracker.summary(obj)
            del page
        with self._lock:
            old, self._objs = self._objs, fresh
            self._reindex()
            self._seen = _int(rv)
            if self.tracker is not None:
                for k in old.keys() - fresh.keys():
                    self.tracker.stored(k, None)
                for k, summary in summaries.items():
                    self.tracker.stored(k, summary)
        del summaries
        self._count(len(fresh) - len(old))
        self.relists += 1
        self._synced.set()
        if self.on_event is not None:  # what changed while we were not watching
            for k, entry in fresh.items():
                before = old.get(k)
                if (before.rv if before else None) != entry.rv:
                    self._notify(before.unpack() if before else None, entry.unpack())
            for k, gone in old.items():
                if k not in fresh:
                    self._notify(gone.unpack(), None)
        del old
        self._shrunk()
        return rv

    def _follow(self, rv: str) -> str:
        for ev in self.kube.watch(
            self.res,
            self.namespace,
            rv,
            label_selector=self.label_selector,
            field_selector=self.field_selector,
            timeout_seconds=self.watch_timeout,
            metadata_only=self.metadata_only,
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
                with self._lock:
                    self._seen = _int(rv)
                continue
            if kind == "DELETED":
                with self._lock:
                    old = self._objs.pop(_key(obj), None)
                    self._index_swap(_key(obj), old, None)
                    self._seen = _int(rv)
                    if old is not None and self.tracker is not None:
                        self.tracker.stored(_key(obj), None)
                if old is not None:
                    self._count(-1)
                    if self.on_event is not None:
                        self._notify(old.unpack(), None)
                self._shrunk()
            else:
                self._upsert(obj, notify=True, raw=ev.get(RAW_OBJECT))
            # not held while the watch waits for the next event (minutes at idle): what outlives a
            # burst of events pins the memory the burst used (see modeldeploy.memory)
            del ev, obj
        return rv

    def _upsert(self, obj: dict[str, Any], notify: bool, raw: bytes | None = None) -> Entry | None:
        """Store ``obj`` (notify: a watch event; ``raw``: its JSON as sent); the entry held
        instead when it is newer."""
        kept = self._trim(obj)
        entry = Entry.pack(kept, raw if kept is obj else None)
        obj = kept
        k = _key(obj)
        summary = self.tracker.summary(obj) if self.tracker is not None else None
        with self._lock:
            old = self._objs.get(k)
            old_rv, new_rv = (old.rv if old else None), entry.rv
            if old_rv is not None and new_rv is not None and new_rv < old_rv:
                return old  # older than what we hold (our write-through got here first)
            if notify:
                self._seen = new_rv
            elif old is None and new_rv is not None and self._seen is not None and new_rv <= self._seen:
                return None  # our write, which the watch has delivered and since removed: deleted
            self._objs[k] = entry
            self._index_swap(k, old, entry)
            if self.tracker is not None:
                self.tracker.stored(k, summary)
        if old is None:
            self._count(1)
        if notify and old_rv != new_rv and self.on_event is not None:
            self._notify(old.unpack() if old and self.notify_old else None, obj)
        return None

    def _trim(self, obj: dict[str, Any]) -> dict[str, Any]:
        if self.metadata_only:
            meta = obj.get("metadata") or {}
            return {"metadata": {k: meta[k] for k in _NAME_FIELDS if k in meta}}
        if self.strip:
            meta = obj.get("metadata") or {}
            if any(f in meta for f in self.strip):
                obj = {**obj, "metadata": {k: v for k, v in meta.items() if k not in self.strip}}
        return obj

    def _notify(self, old: dict[str, Any] | None, new: dict[str, Any] | None) -> None:
        if self.on_event is None:
            return
        try:
            self.on_event(self.res.kind, old, new)
        except Exception:
            log.exception("%s event handler failed", self.res.plural)
