"""The shared model cache by digest: concurrent agents download once, a corrupt entry is detected,
refetched and reported in /status, a read-only mount is used without writing."""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import requests

from modeldeploy_runtime.agent import Agent
from modeldeploy_runtime.cache import ENTRIES, SharedCache
from modeldeploy_runtime.digest import verify_folder
from modeldeploy_runtime.fetch import Fetcher

from .conftest import make_const_model, write_manifest


class _Archive(BaseHTTPRequestHandler):
    body = b""
    gets = 0
    delay = 0.0
    lock = threading.Lock()

    def log_message(self, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        with self.lock:
            type(self).gets += 1
        time.sleep(self.delay)  # a slow store: the second agent arrives during the first download
        self.send_response(200)
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        self.wfile.write(self.body)


@pytest.fixture
def archive_server(tmp_path: Path) -> Iterator[tuple[str, type[_Archive], str]]:
    v1 = make_const_model(tmp_path / "build", "clf", 1, 1.0)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as t:
        t.add(v1.version_dir, arcname="1")
    handler = type("Archive", (_Archive,), {"body": buf.getvalue(), "gets": 0, "delay": 1.0})
    srv = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield (
        f"http://127.0.0.1:{srv.server_address[1]}/clf-1.tar.gz",
        handler,
        hashlib.sha256(handler.body).hexdigest(),
    )
    srv.shutdown()


def _manifest(path: Path, url: str, digest: str) -> Path:
    write_manifest(path, {"generation": 1, "models": [{
        "name": "clf", "format": "python", "maxBatchSize": 8, "versionPolicy": {"latest": 1},
        "instanceGroups": [{"count": 1, "kind": "KIND_CPU"}],
        "versions": [{"version": 1, "source": url, "sha256": digest}]}]})  # fmt: skip
    return path


@pytest.mark.triton
def test_two_agents_one_cache_download_once_and_both_serve(
    tmp_path: Path, archive_server: tuple[str, type[_Archive], str], start_triton: Any
) -> None:
    url, handler, digest = archive_server
    cache = tmp_path / "cache"
    cache.mkdir()
    manifest = _manifest(tmp_path / "manifest.json", url, digest)
    env = {**os.environ, "MODELDEPLOY_CACHE_DIR": str(cache)}
    cmd = [sys.executable, "-m", "modeldeploy_runtime.cli", "agent", "--mode", "init", "--manifest", str(manifest),
           "--log-format", "json", "--repository"]  # fmt: skip
    procs = [
        subprocess.Popen(
            [*cmd, str(tmp_path / f"repo-{i}")],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for i in range(2)
    ]
    outs = [p.communicate(timeout=120)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    assert handler.gets == 1  # one download at the source for both agents
    origins = sorted(json.loads(ln)["msg"].split("(")[1].split(",")[0] for o in outs
                     for ln in o.splitlines() if "fetched clf version 1" in ln)  # fmt: skip
    assert origins == ["cache", "download"]
    assert SharedCache(cache).verify(digest) is None  # the entry's files match its list
    assert list((cache / ENTRIES).iterdir()) == [cache / ENTRIES / digest]
    servers = []
    for i in range(2):
        repo = tmp_path / f"repo-{i}"
        verify_folder(repo / "clf" / "1")  # the packaged manifest.sha256 holds
        servers.append(start_triton(repo, load_models=["clf"]))
    for srv in servers:  # both serve at once
        r = requests.post(
            f"{srv.http_url}/v2/models/clf/infer",
            json={"inputs": [{"name": "X", "shape": [1, 4], "datatype": "FP32", "data": [0, 0, 0, 0]}]},
            timeout=30,
        )
        assert r.status_code == 200 and r.json()["outputs"][0]["data"] == [1.0] * 4, r.text


def test_corrupt_entry_detected_refetched_and_reported(
    tmp_path: Path, archive_server: tuple[str, type[_Archive], str]
) -> None:
    url, handler, digest = archive_server
    handler.delay = 0.0
    cache = tmp_path / "cache"
    cache.mkdir()
    manifest = _manifest(tmp_path / "manifest.json", url, digest)
    first = Agent(manifest, tmp_path / "a", fetcher=Fetcher(tmp_path / "a", cache=cache))
    first.manifest, _ = first.read_manifest()
    assert first.fill_repository(first.manifest)
    entry = cache / ENTRIES / digest
    victim = entry / "1" / "model.py" if (entry / "1").is_dir() else entry / "model.py"
    data = bytearray(victim.read_bytes())
    data[len(data) // 2] ^= 0x01  # one byte flipped
    victim.write_bytes(bytes(data))
    assert "model.py" in (SharedCache(cache).verify(digest) or "")

    second = Agent(manifest, tmp_path / "b", fetcher=Fetcher(tmp_path / "b", cache=cache))
    second.manifest, _ = second.read_manifest()
    assert second.fill_repository(second.manifest)
    assert handler.gets == 2  # downloaded again instead of serving the corrupt entry
    st = second.status().model_dump(mode="json")
    assert st["models"][0]["versions"][0]["fetch"]["origin"] == "download"
    events = [e["event"] for e in st["cache"]["events"]]
    assert events[:3] == ["CorruptEntry", "CorruptEntryRefetched", "Published"]
    assert "model.py" in st["cache"]["events"][0]["message"]
    assert SharedCache(cache).verify(digest) is None  # the good copy replaced it
    assert (tmp_path / "b" / "clf" / "1" / "model.py").read_bytes() == (
        tmp_path / "a" / "clf" / "1" / "model.py"
    ).read_bytes()
    assert any((cache / ".quarantine").iterdir())
    [e] = st["cache"]["entries"]
    assert e["digest"] == digest and e["bytes"] > 0 and e["lastVerified"]
    _operator_sees_the_corrupt_entry(manifest, digest, {"pod-a": first.status().model_dump_json(),
                                                        "pod-b": second.status().model_dump_json()})  # fmt: skip


def _operator_sees_the_corrupt_entry(manifest: Path, digest: str, docs: dict[str, str]) -> None:
    """The operator's side: the agents' /status JSON, parsed with the typed contract, becomes the
    ModelDeployment's status.cache (the corrupt entry, found by pod-b) and each version's fetch
    counts (pod-a downloaded and published it, pod-b found it corrupt and downloaded it again)."""
    from modeldeploy.api.v1alpha1 import ModelDeployment, ModelDeploymentStatus
    from modeldeploy.reconcile.cache_status import cache_status
    from modeldeploy.reconcile.status import AgentReport, compute_status
    from modeldeploy_runtime.agentapi import AgentStatus

    version = json.loads(manifest.read_text())["models"][0]["versions"][0]
    md = ModelDeployment.from_body({
        "apiVersion": "modeldeploy.io/v1alpha1", "kind": "ModelDeployment",
        "metadata": {"name": "clf", "namespace": "ns", "generation": 1, "uid": "u"},
        "spec": {"models": [{"name": "clf", "format": "python", "source": "https://example.com/clf",
                             "versions": [{"version": 1, "sha256": digest, "source": version["source"]}]}],
                 "cache": {"claimName": "cache", "prefetch": False}}})  # fmt: skip
    pods = {pod: AgentStatus.model_validate_json(doc) for pod, doc in docs.items()}
    cache = cache_status(md, None, [], pods)
    assert cache is not None
    assert [(c["event"], c["pod"]) for c in cache["corruptEntries"]] == [
        ("CorruptEntry", "pod-b"),
        ("CorruptEntryRefetched", "pod-b"),
    ]
    assert cache["entries"] == 1 and cache["versionsPresent"] == [f"clf:1@{digest[:12]}"]
    dep = {"metadata": {"generation": 1}, "spec": {"replicas": 2}, "status": {
        "observedGeneration": 1, "replicas": 2, "updatedReplicas": 2, "availableReplicas": 2}}  # fmt: skip
    st = compute_status(md, dep, [], None, agents=AgentReport(pods=pods), manifest_generation=1)
    st["cache"] = cache
    typed = ModelDeploymentStatus.model_validate(st)
    assert typed.models and typed.models[0].versions[0].fetch is not None
    assert typed.models[0].versions[0].fetch.downloaded == 2
    assert typed.models[0].versions[0].fetch.bytesDownloaded > 0


def test_read_only_cache_is_used_without_writing(
    tmp_path: Path, archive_server: tuple[str, type[_Archive], str]
) -> None:
    url, handler, digest = archive_server
    handler.delay = 0.0
    cache = tmp_path / "cache"
    cache.mkdir()
    Fetcher(tmp_path / "filler", cache=cache).fetch("clf", 1, url, digest)  # the prefetch Job's part
    before = sorted((p.as_posix(), p.stat().st_mtime_ns) for p in cache.rglob("*"))
    ro = SharedCache(cache, read_only=True)
    res = Fetcher(tmp_path / "pod", cache=ro).fetch("clf", 1, url, digest)
    assert res.origin == "cache" and res.bytes == 0 and handler.gets == 1
    assert (res.version_dir / "model.py").read_bytes()  # readable through its links
    assert sorted((p.as_posix(), p.stat().st_mtime_ns) for p in cache.rglob("*")) == before
    assert [e["event"] for e in ro.status()["events"]] == ["Hit"]


def test_prefetch_mode_fills_the_cache_then_pods_start_from_it(
    tmp_path: Path, archive_server: tuple[str, type[_Archive], str]
) -> None:
    url, handler, digest = archive_server
    handler.delay = 0.0
    cache = tmp_path / "cache"
    cache.mkdir()
    manifest = _manifest(tmp_path / "manifest.json", url, digest)
    term = tmp_path / "termination-log"
    proc = subprocess.run(
        [sys.executable, "-m", "modeldeploy_runtime.cli", "prefetch", "--manifest", str(manifest),
         "--cache-dir", str(cache), "--termination-log", str(term), "--owner", "models/clf",
         "--max-bytes", "1048576"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert summary["ok"] and summary["entries"] == 1 and summary["bytes"] > 0
    assert summary["versions"] == [
        {
            "model": "clf",
            "version": 1,
            "digest": digest,
            "state": "Present",
            "origin": "download",
            "bytes": len(handler.body),
        }
    ]
    assert json.loads(term.read_text())["versions"] == [{"model": "clf", "version": 1, "state": "Present"}]
    assert json.loads((cache / ".refs" / "models_clf.json").read_text())["digests"] == [digest]
    assert summary["evicted"] == []  # under the limit, and wanted anyway
    assert sorted(p.name for p in cache.iterdir() if p.name not in (".locks", ".refs")) == [".tmp", ENTRIES]
    assert not any((cache / ".tmp").iterdir())  # the scratch repository is gone
    pod = Agent(
        manifest,
        tmp_path / "pod",
        fetcher=Fetcher(tmp_path / "pod", cache=SharedCache(cache, read_only=True)),
    )
    pod.manifest, _ = pod.read_manifest()
    assert pod.fill_repository(pod.manifest)
    assert pod.status().model_dump(mode="json")["models"][0]["versions"][0]["fetch"] == {
        "origin": "cache",
        "bytes": 0,
        "seconds": pytest.approx(0, abs=5),
    }
    assert handler.gets == 1
    # the sidecar after the init container finds the version in place and reports how it got there
    sidecar = Agent(
        manifest,
        tmp_path / "pod",
        fetcher=Fetcher(tmp_path / "pod", cache=SharedCache(cache, read_only=True)),
    )
    sidecar.manifest, _ = sidecar.read_manifest()
    assert sidecar.fill_repository(sidecar.manifest)
    assert sidecar.status().model_dump(mode="json")["models"][0]["versions"][0]["fetch"]["origin"] == "cache"


def test_use_rehashes_only_when_files_changed_since_the_last_full_verification(
    tmp_path: Path, archive_server: tuple[str, type[_Archive], str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import modeldeploy_runtime.cache as cache_mod

    url, handler, digest = archive_server
    handler.delay = 0.0
    cache = tmp_path / "cache"
    cache.mkdir()
    Fetcher(tmp_path / "filler", cache=cache).fetch("clf", 1, url, digest)  # publishes and stamps
    hashed: list[Path] = []
    real = cache_mod.sha256_file
    monkeypatch.setattr(cache_mod, "sha256_file", lambda p, *a: hashed.append(p) or real(p, *a))
    ro = SharedCache(cache, read_only=True)
    assert ro.lookup(digest) is not None and hashed == []  # unchanged since verified: no re-hash
    assert SharedCache(cache, read_only=True, verify="full").lookup(digest) is not None and hashed
    # a byte flipped through the filesystem, even with its mtime put back, changes the ctime
    victim = next(p for p in (cache / ENTRIES / digest).rglob("model.py"))
    st = victim.stat()
    data = bytearray(victim.read_bytes())
    data[0] ^= 0x01
    victim.write_bytes(bytes(data))
    os.utime(victim, ns=(st.st_atime_ns, st.st_mtime_ns))
    hashed.clear()
    assert ro.lookup(digest) is None and hashed  # re-hashed, found corrupt
    assert [e["event"] for e in ro.status()["events"]][-1] == "CorruptEntry"


def _publish(cache: SharedCache, tmp: Path, tag: str, size: int, used: float) -> str:
    """An entry of ``size`` bytes whose last use was at ``used`` (epoch seconds)."""
    staged = tmp / f"staged-{tag}"
    staged.mkdir()
    (staged / "model.bin").write_bytes(tag.encode() * (size // len(tag)))
    digest = hashlib.sha256(tag.encode()).hexdigest()
    with cache.filling(digest):
        cache.publish(digest, staged)
    os.utime(cache.entry(digest) / ".modeldeploy-verified.json", (used, used))
    return digest


def test_eviction_removes_unreferenced_entries_least_recently_used_first_never_busy_ones(
    tmp_path: Path,
) -> None:
    root = tmp_path / "cache"
    root.mkdir()
    cache = SharedCache(root)
    mib = 1 << 20
    wanted = _publish(cache, tmp_path, "wanted", mib, 100)  # oldest, but this Job wants it
    other = _publish(cache, tmp_path, "other", mib, 200)  # another ModelDeployment's refs name it
    old = _publish(cache, tmp_path, "old", mib, 300)
    busy = _publish(cache, tmp_path, "busy", mib, 400)  # being read: its lock is held shared
    newer = _publish(cache, tmp_path, "newer", mib, 500)
    cache.write_refs("models/other", {other})
    assert cache.referenced() == {other}
    assert cache.evict(10 * mib, keep={wanted}) == []  # fits: nothing to do

    reader = SharedCache(root, read_only=True)
    entered, release = threading.Event(), threading.Event()

    def read_busy() -> None:
        with reader.filling(busy):  # a model pod's agent linking the entry (read-only mount)
            entered.set()
            release.wait(30)

    t = threading.Thread(target=read_busy)
    t.start()
    try:
        assert entered.wait(10)
        evicted = cache.evict(2 * mib + mib // 2, keep={wanted})
    finally:
        release.set()
        t.join()
    assert evicted == [old, newer]  # LRU order; busy skipped, wanted and referenced kept
    assert {p.name for p in (root / ENTRIES).iterdir()} == {wanted, other, busy}
    assert not any((root / ".evicting").iterdir())
    events = [(e["event"], e["digest"]) for e in cache.status()["events"]]
    assert ("EvictionSkipped", busy) in events and ("Evicted", old) in events
    assert cache.lookup(busy) is not None  # what stayed is whole

    # a filler publishing an entry holds its lock: the evictor skips it too
    with cache.filling(busy):
        assert cache.evict(0, keep={wanted}) == []
    assert busy in {p.name for p in (root / ENTRIES).iterdir()}
    assert cache.evict(0, keep={wanted}) == [busy]  # free now: the only unreferenced entry left
    assert SharedCache(root, read_only=True).evict(0) == []  # a read-only mount never evicts


def _prefetch_cmd(
    manifest: Path, cache: Path, term: Path, owner: str, max_bytes: int, *extra: str
) -> list[str]:
    return [sys.executable, "-m", "modeldeploy_runtime.cli", "prefetch", "--manifest", str(manifest),
            "--cache-dir", str(cache), "--termination-log", str(term), "--owner", owner,
            "--max-bytes", str(max_bytes), "--log-format", "text", *extra]  # fmt: skip


def _hold_shared(cache: Path, digest: str) -> subprocess.Popen[str]:
    """A model pod's agent reading ``digest`` through the read-only mount (holds its lock shared)."""
    code = (
        "import sys; from modeldeploy_runtime.cache import SharedCache\n"
        f"with SharedCache({str(cache)!r}, read_only=True).filling({digest!r}):\n"
        "    print('holding', flush=True); sys.stdin.readline()\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None and proc.stdout.readline().strip() == "holding"
    return proc


def _refs(cache: SharedCache, owner: str, digests: set[str], age_s: float) -> None:
    cache.write_refs(owner, digests)
    f = cache.root / ".refs" / f"{owner.replace('/', '_')}.json"
    t = time.time() - age_s
    os.utime(f, (t, t))


def test_prefetch_process_removes_refs_of_deleted_deployments_then_evicts_their_entries(
    tmp_path: Path, archive_server: tuple[str, type[_Archive], str]
) -> None:
    url, handler, digest = archive_server
    handler.delay = 0.0
    root = tmp_path / "cache"
    root.mkdir()
    cache = SharedCache(root)
    mib = 1 << 20
    gone_old = _publish(cache, tmp_path, "gone-old", mib, 100)  # a deleted ModelDeployment's, LRU
    gone_locked = _publish(cache, tmp_path, "gone-locked", mib, 150)  # its too, but being read
    gone_new = _publish(cache, tmp_path, "gone-new", mib, 200)
    gone_spare = _publish(cache, tmp_path, "gone-spare", mib, 900)  # its too, most recently used
    live = _publish(cache, tmp_path, "live", mib, 50)  # a live sibling's (oldest of all)
    fresh = _publish(cache, tmp_path, "fresh", mib, 60)  # one created after the operator's list
    foreign = _publish(cache, tmp_path, "foreign", mib, 70)  # another namespace's (shared volume)
    _refs(cache, "models/gone", {gone_old, gone_locked, gone_new, gone_spare}, age_s=3600)
    _refs(cache, "models/live", {live}, age_s=3600)
    _refs(cache, "models/fresh", {fresh}, age_s=0)
    _refs(cache, "elsewhere/x", {foreign}, age_s=3600)
    sharers = tmp_path / "sharers.json"
    sharers.write_text(
        json.dumps({"namespace": "models", "claimName": "c", "modelDeployments": ["clf", "live"]})
    )
    manifest = _manifest(tmp_path / "manifest.json", url, digest)
    reader = _hold_shared(root, gone_locked)
    try:
        # 7 MiB + the Job's own entry; a limit of 5.5 MiB: two entries must go
        proc = subprocess.run(
            _prefetch_cmd(manifest, root, tmp_path / "term", "models/clf", 5 * mib + mib // 2,
                          "--sharers-file", str(sharers)),
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
    finally:
        assert reader.stdin is not None
        reader.stdin.write("\n")
        reader.stdin.close()
        reader.wait(10)
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert summary["refsRemoved"] == ["models/gone"]
    assert summary["evicted"] == [gone_old, gone_new]  # LRU order; the locked one skipped
    assert summary["bytes"] <= 5 * mib + mib // 2
    assert {p.name for p in (root / ENTRIES).iterdir()} == {
        digest,
        gone_locked,
        gone_spare,
        live,
        fresh,
        foreign,
    }
    assert sorted(p.name for p in (root / ".refs").glob("*.json")) == [
        "elsewhere_x.json", "models_clf.json", "models_fresh.json", "models_live.json"
    ]  # fmt: skip
    assert SharedCache(root, read_only=True, verify="full").lookup(gone_locked) is not None  # whole
    # without the sharers file (mdctl render, or the ConfigMap not there yet): no refs removed
    _refs(cache, "models/gone", {gone_spare}, age_s=3600)
    proc = subprocess.run(_prefetch_cmd(manifest, root, tmp_path / "term", "models/clf", 0),
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert summary["refsRemoved"] == [] and gone_spare not in summary["evicted"]
    assert summary["evicted"] == [gone_locked]  # unreferenced since, and free now


def _serve_model(tmp: Path, name: str, value: float, delay: float) -> tuple[str, str, ThreadingHTTPServer]:
    v = make_const_model(tmp / f"build-{name}", name, 1, value)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as t:
        t.add(v.version_dir, arcname="1")
    handler = type("Archive", (_Archive,), {"body": buf.getvalue(), "gets": 0, "delay": delay})
    srv = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{srv.server_address[1]}/{name}-1.tar.gz"
    return url, hashlib.sha256(handler.body).hexdigest(), srv


def test_two_evicting_prefetch_processes_on_one_cache_keep_what_the_other_publishes_or_reads(
    tmp_path: Path,
) -> None:
    root = tmp_path / "cache"
    root.mkdir()
    cache = SharedCache(root)
    kib = 1 << 10
    url_a, dig_a, srv_a = _serve_model(tmp_path, "a", 1.0, delay=0.0)
    url_b, dig_b, srv_b = _serve_model(tmp_path, "b", 2.0, delay=0.0)
    try:
        # A downloads while B evicts; both evict at once; B downloads while A evicts
        for rnd, delays in enumerate([(0.5, 0.0), (0.0, 0.0), (0.0, 0.5)]):
            srv_a.RequestHandlerClass.delay, srv_b.RequestHandlerClass.delay = delays  # type: ignore[attr-defined]
            # fresh owners: last round's entries start unreferenced, so each Job must protect its own
            shutil.rmtree(root / ".refs", ignore_errors=True)
            old = [_publish(cache, tmp_path, f"r{rnd}-old{i}", 256 * kib, 100 + i) for i in range(10)]
            busy = old[0]  # the least recently used, but a model pod is reading it
            limit = 300 * kib + sum(cache.sizes().get(d, 0) for d in (dig_a, dig_b)) + 64 * kib
            runs = []
            reader = _hold_shared(root, busy)
            try:
                for tag, url, dig in (("a", url_a, dig_a), ("b", url_b, dig_b)):
                    m = _manifest(tmp_path / f"m-{tag}.json", url, dig)
                    runs.append(subprocess.Popen(
                        _prefetch_cmd(m, root, tmp_path / f"t-{tag}", f"models/{tag}{rnd}", limit),
                        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                    ))  # fmt: skip
                outs = [p.communicate(timeout=120) for p in runs]
            finally:
                assert reader.stdin is not None
                reader.stdin.write("\n")
                reader.stdin.close()
                reader.wait(10)
            assert [p.returncode for p in runs] == [0, 0], [e for _, e in outs]
            sums = [json.loads(o.strip().splitlines()[-1]) for o, _ in outs]
            assert [s["versions"][0]["state"] for s in sums] == ["Present", "Present"]
            ev_a, ev_b = (set(s["evicted"]) for s in sums)
            assert not ev_a & ev_b and ev_a | ev_b == set(old) - {busy}  # each entry removed once
            left = SharedCache(root, read_only=True, verify="full")
            assert set(left.sizes()) == {dig_a, dig_b, busy}
            for d in (dig_a, dig_b, busy):  # what stayed is whole
                assert left.lookup(d) is not None
            assert sum(left.sizes().values()) <= limit
            assert not any((root / ".evicting").iterdir()) and not any((root / ".tmp").iterdir())
            assert cache.evict(0) == [busy]  # free now; the next round starts from the two wanted
    finally:
        srv_a.shutdown()
        srv_b.shutdown()
