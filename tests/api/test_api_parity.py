"""The operator's parser agrees with the API server (issue #11, item 5): generated ModelDeployments,
each judged by the real API server (server-side dry run, strict field validation, as ``kubectl
apply`` does) and by :meth:`ModelDeployment.from_body`; every verdict must be the same.

Inputs are mutations of the examples and of the tests/api valid/invalid catalogue: one field is
replaced by a value that hypothesis-jsonschema draws from the CRD's own schema for that field, or by
a near miss the two parsers are tempted to treat differently (a quoted number or boolean, a trailing
newline, a fractional or negative number, a duplicated list item, an unknown key, a null, a list or
an object where a scalar belongs).
"""

from __future__ import annotations

import copy
import json
import re
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis_jsonschema import from_schema

from modeldeploy.api import v1alpha1 as api
from modeldeploy.api.crd import build_crd

from .catalogue import example_paths, load_example, load_invalid_cases, valid_paths

pytestmark = [pytest.mark.integration, pytest.mark.cluster, pytest.mark.slow]

#: Bounded so that the test takes a couple of minutes on a loaded 2-core machine.
MAX_EXAMPLES = 250
SPEC_SCHEMA: dict[str, Any] = build_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"][
    "spec"
]
BASES: list[dict[str, Any]] = [load_example(p) for p in example_paths() + valid_paths()] + [
    c.docs[0] for c in load_invalid_cases() if not c.is_update
]


# ------------------------------------------------------------------------- the CRD schema as JSON schema
def json_schema(node: dict[str, Any]) -> dict[str, Any]:
    """A CRD schema node as plain JSON schema for hypothesis-jsonschema (CEL rules left to the
    API server: most draws then still reach them through the mutated base documents)."""
    out: dict[str, Any] = {}
    for k, v in node.items():
        if k in ("properties",):
            out[k] = {name: json_schema(sub) for name, sub in v.items()}
        elif k == "items" or k == "additionalProperties":
            out[k] = json_schema(v)
        elif k in ("type", "enum", "minimum", "maximum", "minLength", "maxLength", "minItems", "maxItems",
                   "maxProperties", "required", "pattern"):  # fmt: skip
            out[k] = v
    if node.get("x-kubernetes-int-or-string"):
        ints = {k: out.pop(k) for k in ("minimum", "maximum") if k in out}
        strs = {k: out.pop(k) for k in ("pattern", "maxLength") if k in out}
        out["anyOf"] = [{"type": "integer", **ints}, {"type": "string", **strs}]
    elif "type" not in node and node.get("x-kubernetes-preserve-unknown-fields"):
        # An untyped number-or-string quantity: numbers (fractions too) and quantity strings.
        nums = {k: out.pop(k) for k in ("minimum", "maximum") if k in out}
        strs = {k: out.pop(k) for k in ("pattern", "maxLength") if k in out}
        out = {"anyOf": [{"type": "number", **nums}, {"type": "string", **strs}]}
    if out.get("type") == "object" and "properties" in out:
        out["additionalProperties"] = False
    return out


def strategy(node: dict[str, Any]) -> st.SearchStrategy[Any]:
    """Values the CRD schema ``node`` admits structurally. Objects and lists are built here (the
    object strategy of hypothesis-jsonschema 0.23 does not run on this hypothesis); leaves (strings
    with their patterns and lengths, bounded numbers, enums, int-or-string) come from
    hypothesis-jsonschema."""
    t = node.get("type")
    if t == "object" and "properties" in node:
        props = {k: strategy(v) for k, v in node["properties"].items()}
        required = set(node.get("required") or [])
        return st.fixed_dictionaries(
            {k: v for k, v in props.items() if k in required},
            optional={k: v for k, v in props.items() if k not in required},
        )
    if t == "object" and isinstance(node.get("additionalProperties"), dict):
        keys = st.from_regex(r"[a-z][-a-z0-9./]{0,20}", fullmatch=True)
        return st.dictionaries(keys, strategy(node["additionalProperties"]), max_size=3)
    if t == "object":
        return st.just({})
    if t == "array":
        hi = min(node.get("maxItems", 3), 3)
        return st.lists(strategy(node["items"]), min_size=min(node.get("minItems", 0), hi), max_size=hi)
    return from_schema(json_schema(node))


def sub_schema(path: list[str | int]) -> dict[str, Any] | None:
    node: dict[str, Any] | None = SPEC_SCHEMA
    for part in path:
        if node is None:
            return None
        if isinstance(part, int):
            node = node.get("items")
        elif "properties" in node:
            node = node["properties"].get(part)
        else:
            node = node.get("additionalProperties")
    return node


def paths(v: Any, prefix: list[str | int]) -> Iterator[list[str | int]]:
    yield prefix
    if isinstance(v, dict):
        for k, x in v.items():
            yield from paths(x, [*prefix, k])
    elif isinstance(v, list):
        for i, x in enumerate(v):
            yield from paths(x, [*prefix, i])


def near_misses(value: Any) -> list[Any]:
    """Values a lax parser would coerce, or an RE2/Python regex difference would split."""
    out: list[Any] = [None, True, "true", 1.5, -1, 0.25, [], {}]
    if isinstance(value, bool):
        out += [str(value).lower(), int(value)]
    elif isinstance(value, int):
        out += [str(value), float(value), value + 0.5, -value, value * 1000]
    elif isinstance(value, str):
        out += [value + "\n", " " + value, value.upper(), "", value + "\u00a0", value * 9]
        if re.fullmatch(r"[0-9]+", value):
            out.append(int(value))
    elif isinstance(value, list) and value:
        out += [[*value, value[0]], [], value[:1] * 2]
    elif isinstance(value, dict):
        out += [{**value, "unknownField": 1}, {}]
    return out


@st.composite
def mutated(draw: st.DrawFn) -> dict[str, Any]:
    doc = copy.deepcopy(draw(st.sampled_from(BASES)))
    spec = doc["spec"]
    for _ in range(draw(st.integers(0, 2))):  # 0: the base document as it is
        path = draw(st.sampled_from([p for p in paths(spec, []) if p]))
        parent: Any = spec
        for part in path[:-1]:
            parent = parent[part]
        old = parent[path[-1]]
        schema = sub_schema(path)
        choices = [st.sampled_from(near_misses(old))]
        if schema is not None:
            choices.append(strategy(schema))
        parent[path[-1]] = draw(st.one_of(*choices))
    return doc


# ------------------------------------------------------------------------------------------- judges
@pytest.fixture(scope="module")
def judge(cluster: Any, crd_installed: str, api_ns: str) -> Any:
    from kubernetes import client

    objects = client.CustomObjectsApi(cluster.api_client())

    def server_verdict(doc: dict[str, Any]) -> tuple[bool, str]:
        body = {**doc, "metadata": {"name": doc["metadata"].get("name", "x")}}
        for attempt in range(5):
            try:
                objects.create_namespaced_custom_object(
                    api.GROUP, api.VERSION, api_ns, api.PLURAL, body, dry_run="All", field_validation="Strict"
                )
            except client.ApiException as exc:
                if exc.status in (400, 422):
                    return False, json.loads(exc.body or "{}").get("message", str(exc))
                if exc.status in (429, 500, 503, 504) and attempt < 4:
                    time.sleep(1 + attempt)  # the API server is overloaded: ask again
                    continue
                raise
            return True, ""
        raise AssertionError("unreachable")

    return server_verdict


def as_kubectl_sends(v: Any) -> Any:
    """The document as ``kubectl apply`` sends it: its YAML-to-JSON step writes an integral number
    (``2.0``) as ``2``. (Sent raw, ``2.0`` is accepted by the API server's schema but breaks its CEL
    rules with "expected int, got float64"; the parser sees it as 2 either way.)"""
    if isinstance(v, dict):
        return {k: as_kubectl_sends(x) for k, x in v.items()}
    if isinstance(v, list):
        return [as_kubectl_sends(x) for x in v]
    if isinstance(v, float) and v.is_integer():
        return int(v)
    return v


def parser_verdict(doc: dict[str, Any]) -> tuple[bool, str]:
    try:
        api.ModelDeployment.from_body(copy.deepcopy(doc))
    except api.SpecError as exc:
        return False, "; ".join(exc.errors)
    return True, ""


def test_parser_and_api_server_agree(judge: Any) -> None:
    seen = {"accepted": 0, "rejected": 0}

    @settings(
        max_examples=MAX_EXAMPLES,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
    )
    @given(mutated())
    def agree(doc: dict[str, Any]) -> None:
        doc = as_kubectl_sends({**doc, "metadata": {"name": f"p-{uuid.uuid4().hex[:8]}"}})
        server_ok, server_msg = judge(doc)
        parser_ok, parser_msg = parser_verdict(doc)
        seen["accepted" if server_ok else "rejected"] += 1
        assert server_ok == parser_ok, (
            f"API server {'accepts' if server_ok else 'rejects'}, parser {'accepts' if parser_ok else 'rejects'}:\n"
            f"spec: {json.dumps(doc['spec'])}\nserver: {server_msg}\nparser: {parser_msg}"
        )

    agree()
    print(f"parity: {seen['accepted']} accepted and {seen['rejected']} rejected by both")
    assert seen["accepted"] >= 10 and seen["rejected"] >= 10, f"too one-sided to prove anything: {seen}"


#: Where number-or-string quantities sit (api.Quantity: untyped in the CRD).
QUANTITY_PATHS: list[list[str | int]] = [
    ["resources", "requests", "cpu"],
    ["resources", "limits", "memory"],
    ["runtime", "resources", "requests", "memory"],
    ["server", "sharedMemorySize"],
    ["server", "modelRepositorySizeLimit"],
]
QUANTITY_VALUES = st.one_of(
    strategy(sub_schema(QUANTITY_PATHS[0]) or {}),
    st.floats(min_value=-1e12, max_value=1e12, allow_nan=False, allow_infinity=False),
    st.integers(min_value=-(2**62), max_value=2**62),
    st.from_regex(r"[-+]?[0-9.]{0,4}([eE][-+]?[0-9]{0,2})?(Ki|Mi|Gi|m|k|M|G|u|n|E|i)?\n?", fullmatch=True),
    st.text(max_size=6),
    st.booleans(),
    st.none(),
    st.lists(st.integers(0, 3), max_size=2),
    st.dictionaries(st.sampled_from(["a", "cpu"]), st.integers(0, 3), max_size=1),
)


def test_quantity_verdicts_agree(judge: Any) -> None:
    """Plain numbers (fractions too), quantity strings and everything else at the quantity fields:
    the API server's verdict on the untyped schema node and the parser's are the same."""
    seen = {"accepted": 0, "rejected": 0}
    base = load_example(valid_paths()[0])

    @settings(max_examples=120, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
    @given(st.sampled_from(QUANTITY_PATHS), QUANTITY_VALUES)
    def agree(path: list[str | int], value: Any) -> None:
        doc = copy.deepcopy(base)
        node: Any = doc["spec"]
        for part in path[:-1]:
            node = node.setdefault(part, {})
        node[path[-1]] = value
        doc = as_kubectl_sends({**doc, "metadata": {"name": f"q-{uuid.uuid4().hex[:8]}"}})
        server_ok, server_msg = judge(doc)
        parser_ok, parser_msg = parser_verdict(doc)
        seen["accepted" if server_ok else "rejected"] += 1
        assert server_ok == parser_ok, f"{path} = {value!r}: server {server_msg!r}, parser {parser_msg!r}"

    agree()
    print(f"quantity parity: {seen['accepted']} accepted and {seen['rejected']} rejected by both")
    assert seen["accepted"] >= 10 and seen["rejected"] >= 10, seen
