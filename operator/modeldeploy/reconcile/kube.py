"""A thin, blocking Kubernetes REST client on top of ``kubernetes.client.ApiClient``.

Objects are plain dicts (no model (de)serialisation), writes are server-side apply under one field
manager, and every request is counted (``modeldeploy_api_requests_total``) so tests and the benchmark
can see what the operator does.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from kubernetes.client import ApiClient
from kubernetes.client.exceptions import ApiException

from modeldeploy.api.v1alpha1 import GROUP, PLURAL, VERSION
from modeldeploy.reconcile import jsoncodec
from modeldeploy.render.common import FIELD_MANAGER

Items = list[dict[str, Any]]
#: (namespace, name) of objects
Keys = list[tuple[str, str]]
#: Items per page of the stores' LISTs (kube-apiserver serves pages of one snapshot).
LIST_PAGE = 250


@dataclass(frozen=True)
class Resource:
    group: str
    version: str
    plural: str
    kind: str
    namespaced: bool = True

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    def path(self, namespace: str | None = None, name: str | None = None, sub: str | None = None) -> str:
        base = f"/apis/{self.group}/{self.version}" if self.group else f"/api/{self.version}"
        if self.namespaced and namespace:
            base += f"/namespaces/{quote(namespace)}"
        base += f"/{self.plural}"
        if name:
            base += f"/{quote(name)}"
        if sub:
            base += f"/{sub}"
        return base


MODELDEPLOYMENT = Resource(GROUP, VERSION, PLURAL, "ModelDeployment")
CONFIGMAP = Resource("", "v1", "configmaps", "ConfigMap")
SECRET = Resource("", "v1", "secrets", "Secret")
SERVICE = Resource("", "v1", "services", "Service")
POD = Resource("", "v1", "pods", "Pod")
EVENT = Resource("", "v1", "events", "Event")
DEPLOYMENT = Resource("apps", "v1", "deployments", "Deployment")
REPLICASET = Resource("apps", "v1", "replicasets", "ReplicaSet")
HPA = Resource("autoscaling", "v2", "horizontalpodautoscalers", "HorizontalPodAutoscaler")
PDB = Resource("policy", "v1", "poddisruptionbudgets", "PodDisruptionBudget")
SCALEDOBJECT = Resource("keda.sh", "v1alpha1", "scaledobjects", "ScaledObject")
JOB = Resource("batch", "v1", "jobs", "Job")
HTTPSCALEDOBJECT = Resource("http.keda.sh", "v1alpha1", "httpscaledobjects", "HTTPScaledObject")
SERVICEMONITOR = Resource("monitoring.coreos.com", "v1", "servicemonitors", "ServiceMonitor")
NETWORKPOLICY = Resource("networking.k8s.io", "v1", "networkpolicies", "NetworkPolicy")
CRD = Resource("apiextensions.k8s.io", "v1", "customresourcedefinitions", "CustomResourceDefinition", False)

BY_KIND: dict[str, Resource] = {
    r.kind: r
    for r in (
        CONFIGMAP,
        SERVICE,
        DEPLOYMENT,
        HPA,
        PDB,
        SCALEDOBJECT,
        HTTPSCALEDOBJECT,
        SERVICEMONITOR,
        NETWORKPOLICY,
        JOB,
    )
}

#: Every kind the operator makes requests for (the label values of its request counter).
REQUEST_KINDS: tuple[str, ...] = (
    *BY_KIND,
    *(r.kind for r in (MODELDEPLOYMENT, SECRET, POD, EVENT, REPLICASET, CRD)),
)


class KubeError(Exception):
    """A failed API request; ``status`` is the HTTP status (0 for connection errors)."""

    def __init__(self, status: int, method: str, path: str, message: str) -> None:
        self.status = status
        self.method = method
        self.path = path
        self.message = message
        super().__init__(f"{method} {path}: HTTP {status}: {message}")

    @property
    def retryable(self) -> bool:
        return self.status in (0, 409, 429) or self.status >= 500


def _count(verb: str, kind: str) -> None:
    from modeldeploy import metrics

    metrics.API_REQUESTS.labels(verb=verb, kind=kind).inc()


#: ``Accept`` of a metadata-only LIST or WATCH: the API server sends each object's metadata (as
#: PartialObjectMetadata), not its spec, data or status
METADATA_ONLY = "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1,application/json"
METADATA_ONLY_WATCH = "application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1,application/json"

#: Key of a watch event (from :meth:`Kube.watch`) holding its object's JSON as the API server sent
#: it (bytes), so that a store can keep it without encoding the decoded object again
RAW_OBJECT = "rawObject"


def event_object_json(line: bytes, kind: Any) -> bytes | None:
    """The object's JSON within a watch event's line, as sent: the API server writes an event as
    ``{"type":"<type>","object":<object>}`` (metav1.WatchEvent). None when the line is not exactly
    that, e.g. reordered by a proxy: the caller then encodes the decoded object itself."""
    if not isinstance(kind, str):
        return None
    head = b'{"type":"' + kind.encode() + b'","object":'
    if line.startswith(head) and line.endswith(b"}"):
        return line[len(head) : -1]
    return None


def _lines(resp: Any) -> Iterator[bytes]:
    """The non-empty lines of a streamed response, as bytes (decoded as they are;
    kubernetes' iter_resp_lines decodes each to str). A last line without its newline (the stream
    broke within it) is not one."""
    parts: list[bytes] = []
    for chunk in resp.stream(amt=None, decode_content=False):
        if b"\n" not in chunk:
            parts.append(chunk)
            continue
        parts.append(chunk)
        *lines, rest = b"".join(parts).split(b"\n")
        parts = [rest] if rest else []
        for line in lines:
            line = line.rstrip(b"\r")
            if line:
                yield line


class Kube:
    """Blocking JSON-over-HTTP access to the API server through an authenticated ApiClient."""

    def __init__(self, api_client: ApiClient, timeout: float = 30) -> None:
        self.api = api_client
        self.timeout = timeout

    def request(
        self,
        method: str,
        path: str,
        *,
        query: dict[str, str] | None = None,
        body: Any = None,
        content_type: str = "application/json",
        kind: str = "",
        verb: str = "",
        accept: str = "application/json",
    ) -> dict[str, Any]:
        return self.answer(
            method,
            path,
            query=query,
            body=body,
            content_type=content_type,
            kind=kind,
            verb=verb,
            accept=accept,
        )[0]

    def answer(
        self,
        method: str,
        path: str,
        *,
        query: dict[str, str] | None = None,
        body: Any = None,
        content_type: str = "application/json",
        kind: str = "",
        verb: str = "",
        accept: str = "application/json",
    ) -> tuple[dict[str, Any], bytes]:
        """:meth:`request`'s answer, decoded and as sent (a store keeps it without encoding it again)."""
        headers = {"Accept": accept, "Content-Type": content_type}
        q = [(k, v) for k, v in (query or {}).items()]
        _, url, hdrs, _, _ = self.api.param_serialize(
            method, path, query_params=q, header_params=headers, auth_settings=["BearerToken"]
        )
        _count(verb or method.lower(), kind)
        try:
            resp = self.api.call_api(
                method, url, header_params=hdrs, body=body, _request_timeout=self.timeout
            )
            raw = resp.read()
        except ApiException as exc:
            raise KubeError(int(exc.status or 0), method, path, str(exc.reason or exc)) from None
        except Exception as exc:  # urllib3 connection errors
            raise KubeError(0, method, path, str(exc)) from None
        if not 200 <= resp.status <= 299:
            message = raw.decode(errors="replace") if raw else ""
            try:
                message = json.loads(message).get("message", message)
            except (ValueError, AttributeError):
                pass
            raise KubeError(resp.status, method, path, message)
        return (jsoncodec.loads(raw) if raw else {}), raw

    # ---------------------------------------------------------------- reads
    def get(self, res: Resource, namespace: str | None, name: str) -> dict[str, Any] | None:
        try:
            return self.request("GET", res.path(namespace, name), kind=res.kind, verb="get")
        except KubeError as exc:
            if exc.status == 404:
                return None
            raise

    def get_live(self, res: Resource, namespace: str | None, name: str) -> dict[str, Any] | None:
        """From the API server even where reads come from a cache (see reconcile/cache.py)."""
        return self.get(res, namespace, name)

    @property
    def reads_cached(self) -> bool:
        """Whether ``get``/``list`` may answer from a watch-fed store (then ``get_live`` differs)."""
        return False

    def writing(self, kind: str, namespace: str, name: str) -> bool:
        """Whether a write of ours to that object is under way (a watch event of it meanwhile is
        most likely that write's own result; see CachedKube). Never, without a cache."""
        return False

    def known_absent(self, res: Resource, namespace: str, name: str) -> bool:
        """Whether no object of ``res`` named ``name`` exists in ``namespace``, ours or anyone's,
        as far as a watch of every name tells (False: not known; ask the API server)."""
        return False

    def watch_kinds(self, kinds: Any) -> None:
        """Keep ``kinds`` in watch-fed stores: nothing to do without a cache."""

    def unwatch_kinds(self, kinds: Any) -> None:
        """Stop keeping ``kinds`` (their CRD went away): nothing to do without a cache."""

    def established_crds(self, names: Sequence[str]) -> frozenset[str] | None:
        """Which of the CRDs ``names`` are established, from a watch; None: not watched (GET them)."""
        return None

    def list(
        self,
        res: Resource,
        namespace: str | None = None,
        *,
        label_selector: str | None = None,
        field_selector: str | None = None,
    ) -> list[dict[str, Any]]:
        query: dict[str, str] = {}
        if label_selector:
            query["labelSelector"] = label_selector
        if field_selector:
            query["fieldSelector"] = field_selector
        out = self.request("GET", res.path(namespace), query=query, kind=res.kind, verb="list")
        return list(out.get("items") or [])

    def list_keys(self, res: Resource, namespace: str | None = None) -> Keys:
        """(namespace, name) of each object of ``res`` in ``namespace`` that is not being deleted."""
        return [
            (str(m.get("namespace") or ""), str(m["name"]))
            for m in (o["metadata"] for o in self.list(res, namespace))
            if not m.get("deletionTimestamp")
        ]

    def list_with_version(
        self,
        res: Resource,
        namespace: str | None = None,
        *,
        label_selector: str | None = None,
        field_selector: str | None = None,
    ) -> tuple[Items, str]:
        """The items and the list's resourceVersion (where a watch of the same selection starts)."""
        items: Items = []
        rv = ""
        for page, page_rv in self.list_pages(
            res, namespace, label_selector=label_selector, field_selector=field_selector
        ):
            items.extend(page)
            rv = page_rv
        return items, rv

    def list_pages(
        self,
        res: Resource,
        namespace: str | None = None,
        *,
        label_selector: str | None = None,
        field_selector: str | None = None,
        limit: int = LIST_PAGE,
        metadata_only: bool = False,
    ) -> Iterator[tuple[Items, str]]:
        """The list in pages of at most ``limit`` items (``limit``/``continue``: one consistent
        snapshot), each with the list's resourceVersion: a caller that keeps each page in its own
        form holds one page of decoded objects at a time, not the whole list."""
        query = {"labelSelector": label_selector} if label_selector else {}
        if field_selector:
            query["fieldSelector"] = field_selector
        query["limit"] = str(limit)
        while True:
            out = self.request(
                "GET",
                res.path(namespace),
                query=query,
                kind=res.kind,
                verb="list",
                accept=METADATA_ONLY if metadata_only else "application/json",
            )
            meta = out.get("metadata") or {}
            yield list(out.pop("items", None) or []), str(meta.get("resourceVersion") or "")
            if not meta.get("continue"):
                return
            query["continue"] = str(meta["continue"])

    def watch(
        self,
        res: Resource,
        namespace: str | None,
        resource_version: str,
        *,
        label_selector: str | None = None,
        field_selector: str | None = None,
        timeout_seconds: int = 300,
        metadata_only: bool = False,
    ) -> Iterator[dict[str, Any]]:
        """The watch events (``{"type": ..., "object": ...}``) of a selection from ``resource_version``
        on, with bookmarks, until the server ends the watch (after about ``timeout_seconds``)."""
        query = {
            "watch": "1",
            "resourceVersion": resource_version,
            "allowWatchBookmarks": "true",
            "timeoutSeconds": str(timeout_seconds),
        }
        if label_selector:
            query["labelSelector"] = label_selector
        if field_selector:
            query["fieldSelector"] = field_selector
        path = res.path(namespace)
        _, url, hdrs, _, _ = self.api.param_serialize(
            "GET",
            path,
            query_params=list(query.items()),
            header_params={"Accept": METADATA_ONLY_WATCH if metadata_only else "application/json"},
            auth_settings=["BearerToken"],
        )
        _count("watch", res.kind)
        try:
            resp = self.api.call_api(
                "GET", url, header_params=hdrs, _request_timeout=(10, timeout_seconds + 30)
            )
        except ApiException as exc:
            raise KubeError(int(exc.status or 0), "WATCH", path, str(exc.reason or exc)) from None
        except Exception as exc:  # urllib3 connection errors
            raise KubeError(0, "WATCH", path, str(exc)) from None
        raw = resp.response
        try:
            if not 200 <= resp.status <= 299:
                raise KubeError(resp.status, "WATCH", path, raw.data.decode(errors="replace")[:500])
            for line in _lines(raw):
                ev = jsoncodec.loads(line)
                body = event_object_json(line, ev.get("type"))
                if body is not None:
                    ev[RAW_OBJECT] = body
                yield ev
        except KubeError:
            raise
        except Exception as exc:  # the connection broke mid-stream
            raise KubeError(0, "WATCH", path, str(exc)) from None
        finally:
            raw.close()  # a watch connection is never reused (it may be left mid-stream)
            raw.release_conn()

    # --------------------------------------------------------------- writes
    def apply(
        self,
        obj: dict[str, Any],
        res: Resource | None = None,
        *,
        force: bool = True,
        manager: str = FIELD_MANAGER,
    ) -> dict[str, Any]:
        """Server-side apply ``obj`` under the operator's field manager."""
        return self.apply_answer(obj, res, force=force, manager=manager)[0]

    def apply_answer(
        self,
        obj: dict[str, Any],
        res: Resource | None = None,
        *,
        force: bool = True,
        manager: str = FIELD_MANAGER,
    ) -> tuple[dict[str, Any], bytes | None]:
        """:meth:`apply`'s answer, decoded and as sent (None where there is no such JSON)."""
        res = res or BY_KIND[obj["kind"]]
        meta = obj["metadata"]
        query = {"fieldManager": manager}
        if force:
            query["force"] = "true"
        return self.answer(
            "PATCH",
            res.path(meta.get("namespace"), meta["name"]),
            query=query,
            body=obj,
            content_type="application/apply-patch+yaml",
            kind=res.kind,
            verb="apply",
        )

    def delete(self, res: Resource, namespace: str | None, name: str, uid: str | None = None) -> bool:
        """Delete (background propagation); ``uid`` guards against deleting a re-created object."""
        body: dict[str, Any] = {
            "apiVersion": "v1",
            "kind": "DeleteOptions",
            "propagationPolicy": "Background",
        }
        if uid:
            body["preconditions"] = {"uid": uid}
        try:
            self.request("DELETE", res.path(namespace, name), body=body, kind=res.kind, verb="delete")
            return True
        except KubeError as exc:
            if exc.status in (404, 409):
                return False
            raise

    def patch_status(self, res: Resource, namespace: str, name: str, patch: dict[str, Any]) -> dict[str, Any]:
        """JSON merge patch of the status subresource."""
        return self.patch_status_answer(res, namespace, name, patch)[0]

    def patch_status_answer(
        self, res: Resource, namespace: str, name: str, patch: dict[str, Any]
    ) -> tuple[dict[str, Any], bytes | None]:
        """:meth:`patch_status`'s answer, decoded and as sent (None where there is no such JSON)."""
        return self.answer(
            "PATCH",
            res.path(namespace, name, "status"),
            query={"fieldManager": FIELD_MANAGER},
            body={"status": patch},
            content_type="application/merge-patch+json",
            kind=res.kind,
            verb="patch_status",
        )

    def create(self, res: Resource, namespace: str | None, obj: dict[str, Any]) -> dict[str, Any]:
        return self.request(
            "POST",
            res.path(namespace),
            query={"fieldManager": FIELD_MANAGER},
            body=obj,
            kind=res.kind,
            verb="create",
        )
