"""Triton's restricted control API: only the holder of a per-ModelDeployment key may load/unload.

Triton (``--http-restricted-api`` / ``--grpc-restricted-protocol``, format
``<api>,<api>:<header>=<value>``; the gRPC flag is spelled ``-protocol`` in the tritonserver of
nvidia-pytriton 0.7.0 and in upstream Triton) answers 403 to a request of a restricted category
that lacks the header. modeldeploy restricts the categories that change the server (:data:`RESTRICTED_APIS`) and leaves
health, metadata, inference and the read-only ones open to clients.

The key comes from the environment variable :data:`CONTROL_KEY_ENV` (in a pod: ``valueFrom``
``secretKeyRef`` of the Secret the operator owns). The Triton container's args hold
``$(MODELDEPLOY_CONTROL_KEY)``, which the kubelet expands when it starts the container, so the
rendered pod spec only ever holds the reference.
"""

from __future__ import annotations

import os

#: The header Triton checks on restricted requests.
CONTROL_HEADER = "modeldeploy-control-key"
#: The metadata key a gRPC client sends: this Triton build prefixes the configured header with
#: ``triton-grpc-protocol-`` (its 403-equivalent, UNAVAILABLE, names it).
GRPC_CONTROL_HEADER = f"triton-grpc-protocol-{CONTROL_HEADER}"
#: The environment variable holding the key (agent and Triton containers).
CONTROL_KEY_ENV = "MODELDEPLOY_CONTROL_KEY"
#: The key inside the control Secret.
CONTROL_SECRET_KEY = "control-key"
#: Categories only the agent may use, the ones that change the server: loading/unloading and the
#: repository index, shared-memory registration, trace and log settings. Open to every client:
#: health, metadata, inference, and the read-only model-config and statistics (perf_analyzer and
#: tritonclient read them).
RESTRICTED_APIS: tuple[str, ...] = ("model-repository", "shared-memory", "trace", "logging")
OPEN_APIS: tuple[str, ...] = ("health", "metadata", "inference", "model-config", "statistics")


def restricted_api_args(key: str) -> list[str]:
    """tritonserver flags restricting :data:`RESTRICTED_APIS` over HTTP and gRPC to ``key``.

    ``key`` is the value itself (tests, local runs) or ``$(MODELDEPLOY_CONTROL_KEY)`` in a pod spec.
    """
    spec = f"{','.join(RESTRICTED_APIS)}:{CONTROL_HEADER}={key}"
    return [f"--http-restricted-api={spec}", f"--grpc-restricted-protocol={spec}"]


def control_key_from_env() -> str | None:
    """The key from :data:`CONTROL_KEY_ENV`, or None when unset/empty (unrestricted Triton)."""
    return os.environ.get(CONTROL_KEY_ENV) or None


def control_headers(key: str | None) -> dict[str, str]:
    return {CONTROL_HEADER: key} if key else {}
