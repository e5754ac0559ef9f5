"""The developer tooling agrees with itself: pre-commit runs exactly `make lint`'s commands."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]


def _make_recipe(target: str) -> list[str]:
    lines = (REPO / "Makefile").read_text().splitlines()
    start = lines.index(f"{target}:")
    recipe = []
    for line in lines[start + 1 :]:
        if not line.startswith("\t"):
            break
        recipe.append(line.strip())
    return recipe


def test_pre_commit_runs_make_lint() -> None:
    cfg = yaml.safe_load((REPO / ".pre-commit-config.yaml").read_text())
    entries = [h["entry"] for repo in cfg["repos"] for h in repo["hooks"]]
    assert entries == _make_recipe("lint")
    for repo in cfg["repos"]:
        for hook in repo["hooks"]:
            assert hook["pass_filenames"] is False, f"{hook['id']} must check the whole tree like make lint"


def test_mypy_is_strict_over_both_packages() -> None:
    text = (REPO / "pyproject.toml").read_text()
    mypy = text[text.index("[tool.mypy]") :]
    assert re.search(r"^strict = true$", mypy, re.M)
    assert 'packages = ["modeldeploy", "modeldeploy_runtime"]' in mypy
    # ignore_missing_imports only in overrides naming untyped libraries, never globally
    head = mypy[: mypy.index("[[tool.mypy.overrides]]")]
    assert "ignore_missing_imports" not in head
