"""autoscaling/v2 HorizontalPodAutoscaler (``autoscaling.mode: hpa``), scaling the Deployment."""

from __future__ import annotations

from typing import Any

from modeldeploy.api.v1alpha1 import AutoscalingSpec, ModelDeployment
from modeldeploy.render.common import RenderOptions, metadata

#: Per-pod metric names served by the custom metrics API (e.g. prometheus-adapter) per metric type.
DEFAULT_POD_METRICS: dict[str, str] = {
    "queueTime": "triton_queue_time_us_per_request",
    "pendingRequests": "nv_inference_pending_request_count",
    # LLM pods: the OpenAI-compatible endpoint's own series (modeldeploy_runtime.openai_server)...
    "inFlightRequests": "modeldeploy_openai_requests_in_flight",
    "timeToFirstToken": "modeldeploy_openai_time_to_first_token_seconds",
    # ...and the vLLM backend's KV-cache gauge on Triton's metrics port (0 to 1)
    "kvCacheUsage": "vllm:gpu_cache_usage_perc",
}


def hpa_metric(a: AutoscalingSpec) -> dict[str, Any]:
    m = a.metric
    if m.type == "cpu":
        return {
            "type": "Resource",
            "resource": {
                "name": "cpu",
                "target": {"type": "Utilization", "averageUtilization": int(m.target)},
            },
        }
    name = m.metricName or DEFAULT_POD_METRICS[m.type]
    return {
        "type": "Pods",
        "pods": {"metric": {"name": name}, "target": {"type": "AverageValue", "averageValue": str(m.target)}},
    }


def render_hpa(md: ModelDeployment, opts: RenderOptions | None = None) -> dict[str, Any] | None:
    a = md.spec.autoscaling
    if a is None or a.mode != "hpa":
        return None
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": metadata(md, md.name, component="autoscaler"),
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": md.name},
            "minReplicas": a.minReplicas,
            "maxReplicas": a.maxReplicas,
            "metrics": [hpa_metric(a)],
            "behavior": {"scaleDown": {"stabilizationWindowSeconds": a.cooldownSeconds}},
        },
    }
