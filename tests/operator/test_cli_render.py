"""`mdctl render FILE` and the `mdctl operator run` argument surface."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from opsupport import CASES

from modeldeploy.cli import build_parser, main


def test_render_prints_every_child(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["render", str(CASES / "gpu.yaml")]) == 0
    docs = list(yaml.safe_load_all(capsys.readouterr().out))
    assert [d["kind"] for d in docs] == [
        "ConfigMap",
        "NetworkPolicy",
        "Service",
        "Deployment",
        "PodDisruptionBudget",
        "ServiceMonitor",
    ]


def test_render_many_documents_and_missing_crds(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    f = tmp_path / "all.yaml"
    f.write_text((CASES / "keda.yaml").read_text() + "---\n" + (CASES / "cpu.yaml").read_text())
    rc = main(["render", str(f), "--without-crds", "scaledobjects.keda.sh",
               "--without-crds", "httpscaledobjects.http.keda.sh", "-o", "json"])  # fmt: skip
    out = capsys.readouterr()
    assert rc == 0
    kinds = [i["kind"] for i in yaml.safe_load(out.out)["items"]]
    assert "ScaledObject" not in kinds and kinds.count("Deployment") == 2
    assert "HTTPScaledObject" not in kinds
    assert "KEDA CRD scaledobjects.keda.sh is not installed" in out.err
    assert "requests cannot wake the deployment" in out.err


def test_render_errors_name_the_file_and_field(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    doc = yaml.safe_load((CASES / "cpu.yaml").read_text())
    doc["spec"]["models"][0]["versions"] = []
    doc["spec"]["podLabels"] = {"x": "y"}
    f = tmp_path / "bad.yaml"
    f.write_text(yaml.safe_dump(doc))
    assert main(["render", str(f)]) == 1
    err = capsys.readouterr().err
    assert str(f) in err and "spec.models[0].versions" in err


def test_operator_run_flags() -> None:
    args = build_parser().parse_args(
        [
            "operator",
            "run",
            "-n",
            "a",
            "-n",
            "b",
            "--log-format",
            "json",
            "--resync-seconds",
            "5",
            "--metrics-port",
            "0",
        ]
    )
    assert args.namespace == ["a", "b"] and args.log_format == "json" and args.resync_seconds == 5
    args = build_parser().parse_args(["operator", "run", "--all-namespaces"])
    assert args.all_namespaces and args.metrics_port == 8080 and args.health_port == 8081
    assert args.query_agents is True  # the default: status from the agents, manifests pushed
    assert build_parser().parse_args(["operator", "run", "--no-query-agents"]).query_agents is False
    assert (args.status_progress_seconds, args.status_detail_seconds) == (5.0, 30.0)
    args = build_parser().parse_args(
        ["operator", "run", "--status-progress-seconds", "0", "--status-detail-seconds", "0"]
    )
    assert (args.status_progress_seconds, args.status_detail_seconds) == (0.0, 0.0)
    assert args.status_workers == 8  # threads for status refreshes only
    assert build_parser().parse_args(["operator", "run", "--status-workers", "3"]).status_workers == 3
    with pytest.raises(SystemExit):
        build_parser().parse_args(["operator", "run", "-A", "-n", "x"])


def test_python_dash_m_entrypoint_renders() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "modeldeploy.cli", "render", str(CASES / "cpu.yaml")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert "kind: Deployment" in proc.stdout


REPO = Path(__file__).resolve().parents[2]
RENDERABLE = sorted((REPO / "examples").glob("*.yaml")) + sorted(
    (REPO / "tests" / "api" / "valid").glob("*.yaml")
)


def _annotation_maps(obj: object) -> list[dict[str, object]]:
    """Every ``annotations`` mapping anywhere in a rendered object (metadata, pod template)."""
    found: list[dict[str, object]] = []
    if isinstance(obj, dict):
        for k, v in obj.items():
            if k == "annotations" and isinstance(v, dict):
                found.append(v)
            found += _annotation_maps(v)
    elif isinstance(obj, list):
        for v in obj:
            found += _annotation_maps(v)
    return found


@pytest.mark.cluster
@pytest.mark.slow
@pytest.mark.parametrize("path", RENDERABLE, ids=[f"{p.parent.name}/{p.stem}" for p in RENDERABLE])
def test_render_output_applies_with_kubectl(
    cluster: object, namespace: str, shared_crds: list[str], path: Path
) -> None:
    """`mdctl render -o yaml FILE | kubectl apply -f -` works for every example (for real, not a dry
    run), and every annotation value it writes is a string."""
    rendered = subprocess.run(
        [sys.executable, "-m", "modeldeploy.cli", "render", "-n", namespace, "-o", "yaml", str(path)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert rendered.returncode == 0, rendered.stderr
    for doc in yaml.safe_load_all(rendered.stdout):
        for annots in _annotation_maps(doc):
            bad = {k: v for k, v in annots.items() if not isinstance(v, str)}
            assert not bad, f"{doc['kind']}: non-string annotation values {bad}"
    out = cluster.kubectl("apply", "-n", namespace, "-f", "-", input=rendered.stdout, check=False)  # type: ignore[attr-defined]
    assert out.returncode == 0, f"kubectl apply of `mdctl render {path.name}` failed:\n{out.stderr}"
    assert "created" in out.stdout
