"""The model manifest: the contract between the operator and the runtime agent.

The operator renders it (from a ModelDeployment) into the ConfigMap ``<name>-models`` under the key
``manifest.json``; the agent in each Triton pod reads the mounted file and makes the pod's model
repository and Triton's loaded versions match it. It carries no secrets: credentials are referenced
by the *names* of environment variables / mounted files, never by value.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

MANIFEST_KEY = "manifest.json"
MANIFEST_API_VERSION = "modeldeploy.io/v1alpha1"
MANIFEST_KIND = "ModelManifest"

ModelFormat = Literal["pytorch", "onnx", "python", "tensorrt", "transformers", "vllm", "tensorrtllm"]


@dataclass(frozen=True)
class FormatDefaults:
    """How Triton runs a model format: config.pbtxt ``platform``/``backend``, the backend's name
    and the artifact file Triton looks for in a version folder."""

    platform: str
    backend: str
    backend_name: str
    artifact: str


#: The one format -> Triton backend table (the operator's API and the agent both use it).
FORMATS: dict[str, FormatDefaults] = {
    "pytorch": FormatDefaults("pytorch_libtorch", "", "pytorch", "model.pt"),
    "onnx": FormatDefaults("onnxruntime_onnx", "", "onnxruntime", "model.onnx"),
    "python": FormatDefaults("", "python", "python", "model.py"),
    "tensorrt": FormatDefaults("tensorrt_plan", "", "tensorrt", "model.plan"),
    # Large language models (decoupled, streaming): the packaged config is used when present.
    "transformers": FormatDefaults("", "python", "python", "model.py"),  # + hf/: the HF model directory
    "vllm": FormatDefaults("", "vllm", "vllm", "model.json"),  # the vLLM backend's engine arguments
    # a prebuilt engine: served by the tensorrtllm backend as <name>-engine behind <name>, a python-
    # backend text front, when packaged with its tokenizer (llm_engine.write_engine_entry)
    "tensorrtllm": FormatDefaults("", "tensorrtllm", "tensorrtllm", "config.pbtxt"),
}


def select_versions(
    available: Iterable[int],
    *,
    latest: int | None = None,
    all: bool | None = None,
    specific: Iterable[int] | None = None,
) -> list[int]:
    """The versions Triton serves out of ``available`` under a version policy (Triton's semantics:
    ``all``; else ``specific`` (those that exist); else the ``latest`` n, default 1). The one
    implementation: the operator's API, the manifest and config.pbtxt policies call it."""
    nums = sorted(set(available))
    if all:
        return nums
    if specific is not None:
        return sorted(set(specific) & set(nums))
    n = 1 if latest is None else latest
    return nums[-n:] if n > 0 else []


TRITON_NAME_RE = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,62}$")


class _Base(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class ManifestVersion(_Base):
    version: int = Field(ge=1)
    #: Where this version's artifacts live: file://, https://, s3://, gs://, pvc://<claim>/<path>.
    #: Points at a version folder (containing model.pt / model.onnx / model.py ...) or a single file.
    source: str
    #: Optional sha256 of the artifact (a single file), or of the version's manifest.sha256 file.
    sha256: str | None = Field(default=None, pattern=r"^[a-f0-9]{64}$")


class ManifestVersionPolicy(_Base):
    """Mirrors Triton's version_policy: exactly one of the fields is set; none means latest: 1."""

    latest: int | None = Field(default=None, ge=1)
    all: bool | None = None
    specific: list[int] | None = None


class ManifestTensor(_Base):
    name: str
    dataType: str  # Triton data type, e.g. TYPE_FP32
    dims: list[int]


class ManifestDynamicBatching(_Base):
    preferredBatchSizes: list[int] = Field(default_factory=list)
    maxQueueDelayMicroseconds: int = 0


class ManifestInstanceGroup(_Base):
    count: int = 1
    kind: Literal["KIND_GPU", "KIND_CPU", "KIND_AUTO"] = "KIND_AUTO"


class ManifestCredentials(_Base):
    """How the agent finds storage credentials: names only, values come from the pod environment
    (env vars from a Secret via envFrom/secretKeyRef) or from files of a mounted Secret."""

    envPrefix: str | None = None
    mountPath: str | None = None
    #: e.g. http://minio.storage:9000 for S3-compatible stores
    endpoint: str | None = None
    region: str | None = None


class ManifestVerification(_Base):
    """Signature policy (signing.py): files mounted into the agent, by path; nothing secret."""

    required: bool = True
    #: PEM public key file
    publicKeyPath: str | None = None
    #: PEM certificate files of the trusted chain, and the identity the signer's certificate carries
    certificateChainPaths: list[str] = Field(default_factory=list)
    identity: str | None = None


class ManifestLLM(_Base):
    """Resolved engine settings of an LLM model (issue #13): the tensor-parallel size is the
    ModelDeployment's llm.tensorParallelSize or else the pod's GPU count."""

    tensorParallelSize: int = 1
    gpuMemoryUtilization: float | None = None
    maxModelLen: int | None = None
    dtype: str | None = None


class ManifestModel(_Base):
    name: str
    format: ModelFormat
    versions: list[ManifestVersion]
    versionPolicy: ManifestVersionPolicy = Field(default_factory=ManifestVersionPolicy)
    maxBatchSize: int = 0
    dynamicBatching: ManifestDynamicBatching | None = None
    instanceGroups: list[ManifestInstanceGroup] = Field(default_factory=list)
    inputs: list[ManifestTensor] = Field(default_factory=list)
    outputs: list[ManifestTensor] = Field(default_factory=list)
    credentials: ManifestCredentials | None = None
    verification: ManifestVerification | None = None
    llm: ManifestLLM | None = None

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not TRITON_NAME_RE.match(v):
            raise ValueError(f"invalid Triton model name {v!r}")
        return v

    @model_validator(mode="after")
    def _versions_unique(self) -> ManifestModel:
        nums = [v.version for v in self.versions]
        if len(nums) != len(set(nums)):
            raise ValueError(f"model {self.name}: duplicate version numbers {nums}")
        return self

    def wanted_versions(self) -> list[int]:
        """The versions Triton must serve, per the version policy (Triton's semantics)."""
        p = self.versionPolicy
        return select_versions(
            (v.version for v in self.versions), latest=p.latest, all=p.all, specific=p.specific
        )


class ModelManifest(_Base):
    apiVersion: str = MANIFEST_API_VERSION
    kind: str = MANIFEST_KIND
    #: metadata.generation of the ModelDeployment this was rendered from
    generation: int = 0
    models: list[ManifestModel] = Field(default_factory=list)

    def to_json(self) -> str:
        return json.dumps(self.model_dump(mode="json", exclude_none=True), indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, text: str) -> ModelManifest:
        return cls.model_validate_json(text)

    @classmethod
    def load(cls, path: str | Path) -> ModelManifest:
        p = Path(path)
        try:
            return cls.from_json(p.read_text())
        except FileNotFoundError:
            raise
        except Exception as exc:  # pydantic.ValidationError or json error
            raise ValueError(f"{p}: invalid model manifest: {exc}") from exc
