"""KEDA ScaledObject (``autoscaling.mode: keda``): Prometheus triggers, scale to zero allowed."""

from __future__ import annotations

from typing import Any

from modeldeploy.api.v1alpha1 import ModelDeployment, parse_quantity
from modeldeploy.render.common import SCALEDOBJECT_CRD, Note, RenderOptions, metadata
from modeldeploy.render.hpa import DEFAULT_POD_METRICS
from modeldeploy.render.httpscaledobject import uses_http_addon
from modeldeploy.render.service import service_name

#: Series the LLM metric types read (see DEFAULT_POD_METRICS in render/hpa.py).
INFLIGHT = DEFAULT_POD_METRICS["inFlightRequests"]
TTFT = DEFAULT_POD_METRICS["timeToFirstToken"]
KV_CACHE = DEFAULT_POD_METRICS["kvCacheUsage"]
#: Metric types whose query is an average over the pods rather than a sum (KEDA metricType Value).
AVERAGE_METRICS = ("queueTime", "timeToFirstToken", "kvCacheUsage")


def _selector(md: ModelDeployment) -> str:
    return f'namespace="{md.namespace}",service="{service_name(md)}"'


def prometheus_query(md: ModelDeployment) -> str:
    a = md.spec.autoscaling
    assert a is not None
    sel = _selector(md)
    if a.metric.type == "queueTime":
        # Average queue time per request (microseconds) over the last minute, across all pods.
        return (
            f"sum(rate(nv_inference_queue_duration_us{{{sel}}}[1m])) / "
            f"clamp_min(sum(rate(nv_inference_request_success{{{sel}}}[1m])), 1)"
        )
    if a.metric.type == "pendingRequests":
        return f"sum(nv_inference_pending_request_count{{{sel}}})"
    if a.metric.type == "inFlightRequests":
        # generations in progress at the OpenAI endpoints (KEDA divides by the replicas: per pod)
        return f"sum({INFLIGHT}{{{sel}}})"
    if a.metric.type == "timeToFirstToken":
        # average time to first token (seconds) over the last minute, across all pods; 0 when idle
        return f"sum(rate({TTFT}_sum{{{sel}}}[1m])) / clamp_min(sum(rate({TTFT}_count{{{sel}}}[1m])), 1e-9)"
    if a.metric.type == "kvCacheUsage":
        return f"avg({KV_CACHE}{{{sel}}})"  # mean KV-cache usage of the pods' vLLM engines, 0 to 1
    assert a.metric.query is not None
    return a.metric.query


def keda_number(q: int | str) -> str:
    """A Kubernetes quantity as the plain decimal KEDA's prometheus scaler parses (it reads the
    threshold with ParseFloat: ``500m`` -> ``0.5``, ``1k`` -> ``1000``)."""
    return format(parse_quantity(q).normalize(), "f")


def keda_trigger(md: ModelDeployment) -> dict[str, Any]:
    a = md.spec.autoscaling
    assert a is not None
    m = a.metric
    if m.type == "cpu":
        return {"type": "cpu", "metricType": "Utilization", "metadata": {"value": str(m.target)}}
    trigger: dict[str, Any] = {
        "type": "prometheus",
        "metadata": {
            "serverAddress": str(a.prometheusAddress),
            "query": prometheus_query(md),
            "threshold": keda_number(m.target),
        },
    }
    # averages (not additive per pod): compare the value itself with the target.
    if m.type in AVERAGE_METRICS:
        trigger["metricType"] = "Value"
    return trigger


def render_scaledobject(md: ModelDeployment, opts: RenderOptions | None = None) -> dict[str, Any] | None:
    a = md.spec.autoscaling
    if a is None or a.mode != "keda":
        return None
    opts = opts or RenderOptions()
    if uses_http_addon(md, opts):  # the HTTP add-on creates and owns the ScaledObject
        return None
    if not opts.has_crd(SCALEDOBJECT_CRD):
        opts.notes.append(
            Note(
                "AutoscalerUnavailable",
                f"spec.autoscaling.mode keda: the KEDA CRD {SCALEDOBJECT_CRD} is not installed; not autoscaling",
                degraded=True,
            )
        )
        return None
    return {
        "apiVersion": "keda.sh/v1alpha1",
        "kind": "ScaledObject",
        "metadata": metadata(md, md.name, component="autoscaler"),
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": md.name},
            "minReplicaCount": a.minReplicas,
            "maxReplicaCount": a.maxReplicas,
            "cooldownPeriod": a.cooldownSeconds,
            "pollingInterval": 15,
            "triggers": [keda_trigger(md)],
        },
    }
