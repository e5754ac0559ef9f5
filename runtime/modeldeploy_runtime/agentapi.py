"""The typed contract between the runtime agent and the operator.

The agent produces these documents (``GET /status``, the reply to ``PUT /manifest``); the operator
parses them with the same models. Nothing here carries a secret: a push is authenticated by the
operator's signature in a header (pushsign.py), and reasons/messages name sources and causes, never
credentials.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from modeldeploy_runtime.manifest import ModelManifest

#: The agent's endpoints.
STATUS_PATH = "/status"
SERVING_PATH = "/serving"
READY_PATH = "/ready"
MANIFEST_PATH = "/manifest"

AgentVersionState = Literal["Pending", "Loading", "Ready", "Failed", "Unloaded"]


class _Doc(BaseModel):
    # extra="ignore": an older operator can read a newer agent's report (fields only get added).
    model_config = ConfigDict(extra="ignore")


class FetchReport(_Doc):
    """How a version got into the pod's repository."""

    #: "cache" (the shared model cache), "download", "repository" (already there), "localCopy"
    origin: str
    bytes: int = 0
    seconds: float = 0.0


class CacheEntryReport(_Doc):
    digest: str
    bytes: int = 0
    lastVerified: float | str | None = None


class CacheReport(_Doc):
    """The shared model cache as this agent sees it (``spec.cache``)."""

    root: str
    writable: bool = False
    entries: list[CacheEntryReport] = Field(default_factory=list)
    #: Corrupt entries found and refetched, fills, ... (newest last).
    events: list[dict[str, Any]] = Field(default_factory=list)


class VersionReport(_Doc):
    version: int = Field(ge=1)
    state: AgentVersionState = "Pending"
    #: Machine-readable cause, e.g. DigestMismatch, FetchFailed, ModelLoadFailed, NotWanted.
    reason: str = ""
    message: str = ""
    #: ``sha256:<hex>`` of the version folder as fetched and verified (absent until known).
    digest: str | None = None
    #: Identity of the verified signer (public-key fingerprint or certificate identity), when the
    #: model's verification policy checked a signature.
    signer: str | None = None
    fetch: FetchReport | None = None


class ModelReport(_Doc):
    name: str
    #: The wanted versions plus those the agent still tracks (for instance Unloaded ones).
    versions: list[VersionReport] = Field(default_factory=list)
    #: Versions Triton reports READY right now (old or new).
    served: list[int] = Field(default_factory=list)


class AgentStatus(_Doc):
    """``GET /status``."""

    #: Every wanted version of every model is READY and the newest manifest is applied.
    ready: bool = False
    #: Every model has some READY version (what the pod's readiness probe checks).
    serving: bool = False
    #: Generation of the manifest the agent works on (the ModelDeployment generation it was rendered from).
    generation: int = 0
    #: Generation of the manifest last fully applied (every model synced once).
    appliedGeneration: int = 0
    #: Where the manifest came from: "file" (the mounted ConfigMap) or "push" (the operator).
    manifestSource: Literal["file", "push", ""] = ""
    models: list[ModelReport] = Field(default_factory=list)
    lastError: str | None = None
    cache: CacheReport | None = None

    def failed(self) -> list[tuple[str, VersionReport]]:
        return [(m.name, v) for m in self.models for v in m.versions if v.state == "Failed"]


class ManifestPush(_Doc):
    """``PUT /manifest`` body (signed: ``pushsign.SIGNATURE_HEADER``)."""

    manifest: ModelManifest


class PushReply(_Doc):
    """Reply to ``PUT /manifest``: 200 accepted (or already had it), 400 invalid body, 401 no
    signature, 403 a bad one (or pushing not configured), 409 older than the manifest the agent has."""

    accepted: bool
    #: The generation the agent works on after this request.
    generation: int
    message: str = ""
