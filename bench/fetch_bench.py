#!/usr/bin/env python3
"""Fetch of one large object from the real S3-compatible server (moto's server on loopback):

* parallel ranged (the runtime's Fetcher) vs a single-stream ``boto3`` ``get_object`` of the same
  object (streamed to disk and hashed, 1 MiB at a time): seconds, MB/s and peak RSS of each, each
  measured in its own subprocess (``ru_maxrss``);
* a resumed transfer: the connection is cut at 50% (a TCP proxy in front of the server) and the
  download fails; a second process resumes it. Bytes the server sent in total / object size.

    python bench/fetch_bench.py                      # 4 GiB object (moto's process holds one copy)
    python bench/fetch_bench.py --size-mb 1024 --json figures.json

Prints a JSON object with the figures (and writes it to --json).

Caveat, measured: moto's server (5.x) reads the *whole* object from its spooled buffer for every
GET, ranged or not (``FakeKey.value``), so each ranged request costs that server O(object size)
(1 GiB, 4 workers, 16 MiB parts: parallel 15.6 MB/s vs single 240 MB/s) and one object copy of
memory per concurrent request. Unless ``--stock-moto`` is given, the bench therefore memoizes each
object's bytes in the server (one in-memory copy; a ranged GET then copies only its range, as a
real store does). The client side (the code measured) is unchanged either way.

The object is put into moto's in-process store directly, streamed into the key's spooled buffer
(``--upload store``; ``--upload s3`` uploads it with boto3, which moto 5.2 cannot take at 4 GiB:
its multipart upload reached 17 GiB of RSS). ``server_peak_rss_mib`` is the peak RSS of this
process (moto's server; with the memoization, one copy of the object).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO / "runtime"), str(REPO / "tests")]

KEY = "bench/model.bin"
BUCKET = "fetch-bench"
CREDS_ENV = {"BENCH_AWS_ACCESS_KEY_ID": "bench", "BENCH_AWS_SECRET_ACCESS_KEY": "bench"}


def _peak_rss_mib() -> float:
    """This process's peak RSS (VmHWM: reset by exec, unlike ru_maxrss, which a child inherits
    from the parent it was forked from)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def child(args: argparse.Namespace) -> int:
    """One download in this process; prints {seconds, sha256, peak_rss_mib}."""
    os.environ.update(CREDS_ENV)
    t0 = time.monotonic()
    if args.child == "single":
        import boto3

        s3 = boto3.client("s3", endpoint_url=args.endpoint, region_name="us-east-1",
                          aws_access_key_id="bench", aws_secret_access_key="bench")  # fmt: skip
        h = hashlib.sha256()
        body = s3.get_object(Bucket=BUCKET, Key=KEY)["Body"]
        with open(Path(args.dest) / "single.bin", "wb") as f:
            for chunk in body.iter_chunks(1 << 20):
                h.update(chunk)
                f.write(chunk)
        digest = h.hexdigest()
    else:
        from modeldeploy_runtime.fetch import Fetcher, FetchError
        from modeldeploy_runtime.manifest import ManifestCredentials
        from modeldeploy_runtime.transfer import TransferSettings

        settings = TransferSettings(part_size=args.part_mb << 20, workers=args.workers, retries=args.retries)
        fetcher = Fetcher(args.dest, retries=args.retries, transfer=settings)
        creds = ManifestCredentials(envPrefix="BENCH_", endpoint=args.endpoint)
        try:
            res = fetcher.fetch("m", 1, f"s3://{BUCKET}/{KEY}", None, creds)
        except FetchError as exc:
            print(json.dumps({"failed": exc.reason, "peak_rss_mib": _peak_rss_mib()}))
            return 3
        digest = res.digest or ""
    print(json.dumps({"seconds": time.monotonic() - t0, "sha256": digest, "peak_rss_mib": _peak_rss_mib()}))
    return 0


def _run_child(
    mode: str, endpoint: str, dest: Path, a: argparse.Namespace, retries: int = 3
) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--child", mode, "--endpoint", endpoint, "--dest", str(dest),
           "--part-mb", str(a.part_mb), "--workers", str(a.workers), "--retries", str(retries)]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=3600)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if not lines:
        raise SystemExit(f"{mode} child failed:\n{proc.stderr[-3000:]}")
    out: dict[str, Any] = json.loads(lines[-1])
    out["rc"] = proc.returncode
    return out


def _memoize_moto_values() -> None:
    """Make moto's ranged GETs O(range): keep each object's bytes instead of re-reading them."""
    from moto.s3.models import FakeKey

    prop = FakeKey.value
    read = prop.fget
    assert read is not None

    def value(self: Any) -> bytes:
        cached = self.__dict__.get("_bench_value")
        if cached is None or len(cached) != self.contentsize:
            cached = read(self)
            self.__dict__["_bench_value"] = cached
        return cached  # type: ignore[no-any-return]

    FakeKey.value = property(value, prop.fset)  # type: ignore[method-assign,assignment]


def _compare(endpoint: str, tmp: Path, expected: str, size: int, a: argparse.Namespace) -> dict[str, Any]:
    import shutil

    out: dict[str, Any] = {}
    for mode in ("single", "parallel"):
        dest = tmp / mode
        dest.mkdir()
        r = _run_child(mode, endpoint, dest, a)
        assert r["rc"] == 0 and r["sha256"] == expected, r
        out[mode] = {
            "seconds": round(r["seconds"], 3),
            "mb_per_s": round(size / 1e6 / r["seconds"], 1),
            "peak_rss_mib": round(r["peak_rss_mib"], 1),
        }
        shutil.rmtree(dest)
    out["parallel_vs_single_speedup"] = round(out["single"]["seconds"] / out["parallel"]["seconds"], 2)
    return out


def _blocks(size: int) -> Iterator[bytes]:
    """``size`` pseudo-random bytes in distinct 1 MiB blocks."""
    seed = os.urandom(1 << 20)
    for i in range(0, size, 1 << 20):
        block = hashlib.sha256(i.to_bytes(8, "big")).digest() + seed[32:]
        yield block[: min(1 << 20, size - i)]


def _upload(s3: Any, size: int, tmp: Path) -> str:
    """Through the S3 API (``--upload s3``): a file uploaded with boto3; its sha256. moto (5.2)
    holds a multipart upload's parts in memory and joins them on completion: a 4 GiB object took
    17 GiB of RSS and timed out."""
    src = tmp / "object.bin"
    h = hashlib.sha256()
    with open(src, "wb") as f:
        for block in _blocks(size):
            h.update(block)
            f.write(block)
    s3.upload_file(str(src), BUCKET, KEY)
    src.unlink()
    return h.hexdigest()


def _put_in_store(size: int) -> str:
    """Into the in-process server's store directly (``--upload store``, the default): the object's
    bytes are streamed 1 MiB at a time into the moto key's own buffer (a spooled file, on disk past
    a few MiB), so putting it costs no memory; the downloads measured still go through the S3 API
    over HTTP. Its sha256."""
    from moto.core import DEFAULT_ACCOUNT_ID
    from moto.s3.models import s3_backends

    key = s3_backends[DEFAULT_ACCOUNT_ID]["aws"].put_object(BUCKET, KEY, b"")
    h = hashlib.sha256()
    with key.lock:
        buf = key._value_buffer
        buf.seek(0)
        buf.truncate()
        for block in _blocks(size):
            h.update(block)
            buf.write(block)
        buf.flush()
        key.contentsize = size
        key._etag = None  # computed from the buffer on the first request
    return h.hexdigest()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size-mb", type=int, default=4096)
    ap.add_argument("--part-mb", type=int, default=16)
    ap.add_argument("--workers", type=int, default=8)
    ap.add_argument("--retries", type=int, default=3)
    ap.add_argument("--json", type=Path)
    ap.add_argument("--per-connection-mbps", type=float, default=25.0,
                    help="also measure through a proxy capping each connection at this rate (0: skip)")  # fmt: skip
    ap.add_argument("--stock-moto", action="store_true", help="do not memoize object bytes in moto")
    ap.add_argument("--upload", choices=["store", "s3"], default="store",
                    help="put the object into moto's store directly (streamed) or upload it with boto3")  # fmt: skip
    ap.add_argument("--child", choices=["parallel", "single"], help=argparse.SUPPRESS)
    ap.add_argument("--endpoint", help=argparse.SUPPRESS)
    ap.add_argument("--dest", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        return child(a)

    import boto3
    from moto.server import ThreadedMotoServer
    from tcpcut import CutProxy

    from modeldeploy_runtime.ports import free_port

    size = a.size_mb << 20
    if not a.stock_moto:
        _memoize_moto_values()
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    figures: dict[str, Any] = {"size_bytes": size, "part_bytes": a.part_mb << 20, "workers": a.workers,
                               "moto_memoized": not a.stock_moto}  # fmt: skip
    try:
        from botocore.config import Config

        # moto assembles a multipart upload in memory: completing 4 GB takes minutes (and ~4x RAM)
        s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="bench",
                          aws_secret_access_key="bench", config=Config(read_timeout=1800))  # fmt: skip
        with tempfile.TemporaryDirectory(prefix="fetch-bench-") as d:
            tmp = Path(d)
            s3.create_bucket(Bucket=BUCKET)
            expected = _upload(s3, size, tmp) if a.upload == "s3" else _put_in_store(size)
            figures["upload"] = a.upload
            figures.update(_compare(endpoint, tmp, expected, size, a))
            if a.per_connection_mbps > 0:
                rate = a.per_connection_mbps * 1e6
                with CutProxy("127.0.0.1", port, rate_per_connection=rate) as px:
                    figures["capped"] = {"per_connection_mbps": a.per_connection_mbps,
                                         **_compare(px.url, tmp, expected, size, a)}  # fmt: skip
            dest = tmp / "resume"
            with CutProxy("127.0.0.1", port, cut_after=size // 2) as px:
                first = _run_child("parallel", px.url, dest, a, retries=0)
                assert first["rc"] == 3 and px.cuts == 1, first  # the cut failed the first process
                after_cut = px.downstream
                second = _run_child("parallel", px.url, dest, a)
                assert second["rc"] == 0 and second["sha256"] == expected, second
                figures["resume"] = {
                    "bytes_first_attempt": after_cut,
                    "bytes_total": px.downstream,
                    "transferred_over_size": round(px.downstream / size, 4),
                }
    finally:
        server.stop()
    figures["server_peak_rss_mib"] = round(_peak_rss_mib(), 1)  # moto's process (this one)
    print(
        f"{a.size_mb} MiB object: single stream {figures['single']['mb_per_s']} MB/s "
        f"(peak RSS {figures['single']['peak_rss_mib']} MiB), parallel ranged {figures['parallel']['mb_per_s']}"
        f" MB/s (peak RSS {figures['parallel']['peak_rss_mib']} MiB) -> ratio {figures['parallel_vs_single_speedup']}"
        + (
            f"; capped at {a.per_connection_mbps} MB/s per connection: single "
            f"{figures['capped']['single']['mb_per_s']} MB/s, parallel {figures['capped']['parallel']['mb_per_s']}"
            f" MB/s -> ratio {figures['capped']['parallel_vs_single_speedup']}"
            if "capped" in figures
            else ""
        )
        + f"; resumed after a cut at 50%: {figures['resume']['transferred_over_size']} x size transferred"
    )
    print(json.dumps(figures, indent=2))
    if a.json:
        a.json.write_text(json.dumps(figures, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
