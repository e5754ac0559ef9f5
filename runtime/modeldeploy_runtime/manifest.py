"""The model manifest: the contract between the operator and the runtime agent.

The operator renders it (from a ModelDeployment) into the ConfigMap ``<name>-models`` under the key
``manifest.json``; the agent in each Triton pod reads the mounted file and makes the pod's model
repository and Triton's loaded versions match it. It carries no secrets: credentials are referenced
by the *names* of environment variables / mounted files, never by value.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

MANIFEST_KEY = "manifest.json"
MANIFEST_API_VERSION = "modeldeploy.io/v1alpha1"
MANIFEST_KIND = "ModelManifest"

ModelFormat = Literal["pytorch", "onnx", "python", "tensorrt", "transformers", "vllm", "tensorrtllm"]
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
        nums = sorted(v.version for v in self.versions)
        p = self.versionPolicy
        if p.all:
            return nums
        if p.specific is not None:
            return sorted(set(p.specific) & set(nums))
        n = p.latest or 1
        return nums[-n:]


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
