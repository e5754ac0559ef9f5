"""The operator's requests during a quiet period (#12), counted from the API server's audit log.

N Ready ModelDeployments (``MODELDEPLOY_IDLE_N``, 5 by default), the operator at its production
resync interval (30 s), nothing changing for ``MODELDEPLOY_IDLE_SECONDS`` (60). The local cluster's
audit policy logs every write and the reads (get/list/watch) of the admin user the operator runs
as here, so both are counted; the operator's requests are told from the test's by user agent.

* 0 writes: holds today and must keep holding.
* no GET/LIST (watch requests only): reads come from the watch-fed stores (reconcile/cache.py), so
  the resync passes in the window compare the stores with the desired state without an API read.
  The counts per verb are printed (``pytest -rP``) and recorded in the README.
* no cluster-scoped GET/LIST either: the CRDs the operator renders for (KEDA, HTTP add-on,
  ServiceMonitor) come from watches by name, not from a GET every 30 s.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from opsupport import (
    TEST_UA,
    WRITE_VERBS,
    AuditTail,
    OperatorProcess,
    kube_for_tests,
    ready_at_latest,
    requests_by_verb,
    small_md,
    wait_for,
)

from modeldeploy.reconcile.kube import CRD, MODELDEPLOYMENT

pytestmark = [pytest.mark.integration, pytest.mark.cluster, pytest.mark.slow]

N = int(os.environ.get("MODELDEPLOY_IDLE_N", "5"))
QUIET_S = float(os.environ.get("MODELDEPLOY_IDLE_SECONDS", "60"))
RESYNC_S = 30.0  # the operator's default (mdctl operator run --resync-seconds)
RESYNC_OK = 'modeldeploy_reconcile_total{result="ok",trigger="resync"}'


@dataclass
class Quiet:
    seconds: float
    counts: dict[str, int]  # "verb resource" -> requests by the operator in the window
    events: list[dict[str, Any]]  # every audit event of the namespace in the window
    probe_seen: bool  # the test's own GET in the window was logged: reads are audited
    cluster_counts: dict[str, int]  # "verb resource" -> cluster-scoped requests by the operator
    cluster_probe_seen: bool  # the test's own cluster-scoped GET (a CRD) was logged


@pytest.fixture(scope="module")
def quiet(cluster: Any, modeldeploy_crd: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Quiet]:
    kube = kube_for_tests(cluster)
    ns = f"idle-{uuid.uuid4().hex[:6]}"
    env = cluster.env()
    env.pop("MODELDEPLOY_TRITON_IMAGE", None)
    env.pop("MODELDEPLOY_RUNTIME_IMAGE", None)
    op = OperatorProcess(env, tmp_path_factory.mktemp("idle-operator"), resync=RESYNC_S, namespace=ns)
    with cluster.scratch_namespace(ns, {"pod-security.kubernetes.io/enforce": "restricted"}), op.running():
        names = [f"idle-{i}" for i in range(N)]
        for n in names:
            kube.create(MODELDEPLOYMENT, ns, small_md(ns, n))

        def all_ready() -> bool:
            mds = kube.list(MODELDEPLOYMENT, ns)
            return len(mds) == N and all(ready_at_latest(m) for m in mds)

        wait_for(all_ready, 300, f"{N} ModelDeployments Ready", interval=1)
        # one whole resync pass after Ready, so the window starts in the steady state
        passes = op.metric(RESYNC_OK)
        wait_for(lambda: op.metric(RESYNC_OK) >= passes + N, RESYNC_S * 3, "a resync pass", interval=1)
        tail = AuditTail(cluster)
        t0 = time.monotonic()
        time.sleep(QUIET_S / 2)  # the quiet period is the measurement itself
        assert kube.get(MODELDEPLOYMENT, ns, names[0]) is not None  # the probe read
        assert kube.get(CRD, None, modeldeploy_crd) is not None  # the cluster-scoped probe read
        time.sleep(QUIET_S / 2)
        seconds = time.monotonic() - t0
        logged = tail.read()
        events = [e for e in logged if (e.get("objectRef") or {}).get("namespace") == ns]
        probe = any(e.get("userAgent") == TEST_UA and e.get("verb") == "get" for e in events)
        cluster_wide = [e for e in logged if e.get("objectRef") and not e["objectRef"].get("namespace")]
        cluster_probe = any(
            e.get("userAgent") == TEST_UA
            and e.get("verb") == "get"
            and e["objectRef"].get("resource") == "customresourcedefinitions"
            for e in cluster_wide
        )
        q = Quiet(
            seconds, requests_by_verb(events), events, probe, requests_by_verb(cluster_wide), cluster_probe
        )
        print(f"\n{N} Ready ModelDeployments, {seconds:.0f} s quiet, resync {RESYNC_S:.0f} s:")
        for k, v in q.counts.items():
            print(f"  {k}: {v}")
        for k, v in q.cluster_counts.items():
            print(f"  {k} (cluster-scoped): {v}")
        yield q


def test_quiet_period_has_no_writes_and_its_reads_are_measured(quiet: Quiet) -> None:
    assert quiet.probe_seen, "reads by the operator's identity are not in the audit log: nothing measured"
    writes = {k: v for k, v in quiet.counts.items() if k.split()[0] in WRITE_VERBS}
    assert writes == {}, f"writes during {quiet.seconds:.0f} quiet seconds: {writes}"
    print(f"operator requests in {quiet.seconds:.0f} quiet seconds with {N} Ready: {quiet.counts}")


def test_quiet_period_has_no_get_or_list(quiet: Quiet) -> None:
    assert quiet.probe_seen
    reads = {k: v for k, v in quiet.counts.items() if k.split()[0] in ("get", "list")}
    assert reads == {}, f"GET/LIST at idle ({quiet.seconds:.0f} s, {N} Ready): {reads}"


def test_quiet_period_has_no_cluster_scoped_get_or_list(quiet: Quiet) -> None:
    """The CRDs the operator renders for are watched, not read per reconcile or timer."""
    assert quiet.cluster_probe_seen, "cluster-scoped reads are not in the audit log: nothing measured"
    reads = {k: v for k, v in quiet.cluster_counts.items() if k.split()[0] in ("get", "list")}
    assert reads == {}, f"cluster-scoped GET/LIST at idle ({quiet.seconds:.0f} s, {N} Ready): {reads}"
