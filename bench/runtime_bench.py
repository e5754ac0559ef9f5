"""Runtime benchmark: packaging, fetching, in-place version switch vs restart, dynamic batching.

    . .venv/bin/activate && hack/install-triton.sh && python bench/runtime_bench.py [--device cuda] [--json out.json]

Figures (all measured in one run, ratios from the same run):
1. package time for a ~100 MB torch model (trace, TorchScript save, sha256 manifest);
2. fetch throughput (file:// source, and the S3-compatible moto server on loopback) relative to a
   plain file copy of the same folder;
3. in-place version switch (agent: load v2 next to v1, then unload v1) vs a full Triton restart
   serving the same model (stop, start, load), with requests sent throughout: failed requests and
   seconds for each, and their ratio;
4. inference throughput at concurrency 16 with dynamic batching on vs off (ratio), same model.
With ``--device cuda`` the throughput models run on the GPU (instance group KIND_GPU).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import threading
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np

warnings.filterwarnings("ignore", category=FutureWarning)


def big_model(seed: int) -> Any:
    import torch

    torch.manual_seed(seed)
    # 4096*4096 + 4096*2048 weights = 25.2 M float32 parameters = ~100.7 MB
    return torch.nn.Sequential(
        torch.nn.Linear(4096, 4096), torch.nn.ReLU(), torch.nn.Linear(4096, 2048)
    ).eval()


def bench_package(work: Path) -> dict[str, Any]:
    import torch

    from modeldeploy_runtime.package import BatchingOptions, package_torch

    opts = BatchingOptions(max_batch_size=8, instance_kind="KIND_CPU")
    out: dict[str, Any] = {}
    for v in (1, 2):
        m = big_model(v)
        t0 = time.perf_counter()
        res = package_torch(
            m, work / "build", "big", example_inputs=torch.randn(1, 4096), version=v, batching=opts
        )
        out[f"v{v}_seconds"] = time.perf_counter() - t0
        out["mb"] = sum(res.files.values()) / 1e6
        out[f"v{v}_dir"] = str(res.version_dir)
        out[f"v{v}_digest"] = res.digest
    out["seconds"] = out["v1_seconds"]
    return out


def bench_fetch(work: Path, pkg: dict[str, Any]) -> dict[str, Any]:
    from modeldeploy_runtime.fetch import Fetcher

    src = Path(pkg["v1_dir"])
    size = sum(p.stat().st_size for p in src.rglob("*") if p.is_file())
    shutil.copytree(src, work / "warm")  # warm the page cache for both
    shutil.rmtree(work / "warm")
    res: dict[str, Any] = {"mb": size / 1e6}
    copies, fetches = [], []
    for i in range(3):
        t0 = time.perf_counter()
        shutil.copytree(src, work / f"copy{i}")
        copies.append(time.perf_counter() - t0)
        f = Fetcher(work / f"fetch{i}")
        t0 = time.perf_counter()
        r = f.fetch("big", 1, f"file://{src}", pkg["v1_digest"])
        fetches.append(time.perf_counter() - t0)
        assert not r.cached
        shutil.rmtree(work / f"copy{i}")
        shutil.rmtree(work / f"fetch{i}")
    res["copy_mb_s"] = size / 1e6 / min(copies)
    res["fetch_file_mb_s"] = size / 1e6 / min(fetches)
    res["fetch_vs_copy"] = res["fetch_file_mb_s"] / res["copy_mb_s"]
    # S3-compatible server (moto) on loopback
    import boto3
    from moto.server import ThreadedMotoServer

    from modeldeploy_runtime.ports import free_port

    port = free_port()
    srv = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    srv.start()
    try:
        import logging

        logging.getLogger("werkzeug").setLevel(logging.ERROR)
        ep = f"http://127.0.0.1:{port}"
        os.environ.update(
            BENCH_AWS_ACCESS_KEY_ID="bench", BENCH_AWS_SECRET_ACCESS_KEY="bench", BENCH_AWS_ENDPOINT_URL=ep
        )
        s3 = boto3.client(
            "s3",
            endpoint_url=ep,
            region_name="us-east-1",
            aws_access_key_id="bench",
            aws_secret_access_key="bench",
        )
        s3.create_bucket(Bucket="bench-models")
        for p in sorted(src.iterdir()):
            s3.upload_file(str(p), "bench-models", f"big/1/{p.name}")
        from modeldeploy_runtime.manifest import ManifestCredentials

        f = Fetcher(work / "s3fetch")
        t0 = time.perf_counter()
        f.fetch(
            "big", 1, "s3://bench-models/big/1", pkg["v1_digest"], ManifestCredentials(envPrefix="BENCH_")
        )
        res["fetch_s3_mb_s"] = size / 1e6 / (time.perf_counter() - t0)
        res["fetch_s3_vs_copy"] = res["fetch_s3_mb_s"] / res["copy_mb_s"]
        shutil.rmtree(work / "s3fetch")
        t0 = time.perf_counter()
        s3.download_file("bench-models", "big/1/model.pt", str(work / "plain.pt"))
        res["plain_s3_get_mb_s"] = (work / "plain.pt").stat().st_size / 1e6 / (time.perf_counter() - t0)
    finally:
        srv.stop()
    return res


class Hammer:
    def __init__(self, url: str, model: str, dim: int, threads: int = 2) -> None:
        import requests

        self.requests = requests
        self.url = f"{url}/v2/models/{model}/infer"
        self.body = json.dumps({"inputs": [{"name": "INPUT__0", "shape": [1, dim], "datatype": "FP32", "data": [0.1] * dim}],
                                "outputs": [{"name": "OUTPUT__0", "parameters": {"binary_data": True}}]})  # fmt: skip
        self.stop = threading.Event()
        self.ok = 0
        self.failed = 0
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self.run, daemon=True) for _ in range(threads)]

    def run(self) -> None:
        s = self.requests.Session()
        while not self.stop.is_set():
            try:
                good = s.post(self.url, data=self.body, timeout=30).status_code == 200
            except self.requests.RequestException:
                good = False
                time.sleep(0.01)
            with self.lock:
                if good:
                    self.ok += 1
                else:
                    self.failed += 1

    def __enter__(self) -> Hammer:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *a: object) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(30)


def bench_switch(work: Path, pkg: dict[str, Any]) -> dict[str, Any]:
    import requests

    from modeldeploy_runtime.agent import Agent
    from modeldeploy_runtime.manifest import ModelManifest
    from modeldeploy_runtime.ports import free_ports
    from modeldeploy_runtime.triton import TritonServer

    models = work / "models"
    models.mkdir()
    mpath = work / "manifest.json"

    def manifest(gen: int, versions: list[int]) -> None:
        m = ModelManifest.model_validate({"generation": gen, "models": [{
            "name": "big", "format": "pytorch",
            "versions": [{"version": v, "source": f"file://{pkg[f'v{v}_dir']}", "sha256": pkg[f"v{v}_digest"]} for v in versions],
        }]})  # fmt: skip
        tmp = mpath.with_suffix(".tmp")
        tmp.write_text(m.to_json())
        tmp.replace(mpath)

    http_port, grpc_port, metrics_port = free_ports(3)
    kw = dict(http_port=http_port, grpc_port=grpc_port, metrics_port=metrics_port, exit_timeout_secs=1)
    srv = TritonServer(models, log_path=work / "triton1.log", **kw).start()
    agent = Agent(mpath, models, srv.http_url, poll_interval=0.05, resync_interval=3600)
    stop = threading.Event()
    manifest(1, [1])
    th = threading.Thread(target=agent.run_sidecar, args=(stop,), daemon=True)
    th.start()
    res: dict[str, Any] = {}
    try:
        t0 = time.perf_counter()
        while not agent.ready()[0]:
            if time.perf_counter() - t0 > 300:
                raise RuntimeError(f"v1 not ready: {agent.status()}\n{srv.log_tail()}")
            time.sleep(0.05)
        res["initial_load_seconds"] = time.perf_counter() - t0
        # pre-fetch v2 so that the switch measures Triton work only, like the restart below
        agent.fetcher.fetch("big", 2, f"file://{pkg['v2_dir']}", pkg["v2_digest"])
        with Hammer(srv.http_url, "big", 4096) as h:
            time.sleep(1.0)
            t0 = time.perf_counter()
            manifest(2, [1, 2])  # latest: 1 -> v2 wanted
            while True:
                v1_gone = (
                    requests.get(f"{srv.http_url}/v2/models/big/versions/1/ready", timeout=5).status_code
                    != 200
                )
                if v1_gone and agent.ready()[0] and agent.status()["generation"] == 2:
                    break
                if time.perf_counter() - t0 > 300:
                    raise RuntimeError(f"switch did not finish: {agent.status()}")
                time.sleep(0.02)
            res["switch_seconds"] = time.perf_counter() - t0
            time.sleep(1.0)
        res["switch_requests_ok"], res["switch_requests_failed"] = h.ok, h.failed
        # full restart serving the same model (v2, files already in the repository)
        stop.set()
        th.join(30)
        with Hammer(srv.http_url, "big", 4096) as h:
            time.sleep(1.0)
            t0 = time.perf_counter()
            srv.stop()
            srv2 = TritonServer(
                models, log_path=work / "triton2.log", load_models=["big"], startup_timeout=300, **kw
            )
            srv2.start()
            while (
                requests.get(f"{srv2.http_url}/v2/models/big/versions/2/ready", timeout=5).status_code != 200
            ):
                time.sleep(0.02)
            res["restart_seconds"] = time.perf_counter() - t0
            time.sleep(1.0)
        res["restart_requests_ok"], res["restart_requests_failed"] = h.ok, h.failed
        srv2.stop()
        res["restart_vs_switch"] = res["restart_seconds"] / res["switch_seconds"]
    finally:
        stop.set()
        srv.stop()
    return res


def bench_throughput(work: Path, device: str, seconds: float, concurrency: int) -> dict[str, Any]:
    import torch
    import tritonclient.grpc as grpcclient

    from modeldeploy_runtime.package import BatchingOptions, package_torch
    from modeldeploy_runtime.triton import TritonServer

    torch.manual_seed(0)
    dim = 512
    model = torch.nn.Sequential(
        torch.nn.Linear(dim, 2048),
        torch.nn.ReLU(),
        torch.nn.Linear(2048, 2048),
        torch.nn.ReLU(),
        torch.nn.Linear(2048, dim),
    ).eval()
    kind = "KIND_GPU" if device == "cuda" else "KIND_CPU"
    repo = work / "tp"
    on = BatchingOptions(
        max_batch_size=concurrency,
        dynamic_batching=True,
        max_queue_delay_microseconds=2000,
        instance_kind=kind,
    )
    off = BatchingOptions(max_batch_size=concurrency, dynamic_batching=False, instance_kind=kind)
    package_torch(model, repo, "mlp_batching", example_inputs=torch.randn(1, dim), batching=on)
    package_torch(model, repo, "mlp_single", example_inputs=torch.randn(1, dim), batching=off)
    res: dict[str, Any] = {"device": device, "concurrency": concurrency, "seconds_per_run": seconds}
    with TritonServer(
        repo, load_models=["mlp_batching", "mlp_single"], log_path=work / "tp.log", startup_timeout=300
    ) as srv:
        x = np.random.default_rng(0).standard_normal((1, dim)).astype(np.float32)

        def run(name: str) -> tuple[float, float]:
            stop = threading.Event()
            counts = [0] * concurrency
            lat: list[float] = []
            errors: list[str] = []

            def worker(i: int) -> None:
                c = grpcclient.InferenceServerClient(srv.grpc_address)
                inp = grpcclient.InferInput("INPUT__0", [1, dim], "FP32")
                inp.set_data_from_numpy(x)
                while not stop.is_set():
                    t = time.perf_counter()
                    try:
                        c.infer(name, [inp])
                    except Exception as exc:
                        errors.append(str(exc))
                        continue
                    lat.append(time.perf_counter() - t)
                    counts[i] += 1
                c.close()

            ths = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(concurrency)]
            for t in ths:
                t.start()
            time.sleep(1.5)  # warm-up
            start = sum(counts)
            n0 = len(lat)
            t0 = time.perf_counter()
            time.sleep(seconds)
            done = sum(counts) - start
            elapsed = time.perf_counter() - t0
            window = sorted(lat[n0:])
            stop.set()
            for t in ths:
                t.join(30)
            if errors:
                raise RuntimeError(f"{name}: {len(errors)} failed requests, e.g. {errors[0]}")
            p50 = window[len(window) // 2] * 1000 if window else float("nan")
            return done / elapsed, p50

        res["on_rps"], res["on_p50_ms"] = run("mlp_batching")
        res["off_rps"], res["off_p50_ms"] = run("mlp_single")
    res["on_vs_off"] = res["on_rps"] / res["off_rps"]
    return res


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--device", choices=["cpu", "cuda"], default="cpu", help="where the throughput models run"
    )
    ap.add_argument("--only", choices=["package", "fetch", "switch", "throughput"], action="append")
    ap.add_argument("--seconds", type=float, default=8.0, help="measurement window per throughput run")
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--json", help="also write the figures to this file")
    ap.add_argument("--keep", action="store_true", help="keep the work folder")
    args = ap.parse_args()
    only = set(args.only or ["package", "fetch", "switch", "throughput"])
    work = Path(tempfile.mkdtemp(prefix="runtime-bench-"))
    out: dict[str, Any] = {"cpus": os.cpu_count(), "python": sys.version.split()[0]}
    try:
        import torch

        out["torch"] = torch.__version__
        if args.device == "cuda":
            out["gpu"] = torch.cuda.get_device_name(0)
        pkg = bench_package(work) if only & {"package", "fetch", "switch"} else {}
        if "package" in only:
            out["package"] = {k: v for k, v in pkg.items() if not k.endswith(("_dir", "_digest"))}
            print(f"package ~100 MB torch model: {pkg['mb']:.1f} MB in {pkg['v1_seconds']:.2f}s "
                  f"({pkg['mb'] / pkg['v1_seconds']:.0f} MB/s incl. trace, save, sha256)", flush=True)  # fmt: skip
        if "fetch" in only:
            f = out["fetch"] = bench_fetch(work, pkg)
            print(f"fetch file:// {f['fetch_file_mb_s']:.0f} MB/s vs plain copy {f['copy_mb_s']:.0f} MB/s "
                  f"-> ratio {f['fetch_vs_copy']:.2f}; s3 (moto, loopback) {f['fetch_s3_mb_s']:.0f} MB/s "
                  f"(ratio to copy {f['fetch_s3_vs_copy']:.2f}; plain boto3 GET {f['plain_s3_get_mb_s']:.0f} MB/s)", flush=True)  # fmt: skip
        if "switch" in only:
            s = out["switch"] = bench_switch(work, pkg)
            print(f"in-place switch v1->v2: {s['switch_seconds']:.2f}s, {s['switch_requests_failed']} failed of "
                  f"{s['switch_requests_ok'] + s['switch_requests_failed']} requests; full restart: "
                  f"{s['restart_seconds']:.2f}s, {s['restart_requests_failed']} failed of "
                  f"{s['restart_requests_ok'] + s['restart_requests_failed']}; restart/switch = {s['restart_vs_switch']:.2f}", flush=True)  # fmt: skip
        if "throughput" in only:
            t = out["throughput"] = bench_throughput(work, args.device, args.seconds, args.concurrency)
            print(f"throughput at concurrency {t['concurrency']} on {t['device']}: dynamic batching on "
                  f"{t['on_rps']:.0f} req/s (p50 {t['on_p50_ms']:.1f} ms) vs off {t['off_rps']:.0f} req/s "
                  f"(p50 {t['off_p50_ms']:.1f} ms) -> ratio {t['on_vs_off']:.2f}", flush=True)  # fmt: skip
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
        else:
            print(f"work folder kept: {work}")
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
