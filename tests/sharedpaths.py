"""Where the project's shared material is (../shared), for the test fixtures.

A plain module rather than part of conftest.py, so that tests can import it (``from sharedpaths
import ...``): tests/ is on sys.path because of its rootless conftest.py.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def shared_dir() -> Path:
    """The project's shared material: $MODELDEPLOY_SHARED, else ``shared/`` beside this checkout,
    else beside the checkout it was cloned from (a clean clone made elsewhere, e.g. for CI), else
    beside any folder above this checkout."""
    env = os.environ.get("MODELDEPLOY_SHARED")
    if env:
        return Path(env)
    candidates = [REPO.parent / "shared"]
    origin = subprocess.run(
        ["git", "-C", str(REPO), "config", "--get", "remote.origin.url"],
        capture_output=True, text=True, check=False,
    ).stdout.strip()  # fmt: skip
    origin = origin.removeprefix("file://")
    if origin.startswith("/"):  # cloned from a local path (not a URL or host:path)
        candidates.append(Path(origin).resolve().parent / "shared")
    candidates += [p / "shared" for p in REPO.parents[1:]]
    return next((c for c in candidates if (c / "crds").is_dir()), candidates[0])


#: An unmodified copy of ../shared/crds, used when no shared/ folder can be found (a clone made far
#: from the workplace); tests/repo/test_upstream_crds.py keeps it identical to the shared one.
VENDORED_CRDS = REPO / "tests" / "fixtures" / "upstream-crds"


def upstream_crd_dir() -> Path:
    """The KEDA / prometheus-operator CRDs: ../shared/crds, else the copy in tests/fixtures."""
    shared = shared_dir() / "crds"
    return shared if any(shared.glob("*.yaml")) else VENDORED_CRDS
