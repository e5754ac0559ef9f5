"""The chart ships crds/*.yaml as templates (so `helm upgrade` upgrades the CRD); they must stay in
sync with crds/. Fix a failure with: python charts/modeldeploy/hack/sync_crds.py"""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path
from types import ModuleType
from typing import Any

import yaml

from ._helm import CHART, KUBE_VERSION, REPO, find, helm, render

CRD_DIR = REPO / "crds"


def _sync_module() -> ModuleType:
    path = CHART / "hack" / "sync_crds.py"
    spec = importlib.util.spec_from_file_location("modeldeploy_chart_sync_crds", path)
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _sources() -> list[dict[str, Any]]:
    files = sorted(CRD_DIR.glob("*.yaml"))
    assert files, f"no CRDs in {CRD_DIR}"
    return [yaml.safe_load(f.read_text()) for f in files]


def test_chart_crd_templates_are_in_sync() -> None:
    sync = _sync_module()
    want = sync.expected()
    have = {p.name: p.read_text() for p in (CHART / "templates").glob("crd-*.yaml")}
    assert set(have) == set(want), f"chart CRD templates {sorted(have)} != expected {sorted(want)}"
    for name, text in want.items():
        assert have[name] == text, (
            f"charts/modeldeploy/templates/{name} is stale: run python charts/modeldeploy/hack/sync_crds.py"
        )
    assert sync.main(["--check"]) == 0


def test_rendered_crd_equals_crds_folder() -> None:
    rendered = {c["metadata"]["name"]: c for c in find(render(), "CustomResourceDefinition")}
    for src in _sources():
        name = src["metadata"]["name"]
        assert name in rendered, f"{name} is not rendered by the chart"
        got = rendered[name]
        assert got["spec"] == src["spec"], f"{name}: rendered spec differs from crds/"
        assert got["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
        for k, v in (src["metadata"].get("annotations") or {}).items():
            assert got["metadata"]["annotations"][k] == v
        assert got["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "Helm"


def test_crd_keep_and_enabled_switches(tmp_path: Path) -> None:
    crds = find(render({"crds": {"enabled": True, "keep": False}}, tmp=tmp_path), "CustomResourceDefinition")
    assert crds
    for c in crds:
        assert "helm.sh/resource-policy" not in (c["metadata"].get("annotations") or {})
    assert not find(
        render({"crds": {"enabled": False, "keep": True}}, tmp=tmp_path), "CustomResourceDefinition"
    )


def test_sync_detects_a_changed_crd(tmp_path: Path) -> None:
    """The sync check really fails when crds/ changes (e.g. a new field) and the chart is not updated,
    and templates survive '{{' in descriptions."""
    sync = _sync_module()
    crd_dir = tmp_path / "crds"
    shutil.copytree(CRD_DIR, crd_dir)
    f = sorted(crd_dir.glob("*.yaml"))[0]
    crd = yaml.safe_load(f.read_text())
    schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    schema["description"] = "Templates like {{ .Values }} stay literal."
    f.write_text(yaml.safe_dump(crd))
    assert sync.main(["--check", "--crds", str(crd_dir)]) == 1
    name, text = sync.render(f)
    assert '{{ "{{" }} .Values }}' in text
    chart = tmp_path / "chart"
    shutil.copytree(CHART, chart)
    (chart / "templates" / name).write_text(text)
    out = helm("template", "md", str(chart), "--kube-version", KUBE_VERSION).stdout
    (got,) = find([d for d in yaml.safe_load_all(out) if d], "CustomResourceDefinition")
    assert got["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["description"] == schema["description"]
