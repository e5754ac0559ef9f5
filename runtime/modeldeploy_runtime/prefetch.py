"""``modeldeploy-runtime prefetch``: fill the shared model cache with the wanted versions of a
model manifest before any pod needs them (the prefetch Job's command).

Each wanted version with a pinned sha256 is fetched through :class:`~modeldeploy_runtime.fetch.Fetcher`
into a scratch repository inside the cache volume, verified and published as ``sha256/<digest>``
(or found there already and re-verified); the scratch repository is removed afterwards. A version
without a pinned digest cannot be stored by digest: it is reported as skipped. With ``owner`` the
wanted digests are recorded as that ModelDeployment's refs; with ``max_bytes`` unreferenced entries
are then evicted, least recently used first, until the cache fits (``SharedCache.evict``); with
``sharers`` (the operator's list of its namespace's ModelDeployments that use this cache, mounted
from a ConfigMap) the refs files of the others — deleted ModelDeployments — are removed first, so
that their entries can be evicted too. The summary (JSON) goes to stdout and to the termination message, for the operator to read.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
import uuid
from pathlib import Path
from typing import Any

from modeldeploy_runtime.cache import SharedCache
from modeldeploy_runtime.fetch import Fetcher, FetchError
from modeldeploy_runtime.manifest import FORMATS, ModelManifest

log = logging.getLogger("modeldeploy.runtime.prefetch")


#: A refs file this young is never removed (its ModelDeployment may postdate the operator's list).
REFS_GRACE_S = 900.0


def read_sharers(path: str | Path | None) -> tuple[str, set[str]] | None:
    """``(namespace, names)`` from the operator's sharers file, or None when absent/unreadable
    (then no refs file is removed)."""
    if path is None:
        return None
    try:
        doc = json.loads(Path(path).read_text())
        return str(doc["namespace"]), {str(n) for n in doc["modelDeployments"]}
    except (OSError, ValueError, KeyError, TypeError) as exc:
        log.info("no list of the cache's users (%s): no refs removed", exc)
        return None


def _wanted_digests(manifest: ModelManifest) -> set[str]:
    out = set()
    for model in manifest.models:
        by_num = {v.version: v for v in model.versions}
        out |= {d for d in (by_num[n].sha256 for n in model.wanted_versions()) if d}
    return out


def prefetch(
    manifest: ModelManifest,
    cache_dir: str | Path,
    owner: str | None = None,
    max_bytes: int | None = None,
    sharers: tuple[str, set[str]] | None = None,
    refs_grace_s: float = REFS_GRACE_S,
) -> dict[str, Any]:
    """Fill the cache; returns the summary (``ok`` is False when a version failed)."""
    cache = SharedCache(cache_dir, verify="full")  # the Job re-hashes every entry it finds
    scratch = Path(cache_dir) / ".tmp" / f"prefetch-{uuid.uuid4().hex[:8]}"
    fetcher = Fetcher(scratch, cache=cache)
    versions: list[dict[str, Any]] = []
    if owner:  # before fetching: another Job evicting meanwhile keeps what this one publishes
        cache.write_refs(owner, _wanted_digests(manifest))
    try:
        for model in manifest.models:
            by_num = {v.version: v for v in model.versions}
            for num in model.wanted_versions():
                mv = by_num[num]
                item: dict[str, Any] = {"model": model.name, "version": num, "digest": mv.sha256}
                if not mv.sha256:
                    item.update(state="Skipped", message="no sha256 pinned: cannot be cached by digest")
                else:
                    try:
                        res = fetcher.fetch(
                            model.name, num, mv.source, mv.sha256, model.credentials,
                            filename=FORMATS[model.format].artifact,
                        )  # fmt: skip
                        item.update(state="Present", origin=res.origin, bytes=res.bytes)
                    except FetchError as exc:
                        item.update(state="Failed", reason=exc.reason, message=str(exc))
                versions.append(item)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    wanted = {v["digest"] for v in versions if v.get("digest")}
    released = (
        cache.prune_refs(sharers[0], sharers[1], refs_grace_s) if sharers and max_bytes is not None else []
    )
    evicted = cache.evict(max_bytes, keep=wanted) if max_bytes is not None else []
    st = cache.status()
    return {
        "evicted": evicted,
        "refsRemoved": released,
        "ok": all(v["state"] != "Failed" for v in versions),
        "versions": versions,
        "entries": len(st["entries"]),
        "bytes": sum(e["bytes"] for e in st["entries"]),
        "verifiedAt": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "events": st["events"],
    }


def run(
    manifest_path: str | Path,
    cache_dir: str | Path,
    termination_log: str | Path,
    manifest_json: str | None = None,
    owner: str | None = None,
    max_bytes: int | None = None,
    sharers_file: str | Path | None = None,
    refs_grace_s: float = REFS_GRACE_S,
) -> int:
    manifest = ModelManifest.from_json(manifest_json or Path(manifest_path).read_text())
    summary = prefetch(
        manifest, cache_dir, owner=owner, max_bytes=max_bytes,
        sharers=read_sharers(sharers_file), refs_grace_s=refs_grace_s,
    )  # fmt: skip
    text = json.dumps(summary, sort_keys=True)
    print(text)
    try:  # the operator reads the outcome from the pod's termination message (4 KiB at most)
        short = {k: summary[k] for k in ("ok", "entries", "bytes", "verifiedAt")}
        short["evicted"] = len(summary["evicted"])
        short["versions"] = [
            {k: v.get(k) for k in ("model", "version", "state")} for v in summary["versions"]
        ]
        # corrupt entries the Job found and refetched (the operator puts them in status.cache)
        short["corrupt"] = [
            {k: e[k] for k in ("time", "digest", "event")}
            for e in summary["events"]
            if e["event"] in ("CorruptEntry", "CorruptEntryRefetched")
        ][-4:]
        Path(termination_log).write_text(json.dumps(short, sort_keys=True)[:4000])
    except OSError:
        pass
    return 0 if summary["ok"] else 1
