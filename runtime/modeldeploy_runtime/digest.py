"""sha256 of artifacts and the per-version ``manifest.sha256`` file.

``manifest.sha256`` sits in every packaged version folder and lists each file of that version in
``sha256sum`` format (``<hex>  <relative path>``, sorted). The *digest of a version* is the sha256
of that file; it is what a ModelDeployment's ``sha256`` field pins for a folder source.
"""

from __future__ import annotations

import hashlib
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

SHA_MANIFEST = "manifest.sha256"
#: Bookkeeping files the runtime writes next to the artifacts; not part of the digest.
SOURCE_RECORD = ".modeldeploy-source.json"
#: The OpenSSF model signature of a version (signing.py): not part of the version's content digest.
SIGNATURE_FILE = "model.sig"
CHUNK = 1 << 20
PROGRESS_MIN_BYTES = 16 << 20


class DigestMismatch(ValueError):
    pass


class Progress:
    """A minimal progress bar on stderr for large files (no dependency)."""

    def __init__(self, label: str, total: int | None, enabled: bool) -> None:
        self.label = label
        self.total = total
        self.enabled = enabled and (total is None or total >= PROGRESS_MIN_BYTES)
        self.done = 0
        self.t0 = time.monotonic()
        self._last = 0.0

    def update(self, n: int) -> None:
        self.done += n
        if not self.enabled:
            return
        now = time.monotonic()
        if now - self._last < 0.2 and (self.total is None or self.done < self.total):
            return
        self._last = now
        mb = self.done / 1e6
        rate = mb / max(now - self.t0, 1e-6)
        if self.total:
            frac = self.done / self.total
            bar = "#" * int(frac * 30)
            sys.stderr.write(f"\r{self.label} [{bar:<30}] {frac * 100:5.1f}% {mb:8.1f} MB {rate:7.1f} MB/s")
        else:
            sys.stderr.write(f"\r{self.label} {mb:8.1f} MB {rate:7.1f} MB/s")
        sys.stderr.flush()

    def close(self) -> None:
        if self.enabled:
            sys.stderr.write("\n")
            sys.stderr.flush()


def sha256_file(path: Path, progress: bool = False) -> str:
    h = hashlib.sha256()
    bar = Progress(f"sha256 {path.name}", path.stat().st_size, progress)
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
            bar.update(len(chunk))
    bar.close()
    return h.hexdigest()


def copy_hashing(
    src: BinaryIO, dst: BinaryIO, total: int | None = None, label: str = "", progress: bool = False
) -> tuple[str, int]:
    """Copy a stream while hashing it; returns (sha256, bytes)."""
    h = hashlib.sha256()
    n = 0
    bar = Progress(label, total, progress)
    while chunk := src.read(CHUNK):
        h.update(chunk)
        dst.write(chunk)
        n += len(chunk)
        bar.update(len(chunk))
    bar.close()
    return h.hexdigest(), n


def version_files(folder: Path) -> Iterator[Path]:
    """Every file of a version folder that belongs to its content (sorted, relative): not the
    sha256 manifest, the fetch record, the signature, nor files generated in the pod."""
    from modeldeploy_runtime.llm_engine import generated_files

    skip = {SHA_MANIFEST, SOURCE_RECORD, SIGNATURE_FILE} | generated_files(folder)
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if d != "__pycache__")
        for name in sorted(files):
            p = Path(root, name)
            rel = p.relative_to(folder)
            if rel.as_posix() in skip or name.endswith(".pyc"):
                continue
            yield rel


def write_sha_manifest(folder: Path, known: dict[str, str] | None = None, progress: bool = False) -> str:
    """Write ``manifest.sha256`` for a folder; returns the version digest. ``known`` maps relative
    paths to digests already computed (so large files are not hashed twice)."""
    known = known or {}
    lines = []
    for rel in version_files(folder):
        key = rel.as_posix()
        digest = known.get(key) or sha256_file(folder / rel, progress)
        lines.append(f"{digest}  {key}\n")
    data = "".join(lines).encode()
    (folder / SHA_MANIFEST).write_bytes(data)
    return hashlib.sha256(data).hexdigest()


def parse_sha_manifest(data: bytes, source: str = SHA_MANIFEST) -> dict[str, str]:
    out: dict[str, str] = {}
    for i, line in enumerate(data.decode("utf-8", errors="replace").splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split(None, 1)
        if len(parts) != 2 or len(parts[0]) != 64 or any(c not in "0123456789abcdef" for c in parts[0]):
            raise DigestMismatch(f"{source}:{i}: not a '<sha256>  <path>' line: {line[:80]!r}")
        rel = parts[1].strip().lstrip("*")
        if rel.startswith("/") or ".." in Path(rel).parts:
            raise DigestMismatch(f"{source}:{i}: path {rel!r} escapes the version folder")
        out[rel] = parts[0]
    return out


def version_digest(folder: Path) -> str | None:
    p = folder / SHA_MANIFEST
    return hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else None


def verify_folder(
    folder: Path, expected_digest: str | None = None, known: dict[str, str] | None = None
) -> str:
    """Check every file against ``manifest.sha256`` (and that file against ``expected_digest``).
    ``known`` maps relative paths to digests computed while the files were written (no second
    read). Returns the version digest; raises :class:`DigestMismatch` naming the file."""
    mf = folder / SHA_MANIFEST
    if not mf.is_file():
        raise DigestMismatch(f"{mf}: missing (the version has no sha256 manifest)")
    data = mf.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    if expected_digest and digest != expected_digest:
        raise DigestMismatch(f"{mf}: sha256 {digest} does not match the expected {expected_digest}")
    listed = parse_sha_manifest(data, str(mf))
    present = {p.as_posix() for p in version_files(folder)}
    for rel in sorted(set(listed) - present):
        raise DigestMismatch(f"{folder / rel}: listed in {SHA_MANIFEST} but missing")
    for rel in sorted(present - set(listed)):
        raise DigestMismatch(f"{folder / rel}: not listed in {SHA_MANIFEST}")
    for rel, want in sorted(listed.items()):
        got = (known or {}).get(rel) or sha256_file(folder / rel)
        if got != want:
            size = (folder / rel).stat().st_size
            raise DigestMismatch(
                f"{folder / rel}: sha256 {got} ({size} bytes) does not match {want} from {SHA_MANIFEST}"
            )
    return digest
