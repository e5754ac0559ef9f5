"""The operator talking to the runtime agents of a ModelDeployment's pods (over the pod IPs).

* :func:`query`: every running pod's ``GET /status``, parsed into the typed
  :class:`~modeldeploy_runtime.agentapi.AgentStatus` (the same model the agent produces).
* :class:`Pusher`: ``PUT /manifest`` to every running pod right after a changed manifest was
  applied, in parallel on a small thread pool of its own, so neither kopf's event loop nor the
  reconcile waits for the agents; when the pushes are done the owner's status is refreshed. Each
  push is signed with the operator's key (reconcile/pushkey.py) for the one ModelDeployment object
  (:func:`push_owner`); the agents verify it with the public key in their manifest ConfigMap
  (runtime ``pushsign``), so no per-object Secret is involved.

All blocking (HTTP with short timeouts); called from kopf's threaded sync handlers and the status
refresher's threads, never from a coroutine.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import urllib3

from modeldeploy.api.v1alpha1 import AGENT_PORT, ModelDeployment
from modeldeploy.render.common import push_owner
from modeldeploy_runtime.agentapi import MANIFEST_PATH, STATUS_PATH, AgentStatus, ManifestPush, PushReply
from modeldeploy_runtime.manifest import ModelManifest
from modeldeploy_runtime.pushsign import SIGNATURE_HEADER, PushSigner

log = logging.getLogger("modeldeploy.agents")

#: (connect, read) seconds: an unreachable agent costs one short timeout per pass.
TIMEOUT = (1.0, 2.0)
MAX_WORKERS = 16
#: Agents (pod IPs) whose connections are kept for the next request: a status refresh asks the
#: same pods again and again while they load.
KEPT_HOSTS = 64

_pool: urllib3.PoolManager | None = None
_pool_lock = threading.Lock()


def _http() -> urllib3.PoolManager:
    """The process's one HTTP client for the agents (thread-safe, made on first use): pooled
    connections, no retries (the next refresh is the retry), :data:`TIMEOUT`. A request through it
    costs about a fifth of the CPU of ``requests.get``, which built a session per request; a
    refresh asks each running pod's agent, several times per pod while it starts (#12)."""
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = urllib3.PoolManager(
                num_pools=KEPT_HOSTS,
                maxsize=2,
                retries=False,
                timeout=urllib3.Timeout(connect=TIMEOUT[0], read=TIMEOUT[1]),
            )
        return _pool


def agent_urls(pods: list[dict[str, Any]], path: str) -> dict[str, str]:
    """pod name -> ``http://<podIP>:<agent port><path>`` for running pods with an IP."""
    urls: dict[str, str] = {}
    for p in pods:
        st = p.get("status") or {}
        if not st.get("podIP") or st.get("phase") != "Running" or p["metadata"].get("deletionTimestamp"):
            continue
        port = next(
            (
                cp["containerPort"]
                for c in (p.get("spec") or {}).get("containers") or []
                for cp in c.get("ports") or []
                if cp.get("name") == "agent"
            ),
            AGENT_PORT,
        )
        urls[p["metadata"]["name"]] = f"http://{st['podIP']}:{port}{path}"
    return urls


def _parallel(urls: dict[str, str], call: Callable[[str], Any]) -> dict[str, Any]:
    """``call`` on each URL: in this thread for one (a pod of one replica: no thread started),
    else in parallel on a pool of the call's own (a slow agent never holds up another refresh)."""
    if len(urls) <= 1:
        return {name: call(url) for name, url in urls.items()}
    with ThreadPoolExecutor(max_workers=min(MAX_WORKERS, len(urls))) as pool:
        return dict(zip(urls, pool.map(call, urls.values()), strict=True))


def query(pods: list[dict[str, Any]]) -> dict[str, AgentStatus]:
    """Each running pod's agent ``/status``, asked in parallel; pods whose agent does not answer
    (not up yet, unreachable) are left out."""
    http = _http()

    def ask(url: str) -> AgentStatus | None:
        try:
            r = http.request("GET", url)
            if r.status != 200:
                raise ValueError(f"HTTP {r.status}")
            return AgentStatus.model_validate_json(r.data)
        except Exception as exc:  # not up yet, unreachable, or not an agent
            log.debug("agent %s: %s", url, exc)
            return None

    return {k: v for k, v in _parallel(agent_urls(pods, STATUS_PATH), ask).items() if v is not None}


def push(
    pods: list[dict[str, Any]], manifest: ModelManifest, signer: PushSigner, owner: str
) -> dict[str, str]:
    """``PUT /manifest`` to each running pod's agent, in parallel, signed for ``owner`` (the
    ModelDeployment: :func:`push_owner`): pod -> outcome (``accepted``, ``refused 409: ...``,
    ``unreachable: ...``)."""
    http = _http()
    # the exact bytes sent are the bytes signed
    body = ManifestPush(manifest=manifest).model_dump_json(exclude_none=True).encode()
    headers = {SIGNATURE_HEADER: signer.sign(owner, body), "Content-Type": "application/json"}

    def put(url: str) -> str:
        try:
            r = http.request("PUT", url, body=body, headers=headers)
        except urllib3.exceptions.HTTPError as exc:
            return f"unreachable: {exc.__class__.__name__}"
        try:
            reply = PushReply.model_validate_json(r.data)
            msg = reply.message
        except ValueError:
            msg = r.data[:200].decode(errors="replace")
        return "accepted" if r.status == 200 else f"refused {r.status}: {msg}"

    return _parallel(agent_urls(pods, MANIFEST_PATH), put)


class Pusher:
    """Pushes manifests off the reconcile thread, signed with ``signer``; ``done(namespace, name)``
    runs after each push round (the handlers wire it to the status refresher)."""

    def __init__(
        self, signer: PushSigner, done: Callable[[str, str], object] | None = None, workers: int = 4
    ) -> None:
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="agent-push")
        self.signer = signer
        self.done = done

    def submit(self, md: ModelDeployment, pods: list[dict[str, Any]], manifest: ModelManifest) -> None:
        self._pool.submit(self._run, md.namespace, md.name, push_owner(md), pods, manifest)

    def _run(
        self, ns: str, name: str, owner: str, pods: list[dict[str, Any]], manifest: ModelManifest
    ) -> None:
        try:
            outcome = push(pods, manifest, self.signer, owner)
            log.info("%s/%s: pushed manifest generation %d: %s", ns, name, manifest.generation, outcome)
        except Exception as exc:
            log.warning("%s/%s: manifest push failed: %s", ns, name, exc)
        if self.done is not None:
            self.done(ns, name)

    def stop(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
