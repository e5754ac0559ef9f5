"""`mdctl cluster ...`: the local control plane for demos and tests."""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from modeldeploy.cluster.local import LocalCluster


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg,unused-ignore]
    p = sub.add_parser(
        "cluster",
        help="local Kubernetes control plane (etcd, kube-apiserver, KWOK nodes); needs a source checkout",
        description=(
            "A real local Kubernetes control plane for demos and tests. Its pinned binaries are built "
            "by hack/build-bins.sh of a modeldeploy source checkout: the one this package is installed "
            "from (pip install -e .), or $MODELDEPLOY_CHECKOUT. An installed wheel alone cannot build them."
        ),
    )
    csub = p.add_subparsers(dest="cluster_command", metavar="ACTION", required=True)

    up = csub.add_parser("up", help="build the pinned binaries if needed and start the cluster")
    _name(up)
    up.add_argument(
        "--gpu-nodes", type=int, default=2, help="KWOK nodes advertising nvidia.com/gpu (default 2)"
    )
    up.add_argument("--gpus-per-node", type=int, default=8, help="nvidia.com/gpu per GPU node (default 8)")
    up.add_argument("--cpu-nodes", type=int, default=1, help="CPU-only KWOK nodes (default 1)")
    up.add_argument("--gpu-product", default="NVIDIA-H100-80GB-HBM3", help="nvidia.com/gpu.product label")
    up.set_defaults(func=run_cluster_command, cluster_func=_up)

    for action, helptext, fn in (
        ("down", "stop every process of the cluster and delete its data", _down),
        ("status", "show whether the cluster runs (JSON)", _status),
        ("env", 'print export lines for KUBECONFIG and PATH (eval "$(mdctl cluster env)")', _env),
        ("kubeconfig", "print the admin kubeconfig path", _kubeconfig),
    ):
        sp = csub.add_parser(action, help=helptext)
        _name(sp)
        sp.set_defaults(func=run_cluster_command, cluster_func=fn)

    b = csub.add_parser(
        "build", help="build the pinned binaries (etcd, kube-*, kubectl, kwok, helm) and print their folder"
    )
    b.set_defaults(func=run_cluster_command, cluster_func=_build)


def _name(p: argparse.ArgumentParser) -> None:
    p.add_argument("--name", default="default", help="cluster name (default: default)")


def _cluster(args: argparse.Namespace) -> LocalCluster:
    from modeldeploy.cluster.local import LocalCluster

    if getattr(args, "gpu_nodes", None) is None:
        return LocalCluster(name=args.name)
    return LocalCluster(
        name=args.name,
        gpu_nodes=args.gpu_nodes,
        cpu_nodes=args.cpu_nodes,
        gpus_per_node=args.gpus_per_node,
        gpu_product=args.gpu_product,
    )


def run_cluster_command(args: argparse.Namespace) -> int:
    """Every `mdctl cluster` action: a ClusterError is one clear line on stderr and exit code 2."""
    from modeldeploy.cluster.local import ClusterError

    try:
        return int(args.cluster_func(args) or 0)
    except ClusterError as e:
        print(f"mdctl cluster: {e}", file=sys.stderr)
        return 2


def _up(args: argparse.Namespace) -> int:
    c = _cluster(args).up()
    print(f"\nKUBECONFIG={c.kubeconfig}\n")
    print("Use it with:")
    print(f'  eval "$(mdctl cluster env --name {args.name})"')
    print("  kubectl get nodes -L nvidia.com/gpu.product")
    return 0


def _down(args: argparse.Namespace) -> int:
    _cluster(args).down()
    return 0


def _status(args: argparse.Namespace) -> int:
    st = _cluster(args).status()
    print(json.dumps(st, indent=2))
    return 0 if st.get("running") else 1


def _env(args: argparse.Namespace) -> int:
    c = _cluster(args)
    print(f"export KUBECONFIG={shlex.quote(str(c.kubeconfig))}")
    print(f'export PATH={shlex.quote(str(c.bin_dir))}:"$PATH"')
    return 0


def _kubeconfig(args: argparse.Namespace) -> int:
    print(_cluster(args).kubeconfig)
    return 0


def _build(args: argparse.Namespace) -> int:
    from modeldeploy.cluster.local import bin_dir

    print(bin_dir(build=True))
    return 0
