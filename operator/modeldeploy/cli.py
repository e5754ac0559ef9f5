"""mdctl: the modeldeploy command-line tool.

Each area registers its own subcommands (``register(subparsers)``) so that importing mdctl stays
cheap: heavy imports (kopf, kubernetes, torch) happen inside the command functions.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from modeldeploy import __version__

# (module, description) — each module exposes register(subparsers: argparse._SubParsersAction).
COMMAND_MODULES: tuple[str, ...] = (
    "modeldeploy.cluster.cli",  # cluster up|down|status|env|build
    "modeldeploy.api.cli",  # crd
    "modeldeploy.cli_operator",  # operator run, render
    "modeldeploy_runtime.cli",  # package, lint, agent, health, fetch
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mdctl", description="modeldeploy: deploy ML models onto NVIDIA Triton on Kubernetes"
    )
    parser.add_argument("--version", action="version", version=f"mdctl {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    p = sub.add_parser("version", help="print the mdctl version")
    p.set_defaults(func=lambda args: print(f"mdctl {__version__}") or 0)
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    rc = args.func(args)
    return int(rc or 0)


if __name__ == "__main__":
    sys.exit(main())
