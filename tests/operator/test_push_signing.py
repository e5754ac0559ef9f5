"""Signed manifest pushes (runtime ``pushsign``) and the operator's signing key (reconcile/pushkey.py),
without a control plane: the in-memory store of test_reconcile_core and a local HTTP server
standing in for a pod's agent."""

from __future__ import annotations

import base64
import copy
import datetime as dt
import json
import logging
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from memkube import MemoryKube
from opsupport import small_md

from modeldeploy.reconcile import agents, pushkey
from modeldeploy.reconcile.kube import KubeError, Resource
from modeldeploy.reconcile.reconciler import OperatorConfig, Reconciler, manifest_changed_time, parse_time
from modeldeploy.render.common import MANIFEST_CHANGED_ANNOTATION
from modeldeploy_runtime.agentapi import ManifestPush
from modeldeploy_runtime.manifest import ModelManifest
from modeldeploy_runtime.pushsign import (
    PUSH_KEY_FILE,
    SIGNATURE_HEADER,
    PushSigner,
    load_public_key,
    owner_id,
    verify,
)

NS = "models"
OPERATOR_NS = "modeldeploy-system"


class FakeAgent:
    """Records each ``PUT /manifest`` (headers and the exact body) and accepts it."""

    def __init__(self) -> None:
        self.pushes: list[tuple[dict[str, str], bytes]] = []
        self.got = threading.Event()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_PUT(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                outer.pushes.append(({k.lower(): v for k, v in self.headers.items()}, body))
                reply = json.dumps({"accepted": True, "message": "ok", "generation": 0}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)
                outer.got.set()

            def do_GET(self) -> None:  # /status: not an agent that answers it
                self.send_response(404)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def pod(self, name: str = "m-0", labels: dict[str, str] | None = None) -> dict[str, Any]:
        return {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": name, "namespace": NS, "labels": labels or {}},
            "spec": {
                "containers": [{"name": "agent", "ports": [{"name": "agent", "containerPort": self.port}]}]
            },
            "status": {"phase": "Running", "podIP": "127.0.0.1"},
        }


@pytest.fixture
def fake_agent() -> Iterator[FakeAgent]:
    a = FakeAgent()
    try:
        yield a
    finally:
        a.server.shutdown()
        a.server.server_close()


def test_a_push_is_signed_for_its_owner_only(fake_agent: FakeAgent) -> None:
    signer = PushSigner.generate()
    owner = owner_id(NS, "m", "uid-1")
    manifest = ModelManifest(generation=3, models=[])
    out = agents.push([fake_agent.pod()], manifest, signer, owner)
    assert out == {"m-0": "accepted"}
    ((headers, body),) = fake_agent.pushes
    assert "authorization" not in headers  # no bearer token any more
    assert ManifestPush.model_validate_json(body).manifest.generation == 3
    pub = load_public_key(signer.public_pem)
    sig = headers[SIGNATURE_HEADER.lower()]
    assert verify(pub, owner, body, sig)
    assert not verify(pub, owner_id(NS, "other", "uid-1"), body, sig)  # another object
    assert not verify(pub, owner_id(NS, "m", "uid-2"), body, sig)  # a later object of the same name
    assert not verify(load_public_key(PushSigner.generate().public_pem), owner, body, sig)  # another key
    assert not verify(pub, owner, body.replace(b'"generation":3', b'"generation":4'), sig)


def test_the_reconciler_pushes_a_changed_manifest_signed_for_the_object(fake_agent: FakeAgent) -> None:
    """In place: a version change is pushed to the running pod, signed with the reconciler's key for
    ``namespace/name/uid``; the ConfigMap holds the matching public key."""
    kube = MemoryKube()
    kube.put(small_md(NS, "m"))
    signer = PushSigner.generate()
    rec = Reconciler(kube, OperatorConfig(), signer=signer)
    try:
        rec.reconcile(copy.deepcopy(kube.obj("ModelDeployment", NS, "m")), trigger="create")
        cm = kube.obj("ConfigMap", NS, "m-models")
        assert cm is not None and cm["data"][PUSH_KEY_FILE] == signer.public_pem
        dep = kube.obj("Deployment", NS, "m")
        assert dep is not None
        kube.put(fake_agent.pod(labels=dict(dep["spec"]["template"]["metadata"]["labels"])))
        md = kube.obj("ModelDeployment", NS, "m")
        assert md is not None
        md["spec"]["models"][0]["versionPolicy"] = {"all": True}
        md["metadata"]["generation"] += 1
        rec.reconcile(copy.deepcopy(md), trigger="update")
        assert fake_agent.got.wait(10), "no push"
        ((headers, body),) = fake_agent.pushes
        owner = owner_id(NS, "m", md["metadata"]["uid"])
        assert verify(
            load_public_key(cm["data"][PUSH_KEY_FILE]), owner, body, headers[SIGNATURE_HEADER.lower()]
        )
        assert ManifestPush.model_validate_json(body).manifest.generation == 2
    finally:
        rec.pusher.stop()


def test_a_new_key_rewrites_the_configmap_only() -> None:
    """Another operator key (a restart with an ephemeral key): the ConfigMap gets the new public
    key; the Deployment is not written (no pod rolls), no VersionsChanged event, no push."""
    kube = MemoryKube()
    kube.put(small_md(NS, "m"))
    first = Reconciler(kube, OperatorConfig(query_agents=False), signer=PushSigner.generate())
    first.reconcile(copy.deepcopy(kube.obj("ModelDeployment", NS, "m")), trigger="create")
    dep = copy.deepcopy(kube.obj("Deployment", NS, "m"))
    kube.clear_log()
    second = Reconciler(kube, OperatorConfig(query_agents=False), signer=PushSigner.generate())
    out = second.reconcile(copy.deepcopy(kube.obj("ModelDeployment", NS, "m")), trigger="resume")
    assert [w[:2] for w in kube.writes if w[0] != "patch_status"] == [("apply", "ConfigMap")], kube.writes
    assert out.changes == ["applied ConfigMap (desired state changed)"]
    assert kube.obj("Deployment", NS, "m") == dep
    cm = kube.obj("ConfigMap", NS, "m-models")
    assert cm is not None and cm["data"][PUSH_KEY_FILE] == second.signer.public_pem


def test_a_new_key_is_no_manifest_change_for_the_propagation_window() -> None:
    """The manifest ConfigMap says when its manifest changed (MANIFEST_CHANGED_ANNOTATION): a
    rewrite for a new push key keeps that time, so pods that started after the manifest's change
    but before the key's rewrite still prove their versions (no 90 s VersionsPropagating after
    every operator restart with a new key); a manifest change sets a new time."""
    kube = MemoryKube()
    kube.put(small_md(NS, "m"))
    first = Reconciler(kube, OperatorConfig(query_agents=False), signer=PushSigner.generate())
    first.reconcile(copy.deepcopy(kube.obj("ModelDeployment", NS, "m")), trigger="create")
    cm = kube.obj("ConfigMap", NS, "m-models")
    assert cm is not None
    stamp = parse_time(cm["metadata"]["annotations"][MANIFEST_CHANGED_ANNOTATION])
    assert stamp is not None and abs((dt.datetime.now(dt.UTC) - stamp).total_seconds()) < 5
    long_ago = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=200)
    cm["metadata"]["annotations"][MANIFEST_CHANGED_ANNOTATION] = long_ago.strftime("%Y-%m-%dT%H:%M:%SZ")
    kube.put(cm)
    pod = {"status": {"startTime": (long_ago + dt.timedelta(seconds=100)).strftime("%Y-%m-%dT%H:%M:%SZ")}}
    second = Reconciler(kube, OperatorConfig(query_agents=False), signer=PushSigner.generate())
    second.reconcile(copy.deepcopy(kube.obj("ModelDeployment", NS, "m")), trigger="resume")
    cm = kube.obj("ConfigMap", NS, "m-models")
    assert cm is not None and cm["data"][PUSH_KEY_FILE] == second.signer.public_pem  # rewritten
    assert manifest_changed_time(cm) == long_ago.replace(microsecond=0)
    assert second._manifest_propagating(cm, [pod]) == (None, None)
    # a changed manifest: a new time, and the pod started before it may serve the old versions
    md = copy.deepcopy(kube.obj("ModelDeployment", NS, "m"))
    md["spec"]["models"][0]["versionPolicy"] = {"all": True}
    md["metadata"]["generation"] = 2
    kube.put(md)
    second.reconcile(copy.deepcopy(md), trigger="update")
    cm = kube.obj("ConfigMap", NS, "m-models")
    changed = manifest_changed_time(cm)
    assert changed is not None and changed > long_ago + dt.timedelta(seconds=150)
    why, left = second._manifest_propagating(cm, [pod])
    assert why is not None and "manifest changed" in why and left is not None and left > 80


# ------------------------------------------------------------------------- the operator's key


def secret_writes(kube: MemoryKube) -> list[tuple[str, str, str]]:
    return [w for w in kube.writes if w[1] == "Secret"]


def test_the_key_secret_is_created_once_and_then_read(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    kube = MemoryKube()
    first = pushkey.obtain(kube, OPERATOR_NS, env={})
    assert secret_writes(kube) == [("create", "Secret", pushkey.SECRET_NAME)]
    assert kube.reads == [("get", "Secret")]
    stored = kube.obj("Secret", OPERATOR_NS, pushkey.SECRET_NAME)
    assert stored is not None and stored["immutable"] is True
    assert set(stored["data"]) == {pushkey.SECRET_KEY}
    kube.clear_log()
    # the next operator start: one read, no write, the same key
    again = pushkey.obtain(kube, OPERATOR_NS, env={})
    assert again.public_pem == first.public_pem
    assert kube.reads == [("get", "Secret")] and kube.writes == []
    body = first.private_pem().decode().splitlines()[1]
    assert (
        body not in caplog.text
        and base64.b64decode(stored["data"][pushkey.SECRET_KEY]) == first.private_pem()
    )


def test_a_secret_created_concurrently_is_read_back() -> None:
    theirs = PushSigner.generate()

    class Racing(MemoryKube):
        """Another operator creates the Secret between our GET and our POST."""

        def get(self, res: Resource, namespace: str | None, name: str) -> dict[str, Any] | None:
            found = super().get(res, namespace, name)
            if found is None and res.kind == "Secret" and not self.writes:
                self.put(pushkey.secret_body(OPERATOR_NS, theirs))
            return found

    kube = Racing()
    signer = pushkey.obtain(kube, OPERATOR_NS, env={})
    assert signer.public_pem == theirs.public_pem
    assert kube.reads == [("get", "Secret"), ("get", "Secret")]
    assert secret_writes(kube) == [("create", "Secret", pushkey.SECRET_NAME)]  # refused with 409


@pytest.mark.parametrize("status", [403, 404])
def test_no_secret_access_falls_back_to_a_key_of_the_process(
    status: int, caplog: pytest.LogCaptureFixture
) -> None:
    class Refusing(MemoryKube):
        def get(self, res: Resource, namespace: str | None, name: str) -> dict[str, Any] | None:
            if status == 403:
                raise KubeError(403, "GET", res.path(namespace, name), "forbidden")
            return super().get(res, namespace, name)

        def create(self, res: Resource, namespace: str | None, obj: dict[str, Any]) -> dict[str, Any]:
            self.writes.append(("create", res.kind, obj["metadata"]["name"]))
            raise KubeError(404, "POST", res.path(namespace), f'namespaces "{namespace}" not found')

    kube = Refusing()
    signer = pushkey.obtain(kube, OPERATOR_NS, env={})
    assert signer.public_pem.startswith("-----BEGIN PUBLIC KEY-----")
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and pushkey.SECRET_NAME in warnings[0].getMessage()
    assert "refuse pushes" in warnings[0].getMessage()
    assert signer.private_pem().decode().splitlines()[1] not in caplog.text


def test_other_api_errors_fail_the_start() -> None:
    class Down(MemoryKube):
        def get(self, res: Resource, namespace: str | None, name: str) -> dict[str, Any] | None:
            raise KubeError(503, "GET", res.path(namespace, name), "unavailable")

    with pytest.raises(KubeError):
        pushkey.obtain(Down(), OPERATOR_NS, env={})


def test_a_key_file_wins_and_costs_no_api_call(tmp_path: Path) -> None:
    signer = PushSigner.generate()
    path = tmp_path / "push.key"
    path.write_bytes(signer.private_pem())
    kube = MemoryKube()
    got = pushkey.obtain(kube, OPERATOR_NS, env={pushkey.KEY_FILE_ENV: str(path)})
    assert got.public_pem == signer.public_pem
    assert kube.reads == [] and kube.writes == []
    path.write_text("not a key")
    with pytest.raises(ValueError, match=pushkey.KEY_FILE_ENV):
        pushkey.obtain(kube, OPERATOR_NS, env={pushkey.KEY_FILE_ENV: str(path)})


def test_an_unusable_secret_is_reported_not_replaced() -> None:
    kube = MemoryKube()
    body = pushkey.secret_body(OPERATOR_NS, PushSigner.generate())
    body["data"][pushkey.SECRET_KEY] = base64.b64encode(b"garbage").decode()
    kube.put(body)
    with pytest.raises(ValueError, match="delete the Secret"):
        pushkey.obtain(kube, OPERATOR_NS, env={})
    assert kube.writes == []
