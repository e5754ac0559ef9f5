"""prometheus-operator ServiceMonitor for Triton's metrics port, and the OpenAI endpoint's port in LLM
pods (when monitoring is on and the CRD exists)."""

from __future__ import annotations

from typing import Any

from modeldeploy.api.v1alpha1 import ModelDeployment
from modeldeploy.render.common import SERVICEMONITOR_CRD, Note, RenderOptions, common_labels, metadata


def render_servicemonitor(md: ModelDeployment, opts: RenderOptions | None = None) -> dict[str, Any] | None:
    mon = md.spec.monitoring
    if not mon.enabled:
        return None
    opts = opts or RenderOptions()
    if not opts.has_crd(SERVICEMONITOR_CRD):
        opts.notes.append(
            Note(
                "ServiceMonitorSkipped",
                f"spec.monitoring.enabled: the prometheus-operator CRD {SERVICEMONITOR_CRD} is not "
                "installed; no ServiceMonitor created (pods keep their prometheus.io/scrape annotations)",
                degraded=False,
            )
        )
        return None
    svc_labels = common_labels(md)
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "ServiceMonitor",
        "metadata": metadata(md, md.name, component="monitoring", labels=dict(mon.labels or {})),
        "spec": {
            "selector": {
                "matchLabels": {
                    k: svc_labels[k]
                    for k in (
                        "app.kubernetes.io/name",
                        "app.kubernetes.io/component",
                        "modeldeploy.io/deployment",
                    )
                }
            },
            "endpoints": [
                {"port": "metrics", "path": "/metrics", "interval": mon.interval},
                # LLM pods: the OpenAI endpoint's requests, tokens, TTFT and inter-token latency
                *(
                    [{"port": "openai", "path": "/metrics", "interval": mon.interval}]
                    if md.spec.serves_llm()
                    else []
                ),
            ],
        },
    }
