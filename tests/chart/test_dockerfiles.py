"""The images cannot be built here (no container engine), so these checks keep docker/*.Dockerfile in
step with the package metadata: the extras each image installs, the console scripts it runs, the
files it copies, and that each image's dependency closure covers what its code imports at module
level (the runtime image's without kopf or the kubernetes client)."""

from __future__ import annotations

import ast
import re
import shlex
import sys
import tomllib
from collections.abc import Mapping
from functools import cache
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parents[2]
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())
PROJECT = PYPROJECT["project"]

# image -> (extras installed, console script run, package folder its code lives in)
IMAGES = {
    "operator": ({"operator"}, "mdctl", "operator"),
    "runtime": (set(), "modeldeploy-runtime", "runtime"),
    # LLM pods: the agent plus the OpenAI-compatible endpoint (issue #13)
    "runtime-llm": ({"llm"}, "modeldeploy-runtime", "runtime"),
}
NEVER_IN_RUNTIME = {"kopf", "kubernetes"}


def _instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with line continuations joined and comments dropped."""
    out: list[tuple[str, str]] = []
    buf = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not buf and (not line or line.startswith("#")):
            continue
        if line.endswith("\\"):
            buf += line[:-1] + " "
            continue
        buf += line
        op, _, args = buf.partition(" ")
        out.append((op.upper(), args.strip()))
        buf = ""
    return out


def _dockerfile(image: str) -> Path:
    return REPO / "docker" / f"{image}.Dockerfile"


def _pip_installs(image: str) -> list[str]:
    """The package specs passed to `pip install` for the project ('.' or '.[extra,...]')."""
    specs = []
    for op, args in _instructions(_dockerfile(image)):
        if op != "RUN":
            continue
        for cmd in re.split(r"&&|;", args):
            words = shlex.split(cmd)
            if len(words) >= 2 and words[0].endswith("pip") and words[1] == "install":
                specs += [w for w in words[2:] if not w.startswith("-")]
    return specs


def _extras(spec: str) -> set[str]:
    m = re.fullmatch(r"\.(?:\[([a-z0-9_,-]*)\])?", spec)
    assert m, (
        f"unexpected pip install spec {spec!r}: install the project from the build context ('.[extras]')"
    )
    return {e for e in (m.group(1) or "").split(",") if e}


@pytest.mark.parametrize("image", sorted(IMAGES))
def test_installs_the_project_with_the_right_extras(image: str) -> None:
    extras, _, _ = IMAGES[image]
    specs = _pip_installs(image)
    assert len(specs) == 1, f"{image}: expected one `pip install` of the project, got {specs}"
    got = _extras(specs[0])
    assert got == extras, f"docker/{image}.Dockerfile installs extras {got}, expected {extras}"
    assert got <= set(PROJECT["optional-dependencies"]), (
        f"unknown extras {got - set(PROJECT['optional-dependencies'])}"
    )


@pytest.mark.parametrize("image", sorted(IMAGES))
def test_base_image_pinned_and_python_matches(image: str) -> None:
    ins = _instructions(_dockerfile(image))
    args = dict(a.split("=", 1) for op, a in ins if op == "ARG" and "=" in a)
    froms = [a.split()[0] for op, a in ins if op == "FROM"]
    assert len(froms) == 2, f"{image}: expected a build stage and a final stage"
    for ref in froms:
        ref = re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], ref)
        name, _, tag = ref.partition(":")
        assert name == "python", ref
        m = re.match(r"(\d+\.\d+\.\d+)-slim-\w+$", tag)
        assert m, f"{image}: base image {ref} must be pinned to a full version (python:X.Y.Z-slim-<distro>)"
        assert SpecifierSet(PROJECT["requires-python"]).contains(m.group(1)), (
            f"{image}: Python {m.group(1)} does not satisfy requires-python {PROJECT['requires-python']}"
        )


@pytest.mark.parametrize("image", sorted(IMAGES))
def test_entrypoint_user_and_copies(image: str) -> None:
    _, script, _ = IMAGES[image]
    ins = _instructions(_dockerfile(image))
    (entry,) = [a for op, a in ins if op == "ENTRYPOINT"]
    assert entry == f'["{script}"]'
    assert script in PROJECT["scripts"], f"{script} is not a [project.scripts] entry point"
    users = [a for op, a in ins if op == "USER"]
    assert users and re.fullmatch(r"[1-9]\d*:[1-9]\d*", users[-1]), (
        f"{image}: final USER must be a numeric non-root uid:gid"
    )
    ignore = (REPO / "docker" / f"{image}.Dockerfile.dockerignore").read_text().splitlines()
    for op, a in ins:
        if op == "COPY" and not a.startswith("--from"):
            *srcs, _dest = a.split()
            for src in srcs:
                assert (REPO / src).exists(), f"docker/{image}.Dockerfile copies {src}, which does not exist"
                assert f"!{src}" in ignore, f"{src} is excluded by docker/{image}.Dockerfile.dockerignore"
    # the source folders the wheel is built from (setuptools packages.find) and the license file
    copied = {
        s.rstrip("/") for op, a in ins if op == "COPY" and not a.startswith("--from") for s in a.split()[:-1]
    }
    assert set(PYPROJECT["tool"]["setuptools"]["packages"]["find"]["where"]) <= copied
    assert set(PROJECT["license-files"]) <= copied


# ------------------------------------------------------------------ dependency closure vs imports
def _requirement_closure(extras: set[str]) -> set[str]:
    """Canonical names of every distribution installed by `pip install .[extras]` (from the
    metadata of the packages in this environment)."""
    todo: list[tuple[Requirement, set[str]]] = []
    for r in PROJECT["dependencies"]:
        todo.append((Requirement(r), set()))
    for e in extras:
        for r in PROJECT["optional-dependencies"][e]:
            todo.append((Requirement(r), set()))
    seen: set[str] = set()
    while todo:
        req, _ = todo.pop()
        name = canonicalize_name(req.name)
        if name == "modeldeploy":
            for e in req.extras:
                todo += [(Requirement(r), set()) for r in PROJECT["optional-dependencies"][e]]
            continue
        key = name + "[" + ",".join(sorted(req.extras)) + "]"
        if key in seen:
            continue
        seen.add(key)
        try:
            reqs = metadata.requires(req.name) or []
        except metadata.PackageNotFoundError:
            continue
        for raw in reqs:
            sub = Requirement(raw)
            envs = [{"extra": ""}] + [{"extra": e} for e in req.extras]
            if sub.marker is None or any(sub.marker.evaluate(env) for env in envs):
                todo.append((sub, set()))
    return {k.split("[")[0] for k in seen}


#: Files of the package folders that never run in the image: they are copied into a Triton model
#: repository and run inside Triton's python backend stub, with its own environment.
NOT_IN_IMAGE = {
    "runtime/modeldeploy_runtime/python_backend_wrapper.py",
    "runtime/modeldeploy_runtime/transformers_backend.py",
    "runtime/modeldeploy_runtime/trtllm_text_backend.py",
}


def _module_level_imports(folder: Path) -> set[str]:
    """Top-level names imported at module level (not inside functions or TYPE_CHECKING blocks) by
    the modules of a package folder. Heavy optional dependencies (torch, tritonclient) must be
    imported inside functions, so the images start without them."""
    names: set[str] = set()

    def visit(body: list[ast.stmt]) -> None:
        for node in body:
            if isinstance(node, ast.Import):
                names.update(a.name.split(".")[0] for a in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.split(".")[0])
            elif isinstance(node, ast.If) and "TYPE_CHECKING" not in ast.unparse(node.test):
                visit(node.body)
                visit(node.orelse)
            elif isinstance(node, ast.Try):
                visit(node.body)

    for py in sorted(folder.rglob("*.py")):
        if "__pycache__" in py.parts or str(py.relative_to(REPO)) in NOT_IN_IMAGE:
            continue
        visit(ast.parse(py.read_text(), str(py)).body)
    return names


@cache
def _module_to_dists() -> Mapping[str, list[str]]:
    return metadata.packages_distributions()


@pytest.mark.parametrize("image", sorted(IMAGES))
def test_image_dependencies_cover_module_level_imports(image: str) -> None:
    extras, _, folder = IMAGES[image]
    closure = _requirement_closure(extras)
    own = {"modeldeploy", "modeldeploy_runtime"}
    missing = {}
    for mod in sorted(_module_level_imports(REPO / folder)):
        if mod in sys.stdlib_module_names or mod in own or mod == "__future__":
            continue
        dists = {canonicalize_name(d) for d in _module_to_dists().get(mod, [])}
        if not dists:
            missing[mod] = "not installed in this environment either"
        elif not dists & closure:
            missing[mod] = f"from {sorted(dists)}, not in the image's dependencies"
    assert not missing, f"docker/{image}.Dockerfile: modules imported at module level in {folder}/: {missing}"


@pytest.mark.parametrize("image", ["runtime", "runtime-llm"])
def test_runtime_image_has_no_kubernetes_stack(image: str) -> None:
    closure = _requirement_closure(IMAGES[image][0])
    assert not closure & NEVER_IN_RUNTIME, f"the runtime image would install {closure & NEVER_IN_RUNTIME}"
    assert {"kopf", "kubernetes"} <= _requirement_closure(IMAGES["operator"][0])
    imported = _module_level_imports(REPO / "runtime")
    assert not imported & NEVER_IN_RUNTIME, f"runtime/ imports {imported & NEVER_IN_RUNTIME}"
