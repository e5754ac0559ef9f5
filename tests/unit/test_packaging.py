"""The package layout: operator/ is importable as modeldeploy (never as `operator`)."""

from __future__ import annotations

import importlib
import operator as stdlib_operator
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
FOLDERS = {"modeldeploy": "operator", "modeldeploy_runtime": "runtime"}


def _declared() -> set[str]:
    cfg = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert cfg["package-dir"] == FOLDERS
    return set(cfg["packages"])


def _on_disk() -> set[str]:
    found = set()
    for pkg, folder in FOLDERS.items():
        root = REPO / folder
        for init in root.rglob("__init__.py"):
            if "__pycache__" in init.parts:
                continue
            rel = init.parent.relative_to(root).parts
            found.add(".".join((pkg, *rel)))
    return found


def test_every_subpackage_is_declared_in_pyproject() -> None:
    assert _on_disk() == _declared()


def test_stdlib_operator_is_not_shadowed() -> None:
    assert hasattr(stdlib_operator, "itemgetter")
    assert Path(stdlib_operator.__file__).parent.name.startswith("python3")


def test_import_names_map_to_folders() -> None:
    for pkg, folder in FOLDERS.items():
        mod = importlib.import_module(pkg)
        assert Path(mod.__file__).resolve().parent == REPO / folder


def test_runtime_does_not_depend_on_operator_libraries() -> None:
    """The runtime runs inside the Triton pod: no kopf, no kubernetes client, no modeldeploy."""
    for path in (REPO / "runtime").rglob("*.py"):
        text = path.read_text()
        for line in text.splitlines():
            s = line.strip()
            if s.startswith(("import ", "from ")):
                mod = s.split()[1]
                assert mod.split(".")[0] not in {"kopf", "kubernetes", "modeldeploy"}, f"{path}: {s}"


def test_python_dash_m_from_the_repo_root_keeps_the_stdlib_operator() -> None:
    """`python -m` puts the working directory first on sys.path; from the repository root that is
    operator/. The entry points (Makefile, .ci/run, hack/setup.sh, tests) set PYTHONSAFEPATH."""
    import os
    import subprocess
    import sys

    for f in ("Makefile", ".ci/run", "hack/setup.sh", "tests/conftest.py", "hack/demo.py"):
        assert "PYTHONSAFEPATH" in (REPO / f).read_text(), f
    code = "import operator, sys; print(operator.__file__)"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONSAFEPATH"}
    unsafe = subprocess.run(
        [sys.executable, "-S", "-c", code], cwd=REPO, env=env, capture_output=True, text=True
    )
    # Without site (-S) nothing imports operator early, so the folder wins: the hazard is real.
    assert unsafe.stdout.strip() == str(REPO / "operator" / "__init__.py")
    env["PYTHONSAFEPATH"] = "1"
    safe = subprocess.run(
        [sys.executable, "-S", "-c", code], cwd=REPO, env=env, capture_output=True, text=True
    )
    assert safe.returncode == 0 and safe.stdout.strip() == stdlib_operator.__file__
