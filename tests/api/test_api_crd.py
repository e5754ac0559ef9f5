"""Unit tests of the generated CRD (no cluster): staleness, structural-schema rules, CEL budget
hygiene, defaults equal to pydantic's."""

from __future__ import annotations

import copy
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from modeldeploy.api import crd as crdgen
from modeldeploy.api import v1alpha1 as api

from .catalogue import REPO, example_paths, load_example, valid_paths

CRD_FILE = REPO / "crds" / crdgen.CRD_FILENAME


@pytest.fixture(scope="module")
def crd() -> dict[str, Any]:
    return crdgen.build_crd()


@pytest.fixture(scope="module")
def schema(crd: dict[str, Any]) -> dict[str, Any]:
    return crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]


def test_checked_in_crd_is_up_to_date() -> None:
    assert CRD_FILE.exists(), "run `mdctl crd --write`"
    assert CRD_FILE.read_text() == crdgen.render_crd(), "crds/ is stale: run `mdctl crd --write`"


def test_mdctl_crd_check(tmp_path: Path) -> None:
    def mdctl(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-c", "import sys; from modeldeploy.cli import main; sys.exit(main())", *args],
            capture_output=True,
            text=True,
            cwd=tmp_path,
            timeout=60,
        )

    out = mdctl("crd")
    assert out.returncode == 0, out.stderr
    assert yaml.safe_load(out.stdout)["metadata"]["name"] == api.CRD_NAME
    target = tmp_path / "crd.yaml"
    assert mdctl("crd", "--check", "--path", str(target)).returncode == 1  # missing
    assert mdctl("crd", "--write", "--path", str(target)).returncode == 0
    assert mdctl("crd", "--check", "--path", str(target)).returncode == 0
    target.write_text(target.read_text().replace("maxReplicas", "maxReplica"))
    stale = mdctl("crd", "--check", "--path", str(target))
    assert stale.returncode == 1 and "-" in stale.stdout and "stale" in stale.stderr


def test_names_and_subresources(crd: dict[str, Any]) -> None:
    spec = crd["spec"]
    assert crd["metadata"]["name"] == "modeldeployments.modeldeploy.io"
    assert spec["names"]["shortNames"] == ["md", "mdep"]
    assert spec["names"]["kind"] == "ModelDeployment" and spec["names"]["plural"] == "modeldeployments"
    version = spec["versions"][0]
    assert version["name"] == "v1alpha1" and version["served"] and version["storage"]
    assert version["subresources"]["status"] == {}
    assert version["subresources"]["scale"] == {
        "specReplicasPath": ".spec.replicas",
        "statusReplicasPath": ".status.replicas",
        "labelSelectorPath": ".status.selector",
    }
    names = [c["name"] for c in version["additionalPrinterColumns"]]
    assert names[:5] == ["Ready", "Versions", "Replicas", "GPUs", "Age"]
    wide = {c["name"] for c in version["additionalPrinterColumns"] if c.get("priority") == 1}
    assert "URL" in wide


def _resolve(schema: dict[str, Any], json_path: str) -> dict[str, Any] | None:
    node: dict[str, Any] | None = schema
    for part in re.sub(r"\[[^\]]*\]", "", json_path).lstrip(".").split("."):
        if node is None:
            return None
        if node.get("type") == "array":
            node = node["items"]
        node = (node.get("properties") or {}).get(part)
    return node


def test_printer_columns_point_at_fields(crd: dict[str, Any], schema: dict[str, Any]) -> None:
    for col in crd["spec"]["versions"][0]["additionalPrinterColumns"]:
        if col["jsonPath"].startswith(".metadata"):
            continue
        node = _resolve(schema, col["jsonPath"])
        assert node is not None, f"printer column {col['name']}: {col['jsonPath']} is not in the schema"


FORBIDDEN = {"$ref", "$defs", "anyOf", "allOf", "oneOf", "title", "const", "nullable", api.UNTYPED_SCALAR}
#: The one untyped node shape: a number-or-string quantity (api.Quantity), each value validation
#: applying to one JSON type, objects and lists refused by contradictory counts, booleans by not-enum.
UNTYPED_QUANTITY_KEYS = {
    "description",
    "default",
    "x-kubernetes-preserve-unknown-fields",
    "pattern",
    "maxLength",
    "minimum",
    "minProperties",
    "maxProperties",
    "minItems",
    "maxItems",
    "not",
}


def _untyped_quantity_problem(node: dict[str, Any]) -> str | None:
    if set(node) - UNTYPED_QUANTITY_KEYS:
        return f"unexpected keys {sorted(set(node) - UNTYPED_QUANTITY_KEYS)} (CEL cannot compile on an untyped node)"
    expected = {
        "x-kubernetes-preserve-unknown-fields": True,
        "pattern": api.UNSIGNED_QUANTITY_PATTERN,
        "minimum": 0,
        "minProperties": 1,
        "maxProperties": 0,
        "minItems": 1,
        "maxItems": 0,
        "not": {"enum": [True, False]},
    }
    wrong = [k for k, v in expected.items() if node.get(k) != v]
    return f"an untyped node that is not a quantity: {wrong}" if wrong else None


def test_schema_is_structural_and_cel_friendly(schema: dict[str, Any]) -> None:
    text = json.dumps(schema)
    for key in FORBIDDEN:
        assert f'"{key}"' not in text, f"{key} must not appear in a structural schema"
    problems = []
    untyped = 0
    for path, node in crdgen.iter_schema_nodes(schema["properties"]["spec"], "spec"):
        t = node.get("type")
        if t is None and not node.get("x-kubernetes-int-or-string"):
            problem = _untyped_quantity_problem(node)
            untyped += 1
            if problem:
                problems.append(f"{path}: no type: {problem}")
        if "not" in node and t is not None:
            problems.append(f"{path}: 'not' outside an untyped quantity")
        if t == "string" and "maxLength" not in node and "enum" not in node:
            problems.append(f"{path}: string without maxLength (CEL cost)")
        if t == "array" and "maxItems" not in node:
            problems.append(f"{path}: array without maxItems")
        if t == "array" and node["items"].get("type") == "object" and "x-kubernetes-list-type" not in node:
            problems.append(f"{path}: list of objects without x-kubernetes-list-type")
        if t == "object" and "additionalProperties" in node and "maxProperties" not in node:
            problems.append(f"{path}: map without maxProperties")
        if path != "spec" and "description" not in node and not path.endswith(("[*]", ".*")):
            problems.append(f"{path}: no description (kubectl explain)")
    assert not problems, "\n".join(problems)
    # cpu/memory of requests/limits (Triton and agent), sharedMemorySize, modelRepositorySizeLimit, weightsSize
    assert untyped == 11, untyped


def test_every_rule_is_in_the_crd(schema: dict[str, Any]) -> None:
    rules_in_crd = set()
    for _, node in crdgen.iter_schema_nodes(schema):
        for r in node.get("x-kubernetes-validations", []):
            assert r.get("message"), r
            rules_in_crd.add(r["rule"])
    registry = crdgen._model_registry(api.ModelDeploymentSpec, api.ModelDeploymentStatus)
    expected = {r.cel for cls in registry.values() for r in getattr(cls, "__rules__", ()) if r.cel}
    assert expected <= rules_in_crd, expected - rules_in_crd
    assert "self == oldSelf" in rules_in_crd
    models = schema["properties"]["spec"]["properties"]["models"]
    assert models["x-kubernetes-list-type"] == "map" and models["x-kubernetes-list-map-keys"] == ["name"]
    fmt = models["items"]["properties"]["format"]
    assert fmt["enum"] == ["pytorch", "onnx", "python", "tensorrt", "transformers", "vllm", "tensorrtllm"]


def _apply_defaults(node: dict[str, Any], value: Any) -> Any:
    """Structural defaulting as the API server does it (defaults of absent properties, recursively)."""
    if isinstance(value, dict) and node.get("type") == "object":
        out = dict(value)
        for name, sub in (node.get("properties") or {}).items():
            if name not in out and "default" in sub:
                out[name] = copy.deepcopy(sub["default"])
            if name in out:
                out[name] = _apply_defaults(sub, out[name])
        if isinstance(node.get("additionalProperties"), dict):
            out = {k: _apply_defaults(node["additionalProperties"], v) for k, v in out.items()}
        return out
    if isinstance(value, list) and node.get("type") == "array":
        return [_apply_defaults(node["items"], v) for v in value]
    return value


@pytest.mark.parametrize(
    "path", example_paths() + valid_paths(), ids=[p.stem for p in example_paths() + valid_paths()]
)
def test_crd_defaults_equal_pydantic_defaults(schema: dict[str, Any], path: Path) -> None:
    body = load_example(path)
    by_crd = _apply_defaults(schema["properties"]["spec"], body["spec"])
    by_pydantic = api.ModelDeployment.from_body(body).to_body()["spec"]
    assert by_crd == by_pydantic


def test_unsupported_union_is_reported() -> None:
    from pydantic import BaseModel

    class Bad(BaseModel):
        x: int | list[int]

    with pytest.raises(crdgen.SchemaError, match="unions"):
        crdgen.structural_schema(Bad)
