"""Issue #15 on the real tritonserver: the restricted model-control API (only the agent's key may
load/unload) and signed-model verification before a version is served."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import requests

from modeldeploy_runtime.agent import Agent
from modeldeploy_runtime.control import CONTROL_HEADER, GRPC_CONTROL_HEADER, restricted_api_args

from .conftest import make_const_model, write_manifest

pytestmark = [
    pytest.mark.integration,
    pytest.mark.triton,
    pytest.mark.filterwarnings("ignore::FutureWarning"),
]
KEY = "test-control-key-0123456789abcdef"


@contextlib.contextmanager
def agent_env(tmp_path: Path, srv_url: str, **kw: Any) -> Iterator[tuple[Agent, Path, Callable[[], None]]]:
    manifest = tmp_path / "manifest.json"
    agent = Agent(manifest, tmp_path / "models", srv_url, poll_interval=0.1, resync_interval=2.0, **kw)
    stop = threading.Event()
    th = threading.Thread(target=agent.run_sidecar, args=(stop,), daemon=True)
    try:
        yield agent, manifest, th.start
    finally:
        stop.set()
        if th.is_alive():
            th.join(30)


def wait(cond: Callable[[], Any], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def file_model(name: str, versions: list[tuple[int, Any]], **extra: Any) -> dict[str, Any]:
    return {
        "name": name,
        "format": "python",
        "versions": [{"version": v, "source": f"file://{p.version_dir}", "sha256": p.digest} for v, p in versions],
        **extra,
    }


def _infer(url: str, model: str) -> requests.Response:
    body = {"inputs": [{"name": "X", "shape": [1, 4], "datatype": "FP32", "data": [0, 1, 2, 3]}]}
    return requests.post(f"{url}/v2/models/{model}/infer", json=body, timeout=30)


def test_only_the_agent_can_load_and_unload(tmp_path: Path, start_triton: Any) -> None:
    """Triton started with the rendered restricted-API flags: a plain client's load/unload/index is
    refused over HTTP and gRPC, the agent's (which sends the key) succeeds; inference, health and
    metadata stay open to both."""
    import tritonclient.grpc as grpcclient
    from tritonclient.utils import InferenceServerException

    v1 = make_const_model(tmp_path / "build", "m", 1, 1.0)
    v2 = make_const_model(tmp_path / "build", "m", 2, 2.0)
    (tmp_path / "models").mkdir()
    srv = start_triton(tmp_path / "models", extra_args=restricted_api_args(KEY))
    with agent_env(tmp_path, srv.http_url, control_key=KEY) as (agent, mpath, start):
        write_manifest(mpath, {"generation": 1, "models": [file_model("m", [(1, v1)])]})
        start()
        wait(lambda: agent.ready()[0], 90, "v1 served (the agent's load succeeded)")
        url = srv.http_url
        # plain HTTP client: every control call refused
        for path in ("/v2/repository/models/m/load", "/v2/repository/models/m/unload", "/v2/repository/index"):
            r = requests.post(url + path, json={}, timeout=30)
            assert r.status_code == 403 and CONTROL_HEADER in r.text, (path, r.status_code, r.text)
            r = requests.post(url + path, json={}, headers={CONTROL_HEADER: "wrong"}, timeout=30)
            assert r.status_code == 403, (path, r.status_code, r.text)
        # open to everyone: health, metadata, inference
        assert requests.get(url + "/v2/health/ready", timeout=5).status_code == 200
        assert requests.get(url + "/v2/models/m/versions/1/ready", timeout=5).status_code == 200
        assert requests.get(url + "/v2/models/m", timeout=5).json()["name"] == "m"
        r = _infer(url, "m")
        assert r.status_code == 200 and r.json()["outputs"][0]["data"] == [1.0] * 4
        # gRPC: the same split
        g = grpcclient.InferenceServerClient(srv.grpc_address)
        with pytest.raises(InferenceServerException, match="restricted"):
            g.unload_model("m")
        with pytest.raises(InferenceServerException, match="restricted"):
            g.get_model_repository_index()
        assert g.is_server_ready() and g.get_model_metadata("m").name == "m"
        x = grpcclient.InferInput("X", [1, 4], "FP32")
        x.set_data_from_numpy(np.zeros((1, 4), dtype=np.float32))
        assert g.infer("m", [x]).as_numpy("Y").tolist() == [[1.0] * 4]
        index = g.get_model_repository_index(headers={GRPC_CONTROL_HEADER: KEY}).models
        assert [(e.name, e.version, e.state) for e in index if e.name == "m"] == [("m", "1", "READY")]
        # the model is still served after all those refused unloads; the agent switches to v2
        assert requests.get(url + "/v2/models/m/versions/1/ready", timeout=5).status_code == 200
        write_manifest(mpath, {"generation": 2, "models": [file_model("m", [(1, v1), (2, v2)])]})
        wait(lambda: _infer(url, "m").json()["outputs"][0]["data"] == [2.0] * 4, 90, "v2 served")
        g.close()


def test_agent_without_the_key_is_refused_too(tmp_path: Path, start_triton: Any) -> None:
    """The key is what grants control, not being the agent: an agent without it loads nothing and
    reports Triton's refusal."""
    v1 = make_const_model(tmp_path / "build", "m", 1, 1.0)
    (tmp_path / "models").mkdir()
    srv = start_triton(tmp_path / "models", extra_args=restricted_api_args(KEY))
    with agent_env(tmp_path, srv.http_url) as (agent, mpath, start):
        write_manifest(mpath, {"generation": 1, "models": [file_model("m", [(1, v1)])]})
        start()
        wait(lambda: agent.last_error and "403" in agent.last_error or "restricted" in (agent.last_error or ""),
             60, "the agent's refused call")  # fmt: skip
        assert not agent.ready()[0]
        assert requests.get(f"{srv.http_url}/v2/models/m/versions/1/ready", timeout=5).status_code != 200
