"""The stores keep a watch event's object as the API server sent it (Kube.watch's RAW_OBJECT): this
holds only if the real API server writes each event as ``{"type":…,"object":…}`` on one line, which
is checked here, with an object large enough to arrive in many chunks."""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

import pytest

from modeldeploy.reconcile.informer import Informer
from modeldeploy.reconcile.kube import CONFIGMAP, RAW_OBJECT, Kube

pytestmark = [pytest.mark.integration, pytest.mark.cluster]


def _cm(ns: str, value: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "raw", "namespace": ns, "labels": {"test": "raw"}},
        "data": {"k": value},
    }


def test_the_api_servers_watch_events_carry_their_objects_json_and_the_store_keeps_it(cluster: Any) -> None:
    kube = Kube(cluster.api_client())
    ns = f"watchraw-{uuid.uuid4().hex[:6]}"
    with cluster.scratch_namespace(ns):
        rv = kube.apply(_cm(ns, "é ✓ " * 10))["metadata"]["resourceVersion"]
        big = 'é ✓ "quoted" \n' * 40_000  # about 600 KB of JSON: many chunks
        written = kube.apply(_cm(ns, big))
        events = kube.watch(CONFIGMAP, ns, rv, label_selector="test=raw", timeout_seconds=30)
        ev = next(e for e in events if e["type"] != "BOOKMARK")
        events.close()
        assert ev["type"] == "MODIFIED", ev["type"]
        assert RAW_OBJECT in ev, "the event's line is not the API server's WatchEvent layout"
        assert json.loads(ev[RAW_OBJECT]) == ev["object"] == written

        seen: list[dict[str, Any] | None] = []
        inf = Informer(kube, CONFIGMAP, ns, "test=raw", lambda _k, _o, new: seen.append(new)).start()
        try:
            assert inf.wait_synced(30)
            changed = kube.apply(_cm(ns, big + "more"))
            want = changed["metadata"]["resourceVersion"]
            t0 = time.monotonic()
            while not any(n and n["metadata"]["resourceVersion"] == want for n in seen):
                assert time.monotonic() - t0 < 30, "the change's event did not come"
                time.sleep(0.05)
            assert inf.get(ns, "raw") == changed
        finally:
            inf.stop()
