"""modeldeploy.reconcile.provenance: digest/signer from the agents into the status (issue #15)."""

from __future__ import annotations

from typing import Any

from modeldeploy.reconcile.provenance import add_provenance
from modeldeploy.reconcile.status import AgentReport
from modeldeploy_runtime.agentapi import AgentStatus


def _doc(version: int, state: str, digest: str, signer: str = "key:sha256:aa") -> AgentStatus:
    v = {"version": version, "state": state, "digest": digest, "signer": signer}
    return AgentStatus.model_validate({"models": [{"name": "m", "versions": [v]}]})


def _status(*versions: tuple[int, str]) -> dict[str, Any]:
    return {"models": [{"name": "m", "versions": [{"version": n, "state": s} for n, s in versions]}]}


def test_agreeing_pods_set_digest_and_signer_on_ready_versions() -> None:
    report = AgentReport({"p1": _doc(1, "Ready", "sha256:01"), "p2": _doc(1, "Ready", "sha256:01")})
    st = add_provenance(_status((1, "Ready")), report)
    assert st["models"][0]["versions"][0] == {
        "version": 1, "state": "Ready", "digest": "sha256:01", "signer": "key:sha256:aa",
    }  # fmt: skip


def test_disagreeing_pods_claim_nothing_and_failed_versions_get_nothing() -> None:
    report = AgentReport({"p1": _doc(1, "Ready", "sha256:01"), "p2": _doc(1, "Ready", "sha256:02")})
    st = add_provenance(_status((1, "Ready")), report)
    assert st["models"][0]["versions"][0] == {"version": 1, "state": "Ready", "signer": "key:sha256:aa"}
    report = AgentReport({"p1": _doc(2, "Failed", "sha256:03")})
    st = add_provenance(_status((2, "Failed")), report)
    assert st["models"][0]["versions"][0] == {"version": 2, "state": "Failed"}
    assert add_provenance(_status((1, "Ready")), None) == _status((1, "Ready"))
