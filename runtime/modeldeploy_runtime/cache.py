"""A model cache shared by several agents (and the prefetch Job): version folders stored by digest.

Layout under the cache root (a directory several pods mount, e.g. a ReadWriteMany PVC or a node's
local volume)::

    sha256/<digest>/...                 one entry: the verified version folder of that digest
    sha256/<digest>/.modeldeploy-cache.sha256   sha256 of every file of the entry (written last)
    .tmp/<uuid>/                        entries being written (never looked up)
    .locks/<digest>.lock                fcntl lock: one filler per digest at a time
    .quarantine/<digest>-<uuid>/        entries found corrupt (kept for inspection, then dropped)
    .refs/<owner>.json                  digests a ModelDeployment wants (written by its prefetch Job,
                                        removed by a later one once that ModelDeployment is gone)
    .evicting/<digest>-<uuid>/          entries being evicted (renamed out of sha256/, then removed)

*Atomic publish*: an entry is copied to ``.tmp/``, every file and folder is fsync'ed, then the
folder is renamed to ``sha256/<digest>`` (one rename on one filesystem), so a reader never sees a
partial entry. Fillers of the same digest serialize on its lock file; one that finds the entry
already published (and verifying) drops its own copy (compare-by-digest). A reader without write
access (the read-only mount in model pods) only looks up: it never locks or publishes.

*Eviction* (:meth:`SharedCache.evict`, run by the prefetch Job with ``--max-bytes``): when the
entries hold more than the limit, entries no ModelDeployment sharing the cache wants are removed,
least recently used first, until the cache fits. "Wanted" is the union of the ``.refs/<owner>.json``
files each prefetch Job writes (the digests its ModelDeployment wants now); before evicting, a Job
removes the refs files of its namespace's ModelDeployments that the operator no longer lists as
users of the claim (:meth:`SharedCache.prune_refs`: deleted ones). An entry is evicted
only while its fill lock can be taken at once: a filler publishing it, or an agent reading it
(writable caches hold the lock; a read-only mount takes it shared when the lock file exists), makes
the evictor skip it. The entry is renamed out of ``sha256/`` first (a reader sees it whole or not at
all), then removed. Last use: a writable cache touches the entry's stamp on each hit; a read-only
reader reads the stamp (its atime, as the mount keeps it), so the older of both is the LRU key.

*Verification*: a full verification hashes every file of the entry and compares it with its file
list (and the list's set of files with the folder). A filler does one when it publishes or finds an
entry, and then stamps the entry with a fingerprint of its files' stat data (size, mtime, ctime,
inode). A use (``verify="stat"``, the default) re-hashes only when that fingerprint changed; any
write to a file changes its ctime, which no one can set back, so a byte flipped through the
filesystem is always caught; only corruption below it (a disk returning bad blocks) waits for the
next full verification (``verify="full"``, ``MODELDEPLOY_CACHE_VERIFY=full``, or the next prefetch
Job, which always verifies in full). A corrupt entry is moved to ``.quarantine/``, the event is
recorded (``events``) and the caller downloads again (and, when it may write, publishes the good
copy).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import threading
import time
import uuid
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from modeldeploy_runtime.digest import SOURCE_RECORD, parse_sha_manifest, sha256_file

CACHE_LIST = ".modeldeploy-cache.sha256"
#: Written by a filler after a full verification: the stat fingerprint of the entry's files then.
STAMP = ".modeldeploy-verified.json"
ENTRIES = "sha256"
MAX_EVENTS = 20


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


@dataclass
class CacheEvent:
    time: str
    digest: str
    event: str  # Published | AlreadyPresent | CorruptEntryRefetched | CorruptEntry | Hit | Miss
    message: str

    def to_dict(self) -> dict[str, str]:
        return {"time": self.time, "digest": self.digest, "event": self.event, "message": self.message}


def _files(folder: Path) -> Iterator[Path]:
    for root, dirs, names in os.walk(folder):
        dirs.sort()
        for n in sorted(names):
            p = Path(root, n)
            rel = p.relative_to(folder)
            if rel.as_posix() not in (CACHE_LIST, SOURCE_RECORD, STAMP):
                yield rel


def _fsync_tree(folder: Path) -> None:
    for root, _, names in os.walk(folder):
        for n in names:
            fd = os.open(Path(root, n), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        _fsync_dir(Path(root))


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _link_or_symlink(src: str, dst: str) -> str:
    try:
        os.link(src, dst)  # same filesystem (a writable cache next to the repository)
    except OSError:
        os.symlink(os.path.abspath(src), dst)  # another filesystem (the read-only cache mount)
    return dst


class SharedCache:
    def __init__(self, root: str | Path, *, read_only: bool = False, verify: str = "stat") -> None:
        self.root = Path(root)
        self.full_verify = verify == "full"
        self.read_only = read_only  # the model pods' mount (readOnly: true); else probed
        self.events: deque[CacheEvent] = deque(maxlen=MAX_EVENTS)
        self.last_verification: dict[str, str] = {}  # digest -> time of the last good verification
        self._lock = threading.Lock()

    # -------------------------------------------------------------------------------- basics
    @property
    def writable(self) -> bool:
        return not self.read_only and self.root.is_dir() and os.access(self.root, os.W_OK)

    def entry(self, digest: str) -> Path:
        if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
            raise ValueError(f"not a sha256 digest: {digest!r}")
        return self.root / ENTRIES / digest

    def record(self, digest: str, event: str, message: str) -> None:
        with self._lock:
            self.events.append(CacheEvent(_now(), digest, event, message))

    @contextlib.contextmanager
    def filling(self, digest: str) -> Iterator[bool]:
        """Hold the digest's fill lock (blocking) when the cache is writable; yields whether held.
        A read-only reader holds it shared when the lock file exists (so no evictor removes the
        entry under it) and yields False (it may not publish)."""
        if not self.writable:
            with self._shared(digest):
                yield False
            return
        locks = self.root / ".locks"
        locks.mkdir(exist_ok=True)
        fd = os.open(locks / f"{digest}.lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield True
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    @contextlib.contextmanager
    def _shared(self, digest: str) -> Iterator[None]:
        try:
            fd = os.open(self.root / ".locks" / f"{digest}.lock", os.O_RDONLY)
        except OSError:  # no lock file (nobody ever filled or evicted it) or not readable
            yield
            return
        try:
            with contextlib.suppress(OSError):
                fcntl.flock(fd, fcntl.LOCK_SH)
            yield
        finally:
            os.close(fd)

    # ------------------------------------------------------------------------------- eviction
    def last_used(self, digest: str) -> float:
        """When the entry was last used: its stamp's atime/mtime (touched by writable hits, read by
        read-only ones), else the entry folder's mtime (its publication)."""
        entry = self.entry(digest)
        try:
            st = (entry / STAMP).stat()
            return max(st.st_atime, st.st_mtime)
        except OSError:
            try:
                return entry.stat().st_mtime
            except OSError:  # evicted by another process meanwhile
                return 0.0

    def touch(self, digest: str) -> None:
        """Record a use (writable caches; the stamp is not part of the entry's fingerprint)."""
        if self.writable:
            with contextlib.suppress(OSError):
                os.utime(self.entry(digest) / STAMP)

    def write_refs(self, owner: str, digests: set[str]) -> None:
        """``.refs/<owner>.json``: the digests ``owner`` (a ModelDeployment) wants now."""
        refs = self.root / ".refs"
        refs.mkdir(exist_ok=True)
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in owner)
        tmp = refs / f".{safe}.{uuid.uuid4().hex[:6]}"
        tmp.write_text(json.dumps({"owner": owner, "digests": sorted(digests), "time": _now()}))
        tmp.replace(refs / f"{safe}.json")

    def prune_refs(self, namespace: str, live: set[str], grace_s: float) -> list[str]:
        """Remove the refs files of ``namespace``'s ModelDeployments not in ``live`` (deleted, or no
        longer naming this cache) so that their digests can be evicted; returns their owners.

        A refs file younger than ``grace_s`` stays: ``live`` was listed by the operator before this
        Job started, so a ModelDeployment created since (whose own Job just wrote its refs) is not
        in it. Other namespaces' refs (one volume bound to claims in several) are never touched."""
        removed = []
        for f in sorted((self.root / ".refs").glob("*.json")):
            with contextlib.suppress(OSError, ValueError, AttributeError):
                owner = str(json.loads(f.read_text()).get("owner") or "")
                ns, _, name = owner.partition("/")
                if ns != namespace or not name or name in live or time.time() - f.stat().st_mtime < grace_s:
                    continue
                f.unlink()
                removed.append(owner)
                self.record("", "RefsRemoved", f"{owner} no longer uses this cache: its refs removed")
        return removed

    def referenced(self) -> set[str]:
        """The union of the digests every owner's refs file names."""
        out: set[str] = set()
        for f in (self.root / ".refs").glob("*.json"):
            with contextlib.suppress(OSError, ValueError, AttributeError, TypeError):
                out |= set(json.loads(f.read_text()).get("digests") or [])
        return out

    def sizes(self) -> dict[str, int]:
        """Bytes per entry; an entry evicted by another process meanwhile is left out."""
        base = self.root / ENTRIES
        if not base.is_dir():
            return {}
        out = {}
        for e in base.iterdir():
            with contextlib.suppress(OSError):
                if e.is_dir():
                    out[e.name] = sum((e / rel).stat().st_size for rel in _files(e))
        return out

    def _try_remove(self, digest: str) -> bool:
        """Remove the entry if its lock can be taken at once (nobody reading or publishing it) and
        no refs file names it now (a prefetch Job writes its refs before it takes any lock)."""
        locks = self.root / ".locks"
        locks.mkdir(exist_ok=True)
        fd = os.open(locks / f"{digest}.lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return False
            if digest in self.referenced():  # a Job wrote its refs since the evictor read them
                return False
            gone = self.root / ".evicting" / f"{digest}-{uuid.uuid4().hex[:8]}"
            gone.parent.mkdir(exist_ok=True)
            try:
                self.entry(digest).rename(gone)  # out of sha256/ at once: readers see all or nothing
            except OSError:
                return False
            shutil.rmtree(gone, ignore_errors=True)
            return True
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    def evict(self, max_bytes: int, keep: set[str] | None = None) -> list[str]:
        """Evict unreferenced entries, least recently used first, until the entries hold at most
        ``max_bytes``; entries in ``keep`` or in any refs file, and busy ones, stay. The evicted
        digests, oldest first."""
        if not self.writable:
            return []
        sizes = self.sizes()
        total = sum(sizes.values())
        if total <= max_bytes:
            return []
        protected = (keep or set()) | self.referenced()
        candidates = sorted((d for d in sizes if d not in protected), key=self.last_used)
        evicted = []
        for digest in candidates:
            if total <= max_bytes:
                break
            if self._try_remove(digest):
                total -= sizes[digest]
                evicted.append(digest)
                self.record(
                    digest,
                    "Evicted",
                    f"sha256/{digest[:12]}... evicted ({sizes[digest]} bytes, unreferenced)",
                )
            else:
                self.record(
                    digest, "EvictionSkipped", f"sha256/{digest[:12]}... in use or referenced now: kept"
                )
        return evicted

    # ------------------------------------------------------------------------------ verification
    def _fingerprint(self, entry: Path) -> str:
        rows = []
        for rel in [*_files(entry), Path(CACHE_LIST)]:
            st = (entry / rel).stat()
            rows.append(f"{rel.as_posix()} {st.st_size} {st.st_mtime_ns} {st.st_ctime_ns} {st.st_ino}")
        return hashlib.sha256("\n".join(rows).encode()).hexdigest()

    def _stamped(self, digest: str) -> str | None:
        """The time of the last full verification when the entry's files are unchanged since."""
        entry = self.entry(digest)
        try:
            stamp = json.loads((entry / STAMP).read_text())
            if stamp.get("fingerprint") == self._fingerprint(entry):
                return str(stamp["verifiedAt"])
        except (OSError, ValueError, KeyError, AttributeError):
            pass
        return None

    def _stamp(self, digest: str, when: str) -> None:
        if not self.writable:
            return
        entry = self.entry(digest)
        with contextlib.suppress(OSError):
            tmp = entry / f"{STAMP}.{uuid.uuid4().hex[:6]}"
            tmp.write_text(json.dumps({"fingerprint": self._fingerprint(entry), "verifiedAt": when}))
            tmp.replace(entry / STAMP)

    def verify(self, digest: str, full: bool = True) -> str | None:
        """None when the entry is complete and every file matches its list; else what is wrong.
        ``full=False`` accepts an entry whose stat fingerprint is unchanged since a full one."""
        if not full:
            when = self._stamped(digest)
            if when is not None:
                with self._lock:
                    self.last_verification[digest] = when
                return None
        entry = self.entry(digest)
        try:
            listed = parse_sha_manifest((entry / CACHE_LIST).read_bytes(), CACHE_LIST)
        except (OSError, ValueError) as exc:
            return f"no valid file list: {exc}"
        present = {p.as_posix() for p in _files(entry)}
        if present != set(listed):
            return f"files differ from the list: {sorted(present ^ set(listed))[:5]}"
        for rel, want in listed.items():
            got = sha256_file(entry / rel)
            if got != want:
                return f"{rel}: sha256 {got[:12]}... is not the listed {want[:12]}..."
        when = _now()
        with self._lock:
            self.last_verification[digest] = when
        self._stamp(digest, when)
        return None

    def lookup(self, digest: str) -> Path | None:
        """The verified entry of ``digest``, or None (absent, or corrupt: then quarantined when
        writable, and the event recorded either way)."""
        entry = self.entry(digest)
        if not entry.is_dir():
            return None
        problem = self.verify(digest, full=self.full_verify)
        if problem is None:
            return entry
        self.record(digest, "CorruptEntry", f"cache entry sha256/{digest[:12]}... is corrupt: {problem}")
        if self.writable:
            q = self.root / ".quarantine"
            q.mkdir(exist_ok=True)
            with contextlib.suppress(OSError):
                entry.rename(q / f"{digest}-{uuid.uuid4().hex[:8]}")
        return None

    # ----------------------------------------------------------------------------------- publish
    def publish(self, digest: str, staged: Path) -> Path:
        """Copy a verified version folder into the cache as ``sha256/<digest>`` atomically; call
        while holding :meth:`filling`. An entry already there (and verifying) is kept."""
        entry = self.entry(digest)
        if entry.is_dir() and self.lookup(digest) is not None:
            self.record(digest, "AlreadyPresent", "published by another filler; kept")
            return entry
        tmp = self.root / ".tmp" / uuid.uuid4().hex
        tmp.parent.mkdir(parents=True, exist_ok=True)
        try:
            # copies, not links: a pod writing its own repository can never alter the cache
            shutil.copytree(staged, tmp, ignore=shutil.ignore_patterns(SOURCE_RECORD))
            lines = [f"{sha256_file(tmp / rel)}  {rel.as_posix()}\n" for rel in _files(tmp)]
            (tmp / CACHE_LIST).write_text("".join(lines))
            _fsync_tree(tmp)
            entry.parent.mkdir(parents=True, exist_ok=True)
            tmp.rename(entry)
            _fsync_dir(entry.parent)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        when = _now()
        with self._lock:
            self.last_verification[digest] = when
        self._stamp(digest, when)
        self.record(digest, "Published", f"sha256/{digest[:12]}... published")
        return entry

    def materialize(self, digest: str, dest: Path) -> None:
        """Make ``dest`` a version folder whose files are the (verified) entry's: hard links when
        on one filesystem, else symbolic links into the cache (no copy of the weights)."""
        shutil.copytree(
            self.entry(digest),
            dest,
            copy_function=_link_or_symlink,
            ignore=shutil.ignore_patterns(CACHE_LIST, STAMP, f"{STAMP}.*"),
        )

    # ------------------------------------------------------------------------------------ status
    def status(self) -> dict[str, Any]:
        entries = [
            {"digest": d, "bytes": size, "lastVerified": self.last_verification.get(d)}
            for d, size in sorted(self.sizes().items())
        ]
        with self._lock:
            events = [ev.to_dict() for ev in self.events]
        return {"root": str(self.root), "writable": self.writable, "entries": entries, "events": events}
