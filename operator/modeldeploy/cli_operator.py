"""``mdctl operator run`` (the kopf operator) and ``mdctl render FILE`` (children without a cluster)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

PLACEHOLDER_UID = "00000000-0000-0000-0000-000000000000"


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg,unused-ignore]
    """Add this area's subcommands to mdctl."""
    op = sub.add_parser("operator", help="run the modeldeploy operator")
    op_sub = op.add_subparsers(dest="operator_command", metavar="COMMAND", required=True)
    run = op_sub.add_parser("run", help="reconcile ModelDeployments (kopf, standalone)")
    scope = run.add_mutually_exclusive_group()
    scope.add_argument(
        "-n", "--namespace", action="append", default=[], help="namespace to watch (repeatable)"
    )
    scope.add_argument("-A", "--all-namespaces", action="store_true", help="watch every namespace (default)")
    run.add_argument("--log-format", choices=["text", "json"], default="text")
    run.add_argument("--verbose", action="store_true", help="log INFO messages of every handler")
    run.add_argument("--metrics-port", type=int, default=8080, help="Prometheus /metrics port (0: off)")
    run.add_argument(
        "--health-port", type=int, default=8081, help="liveness/readiness /healthz port (0: off)"
    )
    run.add_argument("--bind-address", default="0.0.0.0", help="address of the metrics and health servers")
    run.add_argument(
        "--resync-seconds",
        type=float,
        default=30.0,
        help="level-based resync interval per ModelDeployment (drift repair)",
    )
    run.add_argument(
        "--workers",
        type=int,
        default=16,
        help="reconciles of different ModelDeployments run in parallel up to this bound (the work "
        "queue's worker threads; one object is never reconciled twice at once)",
    )
    run.add_argument(
        "--status-workers",
        type=int,
        default=8,
        help="threads that run status refreshes only, besides --workers (a refresh is mostly one "
        "status PATCH: these bound the status writes in flight when many Deployments turn Available)",
    )
    run.add_argument(
        "--manifest-sync-seconds",
        type=float,
        default=90.0,
        help="after an in-place version change, how long pods may take to see the new manifest "
        "(kubelet ConfigMap volume sync) before their readiness counts for the new versions (0: off)",
    )
    run.add_argument(
        "--status-progress-seconds",
        type=float,
        default=5.0,
        help="write a change of a ModelDeployment's conditions' reasons or READY/VERSIONS columns "
        "at most this long after its last status write (condition flips, a new generation and "
        "served versions are written at once)",
    )
    run.add_argument(
        "--status-detail-seconds",
        type=float,
        default=30.0,
        help="write other status detail (condition messages, replica counts) at most this often, "
        "unless written with a more urgent change (0 and 0: every change at once)",
    )
    run.add_argument(
        "--query-agents",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="talk to each pod's runtime agent over the pod IP: read its /status for the per-version "
        "truth in the status and push changed manifests to it (default: on; --no-query-agents when "
        "the operator cannot reach pod IPs)",
    )
    run.add_argument(
        "--keda-interceptor",
        default=None,
        metavar="HOST:PORT",
        help="the KEDA HTTP add-on's interceptor proxy Service; with autoscaling.mode keda and "
        "minReplicas 0 a ModelDeployment's Service becomes an ExternalName alias of it (default: "
        "$MODELDEPLOY_KEDA_INTERCEPTOR or keda-add-ons-http-interceptor-proxy.keda.svc.cluster.local:8080)",
    )
    run.set_defaults(func=_run)

    render = sub.add_parser("render", help="print the children of ModelDeployment manifests (no cluster)")
    render.add_argument("file", type=Path, help="YAML file with one or more ModelDeployments ('-': stdin)")
    render.add_argument("-n", "--namespace", default=None, help="namespace when the manifest has none")
    render.add_argument("-o", "--output", choices=["yaml", "json"], default="yaml")
    render.add_argument(
        "--without-crds",
        action="append",
        default=[],
        metavar="CRD",
        help="render as if this CRD were missing (e.g. servicemonitors.monitoring.coreos.com)",
    )
    render.set_defaults(func=_render)


def _run(args: argparse.Namespace) -> int:
    import logging

    import kopf

    from modeldeploy import memory, metrics
    from modeldeploy.handlers import register as register_handlers
    from modeldeploy.reconcile.reconciler import OperatorConfig

    memory.limit_arenas()  # before any thread starts: see modeldeploy.memory
    kopf.configure(
        verbose=args.verbose,
        log_format=kopf.LogFormat.JSON if args.log_format == "json" else kopf.LogFormat.FULL,
    )
    if not args.verbose:
        logging.getLogger("kopf").setLevel(logging.WARNING)
    from_env = OperatorConfig.from_env()
    config = OperatorConfig(
        resync_seconds=args.resync_seconds,
        workers=args.workers,
        status_workers=args.status_workers,
        query_agents=args.query_agents,
        namespaces=list(args.namespace),
        manifest_sync_seconds=args.manifest_sync_seconds,
        status_progress_seconds=args.status_progress_seconds,
        status_detail_seconds=args.status_detail_seconds,
        keda_interceptor=args.keda_interceptor or from_env.keda_interceptor,
        # POD_NAMESPACE: the NetworkPolicies' operator namespace and where its push key Secret is
        operator_namespace=from_env.operator_namespace,
    )
    registry = kopf.OperatorRegistry()
    register_handlers(registry, config)
    if args.metrics_port:
        metrics.serve(args.metrics_port, args.bind_address)
    liveness = f"http://{args.bind_address}:{args.health_port}/healthz" if args.health_port else None
    kopf.run(
        registry=registry,
        standalone=True,
        clusterwide=not args.namespace,
        namespaces=args.namespace,
        liveness_endpoint=liveness,
    )
    return 0


def _load_docs(path: Path) -> list[Any]:
    import yaml

    text = sys.stdin.read() if str(path) == "-" else path.read_text()
    return [d for d in yaml.safe_load_all(text) if d]


def _render(args: argparse.Namespace) -> int:
    import json

    import yaml

    from modeldeploy import yamlout
    from modeldeploy.api.v1alpha1 import KIND, ModelDeployment, SpecError
    from modeldeploy.render import RenderError, RenderOptions, render_all
    from modeldeploy.render.common import SCALEDOBJECT_CRD, SERVICEMONITOR_CRD
    from modeldeploy.render.httpscaledobject import HTTPSCALEDOBJECT_CRD

    try:
        docs = _load_docs(args.file)
    except (OSError, yaml.YAMLError) as exc:
        print(f"error: {args.file}: {exc}", file=sys.stderr)
        return 1
    crds = frozenset({SCALEDOBJECT_CRD, HTTPSCALEDOBJECT_CRD, SERVICEMONITOR_CRD} - set(args.without_crds))
    out: list[dict[str, Any]] = []
    errors = 0
    for i, doc in enumerate(docs):
        if not isinstance(doc, dict) or doc.get("kind") != KIND:
            continue
        meta = dict(doc.get("metadata") or {})
        meta.setdefault("namespace", args.namespace or "default")
        meta.setdefault("uid", PLACEHOLDER_UID)
        meta.setdefault("generation", 1)
        doc = {**doc, "metadata": meta}
        where = f"{args.file} (document {i + 1}, {meta.get('name', '?')})"
        try:
            md = ModelDeployment.from_body(doc)
            opts = RenderOptions(crds=crds)
            out.extend(render_all(md, opts))
            for note in opts.notes:
                print(f"note: {where}: {note.message}", file=sys.stderr)
        except SpecError as exc:
            for e in exc.errors:
                print(f"error: {where}: {e}", file=sys.stderr)
            errors += 1
        except RenderError as exc:
            print(f"error: {where}: {exc}", file=sys.stderr)
            errors += 1
    if args.output == "json":
        print(json.dumps({"apiVersion": "v1", "kind": "List", "items": out}, indent=2))
    else:
        print(yamlout.dump_all(out), end="")
    return 1 if errors else 0
