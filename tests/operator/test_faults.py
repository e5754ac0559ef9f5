"""Fault suite (#12): the operator on the real control plane under crashes, an API-server restart
and concurrent writers. Sizes are small by default (a few objects) so CI runs it in a few minutes;
the environment scales it up:

    MODELDEPLOY_FAULT_N=4 MODELDEPLOY_FAULT_KILLS=6 MODELDEPLOY_FAULT_WRITERS=6 \\
    MODELDEPLOY_FAULT_OUTAGE_S=5 MODELDEPLOY_FAULT_SEED=1234 make faults

Each test runs its own operator subprocess (``OperatorProcess``) watching only its own namespace,
so the kills never touch another test's operator. Nothing waits a fixed time: kills happen after a
random number of the operator's writes (read from the audit log), and every check waits on a
condition.
"""

from __future__ import annotations

import os
import random
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from opsupport import (
    OPERATOR_UAS,
    WRITE_VERBS,
    AuditTail,
    OperatorProcess,
    kube_for_tests,
    ready_at_latest,
    small_md,
    wait_for,
)

from modeldeploy.reconcile.kube import (
    CONFIGMAP,
    DEPLOYMENT,
    HPA,
    MODELDEPLOYMENT,
    PDB,
    SERVICE,
    Kube,
    KubeError,
)
from modeldeploy.render.common import MANAGED_BY, MANAGED_BY_LABEL
from modeldeploy.render.deployment import TRITON_CONTAINER

pytestmark = [pytest.mark.integration, pytest.mark.cluster, pytest.mark.slow]

N_MDS = int(os.environ.get("MODELDEPLOY_FAULT_N", "4"))
KILLS = int(os.environ.get("MODELDEPLOY_FAULT_KILLS", "6"))
WRITERS = int(os.environ.get("MODELDEPLOY_FAULT_WRITERS", "6"))
OUTAGE_S = float(os.environ.get("MODELDEPLOY_FAULT_OUTAGE_S", "5"))
SEED = int(os.environ.get("MODELDEPLOY_FAULT_SEED", str(random.SystemRandom().randrange(1 << 30))))
CHILD_RESOURCES = (CONFIGMAP, SERVICE, DEPLOYMENT, PDB, HPA)
#: One of each per ModelDeployment, always (PDB/HPA depend on the spec).
ALWAYS = ("ConfigMap", "Service", "Deployment")
SETTLE_S = 240  # generous: a loaded 2-core machine


@pytest.fixture
def fault_ns(cluster: Any, modeldeploy_crd: str, request: pytest.FixtureRequest) -> Iterator[str]:
    """A namespace outside ``mdop-*``: the session's shared operator never reconciles it."""
    base = request.node.name.lower().removeprefix("test-").replace("_", "-")[:30].strip("-")
    labels = {"pod-security.kubernetes.io/enforce": "restricted"}
    with cluster.scratch_namespace(f"fault-{base}-{uuid.uuid4().hex[:5]}", labels) as name:
        yield name


@pytest.fixture
def kube(cluster: Any) -> Kube:
    return kube_for_tests(cluster)  # type: ignore[no-any-return]


def own_operator(cluster: Any, ns: str, tmp_path: Path, resync: float = 5) -> OperatorProcess:
    env = cluster.env()
    env.pop("MODELDEPLOY_TRITON_IMAGE", None)
    env.pop("MODELDEPLOY_RUNTIME_IMAGE", None)
    return OperatorProcess(env, tmp_path, resync=resync, namespace=ns)


def live_mds(kube: Kube, ns: str) -> dict[str, dict[str, Any]]:
    return {m["metadata"]["name"]: m for m in kube.list(MODELDEPLOYMENT, ns)}


def child_problems(kube: Kube, ns: str) -> list[str]:
    """Orphans (no live controller owner), duplicates (two children of a kind for one owner),
    missing children and Deployments whose replicas differ from their owner's spec."""
    owners = {m["metadata"]["uid"]: m for m in kube.list(MODELDEPLOYMENT, ns)}
    problems: list[str] = []
    seen: dict[tuple[str, str], list[str]] = {}
    for res in CHILD_RESOURCES:
        for item in kube.list(res, ns, label_selector=f"{MANAGED_BY_LABEL}={MANAGED_BY}"):
            meta = item["metadata"]
            refs = [r for r in meta.get("ownerReferences") or [] if r.get("controller")]
            uid = refs[0]["uid"] if refs else ""
            if uid not in owners:
                problems.append(f"orphan {res.kind}/{meta['name']} (owner uid {uid or 'none'})")
                continue
            seen.setdefault((uid, res.kind), []).append(meta["name"])
            want = owners[uid]["spec"].get("replicas", 1)
            if res is DEPLOYMENT and item["spec"].get("replicas") != want:
                problems.append(
                    f"Deployment/{meta['name']} replicas {item['spec'].get('replicas')} != {want}"
                )
    for (uid, kind), names in seen.items():
        if len(names) > 1:
            problems.append(f"duplicate {kind} for {owners[uid]['metadata']['name']}: {names}")
    for uid, md in owners.items():
        missing = [k for k in ALWAYS if (uid, k) not in seen]
        if missing:
            problems.append(f"{md['metadata']['name']} has no {missing}")
    return problems


def settled(kube: Kube, ns: str, names: list[str]) -> list[str]:
    """Empty when every named ModelDeployment is Ready at its latest generation and its children
    are exactly right; else what is still wrong."""
    mds = live_mds(kube, ns)
    wrong = [
        f"{n} not Ready at its generation" for n in names if not ready_at_latest(mds.get(n, {"metadata": {}}))
    ]
    return wrong + child_problems(kube, ns)


def wait_settled(kube: Kube, ns: str, names: list[str], timeout: float = SETTLE_S) -> None:
    last: list[str] = []

    def ok() -> bool:
        nonlocal last
        last = settled(kube, ns, names)
        return not last

    try:
        wait_for(ok, timeout, "all Ready, no orphans, no duplicates", interval=1)
    except AssertionError:
        raise AssertionError(f"not settled after {timeout:.0f}s: {last}") from None


def operator_writes(events: list[dict[str, Any]], ns: str) -> int:
    return sum(
        1
        for e in events
        if e.get("verb") in WRITE_VERBS
        and e.get("stage") == "ResponseComplete"
        and str(e.get("userAgent", "")).startswith(OPERATOR_UAS)
        and (e.get("objectRef") or {}).get("namespace") == ns
    )


def recreate(kube: Kube, ns: str, doc: dict[str, Any]) -> None:
    """Delete and create again under the same name: the old children must go, not be adopted."""
    kube.delete(MODELDEPLOYMENT, ns, doc["metadata"]["name"])

    def created() -> bool:
        try:
            kube.create(MODELDEPLOYMENT, ns, doc)
        except KubeError as exc:
            if exc.status == 409:  # the old one is still going
                return False
            raise
        return True

    wait_for(created, 60, f"{doc['metadata']['name']} re-created", interval=0.2)


def act(kube: Kube, ns: str, names: list[str], rnd: int) -> str:
    """Round ``rnd``'s change: create everything, scale everything, or re-create one object."""
    if rnd == 0:
        for n in names:
            kube.create(MODELDEPLOYMENT, ns, small_md(ns, n))
        return f"create {len(names)}"
    if rnd % 3 == 2:
        recreate(kube, ns, small_md(ns, names[rnd % len(names)], replicas=1 + rnd % 2))
        return f"re-create {names[rnd % len(names)]}"
    for n in names:
        kube.request(
            "PATCH", MODELDEPLOYMENT.path(ns, n), body={"spec": {"replicas": 1 + rnd % 3}},
            content_type="application/merge-patch+json",
        )  # fmt: skip
    return f"scale all to {1 + rnd % 3}"


def wait_writes(tail: AuditTail, kube: Kube, ns: str, names: list[str], target: int) -> int:
    """Wait until the operator made ``target`` writes in ``ns`` (or everything settled first)."""
    seen, polls = 0, 0

    def reached() -> bool:
        nonlocal seen, polls
        seen, polls = seen + operator_writes(tail.read(), ns), polls + 1
        return seen >= target or (polls % 20 == 0 and not settled(kube, ns, names))

    wait_for(reached, 120, f"{target} operator writes", interval=0.05)
    return seen


def test_kill_9_during_reconciles_leaves_no_orphans_or_duplicates(
    cluster: Any, fault_ns: str, kube: Kube, tmp_path: Path
) -> None:
    ns, rng = fault_ns, random.Random(SEED)
    names = [f"m{i}" for i in range(N_MDS)]
    log: list[str] = []
    op = own_operator(cluster, ns, tmp_path)
    with op.running():
        for rnd in range(KILLS):
            tail = AuditTail(cluster)
            what = act(kube, ns, names, rnd)
            # kill after a random number of the operator's writes for this change (0: at once);
            # if the reconciles finish first, the kill lands on an idle operator, also a valid point
            target = rng.randint(0, 3 * N_MDS)
            seen = wait_writes(tail, kube, ns, names, target)
            op.kill()
            log.append(f"round {rnd}: {what}; kill -9 after {seen} writes (aimed at {target})")
            op.start()
        print(f"seed {SEED}:\n" + "\n".join(log))
        wait_settled(kube, ns, names)
    assert op.starts == KILLS + 1


def test_api_server_restart_operator_recovers_its_watches(
    cluster: Any, fault_ns: str, kube: Kube, tmp_path: Path
) -> None:
    ns = fault_ns
    # no resync during the test: only the watches can deliver the change made after the outage
    op = own_operator(cluster, ns, tmp_path, resync=3600)
    with op.running():
        for n in ("a", "b"):
            kube.create(MODELDEPLOYMENT, ns, small_md(ns, n))
        wait_settled(kube, ns, ["a", "b"])
        assert op.proc is not None
        pid = op.proc.pid
        took = cluster.restart_apiserver(outage=OUTAGE_S)
        print(f"kube-apiserver down and back in {took:.1f}s (outage {OUTAGE_S:.0f}s)")
        for n, spec in (("a", {"replicas": 2}), ("b", {"resources": {"requests": {"memory": "48Mi"}}})):
            kube.request(
                "PATCH", MODELDEPLOYMENT.path(ns, n), body={"spec": spec},
                content_type="application/merge-patch+json",
            )  # fmt: skip

        def applied() -> bool:
            a, b = kube.get(DEPLOYMENT, ns, "a"), kube.get(DEPLOYMENT, ns, "b")
            mem = triton_memory(b)
            return bool(a and a["spec"]["replicas"] == 2 and mem == "48Mi")

        wait_for(applied, SETTLE_S, "the change made after the outage in the Deployments", interval=1)
        wait_settled(kube, ns, ["a", "b"])
        assert op.proc is not None and op.proc.pid == pid and op.proc.poll() is None, "no restart"
    assert op.starts == 1


def triton_memory(dep: dict[str, Any] | None) -> str | None:
    for c in ((dep or {}).get("spec") or {}).get("template", {}).get("spec", {}).get("containers", []):
        if c["name"] == TRITON_CONTAINER:
            return (c.get("resources") or {}).get("requests", {}).get("memory")  # type: ignore[no-any-return]
    return None


def test_concurrent_writers_last_write_wins(cluster: Any, fault_ns: str, kube: Kube, tmp_path: Path) -> None:
    ns, per_writer = fault_ns, 4
    op = own_operator(cluster, ns, tmp_path)
    with op.running():
        kube.create(MODELDEPLOYMENT, ns, small_md(ns, "w"))
        wait_settled(kube, ns, ["w"])
        writes: list[tuple[int, int, str]] = []  # (resourceVersion, replicas, memory) as stored
        lock, start = threading.Lock(), threading.Barrier(WRITERS)

        def writer(i: int) -> None:
            rng = random.Random(SEED + i)
            start.wait()
            for _ in range(per_writer):
                replicas, memory = rng.randint(1, 3), rng.choice(["32Mi", "40Mi", "48Mi", "64Mi"])
                spec = {"replicas": replicas, "resources": {"requests": {"memory": memory}}}
                out = kube.request(
                    "PATCH", MODELDEPLOYMENT.path(ns, "w"), body={"spec": spec},
                    content_type="application/merge-patch+json",
                )  # fmt: skip
                with lock:
                    writes.append((int(out["metadata"]["resourceVersion"]), replicas, memory))

        threads = [threading.Thread(target=writer, args=(i,)) for i in range(WRITERS)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
        assert len(writes) == WRITERS * per_writer
        _, replicas, memory = max(writes)  # the last write the API server stored
        resyncs = op.metric('modeldeploy_reconcile_total{result="ok",trigger="resync"}')

        def won() -> bool:
            dep = kube.get(DEPLOYMENT, ns, "w")
            return bool(dep and dep["spec"]["replicas"] == replicas and triton_memory(dep) == memory)

        wait_for(won, SETTLE_S, f"the last write (replicas {replicas}, memory {memory}) in the Deployment")
        wait_settled(kube, ns, ["w"])
        # and it stays so through two more resyncs (a resync must not bring back an older write)
        wait_for(
            lambda: op.metric('modeldeploy_reconcile_total{result="ok",trigger="resync"}') >= resyncs + 2,
            60,
            "two more resyncs",
        )
        assert won(), "a resync reverted the last write"
        assert settled(kube, ns, ["w"]) == []
