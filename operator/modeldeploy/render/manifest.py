"""The model manifest and its ConfigMap (key ``manifest.json``).

The runtime agent in each Triton pod reads the mounted manifest and makes the model repository and
Triton's loaded versions match it.

* ``rollout.strategy: inPlace``: one mutable ConfigMap ``<name>-models``; versions change here, not in
  the pod template, and the running pods' agents switch versions in place.
* ``rollout.strategy: rolling``: one immutable ConfigMap per revision, ``<name>-models-<hash>``
  (content-addressed: the hash of the manifest without its generation), referenced by the pod
  template. A new manifest is a new ConfigMap and so a new pod template: new pods start on it while
  the old pods keep the manifest they started with. The operator deletes the ConfigMaps that no
  ReplicaSet with pods references any more.

The in-place ConfigMap also carries the operator's manifest-push public key (``push-key.pub``,
PEM, not secret; empty when the renderer is given none), mounted beside the manifest: the agents
verify the operator's pushes with it (runtime ``pushsign``). It is left out of the manifest and of
every hash the pod template holds, so a new key rewrites the ConfigMap but rolls no pods. Rolling
revisions carry no key: their pods are never pushed to (a new manifest is a new revision), and an
immutable ConfigMap could not take a new key.
"""

from __future__ import annotations

from typing import Any, Literal

from modeldeploy.api.v1alpha1 import ModelDeployment, ModelSpec
from modeldeploy.render.common import (
    CREDENTIALS_MOUNT_ROOT,
    RenderOptions,
    configmap_name,
    metadata,
    stable_hash,
)
from modeldeploy.render.verification import manifest_verification
from modeldeploy_runtime.manifest import (
    MANIFEST_KEY,
    ManifestCredentials,
    ManifestDynamicBatching,
    ManifestInstanceGroup,
    ManifestLLM,
    ManifestModel,
    ManifestTensor,
    ManifestVersion,
    ManifestVersionPolicy,
    ModelManifest,
)
from modeldeploy_runtime.pushsign import PUSH_KEY_FILE

#: The API's instance-group kinds as Triton's config names them.
INSTANCE_KIND: dict[str, Literal["KIND_GPU", "KIND_CPU", "KIND_AUTO"]] = {
    "GPU": "KIND_GPU",
    "CPU": "KIND_CPU",
    "AUTO": "KIND_AUTO",
}


def credentials_mount_path(secret_name: str) -> str:
    """Where the agent containers see the storage Secret ``secret_name`` (one file per key)."""
    return f"{CREDENTIALS_MOUNT_ROOT}/{secret_name}"


def _llm(m: ModelSpec, gpus: int) -> ManifestLLM | None:
    if not m.is_llm():
        return None
    e = m.llm
    return ManifestLLM(
        tensorParallelSize=m.tensor_parallel_size(gpus),
        gpuMemoryUtilization=e.gpuMemoryUtilization if e else None,
        maxModelLen=e.maxModelLen if e else None,
        dtype=e.dtype if e else None,
    )


def _model(m: ModelSpec, gpus: int = 0) -> ManifestModel:
    policy = ManifestVersionPolicy(
        latest=m.versionPolicy.latest,
        all=m.versionPolicy.all,
        specific=sorted(m.versionPolicy.specific) if m.versionPolicy.specific is not None else None,
    )
    creds = None
    if m.credentials is not None:
        creds = ManifestCredentials(
            mountPath=credentials_mount_path(m.credentials.secretName),
            endpoint=m.credentials.endpoint,
            region=m.credentials.region,
        )
    return ManifestModel(
        name=m.name,
        format=m.format,
        versions=[
            ManifestVersion(version=v.version, source=m.version_source(v.version), sha256=v.sha256)
            for v in sorted(m.versions, key=lambda v: v.version)
        ],
        versionPolicy=policy,
        verification=manifest_verification(m),
        maxBatchSize=m.maxBatchSize,
        dynamicBatching=(
            ManifestDynamicBatching(
                preferredBatchSizes=list(m.dynamicBatching.preferredBatchSizes or []),
                maxQueueDelayMicroseconds=m.dynamicBatching.maxQueueDelayMicroseconds,
            )
            if m.dynamicBatching is not None
            else None
        ),
        instanceGroups=[
            ManifestInstanceGroup(count=g.count, kind=INSTANCE_KIND[g.kind]) for g in (m.instanceGroups or [])
        ],
        inputs=[ManifestTensor(name=t.name, dataType=t.dataType, dims=list(t.dims)) for t in m.inputs or []],
        outputs=[
            ManifestTensor(name=t.name, dataType=t.dataType, dims=list(t.dims)) for t in m.outputs or []
        ],
        credentials=creds,
        llm=_llm(m, gpus),
    )


def build_manifest(md: ModelDeployment, generation: int | None = None) -> ModelManifest:
    """The resolved models, versions and sources the pods must serve."""
    return ModelManifest(
        generation=md.generation if generation is None else generation,
        models=[_model(m, md.spec.resources.gpu_count()) for m in md.spec.models],
    )


def manifest_content_hash(manifest: ModelManifest) -> str:
    """Hash of what the pods serve (the generation is left out: scaling must not roll pods)."""
    body = manifest.model_dump(mode="json", exclude_none=True)
    body.pop("generation", None)
    return stable_hash(body)


#: Hex digits of the manifest hash in a rolling revision's ConfigMap name (``<name>-models-<hash>``;
#: a ModelDeployment name has at most 63 characters, so the name stays far below 253).
REVISION_HASH_LENGTH = 10


def manifest_configmap_name(md: ModelDeployment) -> str:
    """The ConfigMap the pod template mounts: ``<name>-models`` (inPlace), or the content-addressed
    ``<name>-models-<hash>`` of the current manifest (rolling)."""
    if md.spec.rollout.strategy != "rolling":
        return configmap_name(md)
    return f"{configmap_name(md)}-{manifest_content_hash(build_manifest(md))[:REVISION_HASH_LENGTH]}"


def carries_push_key(md: ModelDeployment) -> bool:
    """Whether the manifest ConfigMap holds the push public key (in place: pushes are how a new
    manifest reaches running pods before the kubelet syncs the volume)."""
    return md.spec.rollout.strategy != "rolling"


def render_configmap(md: ModelDeployment, opts: RenderOptions | None = None) -> dict[str, Any]:
    opts = opts or RenderOptions()
    manifest = build_manifest(md, opts.manifest_generation)
    data = {MANIFEST_KEY: manifest.to_json()}
    if carries_push_key(md):
        data[PUSH_KEY_FILE] = opts.push_public_key
    body: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": metadata(md, manifest_configmap_name(md), component="model-manifest"),
        "data": data,
    }
    if md.spec.rollout.strategy == "rolling":
        body["immutable"] = True  # a revision's manifest never changes under its running pods
    return body
