"""The repository layout: each top-level source folder holds one import package under its own name
(operator/modeldeploy/, runtime/modeldeploy_runtime/), so nothing shadows the standard library and
a built wheel carries everything the packages need."""

from __future__ import annotations

import importlib
import os
import shutil
import subprocess
import sys
import sysconfig
import tomllib
import venv
from pathlib import Path

import pytest

import modeldeploy
import modeldeploy_runtime

REPO = Path(__file__).resolve().parents[2]
PACKAGES = {"modeldeploy": REPO / "operator", "modeldeploy_runtime": REPO / "runtime"}


def _run(cmd: list[str], **kw: object) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False, **kw)  # type: ignore[call-overload]
    assert proc.returncode == 0, f"{cmd} exited {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    return proc  # type: ignore[no-any-return]


def test_source_folders_are_not_packages() -> None:
    for folder in PACKAGES.values():
        assert not (folder / "__init__.py").exists(), f"{folder} must not be a package"


def test_import_names_are_the_folder_names() -> None:
    for name, parent in PACKAGES.items():
        mod = importlib.import_module(name)
        assert Path(mod.__file__ or "").resolve().parent == parent / name


def test_repo_root_on_sys_path_keeps_the_stdlib_operator() -> None:
    """`python -c` and `python -m` from the root put it first on sys.path; operator/ is no package,
    so it is at most a namespace-package candidate and the stdlib module wins."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONSAFEPATH", "PYTHONPATH")}
    code = (
        "import operator, collections, modeldeploy, modeldeploy_runtime, modeldeploy.cli;"
        "print(operator.__file__); print(callable(operator.itemgetter));"
        "print(modeldeploy.__version__ == modeldeploy_runtime.__version__)"
    )
    for args in (["-c", code], ["-S", "-c", "import operator; print(operator.__file__)"]):
        out = _run([sys.executable, *args], cwd=REPO, env=env).stdout.split()
        stdlib = Path(sysconfig.get_paths()["stdlib"]).resolve()
        assert Path(out[0]).resolve().parent == stdlib, out
        assert out[1:] in (["True", "True"], []), out


def test_runtime_does_not_depend_on_operator_libraries() -> None:
    """The runtime runs inside the Triton pod: no kopf, no kubernetes client, no modeldeploy."""
    for path in (REPO / "runtime").rglob("*.py"):
        for line in path.read_text().splitlines():
            s = line.strip()
            if s.startswith(("import ", "from ")):
                mod = s.split()[1]
                assert mod.split(".")[0] not in {"kopf", "kubernetes", "modeldeploy"}, f"{path}: {s}"


def test_one_version() -> None:
    """The version is written once (modeldeploy_runtime/__init__.py); everything else reads it."""
    import importlib.metadata

    assert modeldeploy.__version__ == modeldeploy_runtime.__version__
    assert importlib.metadata.version("modeldeploy") == modeldeploy_runtime.__version__
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert "version" not in pyproject["project"] and "version" in pyproject["project"]["dynamic"]
    assert pyproject["tool"]["setuptools"]["dynamic"]["version"] == {
        "attr": "modeldeploy_runtime.__version__"
    }
    chart = (REPO / "charts" / "modeldeploy" / "Chart.yaml").read_text()
    assert f'appVersion: "{modeldeploy.__version__}"' in chart


@pytest.mark.integration
@pytest.mark.slow
def test_wheel_installs_and_runs_outside_the_checkout(tmp_path: Path) -> None:
    """Build a wheel from the tracked files only, install it into a fresh venv outside the checkout
    and run the console scripts there. The dependencies come from the dev venv's site-packages,
    added as a plain path (its .pth files, among them the editable install's, are not processed)."""
    src = tmp_path / "src"
    files = _run(["git", "-C", str(REPO), "ls-files", "-z"]).stdout.split("\0")
    for rel in filter(None, files):
        if (REPO / rel).is_file():
            (src / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / rel, src / rel)
    dist = tmp_path / "dist"
    _run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            "-w",
            str(dist),
            str(src),
        ]
    )
    (wheel,) = dist.glob("modeldeploy-*.whl")
    names = _run([sys.executable, "-m", "zipfile", "-l", str(wheel)]).stdout
    for needed in (
        "modeldeploy_runtime/config.pbtxt.j2",
        "modeldeploy_runtime/python_backend_wrapper.py",
        "modeldeploy_runtime/transformers_backend.py",
        "modeldeploy_runtime/py.typed",
        "modeldeploy/py.typed",
        "modeldeploy/render/__init__.py",
        "licenses/LICENSE",
    ):
        assert needed in names, f"{needed} missing from {wheel.name}:\n{names}"
    assert "tests/" not in names and "operator/modeldeploy" not in names

    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=False).create(env_dir)
    py = env_dir / "bin" / "python"
    site = Path(
        _run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"]).stdout.strip()
    )
    dev_site = sysconfig.get_paths()["purelib"]
    (site / "zz-dev-deps.pth").write_text(dev_site + "\n")
    _run([sys.executable, "-m", "pip", "--python", str(py), "install", "-q", "--no-deps", str(wheel)])

    outside = tmp_path / "elsewhere"
    outside.mkdir()
    shutil.copy(REPO / "examples" / "cpu-minimal.yaml", outside / "md.yaml")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    where = _run([str(py), "-c", "import modeldeploy, modeldeploy_runtime as r; print(modeldeploy.__file__, r.__file__)"],
                 cwd=outside, env=env).stdout  # fmt: skip
    assert str(REPO) not in where and str(site) in where, where
    bindir = env_dir / "bin"
    version = _run([str(bindir / "mdctl"), "version"], cwd=outside, env=env).stdout
    assert version.strip() == f"mdctl {modeldeploy_runtime.__version__}"
    rendered = _run([str(bindir / "mdctl"), "render", "md.yaml"], cwd=outside, env=env).stdout
    assert "kind: Deployment" in rendered and "tritonserver" in rendered
    assert "usage" in _run([str(bindir / "modeldeploy-runtime"), "--help"], cwd=outside, env=env).stdout
    # mdctl cluster needs the checkout's hack/build-bins.sh: from the wheel it says so and fails.
    proc = subprocess.run([str(bindir / "mdctl"), "cluster", "up"], cwd=outside, env=env,
                          capture_output=True, text=True, check=False)  # fmt: skip
    assert proc.returncode != 0
    assert "checkout" in proc.stderr and "build-bins.sh" in proc.stderr, proc.stderr
