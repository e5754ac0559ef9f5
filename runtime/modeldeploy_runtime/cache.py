"""A model cache shared by several agents (and the prefetch Job): version folders stored by digest.

Layout under the cache root (a directory several pods mount, e.g. a ReadWriteMany PVC or a node's
local volume)::

    sha256/<digest>/...                 one entry: the verified version folder of that digest
    sha256/<digest>/.modeldeploy-cache.sha256   sha256 of every file of the entry (written last)
    .tmp/<uuid>/                        entries being written (never looked up)
    .locks/<digest>.lock                fcntl lock: one filler per digest at a time
    .quarantine/<digest>-<uuid>/        entries found corrupt (kept for inspection, then dropped)

*Atomic publish*: an entry is copied to ``.tmp/``, every file and folder is fsync'ed, then the
folder is renamed to ``sha256/<digest>`` (one rename on one filesystem), so a reader never sees a
partial entry. Fillers of the same digest serialize on its lock file; one that finds the entry
already published (and verifying) drops its own copy (compare-by-digest). A reader without write
access (the read-only mount in model pods) only looks up: it never locks or publishes.

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
        """Hold the digest's fill lock (blocking) when the cache is writable; yields whether held."""
        if not self.writable:
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
        entries = []
        base = self.root / ENTRIES
        if base.is_dir():
            for e in sorted(base.iterdir()):
                if e.is_dir():
                    size = sum((e / rel).stat().st_size for rel in _files(e))
                    entries.append(
                        {"digest": e.name, "bytes": size, "lastVerified": self.last_verification.get(e.name)}
                    )
        with self._lock:
            events = [ev.to_dict() for ev in self.events]
        return {"root": str(self.root), "writable": self.writable, "entries": entries, "events": events}
