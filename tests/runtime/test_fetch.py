"""Fetching versions: file/pvc/S3 (a real S3 endpoint on loopback)/HTTP, digests, atomicity, cache."""

from __future__ import annotations

import hashlib
import io
import shutil
import tarfile
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from modeldeploy_runtime.agent import Agent
from modeldeploy_runtime.fetch import TMP_DIR, Fetcher, FetchError
from modeldeploy_runtime.manifest import ManifestCredentials, ModelManifest

from .conftest import S3Server, make_const_model, upload_folder

CREDS = ManifestCredentials(envPrefix="MD_TEST_")


@pytest.fixture
def v1(tmp_path: Path) -> Any:
    return make_const_model(tmp_path / "build", "clf", 1, 1.0)


@pytest.fixture
def v2(tmp_path: Path) -> Any:
    return make_const_model(tmp_path / "build", "clf", 2, 2.0)


def _no_tmp_left(repo: Path) -> None:
    assert not (repo / TMP_DIR).exists() or not any((repo / TMP_DIR).iterdir())


def test_file_and_pvc_sources_verify_and_cache(
    tmp_path: Path, v1: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    repo = tmp_path / "models"
    f = Fetcher(repo)
    res = f.fetch("clf", 1, f"file://{v1.version_dir}", v1.digest)
    assert not res.cached and res.digest == v1.digest and res.bytes > 0
    assert (repo / "clf" / "1" / "model.py").read_bytes() == (v1.version_dir / "model.py").read_bytes()
    again = f.fetch("clf", 1, f"file://{v1.version_dir}", v1.digest)
    assert again.cached and again.bytes == 0
    # the same digest under another version number is copied locally, not fetched again
    moved = f.fetch("clf", 5, "file:///does/not/exist", v1.digest)
    assert moved.cached and (repo / "clf" / "5" / "model.py").is_file()
    # pvc://claim/path resolves under the PVC root
    monkeypatch.setenv("MODELDEPLOY_PVC_ROOT", str(tmp_path))
    pvc = Fetcher(tmp_path / "models2")
    rel = v1.version_dir.relative_to(tmp_path / "build")
    res = pvc.fetch("clf", 1, f"pvc://build/{rel}", v1.digest)
    assert res.digest == v1.digest
    with pytest.raises(FetchError, match="escapes"):
        pvc.fetch("clf", 2, "pvc://build/../../etc", None)
    _no_tmp_left(repo)


def test_bad_digest_and_missing_source_leave_served_version_untouched(
    tmp_path: Path, v1: Any, v2: Any
) -> None:
    repo = tmp_path / "models"
    f = Fetcher(repo)
    f.fetch("clf", 1, f"file://{v1.version_dir}", v1.digest)
    before = sorted(p.name for p in (repo / "clf" / "1").iterdir())
    with pytest.raises(FetchError) as exc:
        f.fetch("clf", 1, f"file://{v2.version_dir}", "0" * 64)
    assert exc.value.reason == "DigestMismatch" and "manifest.sha256" in str(exc.value)
    with pytest.raises(FetchError) as exc:
        f.fetch("clf", 2, f"file://{tmp_path}/nope", None)
    assert exc.value.reason == "NotFound"
    assert sorted(p.name for p in (repo / "clf" / "1").iterdir()) == before
    assert Fetcher.read_record(repo / "clf" / "1")["sha256"] == v1.digest  # type: ignore[index]
    assert not (repo / "clf" / "2").exists()
    # a file changed after packaging is caught by manifest.sha256 even without a pinned digest
    bad = tmp_path / "bad"
    import shutil

    shutil.copytree(v2.version_dir, bad)
    (bad / "model.py").write_text("# truncated")
    with pytest.raises(FetchError, match=r"model.py: sha256 .* does not match"):
        f.fetch("clf", 2, f"file://{bad}", None)
    _no_tmp_left(repo)


def test_s3_folder_file_and_errors(
    tmp_path: Path, v1: Any, s3: Any, bucket: str, s3_env: dict[str, str], s3_server: S3Server
) -> None:
    upload_folder(s3, bucket, "clf/1", v1.version_dir)
    onnx = b"fake onnx bytes" * 1000
    s3.put_object(Bucket=bucket, Key="single/model.onnx", Body=onnx)
    repo = tmp_path / "models"
    f = Fetcher(repo)
    res = f.fetch("clf", 1, f"s3://{bucket}/clf/1", v1.digest, CREDS)
    assert res.digest == v1.digest and (repo / "clf" / "1" / "model.py").is_file()
    digest = hashlib.sha256(onnx).hexdigest()
    res = f.fetch("o", 1, f"s3://{bucket}/single/model.onnx", digest, CREDS)
    assert (repo / "o" / "1" / "model.onnx").read_bytes() == onnx
    with pytest.raises(FetchError) as exc:
        f.fetch("o", 2, f"s3://{bucket}/single/model.onnx", "1" * 64, CREDS)
    assert exc.value.reason == "DigestMismatch"
    with pytest.raises(FetchError) as exc:
        f.fetch("o", 3, f"s3://{bucket}/missing/model.onnx", None, CREDS)
    assert exc.value.reason == "NotFound"
    # wrong credentials: clear error, and the secret is never part of it
    wrong = Fetcher(
        tmp_path / "m2", environ={**s3_env, "MD_TEST_AWS_SECRET_ACCESS_KEY": "wrong-" + s3_server.secret}
    )
    with s3_server.enforce_auth(), pytest.raises(FetchError) as exc:
        s3.head_object(Bucket=bucket, Key="clf/1/model.py")  # the right keys are accepted
        wrong.fetch("clf", 1, f"s3://{bucket}/clf/1", None, CREDS)
    assert exc.value.reason == "AccessDenied" and "credentials" in str(exc.value)
    assert s3_server.secret not in str(exc.value)
    assert not (tmp_path / "m2" / "clf" / "1").exists()


def test_gs_source_uses_the_s3_interoperable_api(
    tmp_path: Path, v1: Any, s3: Any, bucket: str, s3_server: S3Server
) -> None:
    """gs:// goes through GCS's XML API (S3-compatible, HMAC keys): by default to
    storage.googleapis.com, here to the loopback S3 server given as the endpoint."""
    from modeldeploy_runtime.fetch import GCS_XML_ENDPOINT, Credentials

    assert Credentials(ManifestCredentials(), environ={}).s3_client(GCS_XML_ENDPOINT).meta.endpoint_url == (
        GCS_XML_ENDPOINT
    )
    upload_folder(s3, bucket, "clf/1", v1.version_dir)
    env = {"AWS_ACCESS_KEY_ID": s3_server.key_id, "AWS_SECRET_ACCESS_KEY": s3_server.secret}
    creds = ManifestCredentials(endpoint=s3_server.endpoint)
    res = Fetcher(tmp_path / "models", environ=env).fetch("clf", 1, f"gs://{bucket}/clf/1", v1.digest, creds)
    assert res.digest == v1.digest and (tmp_path / "models" / "clf" / "1" / "model.py").is_file()
    with pytest.raises(FetchError) as exc:
        Fetcher(tmp_path / "m2", environ=env).fetch("clf", 1, "gs:///clf/1", None, creds)
    assert exc.value.reason == "InvalidSource" and "no bucket in gs://" in str(exc.value)


def test_s3_credentials_from_mounted_secret_files(
    tmp_path: Path, v1: Any, s3: Any, bucket: str, s3_server: S3Server
) -> None:
    upload_folder(s3, bucket, "clf/1", v1.version_dir)
    secret = tmp_path / "secret"
    secret.mkdir()
    (secret / "AWS_ACCESS_KEY_ID").write_text(s3_server.key_id + "\n")
    (secret / "AWS_SECRET_ACCESS_KEY").write_text(s3_server.secret)
    creds = ManifestCredentials(mountPath=str(secret), endpoint=s3_server.endpoint)
    res = Fetcher(tmp_path / "models", environ={}).fetch("clf", 1, f"s3://{bucket}/clf/1", v1.digest, creds)
    assert res.digest == v1.digest


class _Files(BaseHTTPRequestHandler):
    files: dict[str, bytes] = {}
    cut_first: set[str] = set()  # paths whose first response stops half way
    served: dict[str, int] = {}

    def log_message(self, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        data = self.files.get(self.path)
        if data is None:
            self.send_error(404)
            return
        n = self.served.get(self.path, 0)
        self.served[self.path] = n + 1
        start = 0
        rng = self.headers.get("Range")
        if rng:
            start = int(rng.split("=")[1].split("-")[0])
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        body = data[start:]
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.path in self.cut_first and n == 0:
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            self.close_connection = True
            self.connection.shutdown(2)
            return
        self.wfile.write(body)


@pytest.fixture
def http_files() -> Iterator[tuple[str, type[_Files]]]:
    handler = type("Files", (_Files,), {"files": {}, "cut_first": set(), "served": {}})
    srv = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    th = threading.Thread(target=srv.serve_forever, daemon=True)
    th.start()
    yield f"http://127.0.0.1:{srv.server_address[1]}", handler
    srv.shutdown()


def test_http_resume_archive_and_404(tmp_path: Path, v1: Any, http_files: tuple[str, type[_Files]]) -> None:
    url, handler = http_files
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as t:
        t.add(v1.version_dir, arcname="1")
    archive = buf.getvalue() + b""
    big = bytes(range(256)) * 8192  # 2 MiB
    handler.files = {"/clf-1.tar.gz": archive, "/model.onnx": big}
    handler.cut_first = {"/model.onnx"}
    f = Fetcher(tmp_path / "models", retries=2)
    res = f.fetch("clf", 1, f"{url}/clf-1.tar.gz", hashlib.sha256(archive).hexdigest())
    assert (res.version_dir / "model.py").is_file() and (res.version_dir / "manifest.sha256").is_file()
    res = f.fetch("o", 1, f"{url}/model.onnx", hashlib.sha256(big).hexdigest())
    assert (res.version_dir / "model.onnx").read_bytes() == big
    assert handler.served["/model.onnx"] == 2  # cut once, resumed with a Range request
    with pytest.raises(FetchError) as exc:
        f.fetch("o", 2, f"{url}/nope.onnx", None)
    assert exc.value.reason == "NotFound" and "404" in str(exc.value)


def test_http_truncated_every_time_fails_cleanly(
    tmp_path: Path, http_files: tuple[str, type[_Files]]
) -> None:
    url, handler = http_files
    handler.files = {"/m.onnx": b"x" * 100_000}

    class AlwaysCut(_Files):
        pass

    handler.cut_first = {"/m.onnx"}
    handler.served = {}
    # make every attempt the "first": the server always cuts
    orig = handler.do_GET

    def always_cut(self: Any) -> None:
        handler.served.pop("/m.onnx", None)
        orig(self)

    handler.do_GET = always_cut  # type: ignore[method-assign]
    f = Fetcher(tmp_path / "models", retries=1)
    with pytest.raises(FetchError) as exc:
        f.fetch("o", 1, f"{url}/m.onnx", None)
    assert exc.value.reason in ("Truncated", "DownloadFailed")
    assert not (tmp_path / "models" / "o" / "1").exists()


def test_init_mode_fills_repository_and_renders_config(tmp_path: Path, v1: Any, v2: Any) -> None:
    manifest = tmp_path / "manifest.json"
    m = ModelManifest.model_validate(
        {
            "generation": 4,
            "models": [
                {
                    "name": "served-name",
                    "format": "python",
                    "versionPolicy": {"latest": 2},
                    "maxBatchSize": 4,
                    "instanceGroups": [{"count": 2, "kind": "KIND_CPU"}],
                    "versions": [
                        {"version": 1, "source": f"file://{v1.version_dir}", "sha256": v1.digest},
                        {"version": 2, "source": f"file://{v2.version_dir}", "sha256": v2.digest},
                    ],
                }
            ],
        }
    )
    manifest.write_text(m.to_json())
    agent = Agent(manifest, tmp_path / "models", "http://127.0.0.1:9")
    assert agent.run_init() == 0
    from modeldeploy_runtime.config import load_config

    cfg = load_config(tmp_path / "models" / "served-name" / "config.pbtxt")
    assert cfg.name == "served-name" and cfg.backend == "python" and cfg.max_batch_size == 4
    assert cfg.version_policy is not None and cfg.version_policy.versions == [1, 2]
    assert [(g.count, g.kind) for g in cfg.instance_groups] == [(2, "KIND_CPU")]
    assert [t.name for t in cfg.inputs] == ["X"]
    st = agent.status().model_dump(mode="json")
    assert st["generation"] == 4 and st["ready"] is False  # no Triton behind it
    # a broken source makes init fail with the reason in the status
    bad = m.model_copy(deep=True)
    bad.models[0].versions[1].sha256 = "f" * 64
    bad.models[0].versions[1].version = 3
    manifest.write_text(bad.to_json())
    agent2 = Agent(manifest, tmp_path / "models-b", "http://127.0.0.1:9")
    assert agent2.run_init() == 1
    vs = {v["version"]: v for v in agent2.status().model_dump(mode="json")["models"][0]["versions"]}
    assert vs[3]["state"] == "Failed" and vs[3]["reason"] == "DigestMismatch"
    assert "served-name version 3" in (agent2.status().lastError or "")


def test_init_single_file_onnx_source_gets_config_from_manifest(tmp_path: Path) -> None:
    """A bare artifact (no packaging metadata): named model.onnx in the version folder, and the
    config comes from the manifest's format, inputs/outputs and batching."""
    from modeldeploy_runtime.config import load_config
    from modeldeploy_runtime.onnx_io import OnnxTensor, encode_io_only

    art = tmp_path / "exported-resnet.onnx"
    art.write_bytes(
        encode_io_only([OnnxTensor("x", "TYPE_FP32", [-1, 4])], [OnnxTensor("y", "TYPE_FP32", [-1, 2])])
    )
    digest = hashlib.sha256(art.read_bytes()).hexdigest()
    manifest = tmp_path / "manifest.json"
    m = ModelManifest.model_validate({"generation": 1, "models": [{
        "name": "resnet", "format": "onnx", "maxBatchSize": 8,
        "dynamicBatching": {"preferredBatchSizes": [4, 8], "maxQueueDelayMicroseconds": 50},
        "inputs": [{"name": "x", "dataType": "TYPE_FP32", "dims": [4]}],
        "outputs": [{"name": "y", "dataType": "TYPE_FP32", "dims": [2]}],
        "versions": [{"version": 3, "source": f"file://{art}", "sha256": digest}],
    }]})  # fmt: skip
    manifest.write_text(m.to_json())
    assert Agent(manifest, tmp_path / "models", "http://127.0.0.1:9").run_init() == 0
    assert (tmp_path / "models" / "resnet" / "3" / "model.onnx").read_bytes() == art.read_bytes()
    cfg = load_config(tmp_path / "models" / "resnet" / "config.pbtxt")
    assert cfg.platform == "onnxruntime_onnx" and cfg.max_batch_size == 8
    assert cfg.dynamic_batching is not None and cfg.dynamic_batching.preferred_batch_size == [4, 8]
    assert [(t.name, t.dims) for t in cfg.inputs] == [("x", [4])]
    from modeldeploy_runtime.lint import errors, lint_repository

    assert errors(lint_repository(tmp_path / "models")) == []


def test_init_onnx_folder_with_wrapper_gets_python_backend(tmp_path: Path) -> None:
    """A version folder holding model.onnx plus the python-backend wrapper as model.py, but no
    packaging metadata: the agent writes a python-backend config (not onnxruntime_onnx), so the
    model runs on a Triton with only the python backend."""
    from modeldeploy_runtime.config import load_config
    from modeldeploy_runtime.onnx_io import OnnxTensor, encode_io_only
    from modeldeploy_runtime.package import PYTHON_WRAPPER

    src = tmp_path / "export"
    src.mkdir()
    (src / "model.onnx").write_bytes(
        encode_io_only([OnnxTensor("x", "TYPE_FP32", [-1, 4])], [OnnxTensor("y", "TYPE_FP32", [-1, 2])])
    )
    shutil.copyfile(PYTHON_WRAPPER, src / "model.py")
    manifest = tmp_path / "manifest.json"
    m = ModelManifest.model_validate({"generation": 1, "models": [{
        "name": "clf", "format": "onnx", "maxBatchSize": 4,
        "inputs": [{"name": "x", "dataType": "TYPE_FP32", "dims": [4]}],
        "outputs": [{"name": "y", "dataType": "TYPE_FP32", "dims": [2]}],
        "versions": [{"version": 1, "source": f"file://{src}"}],
    }]})  # fmt: skip
    manifest.write_text(m.to_json())
    assert Agent(manifest, tmp_path / "models", "http://127.0.0.1:9").run_init() == 0
    cfg = load_config(tmp_path / "models" / "clf" / "config.pbtxt")
    assert (cfg.backend, cfg.platform) == ("python", "")
    assert (tmp_path / "models" / "clf" / "1" / "model.onnx").is_file()
