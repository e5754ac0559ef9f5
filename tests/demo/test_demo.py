"""`make demo` end to end: the README's first command must keep working (issue #2)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from modeldeploy.cluster.local import cache_dir

pytestmark = [pytest.mark.integration, pytest.mark.cluster, pytest.mark.triton, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]


def test_demo_runs_end_to_end() -> None:
    proc = subprocess.run(
        [sys.executable, str(REPO / "hack" / "demo.py")],
        capture_output=True,
        text=True,
        timeout=900,
        cwd=REPO,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-6000:]
    # the operator made the ModelDeployment Ready, Triton answered like torch, v2 rolled in place
    assert "Ready after" in out
    assert "through Triton == torch v1" in out
    assert "inference now == torch v2" in out
    assert "pods unchanged by the in-place rollout: True" in out
    assert "Ready        True" in out
    # issue #13: the tiny LM deployed as format transformers streams through the OpenAI endpoint
    assert "status.endpoints.openai = http://tiny-lm.models.svc:9000/v1" in out
    assert "chat completion streamed through Triton == non-streaming answer" in out
    assert not (cache_dir() / "clusters" / "demo").exists(), "the demo left its cluster behind"
