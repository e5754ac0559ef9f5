"""Unit tests of the ModelDeployment pydantic models (no cluster)."""

from __future__ import annotations

import copy
from decimal import Decimal
from typing import Any

import pytest

from modeldeploy.api import v1alpha1 as api
from modeldeploy.api.v1alpha1 import ModelDeployment, ModelDeploymentSpec, SpecError

from .catalogue import example_paths, load_example, load_invalid_cases, valid_paths

INVALID = load_invalid_cases()
EXAMPLES = example_paths()


def minimal(**spec: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "apiVersion": api.API_VERSION,
        "kind": api.KIND,
        "metadata": {"name": "m"},
        "spec": {
            "models": [
                {"name": "m", "format": "onnx", "source": "s3://models/m", "versions": [{"version": 1}]}
            ]
        },
    }
    body["spec"].update(spec)
    return body


def test_contract_names() -> None:
    assert (api.GROUP, api.VERSION, api.KIND, api.PLURAL) == (
        "modeldeploy.io",
        "v1alpha1",
        "ModelDeployment",
        "modeldeployments",
    )
    assert set(api.SHORT_NAMES) == {"md", "mdep"}
    assert api.DEFAULT_RUNTIME_IMAGE.startswith("ghcr.io/modeldeploy/runtime:")
    assert api.DEFAULT_TRITON_IMAGE.startswith("nvcr.io/nvidia/tritonserver:")
    spec_keys = set(ModelDeploymentSpec.model_fields)
    assert {
        "models",
        "server",
        "resources",
        "scheduling",
        "replicas",
        "autoscaling",
        "rollout",
        "serviceAccountName",
        "podLabels",
        "podAnnotations",
        "monitoring",
        "runtime",
    } <= spec_keys


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_examples_parse(path: Any) -> None:
    body = load_example(path)
    md = ModelDeployment.from_body(body)
    assert md.name == body["metadata"]["name"]
    for m in md.spec.models:
        assert m.desired_versions(), f"{path.name}: model {m.name} serves no version"
        for v in m.desired_versions():
            assert "://" in m.version_source(v)


@pytest.mark.parametrize("path", valid_paths(), ids=[p.stem for p in valid_paths()])
def test_boundary_cases_accepted_by_pydantic(path: Any) -> None:
    body = load_example(path)
    md = ModelDeployment.from_body(body)
    assert ModelDeployment.from_body(md.to_body()).to_body() == md.to_body()


@pytest.mark.parametrize("case", INVALID, ids=[c.id for c in INVALID])
def test_invalid_rejected_by_pydantic(case: Any) -> None:
    """Every catalogue entry is also rejected by the operator's own parsing, naming the field."""
    if case.is_update:
        old = ModelDeployment.from_body(case.docs[0])
        new = ModelDeployment.from_body(case.docs[1])
        errors = api.check_update(old.spec, new.spec)
    else:
        with pytest.raises(SpecError) as exc_info:
            ModelDeployment.from_body(copy.deepcopy(case.docs[0]))
        errors = exc_info.value.errors
    assert errors, case.id
    hits = [e for e in errors if e.startswith(case.field) and case.pydantic_message in e]
    assert hits, f"{case.id}: expected an error on {case.field} with {case.pydantic_message!r}, got {errors}"


def test_error_lists_every_bad_field() -> None:
    body = minimal(replicas=-1)
    body["spec"]["models"][0]["name"] = "bad name"
    with pytest.raises(SpecError) as exc_info:
        ModelDeployment.from_body(body)
    text = str(exc_info.value)
    assert text.startswith("ModelDeployment m: ")
    assert "spec.replicas: " in text and "spec.models[0].name: " in text


def test_defaults() -> None:
    md = ModelDeployment.from_body(minimal())
    s = md.spec
    assert s.replicas == 1
    assert s.server.modelControlMode == "explicit"
    assert (s.server.ports.http, s.server.ports.grpc, s.server.ports.metrics) == (8000, 8001, 8002)
    assert s.rollout.strategy == "inPlace"
    assert s.models[0].versionPolicy.latest == 1
    assert s.models[0].maxBatchSize == 0
    assert s.monitoring.enabled is True
    assert not s.autoscaling_enabled()
    assert s.resources.gpu_resource_name() is None


def test_round_trip_is_stable() -> None:
    for path in EXAMPLES:
        body = load_example(path)
        once = ModelDeployment.from_body(body).to_body()
        twice = ModelDeployment.from_body(once).to_body()
        assert once == twice, path.name
        assert once["spec"]["models"][0]["name"] == body["spec"]["models"][0]["name"]


@pytest.mark.parametrize(
    ("versions", "policy", "expected"),
    [
        ([1, 2, 3], None, [3]),
        ([3, 1, 2], {"latest": 2}, [2, 3]),
        ([1, 2, 3], {"latest": 10}, [1, 2, 3]),
        ([1, 2, 3], {"all": True}, [1, 2, 3]),
        ([1, 2, 3], {"specific": [1, 3]}, [1, 3]),
    ],
)
def test_desired_versions(versions: list[int], policy: dict[str, Any] | None, expected: list[int]) -> None:
    model: dict[str, Any] = {
        "name": "m",
        "format": "onnx",
        "source": "s3://models/m",
        "versions": [{"version": v} for v in versions],
    }
    if policy is not None:
        model["versionPolicy"] = policy
    spec = ModelDeployment.parse_spec({"models": [model]})
    assert spec.models[0].desired_versions() == expected
    assert spec.desired_versions() == {"m": expected}


def test_version_source() -> None:
    spec = ModelDeployment.parse_spec(
        {
            "models": [
                {
                    "name": "m",
                    "format": "onnx",
                    "source": "s3://models/m/",
                    "versions": [{"version": 1}, {"version": 2, "source": "https://x.example/m2.onnx"}],
                }
            ]
        }
    )
    m = spec.model("m")
    assert m.version_source(1) == "s3://models/m/1"
    assert m.version_source(2) == "https://x.example/m2.onnx"
    with pytest.raises(KeyError):
        m.version_source(3)
    assert m.backend() == "onnxruntime"


def test_gpu_helpers() -> None:
    whole = ModelDeployment.parse_spec(minimal(resources={"gpu": 2})["spec"]).resources
    assert (whole.gpu_resource_name(), whole.gpu_count(), whole.gpu_summary()) == ("nvidia.com/gpu", 2, "2")
    mig = ModelDeployment.parse_spec(
        minimal(resources={"mig": {"profile": "1g.10gb", "count": 2}})["spec"]
    ).resources
    assert mig.gpu_resource_name() == "nvidia.com/mig-1g.10gb"
    assert mig.gpu_count() == 2 and mig.uses_gpu()


def test_effective_images(monkeypatch: pytest.MonkeyPatch) -> None:
    spec = ModelDeployment.parse_spec(minimal()["spec"])
    monkeypatch.delenv(api.TRITON_IMAGE_ENV, raising=False)
    monkeypatch.delenv(api.RUNTIME_IMAGE_ENV, raising=False)
    assert spec.server.effective_image() == api.DEFAULT_TRITON_IMAGE
    assert spec.runtime.effective_image() == api.DEFAULT_RUNTIME_IMAGE
    monkeypatch.setenv(api.TRITON_IMAGE_ENV, "registry.local/triton:1")
    monkeypatch.setenv(api.RUNTIME_IMAGE_ENV, "registry.local/runtime:1")
    assert spec.server.effective_image() == "registry.local/triton:1"
    assert spec.runtime.effective_image() == "registry.local/runtime:1"
    pinned = ModelDeployment.parse_spec(minimal(server={"image": "mine:2"})["spec"])
    assert pinned.server.effective_image() == "mine:2"


@pytest.mark.parametrize(
    ("q", "value"),
    [
        (2, Decimal(2)),
        ("500m", Decimal("0.5")),
        ("1Gi", Decimal(2**30)),
        ("1.5k", Decimal(1500)),
        ("1e3", Decimal(1000)),
        (0.5, Decimal("0.5")),
        (0.1, Decimal("0.1")),
        (1.5e9, Decimal(1500000000)),
    ],
)
def test_parse_quantity(q: int | float | str, value: Decimal) -> None:
    assert api.parse_quantity(q) == value


def test_quantities_keep_their_type() -> None:
    res = {"requests": {"cpu": 0.5, "memory": 1073741824}, "limits": {"cpu": 2, "memory": "1Gi"}}
    spec = ModelDeployment.parse_spec(minimal(resources=res)["spec"])
    dumped = api.dump(spec)
    assert dumped["resources"]["requests"] == {"cpu": 0.5, "memory": 1073741824}
    assert dumped["resources"]["limits"] == {"cpu": 2, "memory": "1Gi"}


@pytest.mark.parametrize("q", [0.5, 1073741824, "500m", 0, 0.0, "+1", "1e-3", ".5", "8Gi", 1e20])
def test_plain_numbers_and_strings_are_quantities(q: Any) -> None:
    """As in Pod specs: a fraction, an integer, a string; so does the CRD (tests/api/test_api_cluster.py)."""
    spec = ModelDeployment.parse_spec(
        minimal(resources={"requests": {"cpu": q}}, server={"sharedMemorySize": q})["spec"]
    )
    assert spec.resources.requests is not None and spec.resources.requests.cpu == q
    assert spec.server.sharedMemorySize == q


@pytest.mark.parametrize(
    "q",
    [
        -1,
        -0.5,
        "-1",
        "-0",
        "abc",
        "",
        "1Gi\n",
        "1 Gi",
        True,
        False,
        {},
        {"a": 1},
        [],
        [1],
        float("inf"),
        "9" * 65,
    ],
)
def test_not_quantities(q: Any) -> None:
    """Negative numbers and strings, malformed strings and other JSON types are refused."""
    with pytest.raises(SpecError) as exc_info:
        ModelDeployment.from_body(minimal(resources={"limits": {"memory": q}}))
    assert any(
        e.startswith("spec.resources.limits.memory: must be a non-negative quantity")
        for e in exc_info.value.errors
    )


@pytest.mark.parametrize(
    ("q", "text"),
    [(0.5, "0.5"), (1073741824, "1073741824"), ("500m", "500m"), (1e-07, "1e-07"), (-0.0, "0.0")],
)
def test_quantity_string(q: Any, text: str) -> None:
    """What a rendered Pod spec carries; parse_quantity reads back the same amount."""
    assert api.quantity_string(q) == text
    assert api.parse_quantity(text) == api.parse_quantity(q)


@pytest.mark.parametrize(
    ("spec", "field", "message"),
    [
        (
            {"resources": {"requests": {"cpu": 2}, "limits": {"cpu": 0.5}}},
            "spec.resources.requests.cpu",
            "requests.cpu must be less than or equal to limits.cpu",
        ),
        (
            {"runtime": {"resources": {"requests": {"memory": "2Gi"}, "limits": {"memory": 1073741824}}}},
            "spec.runtime.resources.requests.memory",
            "requests.memory must be less than or equal to limits.memory",
        ),
        (
            {"autoscaling": {"mode": "hpa", "maxReplicas": 3, "metric": {"type": "cpu", "target": 80}}},
            "spec.resources.requests.cpu",
            "autoscaling on cpu needs resources.requests.cpu",
        ),
    ],
)
def test_rules_on_plain_number_quantities_are_operator_rules(
    spec: dict[str, Any], field: str, message: str
) -> None:
    """CEL cannot read a number-or-string quantity, so the API server admits these specs and so does
    the parser (parity); the operator's check names the field (render: RenderError -> InvalidSpec)."""
    from modeldeploy.render import RenderError, render_children

    md = ModelDeployment.from_body(minimal(**spec))
    assert api.operator_rule_errors(md.spec) == [(field, message)]
    with pytest.raises(RenderError) as exc_info:
        render_children(md)
    assert exc_info.value.field == field and message in str(exc_info.value)


def test_operator_rules_pass_on_equal_amounts_in_other_units() -> None:
    res = {"requests": {"cpu": 0.5, "memory": 1073741824}, "limits": {"cpu": "500m", "memory": "1Gi"}}
    md = ModelDeployment.from_body(minimal(resources=res))
    assert api.operator_rule_errors(md.spec) == []


def test_status_shape() -> None:
    status = api.ModelDeploymentStatus(
        observedGeneration=3,
        conditions=[
            api.Condition(
                type="Ready", status="True", lastTransitionTime="2026-01-01T00:00:00Z", reason="AllReady"
            )
        ],
        replicas=2,
        readyReplicas=2,
        selector="app.kubernetes.io/instance=m",
        endpoints=api.Endpoints(http="http://m.ns.svc:8000", grpc="m.ns.svc:8001"),
        models=[api.ModelStatus(name="m", versions=[api.VersionStatus(version=1, state="Ready")])],
        versionsReady="1/1",
        replicasSummary="2/2",
    )
    d = api.dump(status)
    assert d["conditions"][0] == {
        "type": "Ready",
        "status": "True",
        "lastTransitionTime": "2026-01-01T00:00:00Z",
        "reason": "AllReady",
        "message": "",
    }
    assert "observedGeneration" not in d["conditions"][0]
    assert d["models"] == [
        {"name": "m", "versions": [{"version": 1, "state": "Ready", "reason": "", "message": ""}]}
    ]
    assert status.condition("Ready") is not None and status.condition("Degraded") is None
    with pytest.raises(ValueError):
        api.VersionStatus(version=1, state="Serving")  # type: ignore[arg-type]


def test_from_body_drops_unparsable_status() -> None:
    body = minimal()
    body["status"] = {"models": [{"name": "m", "versions": [{"version": 1, "state": "Bogus"}]}]}
    assert ModelDeployment.from_body(body).status is None
    body["status"] = {"observedGeneration": 2, "replicas": 1}
    md = ModelDeployment.from_body(body)
    assert md.status is not None and md.status.observedGeneration == 2
