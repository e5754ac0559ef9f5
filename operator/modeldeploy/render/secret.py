"""The keys Secret ``<name>-keys``: one per ModelDeployment, holding both per-object keys.

* ``control-key``: the key for Triton's restricted model-control API (load/unload), used by the
  agent and by tritonserver's restricted-API flags;
* ``token``: the bearer token the agents accept manifest pushes with (``PUT /manifest``), which the
  operator reads back to push (reconcile/agents.py).

Unlike the other children this Secret is not in :data:`modeldeploy.render.RENDERERS` (applied on
every reconcile): its values are random, generated once by the reconciler, which *creates* the
Secret when it is missing (one write per ModelDeployment; RBAC: ``create`` and ``get`` on secrets,
never ``list``/``watch``). It is immutable: nothing rotates the keys in place. The owner reference
makes the garbage collector delete it with its ModelDeployment. Pods reference it
(``valueFrom.secretKeyRef``); the values never enter a pod spec, status, event or log.
"""

from __future__ import annotations

import base64
import secrets
from typing import Any

from modeldeploy.api.v1alpha1 import ModelDeployment
from modeldeploy.render.common import metadata
from modeldeploy_runtime.agentapi import TOKEN_ENV, TOKEN_KEY
from modeldeploy_runtime.control import CONTROL_KEY_ENV, CONTROL_SECRET_KEY, restricted_api_args

KEYS_SECRET_SUFFIX = "-keys"


def keys_secret_name(md: ModelDeployment) -> str:
    return f"{md.name}{KEYS_SECRET_SUFFIX}"


def new_key() -> str:
    """256 random bits, URL-safe (a valid HTTP header value)."""
    return secrets.token_urlsafe(32)


def render_keys_secret(md: ModelDeployment, control_key: str, token: str) -> dict[str, Any]:
    def b64(v: str) -> str:
        return base64.b64encode(v.encode()).decode()

    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": metadata(md, keys_secret_name(md), component="keys"),
        "type": "Opaque",
        "immutable": True,
        "data": {CONTROL_SECRET_KEY: b64(control_key), TOKEN_KEY: b64(token)},
    }


def control_key_env(md: ModelDeployment) -> dict[str, Any]:
    """The env entry giving a container Triton's control key by reference."""
    return {
        "name": CONTROL_KEY_ENV,
        "valueFrom": {"secretKeyRef": {"name": keys_secret_name(md), "key": CONTROL_SECRET_KEY}},
    }


def agent_token_env(md: ModelDeployment) -> dict[str, Any]:
    """The env entry giving the agent its push token by reference."""
    return {
        "name": TOKEN_ENV,
        "valueFrom": {"secretKeyRef": {"name": keys_secret_name(md), "key": TOKEN_KEY}},
    }


def triton_control_args() -> list[str]:
    """tritonserver's restricted-API flags with ``$(MODELDEPLOY_CONTROL_KEY)``: the kubelet expands
    the reference from the container's env when it starts the container."""
    return restricted_api_args(f"$({CONTROL_KEY_ENV})")
