"""The copy of the upstream CRDs in tests/fixtures stays identical to ../shared/crds."""

from __future__ import annotations

import pytest
from sharedpaths import VENDORED_CRDS, shared_dir


def test_vendored_upstream_crds_are_the_shared_ones_unmodified() -> None:
    shared = shared_dir() / "crds"
    if not shared.is_dir():  # a clone far from the workplace: nothing to compare the copy with
        pytest.skip(f"{shared} not found (MODELDEPLOY_SHARED names the shared folder)")
    names = sorted(p.name for p in shared.iterdir() if p.is_file())
    assert names == sorted(p.name for p in VENDORED_CRDS.iterdir() if p.is_file())
    for name in names:
        assert (VENDORED_CRDS / name).read_bytes() == (shared / name).read_bytes(), name
