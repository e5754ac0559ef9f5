"""The pod's own Triton control key (control.py): made once by the init agent, read into Triton's
restricted-API flags by the rendered start line, never written anywhere else."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from modeldeploy_runtime.control import (
    ensure_control_key,
    read_control_key,
    restricted_api_args,
    triton_launch,
)


def test_the_init_agent_makes_the_key_once(tmp_path: Path) -> None:
    path = tmp_path / "control" / "key"
    key = ensure_control_key(path)
    assert len(key) >= 43 and read_control_key(path) == key
    assert (path.stat().st_mode & 0o777) == 0o600
    assert ensure_control_key(path) == key  # a restarted init container keeps it
    other = ensure_control_key(tmp_path / "other")
    assert other != key  # each pod its own
    assert read_control_key(tmp_path / "missing") is None
    (tmp_path / "empty").write_text("\n")
    with pytest.raises(ValueError, match="empty"):
        ensure_control_key(tmp_path / "empty")


def test_the_start_line_passes_the_args_and_the_key_from_the_file(tmp_path: Path) -> None:
    """Run the rendered line with /bin/sh and a stand-in ``tritonserver`` that prints its argv:
    the container's args come through unchanged (spaces, quotes, ``$``), followed by the
    restricted-API flags holding the key read from the file; the line itself holds no key and no
    ``$(`` (the kubelet expands ``$(NAME)`` in command and args)."""
    key_file = tmp_path / "key"
    key = ensure_control_key(key_file)
    bindir = tmp_path / "bin"
    bindir.mkdir()
    fake = bindir / "tritonserver"
    fake.write_text('#!/bin/sh\nfor a in "$@"; do printf "%s\\n" "$a"; done\n')
    fake.chmod(0o755)
    args = ["--model-repository=/models", "--log-info=a b", "it's", "$HOME"]
    cmd, rendered_args = triton_launch(args, str(key_file))
    assert cmd[:2] == ["/bin/sh", "-c"] and rendered_args == args
    assert not any(key in a or "$(" in a for a in cmd + rendered_args)
    env = {**os.environ, "PATH": f"{bindir}{os.pathsep}{os.environ['PATH']}"}
    out = subprocess.run(cmd + rendered_args, env=env, capture_output=True, text=True, check=True)
    assert out.stdout.splitlines() == args + restricted_api_args(key)


def test_without_the_key_file_triton_does_not_start(tmp_path: Path) -> None:
    cmd, args = triton_launch([], str(tmp_path / "absent"))
    r = subprocess.run(cmd + args, capture_output=True, text=True)
    assert r.returncode != 0 and "absent" in r.stderr
