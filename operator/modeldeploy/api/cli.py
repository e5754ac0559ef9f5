"""``mdctl crd``: print, write or check the generated ModelDeployment CRD."""

from __future__ import annotations

import argparse
import difflib
import sys
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg,unused-ignore]
    """Add ``mdctl crd`` to mdctl."""
    p = sub.add_parser(
        "crd",
        help="print the ModelDeployment CRD generated from the API models",
        description=(
            "Generate the ModelDeployment CustomResourceDefinition from the pydantic models in "
            "modeldeploy.api.v1alpha1. Without options the YAML goes to stdout."
        ),
    )
    mode = p.add_mutually_exclusive_group()
    mode.add_argument(
        "--write", action="store_true", help="write the CRD to the checked-in file (crds/...yaml)"
    )
    mode.add_argument(
        "--check",
        action="store_true",
        help="exit 1 (with a diff) when the checked-in file differs from what the models generate",
    )
    p.add_argument(
        "--path", type=Path, default=None, help="CRD file for --write/--check (default: crds/<file>)"
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from modeldeploy.api.crd import default_crd_path, render_crd

    text = render_crd()
    path: Path = args.path or default_crd_path()
    if args.write:
        path.parent.mkdir(parents=True, exist_ok=True)
        old = path.read_text() if path.exists() else None
        if old != text:
            path.write_text(text)
            print(f"wrote {path}", file=sys.stderr)
        else:
            print(f"{path} is up to date", file=sys.stderr)
        return 0
    if args.check:
        if not path.exists():
            print(f"{path} does not exist; run `mdctl crd --write`", file=sys.stderr)
            return 1
        old = path.read_text()
        if old == text:
            print(f"{path} is up to date", file=sys.stderr)
            return 0
        diff = difflib.unified_diff(
            old.splitlines(keepends=True), text.splitlines(keepends=True), str(path), "generated"
        )
        sys.stdout.writelines(diff)
        print(f"{path} is stale; run `mdctl crd --write`", file=sys.stderr)
        return 1
    sys.stdout.write(text)
    return 0
