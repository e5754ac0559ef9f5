"""Helpers for the chart tests: the pinned helm binary, rendering, and lookups in rendered output."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "modeldeploy"
ALL_VALUES = CHART / "ci" / "all-values.yaml"
#: helm built from source reports client-go's placeholder version (v1.20) as the default cluster
#: version, which the chart's kubeVersion constraint rejects: render for the pinned Kubernetes.
KUBE_VERSION = "1.36.3"


def helm_bin() -> Path:
    """The pinned helm (hack/build-bins.sh). Missing helm is an error, never a skip: CI builds it."""
    from modeldeploy.cluster.local import find_bin

    return find_bin("helm")


def helm(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([str(helm_bin()), *args], capture_output=True, text=True, timeout=120)
    if check and proc.returncode != 0:
        raise AssertionError(f"helm {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr}")
    return proc


def template_args(
    values: dict[str, Any] | None = None,
    *,
    files: tuple[Path, ...] = (),
    tmp: Path | None = None,
    release: str = "md",
    namespace: str = "modeldeploy-system",
) -> list[str]:
    args = ["template", release, str(CHART), "--namespace", namespace, "--kube-version", KUBE_VERSION]
    for f in files:
        args += ["-f", str(f)]
    if values:
        assert tmp is not None, "pass tmp to write a values file"
        vf = tmp / f"values-{len(list(tmp.glob('values-*.yaml')))}.yaml"
        vf.write_text(yaml.safe_dump(values))
        args += ["-f", str(vf)]
    return args


def render(
    values: dict[str, Any] | None = None,
    *,
    files: tuple[Path, ...] = (),
    tmp: Path | None = None,
    release: str = "md",
    namespace: str = "modeldeploy-system",
) -> list[dict[str, Any]]:
    """`helm template` the chart; the rendered objects in order."""
    out = helm(*template_args(values, files=files, tmp=tmp, release=release, namespace=namespace)).stdout
    return [d for d in yaml.safe_load_all(out) if d]


def find(objs: list[dict[str, Any]], kind: str, name: str | None = None) -> list[dict[str, Any]]:
    return [o for o in objs if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)]


def one(objs: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    found = find(objs, kind)
    assert len(found) == 1, f"expected one {kind}, got {[o['metadata']['name'] for o in found]}"
    return found[0]


def rules_table(rules: list[dict[str, Any]]) -> dict[tuple[str, str], set[str]]:
    """{(apiGroup, resource): verbs} of a list of PolicyRules (merging duplicates)."""
    table: dict[tuple[str, str], set[str]] = {}
    for r in rules:
        assert not r.get("resourceNames"), r
        assert not r.get("nonResourceURLs"), r
        for g in r["apiGroups"]:
            for res in r["resources"]:
                table.setdefault((g, res), set()).update(r["verbs"])
    return table
