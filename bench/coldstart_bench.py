#!/usr/bin/env python3
"""Cold start of a second pod for one model version (a python-backend model carrying a weights
file, default 1 GB) stored on the real S3-compatible server (moto's server on loopback), with the
real tritonserver:

* no cache: the agent downloads the version (parallel ranged transfer) into its repository;
* cache hit: a prefetch (the Job's code) filled a shared cache before; the agent, with the cache
  mounted read-only, checks the entry's stat fingerprint against the prefetch's full verification
  and links it into its repository;
* cache hit, full verification (``MODELDEPLOY_CACHE_VERIFY=full``): the same, re-hashing every file.

For each: seconds from the agent's start to the version READY in Triton, split into the time
outside Triton's load (fetch or cache lookup + verification, config) and Triton's load itself, and
the bytes the store sent (counted by a TCP proxy in front of it). Triton's own start-up (the pod's
start) is not counted.

    python bench/coldstart_bench.py                  # 1 GiB of weights
    python bench/coldstart_bench.py --size-mb 8 --json out.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO / "runtime"), str(REPO / "tests"), str(REPO / "bench")]

MODEL_PY = """
import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        out = []
        for r in requests:
            x = pb_utils.get_input_tensor_by_name(r, "X").as_numpy()
            out.append(pb_utils.InferenceResponse([pb_utils.Tensor("Y", np.ones_like(x))]))
        return out
"""


def _package(tmp: Path, size: int) -> tuple[Path, str]:
    from modeldeploy_runtime.config import TensorSpec
    from modeldeploy_runtime.package import BatchingOptions, package_python

    src = tmp / "src"
    src.mkdir()
    (src / "model.py").write_text(MODEL_PY)
    weights = src / "weights.bin"
    with open(weights, "wb") as f:
        block = os.urandom(1 << 20)
        for i in range(0, size, 1 << 20):
            f.write(block[: min(1 << 20, size - i)])
    res = package_python(
        src / "model.py", tmp / "build", "m", version=1, artifacts=[weights],
        inputs=[TensorSpec("X", "TYPE_FP32", [4])], outputs=[TensorSpec("Y", "TYPE_FP32", [4])],
        batching=BatchingOptions(max_batch_size=8, instance_kind="KIND_CPU"),
    )  # fmt: skip
    weights.unlink()
    return res.version_dir, res.digest


def _manifest(endpoint: str, digest: str) -> Any:
    from modeldeploy_runtime.manifest import ModelManifest

    return ModelManifest.model_validate({"generation": 1, "models": [{
        "name": "m", "format": "python", "maxBatchSize": 8, "versionPolicy": {"latest": 1},
        "instanceGroups": [{"count": 1, "kind": "KIND_CPU"}],
        "credentials": {"envPrefix": "BENCH_", "endpoint": endpoint},
        "versions": [{"version": 1, "source": "s3://coldstart/m/1", "sha256": digest}]}]})  # fmt: skip


def _start(tmp: Path, name: str, manifest: Any, cache: Any, px: Any) -> dict[str, Any]:
    """One pod: Triton up (not counted), then agent start -> version READY."""
    import requests

    from modeldeploy_runtime.agent import Agent
    from modeldeploy_runtime.fetch import Fetcher
    from modeldeploy_runtime.triton import TritonServer

    repo = tmp / name
    repo.mkdir()
    mpath = tmp / f"{name}-manifest.json"
    mpath.write_text(manifest.to_json())
    with TritonServer(repo, log_path=tmp / f"{name}-triton.log", exit_timeout_secs=1) as srv:
        before = px.downstream
        t0 = time.monotonic()
        agent = Agent(mpath, repo, srv.http_url, fetcher=Fetcher(repo, cache=cache))
        agent.manifest, _ = agent.read_manifest()
        assert agent.fill_repository(agent.manifest), agent.last_error
        t1 = time.monotonic()
        r = requests.post(f"{srv.http_url}/v2/repository/models/m/load", timeout=600)
        assert r.status_code == 200, r.text
        assert requests.get(f"{srv.http_url}/v2/models/m/versions/1/ready", timeout=10).status_code == 200
        t2 = time.monotonic()
        origin = agent.status().model_dump(mode="json")["models"][0]["versions"][0]["fetch"]["origin"]
    return {
        "origin": origin,
        "seconds_to_ready": round(t2 - t0, 3),
        "seconds_outside_triton_load": round(t1 - t0, 3),
        "seconds_triton_load": round(t2 - t1, 3),
        "bytes_from_store": px.downstream - before,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size-mb", type=int, default=1024)
    ap.add_argument("--json", type=Path)
    a = ap.parse_args()

    import boto3
    from fetch_bench import _memoize_moto_values
    from moto.server import ThreadedMotoServer
    from tcpcut import CutProxy

    from modeldeploy_runtime.cache import SharedCache
    from modeldeploy_runtime.ports import free_port
    from modeldeploy_runtime.prefetch import prefetch

    os.environ.update({"BENCH_AWS_ACCESS_KEY_ID": "bench", "BENCH_AWS_SECRET_ACCESS_KEY": "bench"})
    _memoize_moto_values()
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    figures: dict[str, Any] = {"weights_bytes": a.size_mb << 20}
    try:
        with tempfile.TemporaryDirectory(prefix="coldstart-bench-") as d, CutProxy("127.0.0.1", port) as px:
            tmp = Path(d)
            version_dir, digest = _package(tmp, a.size_mb << 20)
            s3 = boto3.client("s3", endpoint_url=f"http://127.0.0.1:{port}", region_name="us-east-1",
                              aws_access_key_id="bench", aws_secret_access_key="bench")  # fmt: skip
            s3.create_bucket(Bucket="coldstart")
            for p in sorted(version_dir.rglob("*")):
                if p.is_file():
                    s3.upload_file(str(p), "coldstart", f"m/1/{p.relative_to(version_dir).as_posix()}")
            manifest = _manifest(px.url, digest)
            figures["no_cache"] = _start(tmp, "no-cache", manifest, None, px)
            cache_dir = tmp / "cache"
            cache_dir.mkdir()
            before = px.downstream
            summary = prefetch(manifest, cache_dir)  # the prefetch Job, ahead of the pod
            assert summary["ok"], summary
            figures["prefetch_bytes_from_store"] = px.downstream - before
            figures["cache_hit"] = _start(
                tmp, "cache-hit", manifest, SharedCache(cache_dir, read_only=True), px
            )
            full = SharedCache(cache_dir, read_only=True, verify="full")  # re-hash every byte on use
            figures["cache_hit_full_verify"] = _start(tmp, "cache-hit-full", manifest, full, px)
    finally:
        server.stop()
    hit, miss = figures["cache_hit"], figures["no_cache"]
    print(
        f"{a.size_mb} MiB version, agent start -> READY: no cache {miss['seconds_to_ready']}s "
        f"({miss['seconds_outside_triton_load']}s outside Triton's load, {miss['bytes_from_store']} bytes from "
        f"the store); cache hit {hit['seconds_to_ready']}s ({hit['seconds_outside_triton_load']}s outside "
        f"Triton's load, {hit['bytes_from_store']} bytes from the store); with a full re-hash on use "
        f"{figures['cache_hit_full_verify']['seconds_outside_triton_load']}s outside Triton's load"
    )
    print(json.dumps(figures, indent=2))
    if a.json:
        a.json.write_text(json.dumps(figures, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
