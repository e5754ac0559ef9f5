"""PodDisruptionBudget, when more than one pod serves (replicas > 1, or autoscaling minReplicas > 1)."""

from __future__ import annotations

from typing import Any

from modeldeploy.api.v1alpha1 import ModelDeployment
from modeldeploy.render.common import RenderOptions, metadata, selector_labels


def pdb_wanted(md: ModelDeployment) -> bool:
    a = md.spec.autoscaling
    if a is not None:
        return a.minReplicas > 1
    return md.spec.replicas > 1


def render_pdb(md: ModelDeployment, opts: RenderOptions | None = None) -> dict[str, Any] | None:
    if not pdb_wanted(md):
        return None
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": metadata(md, md.name),
        "spec": {
            "maxUnavailable": 1,
            "selector": {"matchLabels": selector_labels(md)},
            # Pods that never became ready may be evicted (e.g. stuck loading a model).
            "unhealthyPodEvictionPolicy": "AlwaysAllow",
        },
    }
