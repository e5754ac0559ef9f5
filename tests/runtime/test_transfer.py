"""Parallel ranged, resumable transfers against the real S3-compatible server (moto on loopback)
and a local HTTP server, through a TCP proxy that counts bytes, cuts connections and can drop the
Range header (a server refusing ranges)."""

from __future__ import annotations

import hashlib
import io
import os
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest
from tcpcut import CutProxy

from modeldeploy_runtime.fetch import PARTIAL_DIR, TMP_DIR, Fetcher, FetchError
from modeldeploy_runtime.manifest import ManifestCredentials
from modeldeploy_runtime.transfer import TransferSettings

from .conftest import S3Server

PART = 256 << 10
SIZE = 6 << 20  # 24 parts
DATA = os.urandom(SIZE)
SHA = hashlib.sha256(DATA).hexdigest()


def _proxy(endpoint: str, **kw: Any) -> CutProxy:
    u = urlparse(endpoint)
    assert u.hostname and u.port
    return CutProxy(u.hostname, u.port, **kw)


def _fetcher(repo: Path, retries: int = 3, workers: int = 4) -> Fetcher:
    return Fetcher(
        repo, retries=retries, transfer=TransferSettings(part_size=PART, workers=workers, retries=retries)
    )


def _creds(endpoint: str) -> ManifestCredentials:
    return ManifestCredentials(envPrefix="MD_TEST_", endpoint=endpoint)


@pytest.fixture
def big_object(s3: Any, bucket: str) -> str:
    s3.put_object(Bucket=bucket, Key="llm/1/model.bin", Body=DATA)
    return bucket


def test_s3_parallel_ranges_hash_while_streaming(
    tmp_path: Path, s3_server: S3Server, s3_env: dict[str, str], big_object: str
) -> None:
    with _proxy(s3_server.endpoint) as px:
        res = _fetcher(tmp_path / "m").fetch(
            "llm", 1, f"s3://{big_object}/llm/1/model.bin", SHA, _creds(px.url)
        )
    assert res.digest == SHA and (res.version_dir / "model.bin").read_bytes() == DATA
    assert px.range_requests >= SIZE // PART  # one ranged GET per part
    assert px.max_active > 1  # parts in parallel
    assert SIZE <= px.downstream < SIZE * 1.05  # each byte once (plus headers)
    assert not any((tmp_path / "m" / TMP_DIR / PARTIAL_DIR).iterdir())


def test_s3_cut_at_half_is_retried_in_place_without_starting_over(
    tmp_path: Path, s3_server: S3Server, s3_env: dict[str, str], big_object: str
) -> None:
    with _proxy(s3_server.endpoint, cut_after=SIZE // 2) as px:
        res = _fetcher(tmp_path / "m").fetch(
            "llm", 1, f"s3://{big_object}/llm/1/model.bin", SHA, _creds(px.url)
        )
    assert px.cuts == 1 and res.digest == SHA
    assert px.downstream / SIZE <= 1.1


def test_s3_failed_download_is_resumed_by_the_next_call(
    tmp_path: Path, s3_server: S3Server, s3_env: dict[str, str], big_object: str
) -> None:
    repo = tmp_path / "m"
    uri = f"s3://{big_object}/llm/1/model.bin"
    with _proxy(s3_server.endpoint, cut_after=SIZE // 2) as px:
        with pytest.raises(FetchError):
            _fetcher(repo, retries=0).fetch("llm", 1, uri, SHA, _creds(px.url))
        first = px.downstream
        partial = repo / TMP_DIR / PARTIAL_DIR
        assert any(p.name.endswith(".state.json") for p in partial.iterdir())  # progress kept
        assert not (repo / "llm" / "1").exists()
        _fetcher(repo).cleanup_tmp()  # an agent restart keeps partial downloads
        res = _fetcher(repo).fetch("llm", 1, uri, SHA, _creds(px.url))
    assert res.digest == SHA and (res.version_dir / "model.bin").read_bytes() == DATA
    assert first < SIZE
    assert px.downstream / SIZE <= 1.1, f"{px.downstream} bytes for {SIZE}"


def test_s3_server_refusing_ranges_falls_back_to_one_stream(
    tmp_path: Path, s3_server: S3Server, s3_env: dict[str, str], big_object: str
) -> None:
    with _proxy(s3_server.endpoint, strip_range=True) as px:
        res = _fetcher(tmp_path / "m").fetch(
            "llm", 1, f"s3://{big_object}/llm/1/model.bin", SHA, _creds(px.url)
        )
    assert res.digest == SHA and (res.version_dir / "model.bin").read_bytes() == DATA
    assert px.range_requests >= 1  # tried, answered with the whole object, then one stream


def test_s3_sharded_folder_files_fetched_concurrently_with_a_bound(
    tmp_path: Path, s3: Any, s3_server: S3Server, s3_env: dict[str, str], bucket: str
) -> None:
    from modeldeploy_runtime.digest import write_sha_manifest

    src = tmp_path / "src"
    src.mkdir()
    for i in range(8):
        (src / f"model-{i:05d}-of-00008.safetensors").write_bytes(os.urandom(300_000 + i))
    digest = write_sha_manifest(src)
    for p in src.iterdir():
        s3.upload_file(str(p), bucket, f"llm/2/{p.name}")
    f = Fetcher(tmp_path / "m", transfer=TransferSettings(part_size=PART, workers=2), file_workers=3)
    with _proxy(s3_server.endpoint) as px:
        res = f.fetch("llm", 2, f"s3://{bucket}/llm/2", digest, _creds(px.url))
    assert res.digest == digest and len(list(res.version_dir.glob("*.safetensors"))) == 8
    # 3 files at a time, each file of 2 parts with 2 workers: more than one connection, at most 6
    assert 1 < px.max_active <= 3 * 2 + 1  # (+1: the listing)


# ------------------------------------------------------------------------------------------ HTTP
class _Ranged(BaseHTTPRequestHandler):
    data = b""
    honour_ranges = True
    gets = 0

    def log_message(self, *args: Any) -> None:
        pass

    def _headers(self, code: int, length: int, extra: dict[str, str]) -> None:
        self.send_response(code)
        self.send_header("Accept-Ranges", "bytes")  # advertised even when ignored
        self.send_header("ETag", '"v1"')
        self.send_header("Content-Length", str(length))
        for k, v in extra.items():
            self.send_header(k, v)
        self.end_headers()

    def do_HEAD(self) -> None:
        self._headers(200, len(self.data), {})

    def do_GET(self) -> None:
        type(self).gets += 1
        rng = self.headers.get("Range")
        if rng and self.honour_ranges:
            a, b = rng.split("=")[1].split("-")
            start, end = int(a), min(int(b), len(self.data) - 1)
            self._headers(206, end - start + 1, {"Content-Range": f"bytes {start}-{end}/{len(self.data)}"})
            self.wfile.write(self.data[start : end + 1])
        else:
            self._headers(200, len(self.data), {})
            self.wfile.write(self.data)


@pytest.fixture
def http_server() -> Iterator[tuple[str, type[_Ranged]]]:
    handler = type("Ranged", (_Ranged,), {"data": DATA, "honour_ranges": True, "gets": 0})
    srv = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    th = threading.Thread(target=srv.serve_forever, daemon=True)
    th.start()
    yield f"http://127.0.0.1:{srv.server_address[1]}", handler
    srv.shutdown()


def test_http_parallel_ranges_resume_after_cut(
    tmp_path: Path, http_server: tuple[str, type[_Ranged]]
) -> None:
    url, handler = http_server
    with _proxy(url, cut_after=SIZE // 2) as px:
        res = _fetcher(tmp_path / "m").fetch("o", 1, f"{px.url}/model.onnx", SHA)
    assert res.digest == SHA and (res.version_dir / "model.onnx").read_bytes() == DATA
    assert px.cuts == 1 and handler.gets > SIZE // PART
    assert px.downstream / SIZE <= 1.1


def test_http_server_ignoring_ranges_falls_back_to_one_stream(
    tmp_path: Path, http_server: tuple[str, type[_Ranged]]
) -> None:
    url, handler = http_server
    handler.honour_ranges = False
    res = _fetcher(tmp_path / "m").fetch("o", 1, f"{url}/model.onnx", SHA)
    assert res.digest == SHA and (res.version_dir / "model.onnx").read_bytes() == DATA
    assert handler.gets >= 2  # ranged attempt(s) refused, then one plain GET


_RSS_CHILD = """
import json, sys
from pathlib import Path

def hwm():
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024

from modeldeploy_runtime.fetch import Fetcher
from modeldeploy_runtime.manifest import ManifestCredentials
from modeldeploy_runtime.transfer import TransferSettings

f = Fetcher(sys.argv[1], transfer=TransferSettings(part_size=4 << 20, workers=4))
f._source("s3://x/y", ManifestCredentials(envPrefix="MD_TEST_", endpoint=sys.argv[3])).client  # imports, client
before = hwm()
res = f.fetch("big", 1, sys.argv[2], None, ManifestCredentials(envPrefix="MD_TEST_", endpoint=sys.argv[3]))
print(json.dumps({"before": before, "after": hwm(), "bytes": res.bytes}))
"""


def test_memory_stays_bounded_while_fetching(
    tmp_path: Path, s3: Any, s3_server: S3Server, s3_env: dict[str, str], bucket: str
) -> None:
    """Peak RSS of a process fetching a 128 MiB object grows by far less than the object
    (measured: ~21 MiB with 4 ranged requests of 4 MiB parts)."""
    import json
    import subprocess
    import sys

    size = 128 << 20
    block = os.urandom(1 << 20)
    s3.upload_fileobj(io.BytesIO(block * 128), bucket, "big/model.bin")
    proc = subprocess.run(
        [sys.executable, "-c", _RSS_CHILD, str(tmp_path / "m"), f"s3://{bucket}/big/model.bin", s3_server.endpoint],
        capture_output=True, text=True, timeout=300, env={**os.environ, **s3_env},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    r = json.loads(proc.stdout.strip().splitlines()[-1])
    assert r["bytes"] == size
    assert r["after"] - r["before"] < size // 4, r  # 4 requests x 1 MiB chunks, not the object
