"""Helpers shared by the operator tests."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import yaml

HERE = Path(__file__).resolve().parent
CASES = HERE / "cases"
GOLDEN = HERE / "golden"

T = TypeVar("T")


def load_case(name: str) -> dict[str, Any]:
    doc = yaml.safe_load((CASES / f"{name}.yaml").read_text())
    doc["metadata"].setdefault("uid", "11111111-2222-3333-4444-555555555555")
    doc["metadata"].setdefault("generation", 1)
    return doc


def wait_for(fn: Callable[[], T | None], timeout: float, what: str, interval: float = 0.5) -> T:
    """Poll ``fn`` until it returns something truthy; fail naming ``what`` (and the last value)."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = fn()
        except Exception as exc:  # the object may not exist yet
            last = exc
        else:
            if last:
                return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}; last: {last!r}")
