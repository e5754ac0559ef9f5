"""examples/gitops: the Argo CD and Flux objects point at real paths, their chart values pass the
chart's values.schema.json, and the model repository builds (real kustomize, via kubectl) into
valid ModelDeployments where a version bump changes exactly the served version."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from ._helm import CHART, REPO

GITOPS = REPO / "examples" / "gitops"


def _docs(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def _all_docs() -> dict[str, list[dict[str, Any]]]:
    return {str(p.relative_to(GITOPS)): _docs(p) for p in sorted(GITOPS.rglob("*.yaml"))}


def _kustomize(path: Path) -> list[dict[str, Any]]:
    from modeldeploy.cluster.local import find_bin

    out = subprocess.run(
        [str(find_bin("kubectl")), "kustomize", str(path)], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    return [d for d in yaml.safe_load_all(out.stdout) if d]


def _validate_values(values: dict[str, Any], where: str) -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())
    errors = sorted(jsonschema.Draft7Validator(schema).iter_errors(values), key=str)
    assert not errors, f"{where}: values rejected by values.schema.json: {[e.message for e in errors]}"


def test_every_example_parses_and_has_a_kind() -> None:
    docs = _all_docs()
    for name, objs in docs.items():
        assert objs, f"{name} is empty"
        for o in objs:
            if "kind" in o:
                assert o.get("apiVersion"), f"{name}: {o['kind']} without apiVersion"
            else:  # argocd-cm-health.yaml is a merge patch of argocd-cm
                assert name == "argocd/argocd-cm-health.yaml", f"{name}: document without kind"


def test_schema_validator_rejects_bad_values() -> None:
    with pytest.raises(AssertionError, match=r"additionalProperties|not allowed"):
        _validate_values({"crds": {"enabled": True, "keep": True, "typo": 1}}, "test")


def test_argocd_application_installs_the_chart() -> None:
    (app,) = _docs(GITOPS / "argocd" / "modeldeploy-operator.yaml")
    assert app["apiVersion"] == "argoproj.io/v1alpha1" and app["kind"] == "Application"
    src = app["spec"]["source"]
    assert (REPO / src["path"]) == CHART
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert src["targetRevision"] == f"v{chart['appVersion']}"
    _validate_values(src["helm"]["valuesObject"], "argocd/modeldeploy-operator.yaml")
    assert "ServerSideApply=true" in app["spec"]["syncPolicy"]["syncOptions"]
    (models,) = _docs(GITOPS / "argocd" / "models.yaml")
    assert (REPO / models["spec"]["source"]["path"]).is_dir()


def test_flux_helmrelease_and_kustomizations() -> None:
    objs = _docs(GITOPS / "flux" / "operator" / "helmrelease.yaml")
    (hr,) = objs
    assert hr["apiVersion"] == "helm.toolkit.fluxcd.io/v2" and hr["kind"] == "HelmRelease"
    assert (REPO / hr["spec"]["chart"]["spec"]["chart"]).resolve() == CHART
    _validate_values(hr["spec"]["values"], "flux/operator/helmrelease.yaml")
    sources = {o["metadata"]["name"]: o for o in _docs(GITOPS / "flux" / "sources.yaml")}
    assert hr["spec"]["chart"]["spec"]["sourceRef"]["name"] in sources
    ks = {o["metadata"]["name"]: o for o in _docs(GITOPS / "flux" / "kustomizations.yaml")}
    for k in ks.values():
        assert k["apiVersion"] == "kustomize.toolkit.fluxcd.io/v1"
        assert (REPO / k["spec"]["path"]).is_dir(), k["spec"]["path"]
        assert k["spec"]["sourceRef"]["name"] in sources
        assert k["spec"]["wait"] is True
    assert ks["models-production"]["spec"]["dependsOn"] == [{"name": "modeldeploy-operator"}]
    (expr,) = ks["models-production"]["spec"]["healthCheckExprs"]
    assert expr["apiVersion"] == "modeldeploy.io/v1alpha1" and expr["kind"] == "ModelDeployment"
    assert {"current", "failed", "inProgress"} <= set(expr)
    operator_objs = _kustomize(GITOPS / "flux" / "operator")
    assert {o["kind"] for o in operator_objs} == {"Namespace", "HelmRelease"}


def test_model_repository_builds_valid_modeldeployments() -> None:
    from modeldeploy.api.v1alpha1 import ModelDeployment

    objs = _kustomize(GITOPS / "models" / "production")
    (md,) = objs
    assert md["metadata"]["namespace"] == "models"
    parsed = ModelDeployment.from_body(md)
    assert parsed.spec.replicas == 2
    assert parsed.spec.desired_versions() == {"resnet50": [2]}


def test_bumping_a_version_in_git_changes_only_the_served_version(tmp_path: Path) -> None:
    """The GitOps rollout: a commit that adds version 3 changes the served version 2 -> 3 and
    nothing else in the spec (so the operator rolls the model, not the pods' other settings)."""
    from modeldeploy.api.v1alpha1 import ModelDeployment

    repo = tmp_path / "models"
    shutil.copytree(GITOPS / "models", repo)
    f = repo / "base" / "resnet50.yaml"
    (doc,) = _docs(f)
    doc["spec"]["models"][0]["versions"].append({"version": 3})
    f.write_text(yaml.safe_dump(doc))
    (before,) = _kustomize(GITOPS / "models" / "production")
    (after,) = _kustomize(repo / "production")
    b, a = ModelDeployment.from_body(before), ModelDeployment.from_body(after)
    assert b.spec.desired_versions() == {"resnet50": [2]}
    assert a.spec.desired_versions() == {"resnet50": [3]}
    before["spec"]["models"][0]["versions"].append({"version": 3})
    assert before == after


def test_kind_config_has_a_gpu_worker() -> None:
    cfg = yaml.safe_load((REPO / "kind-config.yaml").read_text())
    assert cfg["kind"] == "Cluster" and cfg["apiVersion"] == "kind.x-k8s.io/v1alpha4"
    roles = [n["role"] for n in cfg["nodes"]]
    assert roles.count("control-plane") == 1 and "worker" in roles
    gpu_workers = [
        n
        for n in cfg["nodes"]
        if {"hostPath": "/dev/null", "containerPath": "/var/run/nvidia-container-devices/all"}
        in n.get("extraMounts", [])
    ]
    assert [n["role"] for n in gpu_workers] == ["worker"], "one worker gets the GPUs, never the control plane"
    assert (
        "kind create cluster --name modeldeploy --config kind-config.yaml"
        in (REPO / "docs" / "kind.md").read_text()
    )
