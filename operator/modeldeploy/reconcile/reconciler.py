"""The reconciler: render, compare with live, apply what differs, delete what is no longer wanted,
compute and (only when it changed) write the status. Blocking; called from kopf's sync handlers.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import socket
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from modeldeploy import metrics
from modeldeploy.api.v1alpha1 import AGENT_PORT, API_VERSION, KIND, ModelDeployment, SpecError
from modeldeploy.reconcile.diagnose import Diagnosis, diagnose, needs_events
from modeldeploy.reconcile.diff import in_effect
from modeldeploy.reconcile.kube import (
    BY_KIND,
    CONFIGMAP,
    CRD,
    DEPLOYMENT,
    EVENT,
    MODELDEPLOYMENT,
    POD,
    Kube,
    KubeError,
)
from modeldeploy.reconcile.rejections import describe, is_permanent, is_rejection
from modeldeploy.reconcile.status import (
    AgentReport,
    compute_status,
    invalid_status,
    now_rfc3339,
    status_patch,
)
from modeldeploy.render import RenderOptions, render_children
from modeldeploy.render.common import (
    FIELD_MANAGER,
    SCALEDOBJECT_CRD,
    SERVICEMONITOR_CRD,
    RenderError,
    configmap_name,
    selector_string,
)
from modeldeploy_runtime.manifest import MANIFEST_KEY, ModelManifest

log = logging.getLogger("modeldeploy.reconcile")

#: Child kinds that need a CRD (skipped when it is not installed).
KIND_CRD = {"ScaledObject": SCALEDOBJECT_CRD, "ServiceMonitor": SERVICEMONITOR_CRD}
#: Field manager that holds spec.replicas between us and the autoscaler.
HANDOVER_MANAGER = "modeldeploy-operator-handover"
OPTIONAL_KINDS = ("HorizontalPodAutoscaler", "ScaledObject", "PodDisruptionBudget", "ServiceMonitor")


class InvalidSpec(Exception):
    """The spec cannot be acted on; the status says why. Not retried until the spec changes."""


class ApplyRejected(Exception):
    """The API server rejected a rendered child (HTTP 4xx other than conflicts)."""


@dataclass
class OperatorConfig:
    resync_seconds: float = 30.0
    #: Query each pod's runtime agent /status over the pod IP (real clusters only; off by default).
    query_agents: bool = False
    status_debounce_seconds: float = 0.3
    post_events: bool = True
    crd_cache_seconds: float = 30.0
    #: Namespaces in scope (exact names or globs); empty: all.
    namespaces: list[str] = field(default_factory=list)
    #: In-place rollouts: pods see a changed manifest only after the kubelet syncs the ConfigMap
    #: volume (up to about a minute), so for this long after a change their readiness does not yet
    #: prove the new versions are served. 0 disables the window.
    manifest_sync_seconds: float = 90.0

    @classmethod
    def from_env(cls) -> OperatorConfig:
        return cls(
            resync_seconds=float(os.environ.get("MODELDEPLOY_RESYNC_SECONDS", "30")),
            namespaces=[n for n in os.environ.get("MODELDEPLOY_NAMESPACES", "").split(",") if n],
            query_agents=os.environ.get("MODELDEPLOY_QUERY_AGENTS", "") in ("1", "true", "yes"),
            manifest_sync_seconds=float(os.environ.get("MODELDEPLOY_MANIFEST_SYNC_SECONDS", "90")),
        )


@dataclass
class Outcome:
    changes: list[str] = field(default_factory=list)
    status_written: bool = False


def parse_time(value: Any) -> dt.datetime | None:
    """An RFC 3339 timestamp from the API (``2026-01-01T00:00:00Z``), or None."""
    if not value:
        return None
    try:
        return dt.datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return None


def manager_write_time(obj: dict[str, Any] | None, manager: str) -> dt.datetime | None:
    """When ``manager`` last changed ``obj`` (its managedFields entry, main resource only)."""
    times = [
        parse_time(mf.get("time"))
        for mf in (obj or {}).get("metadata", {}).get("managedFields") or []
        if mf.get("manager") == manager and not mf.get("subresource")
    ]
    found = [t for t in times if t is not None]
    return max(found) if found else None


def owned_by(obj: dict[str, Any], uid: str) -> bool:
    return any(r.get("uid") == uid for r in obj.get("metadata", {}).get("ownerReferences") or [])


def _manifest_models(cm: dict[str, Any] | None) -> tuple[Any, int] | None:
    if not cm:
        return None
    try:
        m = ModelManifest.from_json((cm.get("data") or {}).get(MANIFEST_KEY, ""))
    except Exception:
        return None
    return [x.model_dump(mode="json") for x in m.models], m.generation


class Reconciler:
    def __init__(self, kube: Kube, config: OperatorConfig | None = None) -> None:
        self.kube = kube
        self.config = config or OperatorConfig()
        self._locks: dict[str, threading.Lock] = {}
        self._locks_guard = threading.Lock()
        self._crds: tuple[float, frozenset[str]] | None = None
        #: per ModelDeployment: optional child kinds known to be absent (skip GETs on resync)
        self._absent: dict[str, set[str]] = {}
        #: per ModelDeployment: the generation whose spec was found invalid
        self._invalid: dict[str, int] = {}
        #: per ModelDeployment: the generation one of whose children the API server refused (403/404:
        #: may pass later, so resyncs retry; the status keeps saying why meanwhile)
        self._rejected: dict[str, int] = {}
        self.instance = os.environ.get("HOSTNAME") or socket.gethostname()

    # ------------------------------------------------------------- helpers
    @contextmanager
    def lock(self, key: str) -> Iterator[None]:
        with self._locks_guard:
            lk = self._locks.setdefault(key, threading.Lock())
        with lk:
            yield

    def crds(self) -> frozenset[str]:
        now = time.monotonic()
        if self._crds and now - self._crds[0] < self.config.crd_cache_seconds:
            return self._crds[1]
        found = set()
        for name in (SCALEDOBJECT_CRD, SERVICEMONITOR_CRD):
            crd = self.kube.get(CRD, None, name)
            if crd is not None and any(
                c.get("type") == "Established" and c.get("status") == "True"
                for c in (crd.get("status") or {}).get("conditions") or []
            ):
                found.add(name)
        self._crds = (now, frozenset(found))
        return self._crds[1]

    def forget(self, namespace: str, name: str) -> None:
        key = f"{namespace}/{name}"
        self._absent.pop(key, None)
        self._invalid.pop(key, None)
        self._rejected.pop(key, None)
        with self._locks_guard:
            self._locks.pop(key, None)
        metrics.CONDITIONS.forget(key)

    # ----------------------------------------------------------- reconcile
    def reconcile(self, body: dict[str, Any], trigger: str = "update") -> Outcome:
        meta = body.get("metadata") or {}
        ns, name = str(meta.get("namespace")), str(meta.get("name"))
        key = f"{ns}/{name}"
        start = time.monotonic()
        with self.lock(key):
            try:
                out = self._reconcile(body, trigger, key)
                metrics.RECONCILES.labels(trigger=trigger, result="ok").inc()
                return out
            except InvalidSpec:
                metrics.RECONCILES.labels(trigger=trigger, result="invalid").inc()
                metrics.RECONCILE_ERRORS.labels(reason="invalid_spec").inc()
                raise
            except KubeError as exc:
                metrics.RECONCILES.labels(trigger=trigger, result="error").inc()
                metrics.RECONCILE_ERRORS.labels(
                    reason="conflict" if exc.status == 409 else ("transient" if exc.retryable else "error")
                ).inc()
                raise
            except Exception:
                metrics.RECONCILES.labels(trigger=trigger, result="error").inc()
                metrics.RECONCILE_ERRORS.labels(reason="error").inc()
                raise
            finally:
                metrics.RECONCILE_DURATION.labels(trigger=trigger).observe(time.monotonic() - start)

    def _reconcile(self, body: dict[str, Any], trigger: str, key: str) -> Outcome:
        meta = body["metadata"]
        ns, name, uid = meta["namespace"], meta["name"], meta.get("uid", "")
        try:
            md = ModelDeployment.from_body(body)
            from modeldeploy.render.common import check_names

            check_names(md)
        except (SpecError, RenderError) as exc:
            msg = "; ".join(exc.errors) if isinstance(exc, SpecError) else str(exc)
            self._write_invalid(body, msg)
            self._invalid[key] = int(meta.get("generation") or 0)
            raise InvalidSpec(msg) from None

        if trigger == "resync" and self._invalid.get(key) == md.generation:
            return Outcome()  # rejected before; wait for a spec change rather than retrying per tick
        self._invalid.pop(key, None)
        outcome = Outcome()
        full = trigger != "resync"
        absent = self._absent.setdefault(key, set())
        if full:
            absent.clear()
        crds = self.crds()

        live_cm = self.kube.get(CONFIGMAP, ns, configmap_name(md))
        gen = md.generation
        prev = _manifest_models(live_cm)
        if prev is not None:
            wanted = [x.model_dump(mode="json") for x in _render_manifest_models(md)]
            if prev[0] == wanted:
                gen = prev[1]  # the model set did not change: keep its generation (no ConfigMap write)
        opts = RenderOptions(crds=crds, manifest_generation=gen)
        try:
            children = render_children(md, opts)
        except RenderError as exc:
            self._write_invalid(body, str(exc))
            raise InvalidSpec(str(exc)) from None

        live_dep: dict[str, Any] | None = None
        created_dep = False
        scaled: tuple[Any, Any] | None = None
        for kind, desired in children.items():
            res = BY_KIND[kind]
            crd = KIND_CRD.get(kind)
            if crd and crd not in crds:
                continue
            if desired is None:
                if kind in absent:
                    continue
                live = self.kube.get(res, ns, name)
                if live is not None and owned_by(live, uid):
                    self.kube.delete(res, ns, name, uid=live["metadata"].get("uid"))
                    metrics.CHILD_WRITES.labels(kind=kind, action="delete").inc()
                    outcome.changes.append(f"deleted {kind}")
                absent.add(kind)
                continue
            absent.discard(kind)
            live = live_cm if kind == "ConfigMap" else self.kube.get(res, ns, desired["metadata"]["name"])
            if live is not None and not owned_by(live, uid):
                owners = [
                    f"{r.get('kind')}/{r.get('name')}" for r in live["metadata"].get("ownerReferences") or []
                ]
                if any(r.get("controller") for r in live["metadata"].get("ownerReferences") or []):
                    msg = (
                        f"metadata.name: {kind} {ns}/{desired['metadata']['name']} already exists and is "
                        f"controlled by {', '.join(owners)}"
                    )
                    self._write_invalid(body, msg, reason="ApplyRejected")
                    self._rejected[key] = md.generation
                    raise ApplyRejected(msg)
            ok, why = in_effect(desired, live)
            if ok:
                if kind == "Deployment":
                    live_dep = live
                continue
            if kind == "Deployment" and live is not None and "replicas" not in desired["spec"]:
                self._hand_over_replicas(live)
            try:
                new = self.kube.apply(desired, res)
            except KubeError as exc:
                self._child_rejected(body, key, md.generation, kind, desired["metadata"]["name"], exc)
                raise
            metrics.CHILD_WRITES.labels(kind=kind, action="apply").inc()
            outcome.changes.append(f"applied {kind} ({why})")
            log.info("%s: applied %s (%s)", key, kind, why)
            if kind == "Deployment":
                live_dep = new
                if live is None:
                    created_dep = True
                else:
                    old_r = (live.get("spec") or {}).get("replicas")
                    new_r = (desired.get("spec") or {}).get("replicas")
                    if new_r is not None and old_r != new_r:
                        scaled = (old_r, new_r)
            if kind == "ConfigMap" and prev is not None and gen == md.generation and live is not None:
                self._event(body, "Normal", "VersionsChanged", f"model versions now {_versions_summary(md)}")

        self._rejected.pop(key, None)
        if created_dep:
            self._event(
                body, "Normal", "Created", f"created the Triton deployment serving {_versions_summary(md)}"
            )
        if scaled:
            self._event(body, "Normal", "Scaled", f"replicas {scaled[0]} -> {scaled[1]}")
        outcome.status_written = self._refresh(
            md_body=None, ns=ns, name=name, notes=opts.notes, live_dep=live_dep
        )
        return outcome

    def _child_rejected(
        self, body: dict[str, Any], key: str, generation: int, kind: str, name: str, exc: KubeError
    ) -> None:
        """A refused child ends in Ready=False naming the spec field and the child, plus a Warning
        event (raises InvalidSpec / ApplyRejected); a transient error just returns (retried)."""
        if not is_rejection(exc):
            return
        msg = describe(kind, name, exc)
        if is_permanent(exc):
            self._write_invalid(body, msg)
            self._invalid[key] = generation
            raise InvalidSpec(msg) from None
        self._write_invalid(body, msg, reason="ApplyRejected")
        self._rejected[key] = generation
        raise ApplyRejected(msg) from None

    def _hand_over_replicas(self, live: dict[str, Any]) -> None:
        """Autoscaling was switched on: before our applied body drops ``spec.replicas`` (which would
        reset it to the default 1), hand the current value to a separate field manager, so the
        field keeps its value until the autoscaler takes it over."""
        owns = any(
            mf.get("manager") == FIELD_MANAGER
            and mf.get("operation") == "Apply"
            and "f:replicas" in (mf.get("fieldsV1") or {}).get("f:spec", {})
            for mf in live["metadata"].get("managedFields") or []
        )
        replicas = (live.get("spec") or {}).get("replicas")
        if not owns or replicas is None:
            return
        meta = live["metadata"]
        body = {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": meta["name"], "namespace": meta["namespace"]},
            "spec": {"replicas": replicas},
        }
        self.kube.apply(body, DEPLOYMENT, manager=HANDOVER_MANAGER)
        metrics.CHILD_WRITES.labels(kind="Deployment", action="handover").inc()

    # -------------------------------------------------------------- status
    def refresh_status(self, namespace: str, name: str) -> bool:
        """Recompute the status from the live world; write it only when it changed."""
        with self.lock(f"{namespace}/{name}"):
            return self._refresh(None, namespace, name, notes=None, live_dep=None)

    def _refresh(
        self,
        md_body: dict[str, Any] | None,
        ns: str,
        name: str,
        notes: list[Any] | None,
        live_dep: dict[str, Any] | None,
    ) -> bool:
        body = md_body or self.kube.get(MODELDEPLOYMENT, ns, name)
        if body is None or body["metadata"].get("deletionTimestamp"):
            return False
        try:
            md = ModelDeployment.from_body(body)
        except SpecError:
            return False  # reconcile reports InvalidSpec
        key = f"{ns}/{name}"
        if md.generation in (self._invalid.get(key), self._rejected.get(key)):
            return False  # a child was refused: keep Ready=False (never Ready without that child)
        if notes is None:
            notes = self._notes(md)
        dep = live_dep or self.kube.get(DEPLOYMENT, ns, name)
        pods = self.kube.list(POD, ns, label_selector=selector_string(md)) if dep else []
        events: list[dict[str, Any]] = []
        if needs_events(pods):
            events = self.kube.list(EVENT, ns, field_selector="involvedObject.kind=Pod,reason=Unhealthy")
        diag = diagnose(dep, pods, events, _gpu_request(md))
        agents = manifest_generation = manifest_age = None
        if self.config.query_agents:
            agents = self._query_agents(pods)
            cm = self.kube.get(CONFIGMAP, ns, configmap_name(md))
            live = _manifest_models(cm)
            manifest_generation = live[1] if live else None
            changed = manager_write_time(cm, FIELD_MANAGER)
            if changed is not None:
                manifest_age = (dt.datetime.now(dt.UTC) - changed).total_seconds()
        propagating = self._manifest_propagating(md, pods) if dep and agents is None else None
        current = body.get("status") or {}
        new = compute_status(
            md,
            dep,
            pods,
            diag,
            notes=notes,
            previous=current,
            agents=agents,
            manifest_generation=manifest_generation,
            manifest_age=manifest_age,
            propagating=propagating,
        )
        conds = {c["type"]: c["status"] for c in new["conditions"]}
        metrics.CONDITIONS.set(f"{ns}/{name}", conds)
        patch = status_patch(current, new)
        if patch is None:
            return False
        self.kube.patch_status(MODELDEPLOYMENT, ns, name, patch)
        metrics.STATUS_WRITES.inc()
        self._transition_events(body, current, new, diag)
        return True

    def _manifest_propagating(self, md: ModelDeployment, pods: list[dict[str, Any]]) -> str | None:
        """Why pod readiness does not yet prove the new versions after an in-place manifest change,
        or None. The change time is our field manager's last write to the manifest ConfigMap (we
        write it only when its content changes); pods started after it read the new manifest."""
        window = self.config.manifest_sync_seconds
        if window <= 0 or md.spec.rollout.strategy != "inPlace":
            return None
        cm = self.kube.get(CONFIGMAP, md.namespace, configmap_name(md))
        changed = manager_write_time(cm, FIELD_MANAGER)
        if changed is None:
            return None
        age = (dt.datetime.now(dt.UTC) - changed).total_seconds()
        started = [parse_time((p.get("status") or {}).get("startTime")) for p in pods]
        if age >= window or not any(t is not None and t < changed for t in started):
            return None
        return (
            f"the model manifest changed {age:.0f}s ago; pods started before that serve the new versions "
            f"only once the kubelet has synced the ConfigMap volume (allowing {window:.0f}s)"
        )

    def _notes(self, md: ModelDeployment) -> list[Any]:
        opts = RenderOptions(crds=self.crds())
        try:
            render_children(md, opts)
        except RenderError:
            return []
        return list(opts.notes)

    def _query_agents(self, pods: list[dict[str, Any]]) -> AgentReport:
        """Each running pod's agent ``/status`` (on the container port named ``agent``), asked in
        parallel, so that unreachable agents cost one timeout per pass rather than one per pod."""
        import requests

        urls: dict[str, str] = {}
        for p in pods:
            ip = (p.get("status") or {}).get("podIP")
            if not ip or (p.get("status") or {}).get("phase") != "Running":
                continue
            port = next(
                (
                    cp["containerPort"]
                    for c in (p.get("spec") or {}).get("containers") or []
                    for cp in c.get("ports") or []
                    if cp.get("name") == "agent"
                ),
                AGENT_PORT,
            )
            urls[p["metadata"]["name"]] = f"http://{ip}:{port}/status"

        def ask(url: str) -> dict[str, Any] | None:
            try:
                r = requests.get(url, timeout=(1, 2))
                r.raise_for_status()
                return dict(r.json())
            except Exception as exc:  # agent not up yet
                log.debug("agent %s: %s", url, exc)
                return None

        report = AgentReport()
        if urls:
            with ThreadPoolExecutor(max_workers=min(16, len(urls))) as pool:
                for name, doc in zip(urls, pool.map(ask, urls.values()), strict=True):
                    if doc is not None:
                        report.pods[name] = doc
        return report

    def _write_invalid(self, body: dict[str, Any], message: str, reason: str = "InvalidSpec") -> None:
        current = body.get("status") or {}
        new = invalid_status(body, message, previous=current, reason=reason)
        meta = body["metadata"]
        metrics.CONDITIONS.set(
            f"{meta['namespace']}/{meta['name']}", {c["type"]: c["status"] for c in new["conditions"]}
        )
        patch = status_patch(current, new)
        if patch is None:
            return
        self.kube.patch_status(MODELDEPLOYMENT, meta["namespace"], meta["name"], patch)
        metrics.STATUS_WRITES.inc()
        self._event(body, "Warning", reason, message)

    # -------------------------------------------------------------- events
    def _transition_events(
        self, body: dict[str, Any], old: dict[str, Any], new: dict[str, Any], diag: Diagnosis | None
    ) -> None:
        def ready(st: dict[str, Any]) -> tuple[str, str]:
            for c in st.get("conditions") or []:
                if c.get("type") == "Ready":
                    return str(c.get("status")), str(c.get("reason"))
            return "Unknown", ""

        (os_, oreason), (ns_, nreason) = ready(old), ready(new)
        if ns_ == "True" and os_ != "True":
            self._event(body, "Normal", "Ready", f"serving {new.get('servedVersions', '')}".strip())
        elif diag is not None and (os_, oreason) != (ns_, nreason):
            self._event(body, "Warning", diag.reason, diag.message)

    def _event(self, body: dict[str, Any], type_: str, reason: str, message: str) -> None:
        if not self.config.post_events:
            return
        meta = body["metadata"]
        now = now_rfc3339()
        ev = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"generateName": f"{meta['name']}.", "namespace": meta["namespace"]},
            "involvedObject": {
                "apiVersion": API_VERSION,
                "kind": KIND,
                "name": meta["name"],
                "namespace": meta["namespace"],
                "uid": meta.get("uid"),
            },
            "type": type_,
            "reason": reason,
            "message": message[:1024],
            "source": {"component": FIELD_MANAGER},
            "reportingComponent": f"modeldeploy.io/{FIELD_MANAGER}",
            "reportingInstance": self.instance[:128],
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
        }
        try:
            self.kube.create(EVENT, meta["namespace"], ev)
        except KubeError as exc:
            log.warning("could not post event %s on %s/%s: %s", reason, meta["namespace"], meta["name"], exc)


def _render_manifest_models(md: ModelDeployment) -> list[Any]:
    from modeldeploy.render.manifest import build_manifest

    return list(build_manifest(md).models)


def _versions_summary(md: ModelDeployment) -> str:
    return " ".join(f"{m.name}:{','.join(map(str, m.desired_versions()))}" for m in md.spec.models)


def _gpu_request(md: ModelDeployment) -> str | None:
    r = md.spec.resources
    res = r.gpu_resource_name()
    return f"{r.gpu_count()} {res}" if res else None


def dumps(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True)
