"""Parallel, resumable ranged download of one large object (S3 ``get_object`` ranges, HTTP Range).

The object is cut into parts of ``part_size`` bytes; up to ``workers`` threads each fetch one part
with a ranged request and write it at its offset in a preallocated file (``os.pwrite``, one chunk of
at most 1 MiB in memory per thread), so memory does not grow with the object's size.

**Resume.** The bytes received of every part are recorded next to the partial file
(``<partial>.state.json``, written atomically after ``fdatasync`` of the data, at most every
half second, on every failure and at the end). A broken connection is retried from the byte the
part had reached; a download that failed (or a process that was killed) is resumed by the next
call from the recorded bytes, as long as the object's size and tag (S3 ETag, HTTP ETag or
Last-Modified) are unchanged; otherwise it starts over. S3 requests carry ``IfMatch`` so an object
replaced mid-download is refused instead of mixed.

**Hashing while streaming, in order.** sha256 is sequential and hashlib's state cannot be saved,
so the coordinating thread hashes parts strictly in order: as soon as part *i* and every part
before it are complete, it reads part *i* back from the file (the page cache, no network; 1 MiB at
a time) into the running hash. Workers keep downloading ahead meanwhile; no part is held in memory
waiting for its turn (that would make memory grow with a stalled early part). The cost is one local
read of each byte, overlapped with the download. After a resume the already-complete prefix is
re-read from disk the same way (never downloaded again).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger("modeldeploy.runtime.transfer")

CHUNK = 1 << 20
DEFAULT_PART_SIZE = 16 << 20
DEFAULT_WORKERS = 8
STATE_SUFFIX = ".state.json"
SAVE_INTERVAL_S = 0.5

#: ``read_range(start, end_inclusive)`` yields the bytes of that range of the object.
ReadRange = Callable[[int, int], Iterable[bytes]]


class RangeNotSupported(Exception):
    """The server answered a ranged request with the whole object (or no usable range)."""


class ObjectChanged(Exception):
    """The object's tag changed during the download (S3 412 Precondition Failed, other size)."""


@dataclass(frozen=True)
class TransferSettings:
    part_size: int = DEFAULT_PART_SIZE
    workers: int = DEFAULT_WORKERS
    retries: int = 3

    def ranged(self, size: int | None) -> bool:
        """Whether an object of ``size`` bytes is worth parallel ranged requests."""
        return size is not None and self.workers > 1 and size >= 2 * self.part_size


@dataclass
class TransferResult:
    sha256: str
    size: int
    transferred: int  # bytes received over the network by this call (the rest was resumed)
    resumed: int  # bytes already present from an earlier attempt


class _State:
    """Received bytes per part, persisted next to the partial file."""

    def __init__(self, path: Path, size: int, tag: str, part_size: int) -> None:
        self.path = path
        self.size, self.tag, self.part_size = size, tag, part_size
        self.have: dict[int, int] = {}
        self.lock = threading.Lock()
        self._saved = 0.0

    def load(self) -> bool:
        try:
            data = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return False
        if (
            not isinstance(data, dict)
            or data.get("size") != self.size
            or data.get("tag") != self.tag
            or data.get("partSize") != self.part_size
        ):
            return False
        self.have = {int(k): int(v) for k, v in dict(data.get("have", {})).items()}
        return True

    def save(self, fd: int, force: bool = False) -> None:
        with self.lock:
            now = time.monotonic()
            if not force and now - self._saved < SAVE_INTERVAL_S:
                return
            self._saved = now
            os.fdatasync(fd)  # the data the state vouches for is on disk before the state
            body = {"size": self.size, "tag": self.tag, "partSize": self.part_size, "have": self.have}
            tmp = self.path.with_name(self.path.name + ".tmp")
            tmp.write_text(json.dumps(body))
            tmp.replace(self.path)


class _Parts:
    def __init__(self, read_range: ReadRange, fd: int, state: _State, settings: TransferSettings) -> None:
        self.read_range = read_range
        self.fd = fd
        self.state = state
        self.settings = settings
        self.stop = threading.Event()
        self.transferred = 0
        size, ps = state.size, state.part_size
        self.bounds = [(s, min(s + ps, size)) for s in range(0, size, ps)]

    def done(self, i: int) -> int:
        return self.state.have.get(i, 0)

    def _stream(self, i: int) -> None:
        start, end = self.bounds[i]
        off = start + self.done(i)
        for chunk in self.read_range(off, end - 1):
            if off + len(chunk) > end:
                raise RangeNotSupported(f"server sent more than the range {start}-{end - 1}")
            os.pwrite(self.fd, chunk, off)
            off += len(chunk)
            with self.state.lock:
                self.state.have[i] = off - start
                self.transferred += len(chunk)
        if off < end:
            raise ConnectionError(f"range {start}-{end - 1} ended at byte {off}")

    def run(self, i: int) -> None:
        start, end = self.bounds[i]
        attempt = 0
        if self.stop.is_set():  # another part failed for good; a running part is finished
            raise InterruptedError("transfer stopped")  # (its bytes are kept, not thrown away)
        while start + self.done(i) < end:
            try:
                self._stream(i)
            except (RangeNotSupported, ObjectChanged, InterruptedError):
                raise
            except Exception as exc:
                attempt += 1
                self.state.save(self.fd, force=True)
                if attempt > self.settings.retries or self.stop.is_set():
                    raise
                log.warning(
                    "range %d-%d: %s; retrying from byte %d (attempt %d)",
                    start, end - 1, exc, start + self.done(i), attempt + 1,
                )  # fmt: skip
                time.sleep(min(0.1 * 2**attempt, 2.0))
        self.state.save(self.fd)

    def on_done(self, fut: Future[None]) -> None:
        if not fut.cancelled() and fut.exception() is not None:
            self.stop.set()

    def hash_part(self, h: hashlib._Hash, i: int) -> None:
        off, end = self.bounds[i]
        while off < end:
            chunk = os.pread(self.fd, min(CHUNK, end - off), off)
            if not chunk:
                raise OSError(f"partial file shorter than expected at byte {off}")
            h.update(chunk)
            off += len(chunk)


def ranged_download(
    read_range: ReadRange,
    size: int,
    tag: str,
    partial: Path,
    settings: TransferSettings,
) -> TransferResult:
    """Download ``size`` bytes into ``partial`` (resuming what an earlier call left there) and
    return the sha256. On failure the partial file and its state stay for the next call; on
    success the state file is removed and ``partial`` holds the object."""
    partial.parent.mkdir(parents=True, exist_ok=True)
    state = _State(partial.with_name(partial.name + STATE_SUFFIX), size, tag, settings.part_size)
    if not (state.load() and partial.is_file()):
        state.have = {}
        with contextlib.suppress(FileNotFoundError):
            partial.unlink()
    fd = os.open(partial, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        os.ftruncate(fd, size)
        parts = _Parts(read_range, fd, state, settings)
        resumed = sum(state.have.values())
        digest = _run_parts(parts, settings.workers)
        state.save(fd, force=True)
    finally:
        os.close(fd)
    state.path.unlink(missing_ok=True)
    return TransferResult(digest, size, parts.transferred, resumed)


def _run_parts(parts: _Parts, workers: int) -> str:
    h = hashlib.sha256()
    try:
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="range") as pool:
            futures: list[Future[None]] = [pool.submit(parts.run, i) for i in range(len(parts.bounds))]
            for f in futures:  # a part that failed for good stops the others at once
                f.add_done_callback(parts.on_done)
            try:
                for i, fut in enumerate(futures):
                    fut.result()
                    parts.hash_part(h, i)
            except BaseException:
                parts.stop.set()
                for f in futures:
                    f.cancel()
                raise
    except BaseException:
        with contextlib.suppress(Exception):
            parts.state.save(parts.fd, force=True)  # after the workers stopped: keep their bytes
        raise
    return h.hexdigest()
