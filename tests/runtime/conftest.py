"""Fixtures for the runtime tests: a real S3-compatible server (moto in server mode on loopback),
small torch models, python-backend test models, and real tritonserver instances."""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from modeldeploy_runtime.config import TensorSpec
from modeldeploy_runtime.manifest import ModelManifest
from modeldeploy_runtime.ports import free_port


# ------------------------------------------------------------------------------------------------ S3
@dataclass(frozen=True)
class S3Server:
    endpoint: str
    key_id: str
    secret: str

    @contextlib.contextmanager
    def enforce_auth(self) -> Iterator[None]:
        """Make the server check request signatures against its IAM users meanwhile.

        Off by default because moto's server (5.x) miscomputes SigV4 for query strings containing
        '/', i.e. every ListObjectsV2 with a folder prefix, even with the right keys."""
        import requests

        r = requests.post(f"{self.endpoint}/moto-api/reset-auth", data=b"0", timeout=10)
        assert r.status_code == 200, r.text
        try:
            yield
        finally:
            requests.post(f"{self.endpoint}/moto-api/reset-auth", data=b"inf", timeout=10)


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    """A real HTTP S3 endpoint (moto's server) on 127.0.0.1, with an IAM user (s3:* policy) whose
    keys the tests use; ``enforce_auth()`` turns signature checking on."""
    import boto3
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    try:
        iam = boto3.client("iam", endpoint_url=endpoint, region_name="us-east-1",
                           aws_access_key_id="bootstrap", aws_secret_access_key="bootstrap")  # fmt: skip
        iam.create_user(UserName="modeldeploy-test")
        iam.put_user_policy(
            UserName="modeldeploy-test",
            PolicyName="s3",
            PolicyDocument=json.dumps(
                {
                    "Version": "2012-10-17",
                    "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}],
                }
            ),
        )
        key = iam.create_access_key(UserName="modeldeploy-test")["AccessKey"]
        yield S3Server(endpoint, key["AccessKeyId"], key["SecretAccessKey"])
    finally:
        server.stop()


@pytest.fixture
def s3_endpoint(s3_server: S3Server) -> str:
    return s3_server.endpoint


@pytest.fixture
def s3_env(monkeypatch: pytest.MonkeyPatch, s3_server: S3Server) -> dict[str, str]:
    """Credentials for the agent/fetcher, as env vars with the prefix MD_TEST_."""
    env = {
        "MD_TEST_AWS_ACCESS_KEY_ID": s3_server.key_id,
        "MD_TEST_AWS_SECRET_ACCESS_KEY": s3_server.secret,
        "MD_TEST_AWS_ENDPOINT_URL": s3_server.endpoint,
    }
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    return env


@pytest.fixture
def s3(s3_server: S3Server) -> Any:
    import boto3

    return boto3.client(
        "s3",
        endpoint_url=s3_server.endpoint,
        aws_access_key_id=s3_server.key_id,
        aws_secret_access_key=s3_server.secret,
        region_name="us-east-1",
    )


@pytest.fixture
def bucket(s3: Any, request: pytest.FixtureRequest) -> str:
    name = "models-" + "".join(c for c in request.node.name.lower() if c.isalnum())[:40]
    s3.create_bucket(Bucket=name)
    return name


def upload_folder(s3: Any, bucket: str, prefix: str, folder: Path) -> None:
    for p in sorted(folder.rglob("*")):
        if p.is_file():
            s3.upload_file(str(p), bucket, f"{prefix}/{p.relative_to(folder).as_posix()}")


# -------------------------------------------------------------------------------------------- models
@pytest.fixture(scope="session")
def mlp() -> Any:
    import torch

    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(8, 32), torch.nn.ReLU(), torch.nn.Linear(32, 4)).eval()


@pytest.fixture(scope="session")
def cnn() -> Any:
    import torch

    torch.manual_seed(1)
    return torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3, padding=1),
        torch.nn.ReLU(),
        torch.nn.AdaptiveAvgPool2d(2),
        torch.nn.Flatten(),
        torch.nn.Linear(32, 5),
    ).eval()


CONST_MODEL = """
import time
import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        time.sleep({sleep})
        {fail}

    def execute(self, requests):
        out = []
        for r in requests:
            x = pb_utils.get_input_tensor_by_name(r, "X").as_numpy()
            y = (x * 0 + {value}).astype(np.float32)
            out.append(pb_utils.InferenceResponse([pb_utils.Tensor("Y", y)]))
        return out
"""


def make_const_model(
    repo: Path, name: str, version: int, value: float, *, sleep: float = 0.0, fail: bool = False
) -> Any:
    """Package a python-backend model answering Y = value (shape of X): tells versions apart."""
    from modeldeploy_runtime.package import BatchingOptions, package_python

    src_dir = repo.parent / f"src-{name}-{version}"
    src_dir.mkdir(parents=True, exist_ok=True)
    src = src_dir / "model.py"
    src.write_text(
        CONST_MODEL.format(
            sleep=sleep,
            value=value,
            fail=f"raise RuntimeError('broken model v{version}')" if fail else "pass",
        )
    )
    return package_python(
        src,
        repo,
        name,
        version=version,
        inputs=[TensorSpec("X", "TYPE_FP32", [4])],
        outputs=[TensorSpec("Y", "TYPE_FP32", [4])],
        batching=BatchingOptions(max_batch_size=8, instance_kind="KIND_CPU"),
    )


def applied(agent: Any, generation: int) -> bool:
    """The agent finished applying ``generation`` and Triton serves every version it wants: one
    status snapshot. (``agent.ready()`` followed by ``agent.status().generation`` is two snapshots:
    the first can describe the previous manifest while the second already names the new one.)"""
    st = agent.status()
    return bool(st.ready and st.appliedGeneration == generation)


def write_manifest(path: Path, manifest: dict[str, Any]) -> ModelManifest:
    m = ModelManifest.model_validate(manifest)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(m.to_json())
    tmp.replace(path)
    return m


# -------------------------------------------------------------------------------------------- triton
@pytest.fixture(scope="session")
def triton_installed() -> None:
    from modeldeploy_runtime.triton import TritonNotInstalled, find_triton

    try:
        find_triton()
    except TritonNotInstalled as exc:
        pytest.fail(f"{exc} (run hack/install-triton.sh)")


@pytest.fixture
def start_triton(triton_installed: None, tmp_path: Path) -> Iterator[Callable[..., Any]]:
    """Factory: start_triton(repo, **kwargs) -> running TritonServer, stopped after the test."""
    from modeldeploy_runtime.triton import TritonServer

    servers: list[TritonServer] = []

    def start(repo: Path, **kwargs: Any) -> TritonServer:
        kwargs.setdefault("log_path", tmp_path / f"tritonserver-{len(servers)}.log")
        kwargs.setdefault("exit_timeout_secs", 1)
        srv = TritonServer(repo, **kwargs)
        servers.append(srv)
        return srv.start()

    yield start
    for s in servers:
        s.stop()


class Hammer:
    """Clients sending requests in a loop; counts successes per answered value and failures."""

    def __init__(self, url: str, model: str, threads: int = 4) -> None:
        import requests

        self.url = f"{url}/v2/models/{model}/infer"
        self.stop_event = threading.Event()
        self.lock = threading.Lock()
        self.ok: dict[float, int] = {}
        self.failures: list[str] = []
        self.requests_mod = requests
        self.threads = [threading.Thread(target=self._run, daemon=True) for _ in range(threads)]

    def _run(self) -> None:
        s = self.requests_mod.Session()
        body = json.dumps(
            {"inputs": [{"name": "X", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}]}
        )
        while not self.stop_event.is_set():
            try:
                r = s.post(self.url, data=body, timeout=10)
                if r.status_code == 200:
                    v = float(r.json()["outputs"][0]["data"][0])
                    with self.lock:
                        self.ok[v] = self.ok.get(v, 0) + 1
                else:
                    with self.lock:
                        self.failures.append(f"HTTP {r.status_code}: {r.text[:200]}")
            except Exception as exc:
                with self.lock:
                    self.failures.append(f"{exc.__class__.__name__}: {exc}")
            time.sleep(0.002)

    def __enter__(self) -> Hammer:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop_event.set()
        for t in self.threads:
            t.join(15)
