"""An in-memory API server for unit tests of the reconcile core: the same small read/write
interface as :class:`~modeldeploy.reconcile.kube.Kube` (get, get_live, list, apply, delete,
patch_status, create), objects as plain dicts, every write recorded in ``writes``.

Server-side apply is modelled as far as the reconciler relies on it: the applied body replaces what
the field manager had (so a field we stop rendering goes), except ``spec.replicas`` while another
manager holds it (the replica handover); resourceVersion and generation (on spec changes) move;
``managedFields`` record each manager's last apply with the fields it set under ``spec``.
"""

from __future__ import annotations

import copy
import itertools
import uuid
from typing import Any

from modeldeploy.reconcile.informer import matches, parse_selector
from modeldeploy.reconcile.kube import BY_KIND, Kube, KubeError, Resource
from modeldeploy.render.common import FIELD_MANAGER

NOW = "2026-01-01T00:00:00Z"


class MemoryKube(Kube):
    def __init__(self) -> None:  # no ApiClient: nothing leaves the process
        self.objs: dict[tuple[str, str, str], dict[str, Any]] = {}
        self.writes: list[tuple[str, str, str]] = []  # (verb, kind, name[/manager])
        self.reads: list[tuple[str, str]] = []
        self.list_selectors: list[tuple[str, str | None]] = []  # (kind, label selector) of each list
        self.reject: dict[str, KubeError] = {}  # kind -> the error its applies get
        self._rv = itertools.count(1)

    # ------------------------------------------------------------- test helpers
    def put(self, obj: dict[str, Any]) -> dict[str, Any]:
        """Store ``obj`` as if someone else created it."""
        obj = copy.deepcopy(obj)
        meta = obj.setdefault("metadata", {})
        meta.setdefault("uid", str(uuid.uuid4()))
        meta.setdefault("generation", 1)
        meta["resourceVersion"] = str(next(self._rv))
        self.objs[(obj["kind"], meta.get("namespace") or "", meta["name"])] = obj
        return obj

    def obj(self, kind: str, ns: str, name: str) -> dict[str, Any] | None:
        return self.objs.get((kind, ns, name))

    def clear_log(self) -> None:
        self.writes.clear()
        self.reads.clear()
        self.list_selectors.clear()

    # ----------------------------------------------------------------- reads
    def get(self, res: Resource, namespace: str | None, name: str) -> dict[str, Any] | None:
        self.reads.append(("get", res.kind))
        found = self.objs.get((res.kind, namespace or "", name))
        return copy.deepcopy(found) if found is not None else None

    def list(
        self,
        res: Resource,
        namespace: str | None = None,
        *,
        label_selector: str | None = None,
        field_selector: str | None = None,
    ) -> list[dict[str, Any]]:
        self.reads.append(("list", res.kind))
        self.list_selectors.append((res.kind, label_selector))
        sel = parse_selector(label_selector) or {}
        return [
            copy.deepcopy(o)
            for (kind, ns, _), o in self.objs.items()
            if kind == res.kind and (namespace is None or ns == namespace) and matches(o, sel)
        ]

    # ---------------------------------------------------------------- writes
    def apply(
        self,
        obj: dict[str, Any],
        res: Resource | None = None,
        *,
        force: bool = True,
        manager: str = FIELD_MANAGER,
    ) -> dict[str, Any]:
        res = res or BY_KIND[obj["kind"]]
        meta = obj["metadata"]
        self.writes.append(("apply", res.kind, f"{meta['name']}/{manager}"))
        if res.kind in self.reject:
            raise self.reject[res.kind]
        key = (res.kind, meta.get("namespace") or "", meta["name"])
        cur = self.objs.get(key)
        new = copy.deepcopy(obj)
        if cur is not None:
            if manager != FIELD_MANAGER:  # a partial apply by another manager: merged in
                new = _merge(copy.deepcopy(cur), copy.deepcopy(obj))
            elif "replicas" in (cur.get("spec") or {}) and "replicas" not in (new.get("spec") or {}):
                if any(_holds_replicas(mf) for mf in _managers(cur) if mf["manager"] != manager):
                    new.setdefault("spec", {})["replicas"] = cur["spec"]["replicas"]
            new["metadata"]["uid"] = cur["metadata"]["uid"]
            if "status" in cur:
                new["status"] = cur["status"]
            gen = int(cur["metadata"].get("generation") or 1)
            new["metadata"]["generation"] = gen + (cur.get("spec") != new.get("spec"))
            others = [mf for mf in _managers(cur) if mf["manager"] != manager]
        else:
            new["metadata"]["uid"] = str(uuid.uuid4())
            new["metadata"]["generation"] = 1
            others = []
        fields = {f"f:{k}": {} for k in (obj.get("spec") or {})}
        entry = {"manager": manager, "operation": "Apply", "time": NOW, "fieldsV1": {"f:spec": fields}}
        new["metadata"]["managedFields"] = [*others, entry]
        new["metadata"]["resourceVersion"] = str(next(self._rv))
        self.objs[key] = new
        return copy.deepcopy(new)

    def delete(self, res: Resource, namespace: str | None, name: str, uid: str | None = None) -> bool:
        self.writes.append(("delete", res.kind, name))
        cur = self.objs.get((res.kind, namespace or "", name))
        if cur is None or (uid and cur["metadata"]["uid"] != uid):
            return False
        del self.objs[(res.kind, namespace or "", name)]
        return True

    def patch_status(self, res: Resource, namespace: str, name: str, patch: dict[str, Any]) -> dict[str, Any]:
        self.writes.append(("patch_status", res.kind, name))
        cur = self.objs.get((res.kind, namespace, name))
        if cur is None:
            raise KubeError(404, "PATCH", res.path(namespace, name, "status"), f'"{name}" not found')
        cur["status"] = _merge(cur.get("status") or {}, copy.deepcopy(patch))
        cur["metadata"]["resourceVersion"] = str(next(self._rv))
        return copy.deepcopy(cur)

    def create(self, res: Resource, namespace: str | None, obj: dict[str, Any]) -> dict[str, Any]:
        meta = obj["metadata"]
        name = meta.get("name") or f"{meta.get('generateName', '')}{next(self._rv)}"
        self.writes.append(("create", res.kind, name))
        key = (res.kind, namespace or "", name)
        if key in self.objs:
            raise KubeError(409, "POST", res.path(namespace), "already exists")
        new = copy.deepcopy(obj)
        new["metadata"]["name"] = name
        if res.kind == "Secret" and "stringData" in new:  # what the API server stores
            import base64

            sd = new.pop("stringData")
            new["data"] = {k: base64.b64encode(v.encode()).decode() for k, v in sd.items()}
        return self.put(new)


def _managers(obj: dict[str, Any]) -> list[dict[str, Any]]:
    return list(obj["metadata"].get("managedFields") or [])


def _holds_replicas(mf: dict[str, Any]) -> bool:
    return "f:replicas" in ((mf.get("fieldsV1") or {}).get("f:spec") or {})


def _merge(base: Any, patch: Any) -> Any:
    """JSON merge patch (RFC 7386)."""
    if not isinstance(patch, dict) or not isinstance(base, dict):
        return patch
    for k, v in patch.items():
        if v is None:
            base.pop(k, None)
        else:
            base[k] = _merge(base.get(k), v)
    return base
