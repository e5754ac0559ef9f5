"""The operator of another commit of this repository, to run against the local control plane.

``bench/reconcile.py --baseline-ref REF`` measures an earlier commit's operator in the same run as
today's, and ``tests/operator/test_upgrade_cluster.py`` upgrades from an earlier operator to today's.
Both take the earlier tree from ``git archive`` (no checkout, no second clone) and run it with the
same Python, its own ``operator/`` and ``runtime/`` first on ``PYTHONPATH``:

    tree = export_tree("555ac2d^", repo)
    env = cluster.env() | tree_env(tree)
    subprocess.Popen([sys.executable, "-m", "modeldeploy.cli", "operator", "run", ...], env=env, cwd=tree)

Needs the commit in the clone's history: a plain ``git clone`` has it, a shallow one may not
(``git fetch --unshallow``).
"""

from __future__ import annotations

import io
import os
import subprocess
import tarfile
import tempfile
from collections.abc import Sequence
from pathlib import Path

from modeldeploy.cluster.local import CommandError

#: What an operator needs of its tree: the two import packages' folders and its CRD.
TREE_PATHS = ("operator", "runtime", "crds")


def git(repo: Path, *args: str) -> bytes:
    """``git -C repo args...``'s output; a CommandError with git's stderr when it fails."""
    cmd = ["git", "-C", str(repo), *args]
    proc = subprocess.run(cmd, capture_output=True, check=False)
    if proc.returncode != 0:
        raise CommandError(proc.returncode, cmd, "", proc.stderr.decode(errors="replace"))
    return proc.stdout


def resolve(ref: str, repo: Path) -> str:
    """The full commit id of ``ref``; a CommandError naming the ref (and git's stderr) when this
    clone lacks it, e.g. a shallow clone."""
    try:
        return git(repo, "rev-parse", "--verify", f"{ref}^{{commit}}").decode().strip()
    except CommandError as exc:
        exc.stderr = (
            f"{exc.stderr}\ncommit {ref!r} is not in the history of {repo} "
            "(a shallow clone? `git fetch --unshallow`)"
        )
        raise


def export_tree(ref: str, repo: Path, dest: Path | None = None, paths: Sequence[str] = TREE_PATHS) -> Path:
    """``paths`` of commit ``ref`` of the repository at ``repo``, extracted into ``dest`` (created;
    default: a new temporary directory, left for the caller to remove)."""
    commit = resolve(ref, repo)
    if dest is None:
        dest = Path(tempfile.mkdtemp(prefix=f"modeldeploy-{commit[:12]}-"))
    dest.mkdir(parents=True, exist_ok=True)
    archive = git(repo, "archive", "--format=tar", commit, "--", *paths)
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(dest, filter="data")
    return dest


def tree_env(tree: Path) -> dict[str, str]:
    """Environment entries that make ``python -m modeldeploy.cli`` import the tree's own packages
    (run it with ``cwd=tree`` too, so nothing of the current checkout is first on ``sys.path``)."""
    return {"PYTHONPATH": os.pathsep.join(str(tree / p) for p in ("operator", "runtime"))}
