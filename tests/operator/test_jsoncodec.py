"""The operator's JSON codec (pydantic-core, with the standard module behind it) reads and writes
what :mod:`json` does for API objects."""

from __future__ import annotations

import json
from typing import Any

import pytest
from opsupport import small_md

from modeldeploy.api.v1alpha1 import ModelDeployment
from modeldeploy.reconcile import jsoncodec
from modeldeploy.render import render_children

CASES: list[Any] = [
    {"s": 'é ✓ "q" \\ \n\t\u0001', "i": -(2**63), "big": 10**30, "f": 1.5e300, "g": 0.1, "e": -0.0},
    {"nested": [[], {}, [None, True, False]], "": ""},
    ["top", "level", 1],
]


@pytest.mark.parametrize("value", CASES)
def test_decoding_and_encoding_agree_with_the_json_module(value: Any) -> None:
    text = json.dumps(value)
    assert jsoncodec.loads(text) == json.loads(text)
    assert jsoncodec.loads(text.encode()) == json.loads(text)
    assert json.loads(jsoncodec.dumps(value)) == value
    assert jsoncodec.loads(jsoncodec.dumps(value)) == value


def test_rendered_children_round_trip() -> None:
    children = render_children(ModelDeployment.from_body(small_md("ns", "codec"))).values()
    assert children
    for child in filter(None, children):
        assert jsoncodec.loads(jsoncodec.dumps(child)) == child
        assert jsoncodec.loads(json.dumps(child)) == json.loads(json.dumps(child))


def test_what_pydantic_core_refuses_is_read_as_json_reads_it() -> None:
    text = '{"a": "\\ud800"}'  # a lone surrogate escape: json accepts it, pydantic-core does not
    assert jsoncodec.loads(text) == json.loads(text) == {"a": "\ud800"}
    with pytest.raises(ValueError):
        jsoncodec.loads(b'{"a": ')
