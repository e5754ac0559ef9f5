"""Issue #15 on the real tritonserver: the restricted model-control API (only the agent's key may
load/unload) and signed-model verification before a version is served."""

from __future__ import annotations

import contextlib
import os
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

from .conftest import applied, make_const_model, upload_folder, write_manifest

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
        "versions": [
            {"version": v, "source": f"file://{p.version_dir}", "sha256": p.digest} for v, p in versions
        ],
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
        for path in (
            "/v2/repository/models/m/load",
            "/v2/repository/models/m/unload",
            "/v2/repository/index",
        ):
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
        wait(lambda: "403" in (agent.last_error or ""), 60, "the agent's refused call")
        assert not agent.ready()[0]
        assert requests.get(f"{srv.http_url}/v2/models/m/versions/1/ready", timeout=5).status_code != 200


def test_the_pods_own_key_from_the_init_agent_through_the_rendered_start_line(
    tmp_path: Path, triton_installed: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The pod's way, with no Secret: the init agent (``agent --mode init --control-key-file``)
    makes the key file; Triton starts through control.triton_launch (the /bin/sh line the operator
    renders), which reads the file into the restricted-API flags; the sidecar reads the same file.
    A plain client is refused, the agent loads, and the key is in no argument the pod spec holds."""
    from modeldeploy_runtime.cli import main
    from modeldeploy_runtime.control import read_control_key, triton_launch
    from modeldeploy_runtime.triton import TritonInstall, TritonServer

    v1 = make_const_model(tmp_path / "build", "m", 1, 1.0)
    repo, key_file, bindir = tmp_path / "models", tmp_path / "run" / "control" / "key", tmp_path / "bin"
    manifest = tmp_path / "manifest.json"
    write_manifest(manifest, {"generation": 1, "models": [file_model("m", [(1, v1)])]})
    init = ["agent", "--mode", "init", "--manifest", str(manifest), "--repository", str(repo),
            "--control-key-file", str(key_file), "--log-format", "text"]  # fmt: skip
    assert main(init) == 0
    key = read_control_key(key_file)
    assert key and len(key) >= 43 and (key_file.stat().st_mode & 0o777) == 0o600
    assert main(init) == 0 and read_control_key(key_file) == key  # a restarted init keeps the pod's key
    bindir.mkdir()
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ['PATH']}")
    launched: list[list[str]] = []

    class PodTriton(TritonServer):
        def command(self, install: TritonInstall, backends: Path) -> list[str]:
            base = super().command(install, backends)
            if not (bindir / "tritonserver").exists():
                (bindir / "tritonserver").symlink_to(base[0])
            cmd, args = triton_launch(base[1:], str(key_file))
            launched.append(cmd + args)
            return cmd + args

    srv = PodTriton(repo, log_path=tmp_path / "triton.log", exit_timeout_secs=1)
    srv.start()
    try:
        assert launched and not any(key in a for a in launched[0])
        with agent_env(tmp_path, srv.http_url, control_key=read_control_key(key_file)) as (agent, _, start):
            start()
            wait(lambda: agent.ready()[0], 90, "v1 served (the agent's load with the pod's key)")
            r = requests.post(f"{srv.http_url}/v2/repository/models/m/unload", json={}, timeout=30)
            assert r.status_code == 403, r.text
            r = requests.post(
                f"{srv.http_url}/v2/repository/index", json={}, headers={CONTROL_HEADER: key}, timeout=30
            )
            index = {(e["name"], e.get("state")) for e in r.json()} if r.status_code == 200 else set()
            assert ("m", "READY") in index, r.text
    finally:
        srv.stop()


# ------------------------------------------------------------------------------------ signed models
def make_key(path: Path) -> tuple[Path, Path]:
    """An EC P-256 key pair as PEM files: (private, public)."""
    from cryptography.hazmat.primitives import serialization as ser
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP256R1())
    priv, pub = path.with_suffix(".key"), path.with_suffix(".pub")
    priv.write_bytes(key.private_bytes(ser.Encoding.PEM, ser.PrivateFormat.PKCS8, ser.NoEncryption()))
    pub.write_bytes(key.public_key().public_bytes(ser.Encoding.PEM, ser.PublicFormat.SubjectPublicKeyInfo))
    return priv, pub


def _versions(agent: Agent) -> dict[int, dict[str, Any]]:
    return {v["version"]: v for v in agent.status().model_dump(mode="json")["models"][0]["versions"]}


def test_signed_versions_from_s3_verified_before_serving(
    tmp_path: Path,
    start_triton: Any,
    s3: Any,
    bucket: str,
    s3_env: dict[str, str],
    s3_server: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Issue #15: v1, v2 signed with the trusted key; v3 signed then one byte tampered (and its
    manifest.sha256 rewritten, as whoever controls the bucket could); v4 unsigned; v5 signed by
    another key. Only v1/v2 are ever served, v2 without a failed request while v3..v5 fail with
    the file or identity named; no secret value reaches the status or the logs."""
    import logging

    from modeldeploy_runtime.digest import write_sha_manifest
    from modeldeploy_runtime.signing import key_identity, sign_folder

    from .conftest import Hammer

    caplog.set_level(logging.DEBUG)
    trusted_key, trusted_pub = make_key(tmp_path / "trusted")
    other_key, other_pub = make_key(tmp_path / "other")
    build = tmp_path / "build"
    pk = {n: make_const_model(build, "clf", n, float(n)) for n in (1, 2, 3, 4, 5)}
    for n in (1, 2, 3):
        assert sign_folder(pk[n].version_dir, trusted_key) == key_identity(trusted_pub.read_bytes())
    sign_folder(pk[5].version_dir, other_key)
    model_py = pk[3].version_dir / "model.py"
    data = bytearray(model_py.read_bytes())
    data[-2] ^= 0x01  # one byte, after signing
    model_py.write_bytes(bytes(data))
    write_sha_manifest(pk[3].version_dir)
    for n, p in pk.items():
        upload_folder(s3, bucket, f"clf/{n}", p.version_dir)

    def manifest(gen: int, nums: list[int]) -> dict[str, Any]:
        m = {
            "name": "clf",
            "format": "python",
            "versions": [{"version": n, "source": f"s3://{bucket}/clf/{n}"} for n in nums],
            "credentials": {"envPrefix": "MD_TEST_"},
            "versionPolicy": {"latest": 1},
            "verification": {"required": True, "publicKeyPath": str(trusted_pub)},
        }
        return {"generation": gen, "models": [m]}

    (tmp_path / "models").mkdir()
    srv = start_triton(tmp_path / "models", extra_args=restricted_api_args(KEY))
    url = srv.http_url
    with agent_env(tmp_path, url, control_key=KEY) as (agent, mpath, start):
        write_manifest(mpath, manifest(1, [1]))
        start()
        wait(lambda: agent.ready()[0], 120, "v1 served")
        with Hammer(url, "clf", threads=3) as h:
            write_manifest(mpath, manifest(2, [1, 2]))
            wait(
                lambda: applied(agent, 2),
                120,
                "v2 served",
            )
            wait(lambda: h.ok.get(2.0, 0) > 0, 30, "answers from v2")
            write_manifest(mpath, manifest(3, [1, 2, 3]))
            wait(lambda: _versions(agent).get(3, {}).get("state") == "Failed", 120, "v3 failed")
            time.sleep(0.5)  # requests keep flowing to v2 after the failure
        assert not h.failures, h.failures[:5]
        vs = _versions(agent)
        assert vs[3]["reason"] == "SignatureInvalid", vs[3]
        assert "model.py: modified after signing" in vs[3]["message"], vs[3]
        assert vs[2]["state"] == "Ready" and vs[2]["signer"] == key_identity(trusted_pub.read_bytes())
        assert vs[2]["digest"] == "sha256:" + pk[2].digest
        assert _infer(url, "clf").json()["outputs"][0]["data"] == [2.0] * 4
        assert not (tmp_path / "models" / "clf" / "3").exists()  # never published into the repository

        write_manifest(mpath, manifest(4, [1, 2, 4]))
        wait(lambda: _versions(agent).get(4, {}).get("state") == "Failed", 120, "v4 failed")
        v4 = _versions(agent)[4]
        assert v4["reason"] == "SignatureMissing" and "model.sig: missing" in v4["message"], v4

        write_manifest(mpath, manifest(5, [1, 2, 5]))
        wait(lambda: _versions(agent).get(5, {}).get("state") == "Failed", 120, "v5 failed")
        v5 = _versions(agent)[5]
        assert v5["reason"] == "SignatureInvalid", v5
        assert key_identity(other_pub.read_bytes()) in v5["message"], v5  # who signed it
        assert key_identity(trusted_pub.read_bytes()) in v5["message"], v5  # whom the policy trusts
        assert _infer(url, "clf").json()["outputs"][0]["data"] == [2.0] * 4
        status_text = agent.status().model_dump_json()

    # secrets scan: S3 secret key, control key, private keys
    secrets = [s3_server.secret, KEY, *(k.read_text().splitlines()[1] for k in (trusted_key, other_key))]
    logs = caplog.text + srv.log_path.read_text(errors="replace")
    for s in secrets:
        assert s not in status_text and s not in logs
