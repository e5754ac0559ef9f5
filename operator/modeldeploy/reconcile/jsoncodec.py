"""JSON of API objects on the operator's hot paths: watch events, the stores' entries and our
writes' answers. Decoding was the largest share of the operator's CPU in a burst (a quarter of it
at N = 300); pydantic-core's parser (Rust, installed with pydantic) takes two thirds of the time
of :func:`json.loads` for a Deployment, and its encoder under a third of :func:`json.dumps`'s.
Both give and take what the standard module does for JSON: what pydantic-core refuses (a lone
surrogate escape, which :mod:`json` accepts; a value that is not JSON) goes to :mod:`json`."""

from __future__ import annotations

import json
from typing import Any

import pydantic_core


def loads(data: bytes | str) -> Any:
    try:
        return pydantic_core.from_json(data, cache_strings="keys")
    except ValueError:
        return json.loads(data)


def dumps(obj: Any) -> bytes:
    """Compact JSON (UTF-8; :func:`loads` of it equals ``obj``)."""
    try:
        return pydantic_core.to_json(obj)
    except (ValueError, TypeError):
        return json.dumps(obj, separators=(",", ":")).encode()
