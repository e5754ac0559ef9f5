"""``PUT /manifest`` on the real agent HTTP server: who may push (a signature by the operator's key for
this agent's ModelDeployment, checked against the public key mounted beside the manifest), what it
refuses, and how a pushed
manifest and the mounted file are reconciled (the higher generation wins). No Triton is needed for
these rules: the sidecar loop is not started, except where a test says so (then Triton is an
address nobody listens on, and only the manifest the agent picks is checked)."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from modeldeploy.reconcile.agents import push
from modeldeploy_runtime.agent import Agent
from modeldeploy_runtime.agentapi import AgentStatus, ManifestPush, PushReply
from modeldeploy_runtime.manifest import ModelManifest
from modeldeploy_runtime.pushsign import PUSH_KEY_FILE, SIGNATURE_HEADER, PushSigner, owner_id

from .conftest import write_manifest

OWNER = owner_id("ns", "m", "6f1c0b52-0000-4000-8000-000000000001")
SIGNER = PushSigner.generate()


def _manifest(generation: int, version: int = 1) -> ModelManifest:
    return ModelManifest.model_validate(
        {
            "generation": generation,
            "models": [
                {"name": "m", "format": "python", "versions": [{"version": version, "source": "file:///x"}]}
            ],
        }
    )


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[Agent, str]]:
    (tmp_path / PUSH_KEY_FILE).write_text(SIGNER.public_pem)  # as the kubelet mounts it
    agent = Agent(tmp_path / "manifest.json", tmp_path / "models", "http://127.0.0.1:9", push_owner=OWNER)
    http, _ = agent.serve_in_thread("127.0.0.1", 0)
    try:
        yield agent, f"http://127.0.0.1:{http.server_address[1]}"
    finally:
        http.shutdown()


def _put(
    url: str, body: Any, signer: PushSigner | None = SIGNER, owner: str = OWNER, signature: str | None = None
) -> requests.Response:
    data = (body if isinstance(body, str) else json.dumps(body)).encode()
    if signature is None and signer is not None:
        signature = signer.sign(owner, data)
    headers = {SIGNATURE_HEADER: signature} if signature is not None else {}
    return requests.put(f"{url}/manifest", data=data, headers=headers, timeout=5)


def test_push_needs_the_operators_signature_for_this_owner(served: tuple[Agent, str]) -> None:
    agent, url = served
    body = ManifestPush(manifest=_manifest(2)).model_dump(mode="json")
    r = _put(url, body, signer=None)
    assert r.status_code == 401 and PushReply.model_validate(r.json()).accepted is False
    assert _put(url, body, signer=PushSigner.generate()).status_code == 403  # another key
    # the right key, but signed for another ModelDeployment, or for an earlier one of this name
    assert (
        _put(url, body, owner=owner_id("ns", "other", "6f1c0b52-0000-4000-8000-000000000001")).status_code
        == 403
    )
    assert (
        _put(url, body, owner=owner_id("ns", "m", "00000000-0000-4000-8000-000000000002")).status_code == 403
    )
    assert _put(url, body, signature="not base64!").status_code == 403
    # a signature of another body (the same generation with other models)
    other = json.dumps(ManifestPush(manifest=_manifest(2, 9)).model_dump(mode="json")).encode()
    assert _put(url, body, signature=SIGNER.sign(OWNER, other)).status_code == 403
    assert agent.known_generation() == 0  # nothing taken
    r = _put(url, body)
    assert r.status_code == 200 and r.json()["accepted"] is True and agent.known_generation() == 2


def test_the_agent_follows_the_mounted_key(served: tuple[Agent, str]) -> None:
    """The operator's key changed (its Secret was recreated): once the kubelet has synced the new
    public key, pushes signed with the new key are taken and the old key's are not."""
    agent, url = served
    new = PushSigner.generate()
    agent.push_key_path.write_text(new.public_pem)
    assert _put(url, ManifestPush(manifest=_manifest(2)).model_dump(mode="json")).status_code == 403
    assert (
        _put(url, ManifestPush(manifest=_manifest(2)).model_dump(mode="json"), signer=new).status_code == 200
    )
    agent.push_key_path.unlink()  # no key mounted: pushing is off
    assert (
        _put(url, ManifestPush(manifest=_manifest(3)).model_dump(mode="json"), signer=new).status_code == 403
    )


def test_push_refuses_older_generations_and_bad_bodies(served: tuple[Agent, str]) -> None:
    agent, url = served
    assert _put(url, ManifestPush(manifest=_manifest(5)).model_dump(mode="json")).status_code == 200
    r = _put(url, ManifestPush(manifest=_manifest(4)).model_dump(mode="json"))
    assert r.status_code == 409 and "older than 5" in r.json()["message"] and r.json()["generation"] == 5
    assert _put(url, {"manifest": {"models": "nope"}}).status_code == 400
    assert _put(url, "{not json").status_code == 400
    assert agent.known_generation() == 5


def test_an_agent_without_an_owner_takes_no_pushes(tmp_path: Path) -> None:
    (tmp_path / PUSH_KEY_FILE).write_text(SIGNER.public_pem)
    agent = Agent(tmp_path / "manifest.json", tmp_path / "models", "http://127.0.0.1:9")
    http, _ = agent.serve_in_thread("127.0.0.1", 0)
    try:
        url = f"http://127.0.0.1:{http.server_address[1]}"
        body = ManifestPush(manifest=_manifest(2)).model_dump(mode="json")
        assert _put(url, body, signer=None).status_code == 401
        assert _put(url, body).status_code == 403
        assert agent.known_generation() == 0
    finally:
        http.shutdown()


def test_the_higher_generation_wins_between_file_and_push(served: tuple[Agent, str], tmp_path: Path) -> None:
    """A pushed manifest is worked on while it is newer than the mounted file; once the kubelet has
    synced the file to the same (or a newer) generation, the file is the truth again."""
    agent, url = served
    write_manifest(agent.manifest_path, _manifest(3).model_dump(mode="json"))
    stop = threading.Event()
    loop = threading.Thread(target=agent.run_sidecar, args=(stop,), daemon=True)
    agent.poll_interval = 0.1
    agent.triton.live = lambda: True  # type: ignore[method-assign]  # no Triton: only the manifest choice is under test
    loop.start()
    try:

        def status() -> AgentStatus:
            return AgentStatus.model_validate(requests.get(f"{url}/status", timeout=5).json())

        _wait(lambda: status().appliedGeneration == 3 and status().manifestSource == "file")
        assert _put(url, ManifestPush(manifest=_manifest(4, 2)).model_dump(mode="json")).status_code == 200
        _wait(lambda: status().appliedGeneration == 4 and status().manifestSource == "push")
        assert _put(url, ManifestPush(manifest=_manifest(3)).model_dump(mode="json")).status_code == 409
        write_manifest(agent.manifest_path, _manifest(4, 2).model_dump(mode="json"))  # the kubelet catches up
        _wait(lambda: status().manifestSource == "file" and status().appliedGeneration == 4)
    finally:
        stop.set()
        loop.join(10)


def test_the_operator_push_client_reports_each_agent(served: tuple[Agent, str]) -> None:
    """reconcile/agents.push against the real agent: accepted, refused (older), signed with another
    key, unreachable pod."""
    agent, url = served
    port = int(url.rsplit(":", 1)[1])

    def pod(name: str, ip: str, p: int) -> dict[str, Any]:
        return {
            "metadata": {"name": name},
            "spec": {"containers": [{"name": "agent", "ports": [{"name": "agent", "containerPort": p}]}]},
            "status": {"phase": "Running", "podIP": ip},
        }

    pods = [pod("a", "127.0.0.1", port), pod("gone", "127.0.0.1", 9)]
    out = push(pods, _manifest(7), SIGNER, OWNER)
    assert out["a"] == "accepted" and out["gone"].startswith("unreachable")
    assert push(pods[:1], _manifest(6), SIGNER, OWNER)["a"].startswith("refused 409")
    assert push(pods[:1], _manifest(8), PushSigner.generate(), OWNER)["a"].startswith("refused 403")
    assert agent.known_generation() == 7


def _wait(cond: Any, timeout: float = 30) -> None:
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if cond():
                return
        except (requests.RequestException, ValueError):
            pass
        time.sleep(0.05)
    raise AssertionError("condition not met in time")
