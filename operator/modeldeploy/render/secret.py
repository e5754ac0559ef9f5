"""The control-key Secret: the per-ModelDeployment key for Triton's restricted model-control API.

Unlike the other children this Secret is not in :data:`modeldeploy.render.RENDERERS` (applied on
every reconcile): its value is random, generated once by the reconciler, which *creates* the Secret
when it is missing (RBAC: ``create`` on secrets, never ``get``/``list``/``watch``: the operator never
reads a Secret back). The owner reference makes the garbage collector delete it with its
ModelDeployment. Pods reference it (``valueFrom.secretKeyRef``); the value never enters a pod spec,
status, event or log.
"""

from __future__ import annotations

import base64
import secrets
from typing import Any

from modeldeploy.api.v1alpha1 import ModelDeployment
from modeldeploy.render.common import metadata
from modeldeploy_runtime.control import CONTROL_KEY_ENV, CONTROL_SECRET_KEY, restricted_api_args

CONTROL_SECRET_SUFFIX = "-control-key"


def control_secret_name(md: ModelDeployment) -> str:
    return f"{md.name}{CONTROL_SECRET_SUFFIX}"


def new_control_key() -> str:
    """256 random bits, URL-safe (a valid HTTP header value)."""
    return secrets.token_urlsafe(32)


def render_control_secret(md: ModelDeployment, key: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": metadata(md, control_secret_name(md), component="model-control"),
        "type": "Opaque",
        "immutable": True,
        "data": {CONTROL_SECRET_KEY: base64.b64encode(key.encode()).decode()},
    }


def control_key_env(md: ModelDeployment) -> dict[str, Any]:
    """The env entry giving a container the key by reference."""
    return {
        "name": CONTROL_KEY_ENV,
        "valueFrom": {"secretKeyRef": {"name": control_secret_name(md), "key": CONTROL_SECRET_KEY}},
    }


def triton_control_args() -> list[str]:
    """tritonserver's restricted-API flags with ``$(MODELDEPLOY_CONTROL_KEY)``: the kubelet expands
    the reference from the container's env when it starts the container."""
    return restricted_api_args(f"$({CONTROL_KEY_ENV})")
