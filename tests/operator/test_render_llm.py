"""Issue #13: what LLM deployments render beyond the goldens (OpenAI endpoint container, named
Service port, status endpoint, start-up budget scaled to the weights, tensor parallelism)."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from opsupport import load_case

from modeldeploy.api.v1alpha1 import OPENAI_PORT, ModelDeployment, SpecError
from modeldeploy.render.deployment import OPENAI_CONTAINER, render_deployment
from modeldeploy.render.manifest import build_manifest
from modeldeploy.render.service import endpoints, render_service


def md_of(case: str, **spec_changes: Any) -> ModelDeployment:
    body = load_case(case)
    body["spec"].update(copy.deepcopy(spec_changes))
    return ModelDeployment.from_body(body)


def _containers(md: ModelDeployment) -> dict[str, dict[str, Any]]:
    return {c["name"]: c for c in render_deployment(md)["spec"]["template"]["spec"]["containers"]}


@pytest.mark.parametrize("case", ["llm-vllm-tp1", "llm-tensorrtllm", "llm-transformers"])
def test_llm_pods_run_the_openai_endpoint_on_a_named_port(case: str) -> None:
    md = md_of(case)
    c = _containers(md)[OPENAI_CONTAINER]
    grpc = md.spec.server.ports.grpc
    assert c["args"][:5] == ["openai", "--repository", "/models", "--triton-grpc", f"127.0.0.1:{grpc}"]
    assert c["ports"] == [{"name": "openai", "containerPort": OPENAI_PORT, "protocol": "TCP"}]
    assert {"name": "model-repository", "mountPath": "/models", "readOnly": True} in c["volumeMounts"]
    svc_ports = {p["name"]: p for p in render_service(md)["spec"]["ports"]}
    assert svc_ports["openai"]["targetPort"] == "openai" and svc_ports["openai"]["port"] == OPENAI_PORT
    assert endpoints(md)["openai"] == f"http://{md.name}.{md.namespace}.svc:{OPENAI_PORT}/v1"


def test_non_llm_pods_have_no_openai_endpoint() -> None:
    md = md_of("gpu")
    assert OPENAI_CONTAINER not in _containers(md)
    assert "openai" not in {p["name"] for p in render_service(md)["spec"]["ports"]}
    assert "openai" not in endpoints(md)


def test_startup_budget_grows_with_the_weights() -> None:
    small = md_of("llm-vllm-tp1")  # 16Gi
    big = md_of("llm-vllm-tp2")  # 140Gi
    probe = {m.name: _containers(m)["triton"]["startupProbe"] for m in (small, big)}
    budget = {k: p["failureThreshold"] * p["periodSeconds"] for k, p in probe.items()}
    assert budget["llama"] >= 600 + 140 * 2**30 / 100e6 - 10
    none = md_of("llm-vllm-tp1", models=[{**load_case("llm-vllm-tp1")["spec"]["models"][0], "llm": {}}])
    p = _containers(none)["triton"]["startupProbe"]
    assert p["failureThreshold"] * p["periodSeconds"] == 600
    assert small.spec.startup_budget_seconds() < big.spec.startup_budget_seconds()
    assert render_deployment(big)["spec"]["progressDeadlineSeconds"] >= big.spec.startup_budget_seconds()


@pytest.mark.parametrize(("case", "tp"), [("llm-vllm-tp1", 1), ("llm-vllm-tp2", 2), ("llm-vllm-tp8", 8)])
def test_tensor_parallel_size_defaults_to_the_gpu_count(case: str, tp: int) -> None:
    (model,) = build_manifest(md_of(case)).models
    assert model.llm is not None and model.llm.tensorParallelSize == tp


def test_openai_port_collision_is_refused() -> None:
    with pytest.raises(SpecError, match="must not use 9000"):
        md_of("llm-transformers", server={"ports": {"http": 9000}})


def test_servicemonitor_scrapes_the_openai_endpoint_of_llm_pods() -> None:
    from modeldeploy.render import RenderOptions
    from modeldeploy.render.common import SERVICEMONITOR_CRD
    from modeldeploy.render.servicemonitor import render_servicemonitor

    opts = RenderOptions(crds=frozenset({SERVICEMONITOR_CRD}))
    llm = render_servicemonitor(md_of("llm-transformers"), opts)
    plain = render_servicemonitor(md_of("gpu"), opts)
    assert llm is not None and plain is not None
    assert [e["port"] for e in llm["spec"]["endpoints"]] == ["metrics", "openai"]
    assert [e["port"] for e in plain["spec"]["endpoints"]] == ["metrics"]


def _images(md: ModelDeployment) -> dict[str, str]:
    pod = render_deployment(md)["spec"]["template"]["spec"]
    return {
        c["name"]: c["image"] for c in [*pod["initContainers"], *pod["containers"]] if c["name"] != "triton"
    }


@pytest.mark.parametrize("case", ["llm-vllm-tp1", "llm-tensorrtllm", "llm-transformers"])
def test_llm_pods_get_the_runtime_llm_image_unless_one_is_set(
    case: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from modeldeploy.api.v1alpha1 import DEFAULT_RUNTIME_IMAGE, DEFAULT_RUNTIME_LLM_IMAGE
    from modeldeploy.render.prefetch import render_prefetch_job

    monkeypatch.delenv("MODELDEPLOY_RUNTIME_LLM_IMAGE", raising=False)
    monkeypatch.setenv("MODELDEPLOY_RUNTIME_IMAGE", "registry.local/runtime:1")  # not for LLM pods
    md = md_of(case)
    assert md.spec.runtime.image is None
    images = _images(md)
    assert set(images) == {"fetch-models", "agent", OPENAI_CONTAINER}
    assert set(images.values()) == {DEFAULT_RUNTIME_LLM_IMAGE} != {DEFAULT_RUNTIME_IMAGE}
    # the operator's MODELDEPLOY_RUNTIME_LLM_IMAGE (the chart's defaultImages.runtimeLLM) wins
    monkeypatch.setenv("MODELDEPLOY_RUNTIME_LLM_IMAGE", "registry.local/runtime-llm:2")
    assert set(_images(md).values()) == {"registry.local/runtime-llm:2"}
    # so does the prefetch Job of an LLM deployment (same image as the pods' agent)
    body = load_case(case)
    body["metadata"]["uid"] = "u-1"
    body["spec"]["cache"] = {"claimName": "model-cache"}
    for m in body["spec"]["models"]:
        m["versions"] = [{"version": 1, "sha256": "a" * 64}]
    job = render_prefetch_job(ModelDeployment.from_body(body))
    assert job is not None
    assert job["spec"]["template"]["spec"]["containers"][0]["image"] == "registry.local/runtime-llm:2"
    # an explicit spec.runtime.image is always used
    pinned = md_of(case, runtime={"image": "example.com/mine:3"})
    assert set(_images(pinned).values()) == {"example.com/mine:3"}


def test_non_llm_pods_keep_the_runtime_image(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MODELDEPLOY_RUNTIME_LLM_IMAGE", "registry.local/runtime-llm:2")
    monkeypatch.setenv("MODELDEPLOY_RUNTIME_IMAGE", "registry.local/runtime:1")
    assert set(_images(md_of("gpu")).values()) == {"registry.local/runtime:1"}


def test_llm_metric_types_read_the_series_the_openai_endpoint_exports() -> None:
    """The HPA metric names and KEDA queries of inFlightRequests/timeToFirstToken name the series
    the real OpenAI endpoint's /metrics serves."""
    from modeldeploy.render.hpa import DEFAULT_POD_METRICS, render_hpa
    from modeldeploy.render.keda import prometheus_query
    from modeldeploy_runtime.openai_server import Metrics

    metrics = Metrics()
    metrics.in_flight.labels("chat").inc()
    metrics.ttft.labels("chat").observe(0.2)
    series = {
        line.split("{")[0].split(" ")[0]
        for line in metrics.render().decode().splitlines()
        if line and not line.startswith("#")
    }
    inflight, ttft = DEFAULT_POD_METRICS["inFlightRequests"], DEFAULT_POD_METRICS["timeToFirstToken"]
    assert {inflight, f"{ttft}_sum", f"{ttft}_count"} <= series
    hpa = render_hpa(md_of("llm-autoscale-inflight-hpa"))
    assert hpa is not None
    assert hpa["spec"]["metrics"][0]["pods"]["metric"]["name"] == inflight
    q = prometheus_query(md_of("llm-autoscale-ttft-keda"))
    assert f"{ttft}_sum{{" in q and f"{ttft}_count{{" in q
    assert 'namespace="llm",service="chat"' in q


def test_keda_thresholds_are_plain_decimals() -> None:
    """KEDA's prometheus scaler parses the threshold as a float: quantities are converted."""
    from modeldeploy.render.keda import keda_number, keda_trigger

    assert [keda_number(q) for q in ("500m", "1k", 10, "0.25", "800m")] == [
        "0.5",
        "1000",
        "10",
        "0.25",
        "0.8",
    ]
    trig = keda_trigger(md_of("llm-autoscale-kvcache-keda"))
    assert trig["metadata"]["threshold"] == "0.8" and trig["metricType"] == "Value"
    assert trig["metadata"]["query"] == 'avg(vllm:gpu_cache_usage_perc{namespace="llm",service="llama"})'


@pytest.mark.parametrize(
    ("case", "metric", "message"),
    [
        (
            "llm-transformers",
            {"type": "kvCacheUsage", "target": "800m"},
            "kvCacheUsage needs a model with format vllm",
        ),
        ("gpu", {"type": "inFlightRequests", "target": "4"}, "need a model with an LLM format"),
        ("llm-vllm-tp1", {"type": "kvCacheUsage", "target": "2"}, "at most 1"),
    ],
)
def test_llm_metric_types_are_refused_where_they_cannot_work(
    case: str, metric: dict[str, Any], message: str
) -> None:
    with pytest.raises(SpecError, match=message):
        md_of(case, autoscaling={"mode": "hpa", "maxReplicas": 3, "metric": metric})
