"""Another commit's operator tree (modeldeploy.cluster.source), as bench/reconcile.py --baseline-ref
and tests/operator/test_upgrade_cluster.py take it: no cluster needed, only this clone's history."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from modeldeploy.cluster.local import CommandError
from modeldeploy.cluster.source import export_tree, resolve, tree_env

REPO = Path(__file__).resolve().parents[2]
#: The last commit with the per-object Secret: its modeldeploy.render.secret is gone today.
OLD_REF = "555ac2d^"


def test_export_tree_runs_that_commits_packages(tmp_path: Path) -> None:
    tree = export_tree(OLD_REF, REPO, tmp_path / "tree")
    assert sorted(p.name for p in tree.iterdir()) == ["crds", "operator", "runtime"]
    assert (tree / "crds" / "modeldeploy.io_modeldeployments.yaml").is_file()
    code = "import modeldeploy.render.secret as s, modeldeploy_runtime as r; print(s.__file__, r.__file__)"
    proc = subprocess.run(
        [sys.executable, "-c", code],
        env=os.environ | tree_env(tree),
        cwd=tree,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr
    assert all(Path(f).is_relative_to(tree) for f in proc.stdout.split()), proc.stdout


def test_a_commit_not_in_the_history_says_so() -> None:
    with pytest.raises(CommandError) as err:
        resolve("0" * 40, REPO)
    assert "not in the history" in str(err.value) and "shallow" in str(err.value)
