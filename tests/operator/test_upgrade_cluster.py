"""The upgrade from the operator with a Secret per ModelDeployment to today's, on the real control plane.

555ac2d ("No Secret per ModelDeployment") removed the Secret ``<name>-keys`` (the agents' push token
and Triton's control key, referenced by the pods). The CHANGELOG promises for the upgrade: "each
ModelDeployment's pods roll once (new pod template); the old ``<name>-keys`` Secrets stay, unused,
until their ModelDeployment is deleted (owner references)". This test runs both real versions in
turn against one local control plane and checks exactly that:

1. the operator of ``555ac2d^`` (``git archive`` into a temporary directory, its own CRD applied
   first) brings two ModelDeployments to Ready and creates their ``<name>-keys`` Secrets, owned by
   them and referenced by their pod templates;
2. it stops, today's CRD is applied and today's operator starts: each Deployment's spec changes
   once (generation + 1) and exactly one new ReplicaSet appears, which takes over every replica;
   the ModelDeployments are Ready again; nothing more changes over two full resync passes of the
   new operator afterwards; each Service keeps at least one ready endpoint in every state of its
   EndpointSlices a watch saw during the roll; the Secrets are still there, unchanged, and no pod
   template or pod refers to them any more;
3. deleting the ModelDeployments lets the controller-manager's garbage collector delete the
   Secrets (the audit log names who deleted them).

The namespace is not ``mdop-*``: the session's shared operator (conftest ``operator``) watches those.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from opsupport import (
    CRD_FILE,
    REPO,
    AuditTail,
    OperatorProcess,
    kube_for_tests,
    ready_at_latest,
    small_md,
    wait_for,
)

from modeldeploy.reconcile.kube import (
    DEPLOYMENT,
    MODELDEPLOYMENT,
    POD,
    REPLICASET,
    SECRET,
    Kube,
    KubeError,
    Resource,
)

pytestmark = [pytest.mark.integration, pytest.mark.cluster]

#: The last operator with a Secret ``<name>-keys`` per ModelDeployment (the parent of 555ac2d).
OLD_REF = "555ac2d^"
OLD_CRD = Path("crds") / CRD_FILE.name
#: name -> replicas: one Deployment rolls a single pod, the other two.
MDS = {"up-a": 1, "up-b": 2}
ENDPOINTSLICE = Resource("discovery.k8s.io", "v1", "endpointslices", "EndpointSlice")
SERVICE_NAME_LABEL = "kubernetes.io/service-name"
#: The window in which nothing may change after the roll: until the new operator's resync (every
#: 5 s: opsupport.RESYNC_SECONDS) has run this many reconciles per ModelDeployment, each comparing
#: every child with its rendering and applying any difference. The first may have begun before the
#: roll was seen complete, so at least two whole passes begin after it (about 10-15 s).
SETTLE_RESYNCS = 3
#: What a wait for a deletion reports of an object still there.
DELETION_FACTS = ("uid", "deletionTimestamp", "finalizers", "ownerReferences")
GC_USER = "system:serviceaccount:kube-system:generic-garbage-collector"


@pytest.fixture
def upgrade_ns(cluster: Any) -> Iterator[str]:
    labels = {
        "pod-security.kubernetes.io/enforce": "restricted",
        "pod-security.kubernetes.io/enforce-version": "latest",
    }
    with cluster.scratch_namespace(f"mdup-{uuid.uuid4().hex[:6]}", labels) as name:
        yield name


@pytest.fixture
def old_tree(tmp_path: Path) -> Path:
    from modeldeploy.cluster.source import export_tree

    return export_tree(OLD_REF, REPO, tmp_path / "old-tree")


class Recorder:
    """Every change of one resource's objects in a namespace, as a watch delivers them: from a
    LIST's resourceVersion on, so no state between the LIST and ``stop()`` is missed."""

    def __init__(self, cluster: Any, res: Resource, ns: str) -> None:
        self.kube: Kube = kube_for_tests(cluster)  # its own client: a watch holds a connection
        self.res, self.ns = res, ns
        self.initial, self.rv = self.kube.list_with_version(res, ns)
        self.started = time.monotonic()
        #: (time.monotonic(), ADDED/MODIFIED/DELETED, object)
        self.events: list[tuple[float, str, dict[str, Any]]] = []
        self.error: str | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"watch-{res.plural}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        broken = 0
        while not self._stop.is_set():
            try:
                # short server-side timeouts, so that stop() is seen within a few seconds
                with contextlib.closing(self.kube.watch(self.res, self.ns, self.rv, timeout_seconds=3)) as w:
                    for ev in w:
                        obj = ev["object"]
                        if ev["type"] == "ERROR":  # e.g. 410 Gone: states were missed
                            raise AssertionError(f"watch error: {obj}")
                        self.rv = obj["metadata"]["resourceVersion"]
                        if ev["type"] != "BOOKMARK":
                            self.events.append((time.monotonic(), ev["type"], obj))
            except KubeError as exc:
                # a broken connection (a busy API server) loses nothing: the next watch goes on
                # from the last resourceVersion seen
                broken += 1
                if not exc.retryable or broken > 20:
                    self.error = f"{type(exc).__name__} (after {broken} broken watches): {exc}"
                    return
                time.sleep(0.5)
            except Exception as exc:  # reported by stop(): the record has a gap
                self.error = f"{type(exc).__name__}: {exc}"
                return

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=60)

    def stop(self) -> None:
        """Stop watching; fail if the record may have a gap."""
        self.close()
        assert not self._thread.is_alive(), f"the {self.res.plural} watch did not stop"
        assert self.error is None, f"the {self.res.plural} watch broke, states may be missing: {self.error}"


def ready_pods(es: dict[str, Any]) -> set[str]:
    """The pods (else addresses) of an EndpointSlice's ready endpoints."""
    return {
        str((e.get("targetRef") or {}).get("name") or ",".join(e.get("addresses") or []))
        for e in es.get("endpoints") or []
        if (e.get("conditions") or {}).get("ready") is True
    }


def ready_endpoints_now(kube: Kube, ns: str, service: str) -> set[str]:
    out: set[str] = set()
    for es in kube.list(ENDPOINTSLICE, ns, label_selector=f"{SERVICE_NAME_LABEL}={service}"):
        out |= ready_pods(es)
    return out


def ready_endpoint_states(rec: Recorder, service: str) -> list[tuple[float, frozenset[str]]]:
    """The pods behind a Service's ready endpoints (over all its EndpointSlices) in every state the
    watch saw, starting with the LIST's."""

    def ours(es: dict[str, Any]) -> bool:
        return bool((es["metadata"].get("labels") or {}).get(SERVICE_NAME_LABEL) == service)

    slices = {es["metadata"]["name"]: ready_pods(es) for es in rec.initial if ours(es)}
    states = [(0.0, frozenset().union(*slices.values()))]
    for t, typ, es in rec.events:
        if not ours(es):
            continue
        if typ == "DELETED":
            slices.pop(es["metadata"]["name"], None)
        else:
            slices[es["metadata"]["name"]] = ready_pods(es)
        states.append((t, frozenset().union(*slices.values())))
    return states


def owner_name(obj: dict[str, Any]) -> str:
    return next((r["name"] for r in obj["metadata"].get("ownerReferences") or [] if r.get("controller")), "")


def replicasets(kube: Kube, ns: str) -> dict[str, dict[str, int]]:
    """Deployment -> {ReplicaSet: spec.replicas}."""
    out: dict[str, dict[str, int]] = {}
    for rs in kube.list(REPLICASET, ns):
        out.setdefault(owner_name(rs), {})[rs["metadata"]["name"]] = rs["spec"].get("replicas", 0)
    return out


def ready_cond(md: dict[str, Any] | None) -> str:
    for c in ((md or {}).get("status") or {}).get("conditions") or []:
        if c["type"] == "Ready":
            return f"{c['status']}/{c.get('reason')}"
    return "-"


def ready_history(rec: Recorder, name: str) -> list[tuple[float, str]]:
    """(seconds since the watch began, Ready's status/reason) at each change the watch saw."""
    out: list[tuple[float, str]] = []
    for t, _, md in rec.events:
        if md["metadata"]["name"] == name and (not out or out[-1][1] != ready_cond(md)):
            out.append((round(t - rec.started, 1), ready_cond(md)))
    return out


def rollout_done(dep: dict[str, Any] | None, generation_before: int) -> bool:
    """The Deployment's spec changed since ``generation_before`` and every replica runs the new pod
    template (no pod of an older ReplicaSet left)."""
    if not dep:
        return False
    st, want = dep.get("status") or {}, dep["spec"].get("replicas", 1)
    gen = dep["metadata"]["generation"]
    return bool(
        gen > generation_before
        and st.get("observedGeneration") == gen
        and st.get("replicas") == st.get("updatedReplicas") == st.get("availableReplicas") == want
    )


def resync_reconciles(op: OperatorProcess) -> float:
    """Reconciles the operator's resync has run to the end."""
    return sum(
        v
        for k, v in op.metrics().items()
        if k.startswith("modeldeploy_reconcile_total{") and 'trigger="resync"' in k and 'result="ok"' in k
    )


def secret_facts(s: dict[str, Any] | None) -> dict[str, Any] | None:
    """What must not change about a Secret while its ModelDeployment exists."""
    if s is None:
        return None
    m = s["metadata"]
    return {
        "uid": m["uid"],
        "resourceVersion": m["resourceVersion"],
        "ownerReferences": m.get("ownerReferences"),
        "deletionTimestamp": m.get("deletionTimestamp"),
        "data": s.get("data"),
    }


def test_upgrade_from_the_keys_secret_operator_rolls_once_and_keeps_the_secret_until_deletion(
    cluster: Any, upgrade_ns: str, old_tree: Path, tmp_path: Path
) -> None:
    ns, kube = upgrade_ns, kube_for_tests(cluster)
    env = cluster.env()
    env.pop("MODELDEPLOY_TRITON_IMAGE", None)
    env.pop("MODELDEPLOY_RUNTIME_IMAGE", None)
    took: dict[str, float] = {}
    t0 = time.monotonic()

    def facts() -> dict[str, Any]:
        """The state a failed wait reports: each object's Ready, Deployment rollout, ReplicaSets."""
        out: dict[str, Any] = {"replicasets": replicasets(kube, ns)}
        for name in MDS:
            md, dep = kube.get(MODELDEPLOYMENT, ns, name), kube.get(DEPLOYMENT, ns, name)
            out[name] = {
                "md": md and {"gen": md["metadata"]["generation"], "ready": ready_cond(md),
                              "observed": (md.get("status") or {}).get("observedGeneration")},
                "deployment": dep and {"gen": dep["metadata"]["generation"], "status": dep.get("status")},
            }  # fmt: skip
        return out

    # ------------------------------------------------------------------ 1. the old operator
    cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(old_tree / OLD_CRD))
    cluster.wait_established("modeldeployments.modeldeploy.io")
    (tmp_path / "old").mkdir()
    old = OperatorProcess(env, tmp_path / "old", namespace=ns, source=old_tree)
    with old.running():
        for name, replicas in MDS.items():
            kube.create(MODELDEPLOYMENT, ns, small_md(ns, name, replicas=replicas))
        wait_for(
            lambda: all(ready_at_latest(kube.get(MODELDEPLOYMENT, ns, n) or {}) for n in MDS),
            180, f"{list(MDS)} Ready=True under the old operator ({OLD_REF})",
            explain=lambda: (facts(), old.log_tail(15)),
        )  # fmt: skip
        took["old operator: create -> Ready"] = time.monotonic() - t0
    mds = {n: kube.get(MODELDEPLOYMENT, ns, n) or {} for n in MDS}
    secrets, generation, old_rs = {}, {}, replicasets(kube, ns)
    for name, md in mds.items():
        secret = kube.get(SECRET, ns, f"{name}-keys")
        assert secret is not None, f"the old operator created no Secret {name}-keys"
        refs = secret["metadata"].get("ownerReferences") or []
        assert [(r["kind"], r["name"], r["uid"]) for r in refs] == [
            ("ModelDeployment", name, md["metadata"]["uid"])
        ], refs
        secrets[name] = secret_facts(secret)
        dep = kube.get(DEPLOYMENT, ns, name)
        assert dep is not None
        assert f"{name}-keys" in json.dumps(dep["spec"]["template"]), "the old pods do not use the Secret"
        generation[name] = dep["metadata"]["generation"]
        assert len(old_rs.get(name, {})) == 1, old_rs
    # the Services have ready endpoints before the upgrade (the EndpointSlice controller may
    # follow the pods a moment after the ModelDeployment is Ready)
    wait_for(
        lambda: all(ready_endpoints_now(kube, ns, n) for n in MDS),
        60, "a ready endpoint of each Service before the upgrade",
        explain=lambda: kube.list(ENDPOINTSLICE, ns),
    )  # fmt: skip

    # ------------------------------------------------------------------ 2. upgrade
    cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(CRD_FILE))
    cluster.wait_established("modeldeployments.modeldeploy.io")
    watches = contextlib.ExitStack()  # closed however the test ends: no watch outlives the cluster
    slices, rs_watch, md_watch = (
        Recorder(cluster, r, ns) for r in (ENDPOINTSLICE, REPLICASET, MODELDEPLOYMENT)
    )
    for rec in (slices, rs_watch, md_watch):
        watches.callback(rec.close)
    t_up = time.monotonic()
    (tmp_path / "new").mkdir()
    new = OperatorProcess(env, tmp_path / "new", namespace=ns)
    with watches, new.running():
        wait_for(
            lambda: all(
                rollout_done(kube.get(DEPLOYMENT, ns, n), generation[n])
                and ready_at_latest(kube.get(MODELDEPLOYMENT, ns, n) or {})
                for n in MDS
            ),
            180, "each Deployment rolled to a new pod template and each ModelDeployment Ready=True "
            "under the new operator",
            explain=lambda: (facts(), new.log_tail(15)),
        )  # fmt: skip
        took["upgrade: new operator start -> rolled and Ready"] = time.monotonic() - t_up
        # nothing more happens: SETTLE_RESYNCS resync passes, each reconciling every object
        t_settle = time.monotonic()
        before = resync_reconciles(new)
        wait_for(
            lambda: resync_reconciles(new) >= before + SETTLE_RESYNCS * len(MDS),
            60, f"{SETTLE_RESYNCS} resync passes of the new operator over {len(MDS)} objects",
            explain=lambda: {k: v for k, v in new.metrics().items() if "reconcile_total" in k},
        )  # fmt: skip
        took["settle window"] = time.monotonic() - t_settle
        slices.stop()
        rs_watch.stop()
        md_watch.stop()

        after_rs = replicasets(kube, ns)
        for name, replicas in MDS.items():
            dep = kube.get(DEPLOYMENT, ns, name)
            assert dep is not None
            # the pod template changed exactly once: one spec change, one new ReplicaSet which
            # holds every replica, the old one scaled to 0
            changes = dep["metadata"]["generation"] - generation[name]
            assert changes == 1, (
                f"Deployment {name}: its spec changed {changes} times in the upgrade, not once"
            )
            (old_name,) = old_rs[name]
            new_names = sorted(set(after_rs[name]) - {old_name})
            assert len(new_names) == 1 and after_rs[name] == {old_name: 0, new_names[0]: replicas}, (
                f"Deployment {name}: ReplicaSets (name: replicas) {old_rs[name]} before the upgrade, "
                f"{after_rs[name]} after it; wanted the old one at 0 and one new one at {replicas}"
            )
            added = [
                o["metadata"]["name"]
                for _, typ, o in rs_watch.events
                if typ == "ADDED" and owner_name(o) == name
            ]
            assert added == new_names, f"Deployment {name}: ReplicaSets created during the upgrade: {added}"
            # the Service never lost its last ready endpoint, and the watch saw the roll itself:
            # the old pods behind it at first, only new ones at the end
            states = ready_endpoint_states(slices, name)
            empty = [round(t - t_up, 2) for t, pods in states if not pods]
            assert not empty, (
                f"Service {name} had no ready endpoint at {empty} s after the upgrade began: {states}"
            )
            assert states[0][1] and not states[0][1] & states[-1][1], (
                f"Service {name}: the watch did not see the old pods replaced by new ones: {states}"
            )
            # the old Secret stays, unchanged (same uid: not recreated; same resourceVersion: never
            # written) and unused
            now = secret_facts(kube.get(SECRET, ns, f"{name}-keys"))
            assert now == secrets[name], f"Secret {name}-keys before the upgrade: {secrets[name]}, now: {now}"
            assert f"{name}-keys" not in json.dumps(dep["spec"]["template"]), (
                f"the new pod template of {name} still refers to {name}-keys: {dep['spec']['template']}"
            )
            pods = [
                p
                for p in kube.list(POD, ns, label_selector=f"modeldeploy.io/deployment={name}")
                if not p["metadata"].get("deletionTimestamp")  # KWOK may still be removing old ones
            ]
            users = [p["metadata"]["name"] for p in pods if f"{name}-keys" in json.dumps(p["spec"])]
            assert len(pods) == replicas and not users, (
                f"{name}: {len(pods)} pods (want {replicas}), {users} of them still use {name}-keys"
            )
            md = kube.get(MODELDEPLOYMENT, ns, name) or {}
            assert md["metadata"]["generation"] == mds[name]["metadata"]["generation"], "spec changed"
            assert ready_at_latest(md) and md["status"].get("readyReplicas") == replicas, (
                f"ModelDeployment {name} after the settle window: {md.get('status')}"
            )
        ready_seen = {n: ready_history(md_watch, n) for n in MDS}

        # ------------------------------------------------------------------ 3. deletion
        audit = AuditTail(cluster)
        t_del = time.monotonic()
        for name in MDS:
            kube.delete(MODELDEPLOYMENT, ns, name)
        wait_for(
            lambda: not any(kube.get(SECRET, ns, f"{n}-keys") for n in MDS),
            90, "the <name>-keys Secrets garbage-collected after their ModelDeployments were deleted",
            explain=lambda: {
                f"{kind.kind} {n}": obj and {k: obj["metadata"].get(k) for k in DELETION_FACTS}
                for n in MDS
                for kind, obj in ((MODELDEPLOYMENT, kube.get(MODELDEPLOYMENT, ns, n)),
                                  (SECRET, kube.get(SECRET, ns, f"{n}-keys")))
            },
        )  # fmt: skip
        took["deletion -> Secrets gone"] = time.monotonic() - t_del
    deleted_by = {
        ((ev.get("objectRef") or {}).get("name"), (ev.get("user") or {}).get("username"))
        for ev in audit.read()
        if ev.get("verb") == "delete"
        and ev.get("stage") == "ResponseComplete"
        and (ev.get("objectRef") or {}).get("resource") == "secrets"
        and (ev.get("objectRef") or {}).get("namespace") == ns
        and (ev.get("responseStatus") or {}).get("code", 200) < 300
    }
    assert deleted_by == {(f"{n}-keys", GC_USER) for n in MDS}, f"(Secret, deleted by): {deleted_by}"
    print(
        "\n"
        + ", ".join(f"{k} {v:.1f} s" for k, v in took.items())
        + f"; total {time.monotonic() - t0:.1f} s; Ready seen during the upgrade: {ready_seen}"
    )
