"""Triton's restricted control API: only the holder of a per-pod key may load/unload.

Triton (``--http-restricted-api`` / ``--grpc-restricted-protocol``, format
``<api>,<api>:<header>=<value>``; the gRPC flag is spelled ``-protocol`` in the tritonserver of
nvidia-pytriton 0.7.0 and in upstream Triton) answers 403 to a request of a restricted category
that lacks the header. modeldeploy restricts the categories that change the server (:data:`RESTRICTED_APIS`) and leaves
health, metadata, inference and the read-only ones open to clients.

In a pod the key is made by the pod itself: the init agent writes 256 random bits to
:data:`CONTROL_KEY_FILE` (an in-memory emptyDir shared by the init agent, Triton and the sidecar
agent, mode 0600: the pod runs as one user) before Triton starts; Triton's container starts
through :func:`triton_launch`, a ``/bin/sh`` line that reads the file into the restricted-API
flags, and the sidecar agent reads it. So the key exists only inside that pod: not in a Secret,
the pod spec, the API server or the operator, and each replica has its own. Local runs and tests
may still pass the key in :data:`CONTROL_KEY_ENV`.
"""

from __future__ import annotations

import os
import secrets
import shlex
from pathlib import Path

#: The header Triton checks on restricted requests.
CONTROL_HEADER = "modeldeploy-control-key"
#: The metadata key a gRPC client sends: this Triton build prefixes the configured header with
#: ``triton-grpc-protocol-`` (its 403-equivalent, UNAVAILABLE, names it).
GRPC_CONTROL_HEADER = f"triton-grpc-protocol-{CONTROL_HEADER}"
#: The environment variable holding the key (agent and Triton containers).
CONTROL_KEY_ENV = "MODELDEPLOY_CONTROL_KEY"
#: The in-memory emptyDir holding the pod's key, and the key file in it.
CONTROL_KEY_DIR = "/run/modeldeploy/control"
CONTROL_KEY_FILE = f"{CONTROL_KEY_DIR}/key"
#: Categories only the agent may use, the ones that change the server: loading/unloading and the
#: repository index, shared-memory registration, trace and log settings. Open to every client:
#: health, metadata, inference, and the read-only model-config and statistics (perf_analyzer and
#: tritonclient read them).
RESTRICTED_APIS: tuple[str, ...] = ("model-repository", "shared-memory", "trace", "logging")
OPEN_APIS: tuple[str, ...] = ("health", "metadata", "inference", "model-config", "statistics")


def restricted_api_args(key: str) -> list[str]:
    """tritonserver flags restricting :data:`RESTRICTED_APIS` over HTTP and gRPC to ``key``.

    ``key`` is the value itself, or a shell variable reference in :func:`triton_launch`'s line.
    """
    spec = f"{','.join(RESTRICTED_APIS)}:{CONTROL_HEADER}={key}"
    return [f"--http-restricted-api={spec}", f"--grpc-restricted-protocol={spec}"]


def control_key_from_env() -> str | None:
    """The key from :data:`CONTROL_KEY_ENV`, or None when unset/empty (unrestricted Triton)."""
    return os.environ.get(CONTROL_KEY_ENV) or None


def control_headers(key: str | None) -> dict[str, str]:
    return {CONTROL_HEADER: key} if key else {}


def ensure_control_key(path: str | Path) -> str:
    """The key in ``path``, created (256 random bits, URL-safe, mode 0600) when the file does not
    exist yet: the init agent's first step, so a restarted init container keeps the pod's key."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    key = secrets.token_urlsafe(32)
    try:
        fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        existing = read_control_key(p)
        if existing:
            return existing
        raise ValueError(f"{p}: the control key file is empty") from None
    with os.fdopen(fd, "w") as f:
        f.write(key + "\n")
    return key


def read_control_key(path: str | Path) -> str | None:
    """The key in ``path`` (first line, stripped), or None when the file is missing or empty."""
    try:
        text = Path(path).read_text()
    except FileNotFoundError:
        return None
    return text.strip() or None


def triton_launch(args: list[str], key_file: str = CONTROL_KEY_FILE) -> tuple[list[str], list[str]]:
    """(command, args) of a Triton container restricted to the key in ``key_file``: ``/bin/sh``
    reads the key into a variable and execs ``tritonserver`` with ``args`` plus the
    restricted-API flags. The line holds no ``$(...)``, which the kubelet would try to expand."""
    flags = " ".join(f'"{a}"' for a in restricted_api_args("$KEY"))  # no quote, backslash or backtick in them
    line = f'read -r KEY < {shlex.quote(key_file)} && exec tritonserver "$@" {flags}'
    return ["/bin/sh", "-c", line, "tritonserver"], list(args)
