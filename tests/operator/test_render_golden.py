"""Golden-output tests for every render function: `mdctl render` output per case, byte for byte.

Regenerate after an intended change with ``UPDATE_GOLDEN=1 pytest tests/operator/test_render_golden.py``
and review the diff.
"""

from __future__ import annotations

import os

import pytest
import yaml
from opsupport import CASES, GOLDEN, load_case

from modeldeploy import __version__
from modeldeploy.api.v1alpha1 import (
    RUNTIME_IMAGE_ENV,
    RUNTIME_LLM_IMAGE_ENV,
    TRITON_IMAGE_ENV,
    ModelDeployment,
)
from modeldeploy.render import RenderOptions, render_all
from modeldeploy.render.common import SCALEDOBJECT_CRD, SERVICEMONITOR_CRD
from modeldeploy.render.httpscaledobject import HTTPSCALEDOBJECT_CRD

ALL_CRDS = frozenset({SCALEDOBJECT_CRD, SERVICEMONITOR_CRD})
#: (case file, golden name, CRDs installed)
VARIANTS = [
    ("cpu", "cpu", ALL_CRDS),
    ("gpu", "gpu", ALL_CRDS),
    ("mig", "mig", ALL_CRDS),
    ("multi-model", "multi-model", ALL_CRDS),
    ("hpa", "hpa", ALL_CRDS),
    ("hpa-cpu", "hpa-cpu", ALL_CRDS),
    ("keda", "keda", ALL_CRDS),
    ("keda", "keda-http-addon", ALL_CRDS | {HTTPSCALEDOBJECT_CRD}),
    ("gpu", "gpu-without-prometheus-operator", frozenset({SCALEDOBJECT_CRD})),
    ("trust", "trust", ALL_CRDS),
    ("llm-vllm-tp1", "llm-vllm-tp1", ALL_CRDS),
    ("llm-vllm-tp2", "llm-vllm-tp2", ALL_CRDS),
    ("llm-vllm-tp8", "llm-vllm-tp8", ALL_CRDS),
    ("llm-tensorrtllm", "llm-tensorrtllm", ALL_CRDS),
    ("llm-transformers", "llm-transformers", ALL_CRDS),
    ("llm-autoscale-inflight-hpa", "llm-autoscale-inflight-hpa", ALL_CRDS),
    ("llm-autoscale-ttft-keda", "llm-autoscale-ttft-keda", ALL_CRDS),
    ("llm-autoscale-kvcache-hpa", "llm-autoscale-kvcache-hpa", ALL_CRDS),
    ("llm-autoscale-kvcache-keda", "llm-autoscale-kvcache-keda", ALL_CRDS),
]


def render_text(case: str, crds: frozenset[str]) -> str:
    md = ModelDeployment.from_body(load_case(case))
    opts = RenderOptions(crds=crds)
    docs = render_all(md, opts)
    text = yaml.safe_dump_all(docs, sort_keys=False)
    notes = "".join(f"# note: {n.reason}: {n.message}\n" for n in opts.notes)
    # Keep the goldens stable across releases.
    return (notes + text).replace(__version__, "VERSION")


@pytest.fixture(autouse=True)
def _no_image_overrides(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(TRITON_IMAGE_ENV, raising=False)
    monkeypatch.delenv(RUNTIME_IMAGE_ENV, raising=False)
    monkeypatch.delenv(RUNTIME_LLM_IMAGE_ENV, raising=False)


@pytest.mark.parametrize(("case", "golden", "crds"), VARIANTS, ids=[v[1] for v in VARIANTS])
def test_render_matches_golden(case: str, golden: str, crds: frozenset[str]) -> None:
    got = render_text(case, crds)
    path = GOLDEN / f"{golden}.yaml"
    if os.environ.get("UPDATE_GOLDEN"):
        path.write_text(got)
    assert path.exists(), f"{path} missing: run with UPDATE_GOLDEN=1"
    assert got == path.read_text(), f"render of {case} differs from {path} (UPDATE_GOLDEN=1 to accept)"


def test_every_case_has_a_golden() -> None:
    cases = {p.stem for p in CASES.glob("*.yaml")}
    assert cases <= {v[0] for v in VARIANTS}
    assert {p.stem for p in GOLDEN.glob("*.yaml")} == {v[1] for v in VARIANTS}
