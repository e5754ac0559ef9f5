"""Against the real tritonserver from nvidia-pytriton (python backend only)."""

from __future__ import annotations

import contextlib
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import requests

from modeldeploy_runtime.agent import Agent
from modeldeploy_runtime.lint import errors, lint_repository
from modeldeploy_runtime.package import BatchingOptions, package_onnx, package_torch

from .conftest import Hammer, applied, make_const_model, upload_folder, write_manifest

pytestmark = [
    pytest.mark.integration,
    pytest.mark.triton,
    pytest.mark.filterwarnings("ignore::FutureWarning"),
]


def _load(srv: Any, name: str) -> None:
    r = requests.post(f"{srv.http_url}/v2/repository/models/{name}/load", timeout=300)
    assert r.status_code == 200, r.text


def test_python_backend_model_serves_with_metrics(tmp_path: Path, start_triton: Any) -> None:
    """Issue #2 test 6: health, right numbers, nv_inference_request_success on the metrics port."""
    repo = tmp_path / "repo"
    make_const_model(repo, "const", 1, 7.0)
    srv = start_triton(repo)
    assert requests.get(f"{srv.http_url}/v2/health/ready", timeout=5).status_code == 200
    _load(srv, "const")
    body = {"inputs": [{"name": "X", "shape": [2, 4], "datatype": "FP32", "data": list(range(8))}]}
    r = requests.post(f"{srv.http_url}/v2/models/const/infer", json=body, timeout=30)
    assert r.status_code == 200, r.text
    out = r.json()["outputs"][0]
    assert out["shape"] == [2, 4] and out["data"] == [7.0] * 8
    metrics = requests.get(srv.metrics_url, timeout=5).text
    line = next(
        x
        for x in metrics.splitlines()
        if x.startswith("nv_inference_request_success{") and 'model="const"' in x
    )
    assert float(line.rsplit(" ", 1)[1]) >= 1


def test_packaged_torch_models_match_torch_over_http_and_grpc(
    tmp_path: Path, start_triton: Any, mlp: Any, cnn: Any
) -> None:
    """Test 1: an MLP and a small CNN, packaged with the python-backend wrapper, answer like torch
    over HTTP and gRPC, including concurrent batches merged by dynamic batching."""
    import torch
    import tritonclient.grpc as grpcclient
    import tritonclient.http as httpclient

    repo = tmp_path / "repo"
    opts = BatchingOptions(max_batch_size=16, max_queue_delay_microseconds=20000, instance_kind="KIND_CPU")
    package_torch(mlp, repo, "mlp", example_inputs=torch.randn(1, 8), batching=opts)
    package_torch(cnn, repo, "cnn", example_inputs=torch.randn(1, 3, 16, 16), batching=opts)
    srv = start_triton(repo, load_models=["mlp", "cnn"])
    hc = httpclient.InferenceServerClient(srv.http_address, concurrency=8)
    gc = grpcclient.InferenceServerClient(srv.grpc_address)
    assert hc.is_model_ready("mlp") and hc.is_model_ready("cnn")
    rng = np.random.default_rng(0)
    cases = {"mlp": (mlp, rng.standard_normal((5, 8)).astype(np.float32)),
             "cnn": (cnn, rng.standard_normal((3, 3, 16, 16)).astype(np.float32))}  # fmt: skip
    for name, (module, x) in cases.items():
        with torch.no_grad():
            want = module(torch.from_numpy(x)).numpy()
        hi = httpclient.InferInput("INPUT__0", list(x.shape), "FP32")
        hi.set_data_from_numpy(x)
        got_http = hc.infer(name, [hi]).as_numpy("OUTPUT__0")
        gi = grpcclient.InferInput("INPUT__0", list(x.shape), "FP32")
        gi.set_data_from_numpy(x)
        got_grpc = gc.infer(name, [gi]).as_numpy("OUTPUT__0")
        np.testing.assert_allclose(got_http, want, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(got_grpc, want, rtol=1e-4, atol=1e-5)
    # 24 single-sample requests in flight at once: the dynamic batcher merges them
    xs = rng.standard_normal((24, 1, 8)).astype(np.float32)
    pending = []
    for x in xs:
        i = httpclient.InferInput("INPUT__0", [1, 8], "FP32")
        i.set_data_from_numpy(x)
        pending.append(hc.async_infer("mlp", [i]))
    got = np.concatenate([p.get_result().as_numpy("OUTPUT__0") for p in pending])
    with torch.no_grad():
        want = mlp(torch.from_numpy(xs.reshape(24, 8))).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
    stats = hc.get_inference_statistics("mlp")["model_stats"][0]
    assert int(stats["execution_count"]) < int(stats["inference_count"]), stats  # batches were merged
    hc.close()
    gc.close()


def test_packaged_onnx_model_matches_torch_on_real_triton(
    tmp_path: Path, start_triton: Any, mlp: Any
) -> None:
    """An ONNX file (exported from the torch MLP) packaged with the python-backend wrapper runs
    through onnxruntime inside the real Triton and answers like torch over HTTP and gRPC, batched
    requests included; the same file packaged for onnxruntime_onnx lints clean."""
    import torch
    import tritonclient.grpc as grpcclient
    import tritonclient.http as httpclient

    onnx_file = tmp_path / "mlp.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the legacy exporter's deprecation notice
        torch.onnx.export(
            mlp, (torch.randn(1, 8),), str(onnx_file), input_names=["features"], output_names=["scores"],
            dynamic_axes={"features": {0: "batch"}, "scores": {0: "batch"}}, dynamo=False,
        )  # fmt: skip
    repo = tmp_path / "repo"
    opts = BatchingOptions(max_batch_size=16, max_queue_delay_microseconds=20000, instance_kind="KIND_CPU")
    res = package_onnx(onnx_file, repo, "mlp_onnx", backend="python", batching=opts)
    assert sorted(res.files) == ["manifest.sha256", "model.onnx", "model.py", "modeldeploy.json"]
    package_onnx(onnx_file, tmp_path / "native", "mlp_onnx", batching=opts)
    assert errors(lint_repository(repo)) == [] and errors(lint_repository(tmp_path / "native")) == []
    srv = start_triton(repo, load_models=["mlp_onnx"])
    hc = httpclient.InferenceServerClient(srv.http_address, concurrency=8)
    gc = grpcclient.InferenceServerClient(srv.grpc_address)
    cfg = hc.get_model_config("mlp_onnx")
    assert cfg["backend"] == "python" and [t["name"] for t in cfg["input"]] == ["features"]
    x = np.random.default_rng(3).standard_normal((6, 8)).astype(np.float32)
    with torch.no_grad():
        want = mlp(torch.from_numpy(x)).numpy()
    hi = httpclient.InferInput("features", list(x.shape), "FP32")
    hi.set_data_from_numpy(x)
    np.testing.assert_allclose(hc.infer("mlp_onnx", [hi]).as_numpy("scores"), want, rtol=1e-4, atol=1e-5)
    gi = grpcclient.InferInput("features", list(x.shape), "FP32")
    gi.set_data_from_numpy(x)
    np.testing.assert_allclose(gc.infer("mlp_onnx", [gi]).as_numpy("scores"), want, rtol=1e-4, atol=1e-5)
    pending = []
    for row in x:
        i = httpclient.InferInput("features", [1, 8], "FP32")
        i.set_data_from_numpy(row[None])
        pending.append(hc.async_infer("mlp_onnx", [i]))
    got = np.concatenate([p.get_result().as_numpy("scores") for p in pending])
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
    hc.close()
    gc.close()


@contextlib.contextmanager
def _agent_env(tmp_path: Path, srv_url: str) -> Iterator[tuple[Agent, Path, Any, Callable[[], None]]]:
    """A sidecar agent with its HTTP server on a free port: (agent, manifest path, server, start).
    ``start()`` starts the sidecar loop (once the test has written the manifest); on exit the loop
    and the server stop."""
    manifest = tmp_path / "manifest.json"
    agent = Agent(manifest, tmp_path / "models", srv_url, poll_interval=0.1, resync_interval=2.0)
    stop = threading.Event()
    http, _ = agent.serve_in_thread("127.0.0.1", 0)
    th = threading.Thread(target=agent.run_sidecar, args=(stop,), daemon=True)
    try:
        yield agent, manifest, http, th.start
    finally:
        stop.set()
        if th.is_alive():
            th.join(30)
        http.shutdown()


def _wait(cond: Any, timeout: float, what: str) -> float:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if cond():
            return time.monotonic() - t0
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def _model(name: str, versions: list[tuple[int, str, str | None]], **extra: Any) -> dict[str, Any]:
    return {
        "name": name,
        "format": "python",
        "versions": [{"version": v, "source": s, **({"sha256": d} if d else {})} for v, s, d in versions],
        "credentials": {"envPrefix": "MD_TEST_"},
        **extra,
    }


def test_in_place_version_switch_from_s3_without_failed_requests(
    tmp_path: Path,
    start_triton: Any,
    s3: Any,
    bucket: str,
    s3_env: dict[str, str],
    s3_server: Any,
) -> None:
    """Test 2 (+3): v1 serving; manifest -> v2 fetched from S3, loaded, v1 unloaded with zero failed
    requests; then a corrupt v3 fails with the reason while v2 keeps serving."""
    build = tmp_path / "build"
    v1 = make_const_model(build, "clf", 1, 1.0, sleep=1.0)
    v2 = make_const_model(build, "clf", 2, 2.0, sleep=1.0)
    v3 = make_const_model(build, "clf", 3, 3.0)
    for r in (v1, v2, v3):
        upload_folder(s3, bucket, f"clf/{r.version}", r.version_dir)
    s3.put_object(Bucket=bucket, Key="clf/3/model.py", Body=b"corrupted bytes")  # digest no longer matches
    models = tmp_path / "models"
    models.mkdir()
    srv = start_triton(models)
    with _agent_env(tmp_path, srv.http_url) as (agent, mpath, http, start):
        src = {r.version: (r.version, f"s3://{bucket}/clf/{r.version}", r.digest) for r in (v1, v2, v3)}
        write_manifest(mpath, {"generation": 1, "models": [_model("clf", [src[1]])]})
        start()
        _wait(lambda: agent.ready()[0], 120, "v1 ready")
        with Hammer(srv.http_url, "clf", threads=4) as h:
            time.sleep(0.5)
            t0 = time.monotonic()
            write_manifest(mpath, {"generation": 2, "models": [_model("clf", [src[1], src[2]])]})
            _wait(lambda: applied(agent, 2), 120, "v2 ready")
            _wait(
                lambda: not requests.get(f"{srv.http_url}/v2/models/clf/versions/1/ready", timeout=5).ok,
                30,
                "v1 unloaded",
            )
            switch = time.monotonic() - t0
            time.sleep(0.5)
        assert not h.failures, h.failures[:5]
        assert h.ok.get(1.0, 0) > 0 and h.ok.get(2.0, 0) > 0, h.ok
        print(f"\nin-place switch v1->v2: {switch:.2f}s, {sum(h.ok.values())} requests, 0 failed")
        st = requests.get(f"http://127.0.0.1:{http.server_address[1]}/status", timeout=5).json()
        assert st["ready"] is True and st["generation"] == 2
        assert {v["version"]: v["state"] for v in st["models"][0]["versions"]}[2] == "Ready"
        assert sorted(p.name for p in (models / "clf").iterdir() if p.name.isdigit()) == ["2"]

        # Test 3: corrupt v3
        write_manifest(mpath, {"generation": 3, "models": [_model("clf", [src[1], src[2], src[3]])]})

        def v3_failed() -> bool:
            vs = {v["version"]: v for v in agent.status().model_dump()["models"][0]["versions"]}
            return 3 in vs and vs[3]["state"] == "Failed"

        _wait(v3_failed, 60, "v3 failed")
        st = requests.get(f"http://127.0.0.1:{http.server_address[1]}/status", timeout=5).json()
        v3s = {v["version"]: v for v in st["models"][0]["versions"]}[3]
        assert v3s["reason"] == "DigestMismatch" and "model.py" in v3s["message"], v3s
        assert "clf version 3" in st["lastError"] and st["ready"] is False
        assert s3_server.secret not in str(st)
        r = requests.post(f"{srv.http_url}/v2/models/clf/infer", json={"inputs": [{"name": "X", "shape": [1, 4], "datatype": "FP32", "data": [0, 0, 0, 0]}]}, timeout=10)  # fmt: skip
        assert r.status_code == 200 and r.json()["outputs"][0]["data"][0] == 2.0
        assert not (models / "clf" / "3").exists()
        ready = requests.get(f"http://127.0.0.1:{http.server_address[1]}/ready", timeout=5)
        assert ready.status_code == 503
        assert [(f["model"], f["version"], f["reason"]) for f in ready.json()["failed"]] == [
            ("clf", 3, "DigestMismatch")
        ]
        assert (
            requests.get(f"http://127.0.0.1:{http.server_address[1]}/serving", timeout=5).status_code == 200
        )
        # The operator parses /status with the same typed model the agent produced it with.
        from modeldeploy_runtime.agentapi import AgentStatus

        typed = AgentStatus.model_validate(st)
        assert [(m, v.version, v.reason) for m, v in typed.failed()] == [("clf", 3, "DigestMismatch")]
        assert typed.serving and not typed.ready and typed.models[0].served == [2]


def test_load_failure_keeps_previous_version(tmp_path: Path, start_triton: Any) -> None:
    """A version that fetches fine but fails in Triton's load: reported LoadFailed, old one serves."""
    build = tmp_path / "build"
    v1 = make_const_model(build, "m", 1, 1.0)
    v2 = make_const_model(build, "m", 2, 2.0, fail=True)
    models = tmp_path / "models"
    models.mkdir()
    srv = start_triton(models)
    with _agent_env(tmp_path, srv.http_url) as (agent, mpath, _http, start):
        m1 = _model("m", [(1, f"file://{v1.version_dir}", v1.digest)])
        write_manifest(mpath, {"generation": 1, "models": [m1]})
        start()
        _wait(lambda: agent.ready()[0], 60, "v1 ready")
        with Hammer(srv.http_url, "m", threads=2) as h:
            m2 = _model(
                "m", [(1, f"file://{v1.version_dir}", v1.digest), (2, f"file://{v2.version_dir}", v2.digest)]
            )
            write_manifest(mpath, {"generation": 2, "models": [m2]})
            _wait(
                lambda: any(
                    v["state"] == "Failed" for v in agent.status().model_dump()["models"][0]["versions"]
                ),
                60,
                "v2 failed",
            )
            time.sleep(1.0)
        assert not h.failures, h.failures[:5]
        vs = {v["version"]: v for v in agent.status().model_dump()["models"][0]["versions"]}
        assert vs[2]["reason"] == "LoadFailed" and "broken model v2" in vs[2]["message"]
        assert requests.get(f"{srv.http_url}/v2/models/m/versions/1/ready", timeout=5).status_code == 200


def test_version_policy_latest_two_keeps_two_newest(tmp_path: Path, start_triton: Any) -> None:
    """Test 4: versionPolicy latest: 2 keeps exactly the two newest versions loaded."""
    build = tmp_path / "build"
    rs = [make_const_model(build, "p", v, float(v)) for v in (1, 2, 3)]
    models = tmp_path / "models"
    models.mkdir()
    srv = start_triton(models)
    with _agent_env(tmp_path, srv.http_url) as (agent, mpath, _http, start):
        vers = [(r.version, f"file://{r.version_dir}", r.digest) for r in rs]
        write_manifest(
            mpath, {"generation": 1, "models": [_model("p", vers[:2], versionPolicy={"latest": 2})]}
        )
        start()
        _wait(lambda: agent.ready()[0], 60, "v1+v2 ready")
        write_manifest(mpath, {"generation": 2, "models": [_model("p", vers, versionPolicy={"latest": 2})]})
        _wait(lambda: applied(agent, 2), 60, "v2+v3 ready")

        def loaded() -> list[int]:
            idx = requests.post(f"{srv.http_url}/v2/repository/index", json={}, timeout=5).json()
            return sorted(int(e["version"]) for e in idx if e["name"] == "p" and e.get("state") == "READY")

        _wait(lambda: loaded() == [2, 3], 30, "exactly [2, 3] loaded")
        for v in (2, 3):
            r = requests.post(f"{srv.http_url}/v2/models/p/versions/{v}/infer", json={"inputs": [{"name": "X", "shape": [1, 4], "datatype": "FP32", "data": [0, 0, 0, 0]}]}, timeout=10)  # fmt: skip
            assert r.json()["outputs"][0]["data"][0] == float(v)
        assert requests.get(f"{srv.http_url}/v2/models/p/versions/1/ready", timeout=5).status_code != 200


def test_readiness_false_while_loading_true_after(tmp_path: Path, start_triton: Any) -> None:
    """Test 5: /ready is 503 while an expected version is still loading, 200 once it is READY."""
    build = tmp_path / "build"
    slow = make_const_model(build, "slow", 1, 5.0, sleep=4.0)
    models = tmp_path / "models"
    models.mkdir()
    srv = start_triton(models)
    with _agent_env(tmp_path, srv.http_url) as (agent, mpath, http, start):
        ready_url = f"http://127.0.0.1:{http.server_address[1]}/ready"
        write_manifest(
            mpath,
            {"generation": 1, "models": [_model("slow", [(1, f"file://{slow.version_dir}", slow.digest)])]},
        )
        assert requests.get(ready_url, timeout=5).status_code == 503  # nothing loaded yet
        started = time.monotonic()
        start()
        _wait(
            lambda: any(
                v["state"] == "Loading" for m in agent.status().model_dump()["models"] for v in m["versions"]
            ),
            30,
            "Loading",
        )
        r = requests.get(ready_url, timeout=5)
        assert r.status_code == 503 and "slow/1" in r.json()["waitingFor"]
        _wait(lambda: requests.get(ready_url, timeout=5).status_code == 200, 60, "ready")
        # /ready turned 200 only after the model's 4 s initialize() (a lower bound that load cannot
        # shorten, unlike the time left after "Loading" was first observed)
        assert time.monotonic() - started >= 4.0
        from modeldeploy_runtime.cli import main

        assert main(["health", "--url", ready_url]) == 0
        assert main(["health", "--url", ready_url.replace("/ready", "/nope")]) == 1


def test_agent_cli_init_then_sidecar_survives_triton_restart(tmp_path: Path, start_triton: Any) -> None:
    """The real entry points: `modeldeploy-runtime agent --mode init`, then `--mode sidecar` as a
    process; when Triton restarts (container restart in a pod) the sidecar loads the models again;
    SIGTERM stops it cleanly."""
    import shutil
    import signal
    import subprocess
    import sys

    from modeldeploy_runtime.ports import free_port, free_ports

    build = tmp_path / "build"
    v1 = make_const_model(build, "m", 1, 1.0)
    models = tmp_path / "models"
    mpath = tmp_path / "manifest.json"
    write_manifest(
        mpath, {"generation": 7, "models": [_model("m", [(1, f"file://{v1.version_dir}", v1.digest)])]}
    )
    exe = shutil.which("modeldeploy-runtime") or ""
    base = [exe] if exe else [sys.executable, "-m", "modeldeploy_runtime.cli"]
    common = ["--manifest", str(mpath), "--repository", str(models)]
    init = subprocess.run(
        [*base, "agent", "--mode", "init", *common], capture_output=True, text=True, timeout=120
    )
    assert init.returncode == 0, init.stderr
    assert (models / "m" / "1" / "model.py").is_file() and (models / "m" / "config.pbtxt").is_file()
    ports = dict(zip(("http_port", "grpc_port", "metrics_port"), free_ports(3), strict=True))
    srv = start_triton(models, **ports)
    port = free_port()
    side = subprocess.Popen(
        [*base, "agent", "--mode", "sidecar", *common, "--triton-url", srv.http_url, "--host", "127.0.0.1",
         "--port", str(port), "--poll-interval", "0.2", "--resync-interval", "1", "--log-format", "json"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    ready = f"http://127.0.0.1:{port}/ready"

    def is_ready() -> bool:
        try:
            return requests.get(ready, timeout=2).status_code == 200
        except requests.RequestException:
            return False

    try:
        _wait(is_ready, 60, "sidecar ready")
        st = requests.get(f"http://127.0.0.1:{port}/status", timeout=5).json()
        # the init container fetched it; the sidecar found it in the repository (no shared cache)
        fetched = st["models"][0]["versions"][0].pop("fetch")
        assert fetched is None or fetched["origin"] in ("download", "repository"), fetched
        assert st == {"ready": True, "serving": True, "generation": 7, "appliedGeneration": 7,
                      "manifestSource": "file", "lastError": None, "cache": None,
                      "models": [{"name": "m", "served": [1],
                                  "versions": [{"version": 1, "state": "Ready", "reason": "", "message": "",
                                                "digest": f"sha256:{v1.digest}", "signer": None}]}]}  # fmt: skip
        srv.stop()
        _wait(lambda: not is_ready(), 30, "not ready while Triton is down")
        start_triton(models, **ports)
        _wait(is_ready, 60, "ready again after the Triton restart")
        _wait(
            lambda: requests.get(f"http://127.0.0.1:{port}/status", timeout=5).json()["lastError"] is None,
            10,
            "error cleared",
        )
    finally:
        side.send_signal(signal.SIGTERM)
        out, _ = side.communicate(timeout=30)
    assert side.returncode == 0, out
    assert '"level": "info"' in out


def test_models_switch_in_parallel(tmp_path: Path, start_triton: Any) -> None:
    """Two models switch versions in one manifest change: their Triton loads overlap in time (one
    load's wall time for both, not two in a row), and each ends serving exactly its new version."""
    build = tmp_path / "build"
    rs = {(n, v): make_const_model(build, n, v, float(v), sleep=0.5) for n in ("a", "b") for v in (1, 2)}
    models = tmp_path / "models"
    models.mkdir()
    srv = start_triton(models)

    def manifest(gen: int, v: int) -> dict[str, Any]:
        ms = [_model(n, [(v, f"file://{rs[n, v].version_dir}", rs[n, v].digest)]) for n in ("a", "b")]
        return {"generation": gen, "models": ms}

    with _agent_env(tmp_path, srv.http_url) as (agent, mpath, _http, start):
        write_manifest(mpath, manifest(1, 1))
        start()
        _wait(lambda: agent.ready()[0], 120, "a and b v1 ready")
        write_manifest(mpath, manifest(2, 2))
        _wait(lambda: applied(agent, 2), 120, "a and b v2 ready")
        switches = {e["model"]: e for e in agent.switch_log if e["loaded"] == [2]}
        assert set(switches) == {"a", "b"}, agent.switch_log
        (a0, a1), (b0, b1) = ((e["at"] - e["seconds"], e["at"]) for e in (switches["a"], switches["b"]))
        assert a0 < b1 and b0 < a1, (
            f"the loads ran one after the other: a {a0:.2f}-{a1:.2f}, b {b0:.2f}-{b1:.2f}"
        )
        assert {m.name: m.served for m in agent.status().models} == {"a": [2], "b": [2]}
