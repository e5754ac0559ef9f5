"""Stale state (#12): concurrent spec changes while reconciles and resyncs run never re-apply an
older generation's children, and the status never claims a generation as observed and Ready while
the Deployment runs another one.

N ModelDeployments (``MODELDEPLOY_STALE_N``, 20), the operator with a short resync (2 s), and one
spec change per second for ``MODELDEPLOY_STALE_CHANGES`` (30) seconds, each to a random object. Every
change sets a new, increasing value of an env var of the Triton container (``CHANGE=<k>``), so the
value in a Deployment says which change it carries. Checked:

* the Deployments' applied state, every version of it (a watch from before the first change): per
  Deployment the ``CHANGE`` value never goes down (a revert would bring back an older value);
* those versions were written by the operator (its field manager, its user agent in the audit log);
* the status, sampled all along: whenever a ModelDeployment says ``observedGeneration`` = its
  generation and ``Ready=True`` (read before and after the Deployment, unchanged), its Deployment
  carries that generation's value;
* at the end, everything Ready at its latest generation with the latest value.
"""

from __future__ import annotations

import itertools
import os
import random
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from opsupport import (
    OPERATOR_UAS,
    AuditTail,
    OperatorProcess,
    kube_for_tests,
    ready_at_latest,
    small_md,
    wait_for,
)

from modeldeploy.reconcile.kube import DEPLOYMENT, MODELDEPLOYMENT, Kube
from modeldeploy.render.common import FIELD_MANAGER
from modeldeploy.render.deployment import TRITON_CONTAINER

pytestmark = [pytest.mark.integration, pytest.mark.cluster, pytest.mark.slow]

N = int(os.environ.get("MODELDEPLOY_STALE_N", "20"))
CHANGES = int(os.environ.get("MODELDEPLOY_STALE_CHANGES", "30"))
RESYNC_S = 2.0
ENV = "CHANGE"


@pytest.fixture
def stale_ns(cluster: Any, modeldeploy_crd: str) -> Iterator[str]:
    labels = {"pod-security.kubernetes.io/enforce": "restricted"}
    with cluster.scratch_namespace(f"stale-{uuid.uuid4().hex[:6]}", labels) as name:
        yield name


def change_value(dep: dict[str, Any]) -> int:
    for c in dep["spec"]["template"]["spec"]["containers"]:
        if c["name"] == TRITON_CONTAINER:
            for e in c.get("env") or []:
                if e["name"] == ENV:
                    return int(e["value"])
    raise AssertionError(f"Deployment {dep['metadata']['name']} has no {ENV} env var")


def with_change(doc: dict[str, Any], k: int) -> dict[str, Any]:
    doc["spec"]["server"] = {"env": [{"name": ENV, "value": str(k)}]}
    return doc


class DeploymentWatch:
    """Every version of the namespace's Deployments, in the API server's order: those ``listed``,
    then each change from the list's resourceVersion on."""

    def __init__(self, kube: Kube, ns: str, listed: dict[str, Any]) -> None:
        self.kube, self.ns, self.rv = kube, ns, str(listed["metadata"]["resourceVersion"])
        self.versions: dict[str, list[tuple[int, int, str]]] = {}  # name -> [(CHANGE, rv, manager)]
        for dep in listed["items"]:
            self.record(dep)
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> DeploymentWatch:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def _run(self) -> None:
        from kubernetes import watch

        while not self._stop.is_set():
            w = watch.Watch()
            try:
                for ev in w.stream(
                    self._list, namespace=self.ns, resource_version=self.rv, timeout_seconds=5
                ):
                    obj = ev["raw_object"]
                    self.rv = obj["metadata"]["resourceVersion"]
                    if ev["type"] in ("ADDED", "MODIFIED"):
                        self.record(obj)
            except Exception as exc:  # a watch that cannot resume from rv would miss versions
                self.errors.append(repr(exc))
                return

    def _list(self, namespace: str, **kw: Any) -> Any:
        from kubernetes import client

        return client.AppsV1Api(self.kube.api).list_namespaced_deployment(namespace, **kw)

    def record(self, obj: dict[str, Any]) -> None:
        managers = sorted(
            str(mf.get("manager"))
            for mf in obj["metadata"].get("managedFields") or []
            if not mf.get("subresource")
        )
        rec = (change_value(obj), int(obj["metadata"]["resourceVersion"]), ",".join(managers))
        self.versions.setdefault(obj["metadata"]["name"], []).append(rec)


def test_concurrent_changes_never_reapply_an_older_generation(
    cluster: Any, stale_ns: str, tmp_path: Path
) -> None:
    ns, kube, rng = stale_ns, kube_for_tests(cluster), random.Random(os.environ.get("MODELDEPLOY_STALE_SEED"))
    env = cluster.env()
    env.pop("MODELDEPLOY_TRITON_IMAGE", None)
    env.pop("MODELDEPLOY_RUNTIME_IMAGE", None)
    op = OperatorProcess(env, tmp_path, resync=RESYNC_S, namespace=ns)
    names = [f"s{i}" for i in range(N)]
    # name -> generation -> CHANGE value of that generation (writes as the API server stored them)
    expected: dict[str, dict[int, int]] = {n: {} for n in names}
    lies: list[str] = []
    with op.running():
        for n in names:
            out = kube.create(MODELDEPLOYMENT, ns, with_change(small_md(ns, n), 0))
            expected[n][int(out["metadata"]["generation"])] = 0

        def all_ready() -> bool:
            mds = kube.list(MODELDEPLOYMENT, ns)
            return len(mds) == N and all(ready_at_latest(m) for m in mds)

        wait_for(all_ready, 300, f"{N} ModelDeployments Ready", interval=1)
        listed = kube.request("GET", DEPLOYMENT.path(ns))
        tail = AuditTail(cluster)
        done = threading.Event()

        def sample() -> None:
            while not done.is_set():
                before = {m["metadata"]["name"]: m for m in kube.list(MODELDEPLOYMENT, ns)}
                deps = {d["metadata"]["name"]: d for d in kube.list(DEPLOYMENT, ns)}
                after = {m["metadata"]["name"]: m for m in kube.list(MODELDEPLOYMENT, ns)}
                for n, md in after.items():
                    gen = md["metadata"]["generation"]
                    if before.get(n, {}).get("metadata", {}).get("generation") != gen:
                        continue  # changed while sampling: no claim to check
                    if ready_at_latest(before[n]) and n in deps and gen in expected[n]:
                        have, want = change_value(deps[n]), expected[n][gen]
                        if have != want:
                            lies.append(
                                f"{n}: Ready at generation {gen} (CHANGE={want}), Deployment has {have}"
                            )

        sampler = threading.Thread(target=sample, daemon=True)
        with DeploymentWatch(kube, ns, listed) as watched:
            sampler.start()
            start = time.monotonic()
            for k in range(1, CHANGES + 1):
                n = rng.choice(names)
                out = kube.request(
                    "PATCH", MODELDEPLOYMENT.path(ns, n), body={"spec": {"server": {"env": [{"name": ENV, "value": str(k)}]}}},
                    content_type="application/merge-patch+json",
                )  # fmt: skip
                expected[n][int(out["metadata"]["generation"])] = k
                # one change per second: the load itself, paced by the clock
                time.sleep(max(0.0, start + k - time.monotonic()))

            def final() -> bool:
                mds = {m["metadata"]["name"]: m for m in kube.list(MODELDEPLOYMENT, ns)}
                deps = {d["metadata"]["name"]: d for d in kube.list(DEPLOYMENT, ns)}
                return all(
                    ready_at_latest(mds[n]) and change_value(deps[n]) == expected[n][max(expected[n])]
                    for n in names
                )

            wait_for(final, 240, "every ModelDeployment Ready with its latest change", interval=1)
            done.set()
            sampler.join(timeout=60)
            # every version written so far reaches the watch
            wait_for(lambda: int(watched.rv) >= _rv(kube, ns), 60, "the watch caught up", interval=0.5)
        assert not watched.errors, f"the Deployment watch broke: {watched.errors}"
        audit = tail.read()

    reverts = []
    for name, versions in watched.versions.items():
        values = [v for v, _, _ in versions]
        for (a, _, _), (b, rv_b, managers) in itertools.pairwise(versions):
            if b < a:
                reverts.append(f"{name}: CHANGE {a} -> {b} (rv {rv_b}, managers {managers})")
        assert values, name
    changed = {n for n, g in expected.items() if len(g) > 1}
    moved = {n for n, v in watched.versions.items() if len({x for x, _, _ in v}) > 1}
    assert changed <= moved, f"changes never reached the Deployments of {sorted(changed - moved)}"
    assert all(FIELD_MANAGER in m for v in watched.versions.values() for _, _, m in v)
    dep_writes = [
        e
        for e in audit
        if e.get("verb") == "patch"
        and (e.get("objectRef") or {}).get("resource") == "deployments"
        and (e.get("objectRef") or {}).get("namespace") == ns
        and str(e.get("userAgent", "")).startswith(OPERATOR_UAS)
        and e.get("stage") == "ResponseComplete"
    ]
    print(f"\n{CHANGES} changes on {N} objects: {len(dep_writes)} Deployment writes by the operator")
    assert len(dep_writes) >= len(changed), "the audit log does not show the operator's Deployment writes"
    assert reverts == [], f"older generations re-applied: {reverts}"
    assert lies == [], f"status claimed a generation Ready while its Deployment ran another: {lies[:10]}"


def _rv(kube: Kube, ns: str) -> int:
    """The newest resourceVersion among the namespace's Deployments."""
    return max(int(d["metadata"]["resourceVersion"]) for d in kube.list(DEPLOYMENT, ns))
