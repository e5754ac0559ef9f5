"""Memory (#12): the operator gives memory back after many ModelDeployments come and go.

On a control plane of its own (enough KWOK nodes for one pod per object; nothing shared with the
other tests), the operator (``mdctl operator run``, as in production) watches one namespace; N
ModelDeployments (``MODELDEPLOY_MEMORY_N``, 1,000 by default) are created at once, handled (each
has its Deployment and pod, and a status for its generation), then deleted together. Checked:

* the operator's stores followed: every object was held, and none is held after the deletion
  (``modeldeploy_cache_objects`` on /metrics);
* RSS comes back to within 30 MiB of its idle value (measured once the stores had synced, before
  the first create), waited for as a condition (the process hands freed heap back when a store
  shrinks: reconcile/informer.py).

The peak is printed (``pytest -rP``); its target (150 MiB at 1,000) is a figure of
``bench/reconcile.py``, not asserted here.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from opsupport import CRD_FILE, OperatorProcess, kube_for_tests, small_md, wait_for

from modeldeploy.reconcile.kube import DEPLOYMENT, MODELDEPLOYMENT, POD

pytestmark = [pytest.mark.integration, pytest.mark.cluster, pytest.mark.slow]

N = int(os.environ.get("MODELDEPLOY_MEMORY_N", "1000"))
RETURN_MIB = 30.0
STORED = "modeldeploy_cache_objects"


def rss_mib(pid: int, field: str = "VmRSS") -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no {field} for pid {pid}")


@pytest.fixture(scope="module")
def own_cluster() -> Iterator[Any]:
    from modeldeploy.cluster.local import LocalCluster

    c = LocalCluster(name=f"mem-{os.getpid()}", ephemeral=True, cpu_nodes=N // 100 + 1, gpu_nodes=0)
    c.up()
    try:
        yield c
    finally:
        c.down()


def stored(op: OperatorProcess, kind: str) -> float:
    return op.metric(f'{STORED}{{kind="{kind}"}}')


def handled(md: dict[str, Any]) -> bool:
    st = md.get("status") or {}
    return st.get("observedGeneration") == md["metadata"].get("generation")


def test_rss_returns_to_idle_after_many_objects_come_and_go(own_cluster: Any, tmp_path: Path) -> None:
    cluster = own_cluster
    cluster.kubectl("apply", "--server-side", "-f", str(CRD_FILE))
    cluster.wait_established("modeldeployments.modeldeploy.io")
    kube = kube_for_tests(cluster)
    ns = f"mem-{uuid.uuid4().hex[:6]}"
    env = cluster.env()
    env.pop("MODELDEPLOY_TRITON_IMAGE", None)
    env.pop("MODELDEPLOY_RUNTIME_IMAGE", None)
    op = OperatorProcess(env, tmp_path, resync=30, namespace=ns)
    with cluster.scratch_namespace(ns), op.running():
        assert op.proc is not None
        pid = op.proc.pid
        wait_for(lambda: STORED in str(op.metrics()), 60, "the stores to sync", interval=0.5)
        idle = rss_mib(pid)
        names = [f"m-{i:04d}" for i in range(N)]
        with ThreadPoolExecutor(max_workers=8) as pool:
            list(pool.map(lambda n: kube.create(MODELDEPLOYMENT, ns, small_md(ns, n)), names))

        def all_handled() -> bool:
            mds = kube.list(MODELDEPLOYMENT, ns)
            return len(mds) == N and all(handled(m) for m in mds)

        wait_for(all_handled, 900, f"{N} ModelDeployments handled", interval=3)
        wait_for(lambda: stored(op, "Pod") >= N, 600, f"{N} pods in the operator's store", interval=3)
        assert stored(op, "ModelDeployment") == N and stored(op, "Deployment") == N
        loaded = rss_mib(pid)

        t0 = time.monotonic()
        kube.request("DELETE", MODELDEPLOYMENT.path(ns), kind="ModelDeployment", verb="deletecollection")
        wait_for(
            lambda: not kube.list(MODELDEPLOYMENT, ns) and not kube.list(DEPLOYMENT, ns)
            and not kube.list(POD, ns),
            900, "every object and child deleted", interval=3,
        )  # fmt: skip
        kinds = ("ModelDeployment", "Deployment", "Pod", "Service", "ConfigMap")
        wait_for(lambda: not any(stored(op, k) for k in kinds), 120, "the stores emptied", interval=1)
        deleted_after = time.monotonic() - t0
        after: list[float] = []

        def back_to_idle() -> bool:
            after.append(rss_mib(pid))
            return after[-1] <= idle + RETURN_MIB

        returned = True
        try:
            wait_for(back_to_idle, 60, f"RSS back within {RETURN_MIB:.0f} MiB of idle", interval=2)
        except AssertionError:
            returned = False
        peak = rss_mib(pid, "VmHWM")
        print(
            f"\n{N} ModelDeployments: RSS idle {idle:.1f} MiB, with all handled {loaded:.1f}, peak {peak:.1f}, "
            f"after deleting all {after[-1]:.1f} (stores empty {deleted_after:.0f} s after the delete)"
        )
        assert returned, f"RSS {after[-1]:.1f} MiB after deleting all, idle was {idle:.1f} MiB"
