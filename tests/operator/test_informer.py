"""Unit tests of the watch-fed store (reconcile/informer.py) against a scripted API: the list, the
watch stream, a watch that expires (410) or breaks (API-server restart) and what the store and its
event sink see then."""

from __future__ import annotations

import copy
import gc
import json
import queue
import sys
import time
import tracemalloc
from collections.abc import Iterator
from typing import Any

import pytest
from opsupport import small_md

from modeldeploy.reconcile import informer as informer_mod
from modeldeploy.reconcile import kube as kube_mod
from modeldeploy.reconcile.informer import Informer, parse_selector
from modeldeploy.reconcile.kube import (
    CONFIGMAP,
    DEPLOYMENT,
    RAW_OBJECT,
    Items,
    Kube,
    KubeError,
    Resource,
    event_object_json,
)

SEL = "app.kubernetes.io/managed-by=modeldeploy-operator"


def cm(name: str, rv: int, data: str = "x", ns: str = "a") -> dict[str, Any]:
    return {
        "kind": "ConfigMap",
        "metadata": {
            "name": name,
            "namespace": ns,
            "resourceVersion": str(rv),
            "labels": parse_selector(SEL),
        },
        "data": {"k": data},
    }


class ScriptedKube(Kube):
    """LIST answers the current ``world`` (in pages); each watch streams what the test puts in ``events``
    (``None`` ends the watch normally, an exception breaks it)."""

    def __init__(self) -> None:
        self.world: dict[str, dict[str, Any]] = {}
        self.events: queue.Queue[Any] = queue.Queue()
        self.lists = 0
        self.pages = 0
        self.fail_lists = 0
        self.metadata_only_calls: list[bool] = []  # per LIST and WATCH: asked for metadata only?

    def list_pages(
        self,
        res: Resource,
        namespace: str | None = None,
        *,
        label_selector: str | None = None,
        field_selector: str | None = None,
        limit: int = 2,
        metadata_only: bool = False,
    ) -> Iterator[tuple[Items, str]]:
        """The world in pages of ``limit`` (two by default: the stores' paging is exercised)."""
        self.metadata_only_calls.append(metadata_only)
        if self.fail_lists:
            self.fail_lists -= 1
            raise KubeError(0, "GET", res.plural, "connection refused")
        self.lists += 1
        items = sorted(self.world.values(), key=lambda o: str(o["metadata"]["name"]))
        rv = str(max((int(o["metadata"]["resourceVersion"]) for o in items), default=1))
        for i in range(0, max(len(items), 1), limit):
            self.pages += 1
            yield items[i : i + limit], rv

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
        self.metadata_only_calls.append(metadata_only)
        while True:
            ev = self.events.get()
            if ev is None:
                return
            if isinstance(ev, Exception):
                raise ev
            yield ev


def until(cond: Any, what: str, timeout: float = 5) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.01)
    raise AssertionError(f"timed out waiting for {what}")


def informer(kube: ScriptedKube, seen: list[tuple[str | None, str | None]]) -> Informer:
    def sink(kind: str, old: dict[str, Any] | None, new: dict[str, Any] | None) -> None:
        seen.append(
            (old and old["metadata"]["resourceVersion"], new and new["metadata"]["resourceVersion"])  # type: ignore[arg-type]
        )

    return Informer(kube, CONFIGMAP, "a", SEL, sink).start()


def test_list_then_watch_keeps_the_store_and_reports_changes() -> None:
    kube, seen = ScriptedKube(), []
    kube.world["c1"] = cm("c1", 5)
    inf = informer(kube, seen)
    assert inf.wait_synced(5)
    until(lambda: len(seen) == 1, "the listed object's event")  # passed on after the store swap
    assert inf.get("a", "c1") is not None and seen == [(None, "5")]
    kube.events.put({"type": "MODIFIED", "object": cm("c1", 6, "y")})
    kube.events.put({"type": "ADDED", "object": cm("c2", 7)})
    kube.events.put({"type": "BOOKMARK", "object": {"metadata": {"resourceVersion": "8"}}})
    kube.events.put({"type": "DELETED", "object": cm("c1", 9)})
    until(lambda: len(seen) == 4, "four changes")
    assert seen[1:] == [("5", "6"), (None, "7"), ("6", None)]
    assert inf.get("a", "c1") is None and inf.get("a", "c2") is not None
    assert inf.covers("a", parse_selector(f"{SEL},x=y")) and not inf.covers("a", parse_selector("x=y"))
    assert not inf.covers("b", parse_selector(SEL))
    inf.stop()
    kube.events.put(None)


def test_a_write_through_is_not_undone_by_an_older_event() -> None:
    kube, seen = ScriptedKube(), []
    kube.world["c1"] = cm("c1", 5)
    inf = informer(kube, seen)
    assert inf.wait_synced(5)
    inf.put(cm("c1", 10, "ours"))  # our apply's answer
    kube.events.put({"type": "MODIFIED", "object": cm("c1", 8, "older")})
    kube.events.put({"type": "MODIFIED", "object": cm("c1", 10, "ours")})  # the echo of our write
    kube.events.put({"type": "ADDED", "object": cm("c9", 11)})  # a marker: the above were handled
    until(lambda: inf.get("a", "c9") is not None, "the marker")
    c1 = inf.get("a", "c1")
    assert c1 is not None and c1["data"]["k"] == "ours"
    assert seen == [(None, "5"), (None, "11")], "the echo of our own write is no change"
    inf.stop()
    kube.events.put(None)


def test_a_write_through_of_an_object_deleted_since_is_not_kept() -> None:
    """Our create's answer arrives after the watch delivered the object and its deletion (the
    garbage collector removed it: its owner went while we wrote it). The store does not take it
    back: nothing would ever remove it (it held a stale child, and memory, for good). A write the
    watch has not reached yet is kept, and its later deletion removes it."""
    kube, seen = ScriptedKube(), []
    inf = informer(kube, seen)
    assert inf.wait_synced(5)
    kube.events.put({"type": "ADDED", "object": cm("c1", 10)})
    kube.events.put({"type": "DELETED", "object": cm("c1", 12)})
    kube.events.put({"type": "ADDED", "object": cm("marker", 13)})
    until(lambda: inf.get("a", "marker") is not None, "the marker")
    inf.put(cm("c1", 10, "ours"))  # the answer of our write, late
    assert inf.get("a", "c1") is None and len(inf) == 1
    inf.put(cm("c2", 20, "ours"))  # ahead of the watch: kept until the watch says otherwise
    assert inf.get("a", "c2") is not None
    kube.events.put({"type": "ADDED", "object": cm("c2", 20, "ours")})
    kube.events.put({"type": "DELETED", "object": cm("c2", 21)})
    until(lambda: inf.get("a", "c2") is None, "the deletion of c2")
    assert len(inf) == 1
    inf.stop()
    kube.events.put(None)


def test_our_writes_own_event_ahead_of_its_answer_is_not_drift_but_a_later_edit_is() -> None:
    """Under load the watch often delivers a new child's ADDED before the create's answer: the
    store then has no entry of it, so the event looked like someone else's object (a drift
    reconcile of the owner for every such race, a quarter of a burst of 300). While our write is
    under way, its object's events mark no drift; a change by someone else that lands after our
    write and is seen meanwhile still does, once the answer finds the store ahead of it."""
    from modeldeploy.handlers import State
    from modeldeploy.reconcile.cache import CachedKube
    from modeldeploy.reconcile.reconciler import OperatorConfig
    from modeldeploy.render.common import OWNER_LABEL

    kube = ScriptedKube()
    kube.api, kube.timeout = None, 5  # type: ignore[assignment]  # nothing leaves the process
    state = State(OperatorConfig(query_agents=False))
    marks: list[tuple[tuple[str, str], str]] = []
    state.queue = type("Q", (), {"nudge": lambda _s, key, reason, *a, **k: marks.append((key, reason))})()  # type: ignore[assignment]
    cached = CachedKube(kube, ("a",), on_event=state.child_event, watch_kube=kube)
    state.cache = cached
    events: list[str | None] = []  # resourceVersion of each change the store passed on

    def child_event(kind: str, old: dict[str, Any] | None, new: dict[str, Any] | None) -> None:
        State.child_event(state, kind, old, new)
        events.append(new and new["metadata"]["resourceVersion"])

    inf = Informer(kube, CONFIGMAP, "a", SEL, child_event).start()
    cached._informers[("ConfigMap", "a")] = inf
    assert inf.wait_synced(5)

    def owned(rv: int, data: str) -> dict[str, Any]:
        obj = cm("c1", rv, data)
        obj["metadata"]["labels"][OWNER_LABEL] = "m"
        return obj

    def answer(events_first: list[dict[str, Any]], reply: dict[str, Any]) -> Any:
        def request(method: str, path: str, **_: Any) -> tuple[dict[str, Any], bytes]:
            assert cached.writing("ConfigMap", "a", "c1")
            before = len(events)
            for ev in events_first:
                kube.events.put(ev)
            until(lambda: len(events) == before + len(events_first), "the events, during the write")
            return copy.deepcopy(reply), json.dumps(reply).encode()

        return request

    # a create whose ADDED comes first: no drift, and the store holds our answer
    cached.answer = answer([{"type": "ADDED", "object": owned(10, "ours")}], owned(10, "ours"))  # type: ignore[method-assign]
    cached.apply(owned(0, "ours"), CONFIGMAP)
    assert not cached.writing("ConfigMap", "a", "c1")
    assert ((("a", "m"), "drift")) not in marks, marks
    # an update whose own event comes first, then someone's edit after it: drift, once answered
    cached.answer = answer(  # type: ignore[method-assign]
        [
            {"type": "MODIFIED", "object": owned(11, "ours2")},
            {"type": "MODIFIED", "object": owned(12, "edited")},
        ],
        owned(11, "ours2"),
    )
    cached.apply(owned(0, "ours2"), CONFIGMAP)
    assert marks.count((("a", "m"), "drift")) == 1, marks
    held = inf.get("a", "c1")
    assert held is not None and held["data"]["k"] == "edited"
    # no write under way: someone's edit is drift at once
    marks.clear()
    kube.events.put({"type": "MODIFIED", "object": owned(13, "edited again")})
    until(lambda: marks == [(("a", "m"), "drift")], "a drift mark for an edit by someone else")
    inf.stop()
    kube.events.put(None)


def test_an_expired_or_broken_watch_lists_again_and_reports_what_it_missed() -> None:
    kube, seen = ScriptedKube(), []
    kube.world["c1"] = cm("c1", 5)
    kube.world["c2"] = cm("c2", 6)
    inf = informer(kube, seen)
    assert inf.wait_synced(5)
    # while the API server is away: c1 changes, c2 goes, c3 comes
    kube.world = {"c1": cm("c1", 20, "new"), "c3": cm("c3", 21)}
    kube.fail_lists = 2  # the first two LISTs after the break fail too (server still starting)
    kube.events.put(KubeError(0, "WATCH", "configmaps", "connection reset"))
    until(lambda: not inf.synced or kube.lists > 1, "the informer noticing the break")
    until(lambda: inf.synced and kube.lists == 2, "a successful LIST again", timeout=15)
    until(lambda: len(seen) == 5, "what the LIST found changed")
    assert {k for k in ("c1", "c2", "c3") if inf.get("a", k)} == {"c1", "c3"}
    assert set(seen[2:]) == {("5", "20"), ("6", None), (None, "21")}
    # 410 Gone: list again (no change this time: nothing reported)
    kube.events.put({"type": "ERROR", "object": {"code": 410, "message": "too old resource version"}})
    until(lambda: kube.lists == 3, "a LIST after 410")
    assert len(seen) == 5
    inf.stop()
    kube.events.put(None)


def md_with(name: str, rv: int, ready: str | None, ns: str = "a") -> dict[str, Any]:
    obj = cm(name, rv, ns=ns)
    if ready is not None:
        obj["status"] = {
            "conditions": [{"type": "Ready", "status": ready}, {"type": "Degraded", "status": "False"}]
        }
    return obj


def test_the_condition_counts_follow_the_store_not_the_runs() -> None:
    """/metrics' condition counts (``metrics.ConditionTracker``) are what the store holds: the LIST,
    each watch event, the answer of our own status write; an object the watch saw deleted is not
    counted again by a late answer of a write (a run of it still under way), and a new LIST
    counts anew (a deletion missed while the watch was broken is not counted forever)."""
    from modeldeploy.metrics import ConditionTracker

    tracker, kube = ConditionTracker(), ScriptedKube()

    def counts(t: str = "Ready") -> dict[str, int]:
        return {s: n for (ct, s), n in tracker._counts.items() if ct == t and n}

    kube.world = {"m1": md_with("m1", 5, "True"), "m2": md_with("m2", 6, None)}
    inf = Informer(kube, CONFIGMAP, "a", SEL, tracker=tracker).start()
    assert inf.wait_synced(5)
    assert counts() == {"True": 1, "Unknown": 1} and counts("Degraded") == {"False": 1, "Unknown": 1}
    inf.put(md_with("m2", 7, "False"))  # our status write's answer
    assert counts() == {"True": 1, "False": 1}
    kube.events.put({"type": "MODIFIED", "object": md_with("m1", 8, "False")})
    until(lambda: counts() == {"False": 2}, "the watch's change counted")
    kube.events.put({"type": "DELETED", "object": md_with("m1", 9, "False")})
    kube.events.put({"type": "DELETED", "object": md_with("m2", 10, "False")})
    until(lambda: not counts() and len(tracker) == 0, "both deletions counted")
    inf.put(md_with("m1", 8, "True"))  # a run of m1 that was under way writes late: not counted
    assert not counts() and len(tracker) == 0
    # the watch breaks; meanwhile m3 comes (and m1/m2 stay gone): the LIST's result is counted
    kube.world = {"m3": md_with("m3", 20, "True")}
    kube.events.put({"type": "ADDED", "object": md_with("m4", 19, "True")})
    until(lambda: counts() == {"True": 1}, "m4 counted")
    kube.events.put(KubeError(0, "WATCH", "configmaps", "connection reset"))
    until(lambda: kube.lists == 2 and inf.synced, "a LIST again")
    until(
        lambda: counts() == {"True": 1} and set(tracker._by_md) == {("a", "m3")}, "m4 not counted, m3 counted"
    )
    inf.drop("a", "m3")  # our own delete's answer
    assert not counts() and len(tracker) == 0
    inf.stop()
    kube.events.put(None)


def test_unsynced_store_is_not_used() -> None:
    kube = ScriptedKube()
    kube.fail_lists = 1000
    inf = Informer(kube, CONFIGMAP, "a", SEL).start()
    until(lambda: kube.fail_lists < 1000, "a failed LIST")
    assert not inf.covers("a", parse_selector(SEL))
    inf.stop()


def _deployment(i: int) -> dict[str, Any]:
    """A realistic stored object: a rendered Deployment with the fields the API server adds."""
    from modeldeploy.api.v1alpha1 import ModelDeployment
    from modeldeploy.render import render_children

    body = small_md("a", f"md-{i}")
    body["metadata"] |= {"uid": f"uid-{i}", "generation": 1}
    dep = render_children(ModelDeployment.from_body(body))["Deployment"]
    assert dep is not None
    dep["metadata"] |= {
        "resourceVersion": str(100 + i),
        "uid": f"dep-uid-{i}",
        "creationTimestamp": "2026-11-29T00:00:00Z",
        # managedFields mirror the applied spec (fieldsV1 names every field we set)
        "managedFields": [{"manager": "modeldeploy", "operation": "Apply", "fieldsV1": dep["spec"]}],
    }
    dep["status"] = {
        "replicas": 1,
        "readyReplicas": 1,
        "conditions": [{"type": "Available", "status": "True"}],
    }
    return dep


def test_the_store_keeps_objects_compact_and_hands_out_copies() -> None:
    """300 realistic Deployments held as compressed JSON take a fraction of their size as dicts;
    a read is a fresh copy, so a caller changing it does not change the store."""
    kube = ScriptedKube()
    objs = [_deployment(i) for i in range(300)]
    gc.collect()
    tracemalloc.start()
    base, _ = tracemalloc.get_traced_memory()
    as_dicts = copy.deepcopy(objs)
    dict_bytes = tracemalloc.get_traced_memory()[0] - base
    del as_dicts
    gc.collect()
    base, _ = tracemalloc.get_traced_memory()
    inf = Informer(kube, DEPLOYMENT, "a", "")
    for o in objs:
        inf.put(o)
    store_bytes = tracemalloc.get_traced_memory()[0] - base
    tracemalloc.stop()
    assert len(inf) == 300
    print(f"300 Deployments: {dict_bytes / 2**20:.1f} MiB as dicts, {store_bytes / 2**20:.1f} MiB stored")
    assert store_bytes * 4 < dict_bytes, (store_bytes, dict_bytes)
    got = inf.get("a", "md-7")
    assert got == objs[7]
    got["spec"]["replicas"] = 99
    again = inf.get("a", "md-7")
    assert again is not None and again["spec"]["replicas"] == objs[7]["spec"]["replicas"]
    chosen = inf.list("a", {"app.kubernetes.io/instance": "md-3"})
    assert [o["metadata"]["name"] for o in chosen] == ["md-3"]


def test_a_store_that_shrank_a_lot_hands_memory_back(monkeypatch: Any) -> None:
    calls: list[int] = []
    monkeypatch.setattr(informer_mod, "release_memory", lambda: calls.append(len(inf)))
    inf = Informer(ScriptedKube(), CONFIGMAP, "a", SEL)
    for i in range(informer_mod.RELEASE_AFTER + 10):
        inf.put(cm(f"c{i}", i + 1))
    inf.drop("a", "c0")  # the high-water mark is taken on a deletion
    assert calls == []
    for i in range(1, informer_mod.RELEASE_AFTER):
        inf.drop("a", f"c{i}")
    assert calls == [], "one short of RELEASE_AFTER deletions"
    table = sys.getsizeof(inf._objs), sys.getsizeof(inf._index)
    inf.drop("a", f"c{informer_mod.RELEASE_AFTER}")
    assert calls == [9]
    # the store's tables were rebuilt for the 9 objects left (a dict never shrinks by deleting)
    assert sys.getsizeof(inf._objs) < table[0] / 4 and sys.getsizeof(inf._index) <= table[1]
    assert sorted(n for _, n in inf.keys("a")) == sorted(
        f"c{i}" for i in range(informer_mod.RELEASE_AFTER + 1, informer_mod.RELEASE_AFTER + 10)
    )


def test_a_list_in_pages_fills_the_store_and_keys_need_no_decoding(monkeypatch: Any) -> None:
    """Five objects listed in pages of two: all stored, one change event each; the keys of the
    objects not being deleted come from the index, without decoding a stored object."""
    kube, seen = ScriptedKube(), []
    for i in range(5):
        kube.world[f"c{i}"] = cm(f"c{i}", i + 1)
    kube.world["c3"]["metadata"]["deletionTimestamp"] = "2026-11-29T00:00:00Z"
    inf = informer(kube, seen)
    assert inf.wait_synced(5)
    until(lambda: len(seen) == 5, "an event per listed object")
    assert kube.pages == 3 and len(inf) == 5
    monkeypatch.setattr(informer_mod.Entry, "unpack", lambda self: pytest.fail("decoded"))
    assert sorted(inf.keys("a")) == [("a", "c0"), ("a", "c1"), ("a", "c2"), ("a", "c4")]
    assert inf.keys("b") == []
    inf.stop()
    kube.events.put(None)


OWNER = "modeldeploy.io/deployment"


def owned_cm(name: str, rv: int, owner: str, ns: str = "a") -> dict[str, Any]:
    obj = cm(name, rv, ns=ns)
    obj["metadata"]["labels"][OWNER] = owner
    return obj


def test_a_list_by_owner_reads_only_that_owners_entries(monkeypatch: Any) -> None:
    """With ``index_key``, a list whose selector names the owner label reads the entries carrying it
    (not every entry of the store: a status refresh at N = 1,000 ModelDeployments listed its pods by
    scanning all 1,000), and the index follows LISTs, watch events, write-throughs and drops."""
    kube = ScriptedKube()
    for i in range(50):
        kube.world[f"c{i}"] = owned_cm(f"c{i}", 10 + i, f"md-{i % 10}")
    inf = Informer(kube, CONFIGMAP, "a", SEL, index_key=OWNER).start()
    assert inf.wait_synced(5)

    def names(owner: str) -> set[str]:
        return {o["metadata"]["name"] for o in inf.list("a", {**parse_selector(SEL), OWNER: owner})}  # type: ignore[dict-item]

    checked: list[informer_mod.Entry] = []
    real = informer_mod.Entry.has_labels

    def counting(self: informer_mod.Entry, selector: dict[str, str]) -> bool:
        checked.append(self)
        return real(self, selector)

    monkeypatch.setattr(informer_mod.Entry, "has_labels", counting)
    assert names("md-3") == {"c3", "c13", "c23", "c33", "c43"}
    assert len(checked) == 5, "only the owner's entries are read"
    # a relabel (watch), a new object (write-through), a deletion (watch) and a drop (our delete)
    kube.events.put({"type": "MODIFIED", "object": owned_cm("c13", 100, "md-4")})
    inf.put(owned_cm("c99", 101, "md-3"))
    kube.events.put({"type": "DELETED", "object": owned_cm("c23", 102, "md-3")})
    kube.events.put({"type": "ADDED", "object": owned_cm("marker", 103, "md-9")})
    until(lambda: inf.get("a", "marker") is not None, "the events")
    inf.drop("a", "c33")
    assert names("md-3") == {"c3", "c43", "c99"}
    assert "c13" in names("md-4")
    # a fresh LIST (after 410) rebuilds the index from what it found
    kube.world = {"c3": owned_cm("c3", 200, "md-5"), "n1": owned_cm("n1", 201, "md-3")}
    kube.events.put({"type": "ERROR", "object": {"code": 410, "message": "too old resource version"}})
    until(lambda: kube.lists == 2 and inf.get("a", "c43") is None, "a LIST after 410")
    assert names("md-3") == {"n1"} and names("md-5") == {"c3"} and names("md-4") == set()
    # a selector without the owner label still finds everything (a scan)
    assert len(inf.list("a", parse_selector(SEL) or {})) == 2
    inf.stop()
    kube.events.put(None)


def test_a_store_of_names_asks_for_metadata_only_and_keeps_only_the_name() -> None:
    """The names store behind CachedKube.known_absent: metadata-only LIST and WATCH (CachedKube
    asks for the names not ours), and of each only what says the name is taken."""
    kube = ScriptedKube()
    foreign = cm("theirs", 5)
    foreign["metadata"] |= {"labels": {"app": "other"}, "annotations": {"big": "x" * 1000}}
    kube.world["theirs"] = foreign
    inf = Informer(kube, CONFIGMAP, "a", "", metadata_only=True).start()
    assert inf.wait_synced(5)
    assert inf.has("a", "theirs") and not inf.has("a", "ours")
    assert inf.get("a", "theirs") == {
        "metadata": {"name": "theirs", "namespace": "a", "resourceVersion": "5"}
    }
    kube.events.put({"type": "ADDED", "object": cm("ours", 6)})
    until(lambda: inf.has("a", "ours"), "the watched name")
    kube.events.put({"type": "DELETED", "object": cm("theirs", 7)})
    until(lambda: not inf.has("a", "theirs"), "the deleted name gone")
    assert kube.metadata_only_calls and all(kube.metadata_only_calls), kube.metadata_only_calls
    inf.stop()
    kube.events.put(None)


def _event(kind: str, obj: dict[str, Any]) -> dict[str, Any]:
    """A watch event as Kube.watch yields it from the API server's line (with RAW_OBJECT)."""
    line = json.dumps({"type": kind, "object": obj}, separators=(",", ":")).encode()
    ev: dict[str, Any] = json.loads(line)
    raw = event_object_json(line, kind)
    assert raw is not None
    ev[RAW_OBJECT] = raw
    return ev


@pytest.mark.parametrize("strip", [(), ("managedFields",)])
def test_a_watched_object_is_kept_as_sent_and_an_object_to_trim_is_encoded_again(
    monkeypatch: Any, strip: tuple[str, ...]
) -> None:
    """A watch event's object is stored from its JSON as sent (no encoding of the decoded object);
    where the store drops fields (``strip``), the trimmed object is encoded instead."""
    encoded: list[str] = []
    dumps = informer_mod.jsoncodec.dumps

    def counting(obj: Any) -> bytes:
        encoded.append(str((obj.get("metadata") or {}).get("name")))
        return dumps(obj)

    kube, seen = ScriptedKube(), []
    inf = Informer(kube, CONFIGMAP, "a", SEL, lambda k, o, n: seen.append(n), strip=strip).start()
    assert inf.wait_synced(5)
    meta = {**cm("c1", 6)["metadata"], "managedFields": [{"manager": "m"}]}
    obj = {**cm("c1", 6, "é ✓"), "metadata": meta}
    ev = _event("ADDED", obj)
    monkeypatch.setattr(informer_mod.jsoncodec, "dumps", counting)
    kube.events.put(ev)
    until(lambda: len(seen) == 1, "the event")
    got = inf.get("a", "c1")
    if strip:
        assert encoded == ["c1"], encoded
        assert got == {**obj, "metadata": {k: v for k, v in meta.items() if k != "managedFields"}}
    else:
        assert encoded == [] and got == obj
    inf.stop()
    kube.events.put(None)


def test_a_store_of_new_versions_only_decodes_no_previous_version() -> None:
    """``notify_old=False``: a change reaches the sink without its previous version (not decoded);
    a deletion still carries the object."""
    kube, seen = ScriptedKube(), []

    def sink(kind: str, old: dict[str, Any] | None, new: dict[str, Any] | None) -> None:
        seen.append((old and old["metadata"]["resourceVersion"], new and new["metadata"]["resourceVersion"]))

    inf = Informer(kube, CONFIGMAP, "a", SEL, sink, notify_old=False).start()
    assert inf.wait_synced(5)
    kube.events.put(_event("ADDED", cm("c1", 6)))
    kube.events.put(_event("MODIFIED", cm("c1", 7, "y")))
    kube.events.put(_event("DELETED", cm("c1", 8)))
    until(lambda: len(seen) == 3, "three changes")
    assert seen == [(None, "6"), (None, "7"), ("7", None)]
    inf.stop()
    kube.events.put(None)


class _Chunks:
    def __init__(self, chunks: list[bytes]) -> None:
        self.chunks = chunks

    def stream(self, amt: Any = None, decode_content: bool = False) -> Iterator[bytes]:
        yield from self.chunks


def test_watch_lines_are_split_across_and_within_chunks() -> None:
    """Kube.watch's line reader: a line split over chunks is whole, several lines in a chunk are
    each one, blank lines are skipped, and a last line without its newline (a broken stream) is
    not one."""
    a = json.dumps({"type": "ADDED", "object": {"data": {"k": "é" * 5000}}}).encode()
    b = b'{"type":"BOOKMARK","object":{}}'
    body = a + b"\n\n" + b + b"\r\n" + b'{"type":"MOD'
    chunks = [body[i : i + 1000] for i in range(0, len(body), 1000)]
    assert list(kube_mod._lines(_Chunks(chunks))) == [a, b]
    assert list(kube_mod._lines(_Chunks([a + b"\n" + b + b"\n"]))) == [a, b]


def test_an_events_object_json_is_found_only_in_the_api_servers_layout() -> None:
    obj = {"metadata": {"name": "x"}, "data": {"k": '"}'}}
    line = json.dumps({"type": "MODIFIED", "object": obj}, separators=(",", ":")).encode()
    raw = event_object_json(line, "MODIFIED")
    assert raw is not None and json.loads(raw) == obj
    assert event_object_json(line, "ADDED") is None  # another type than the line's
    reordered = json.dumps({"object": obj, "type": "MODIFIED"}).encode()
    assert event_object_json(reordered, "MODIFIED") is None
    assert event_object_json(line, None) is None


def test_our_writes_answer_is_kept_as_sent(monkeypatch: Any) -> None:
    """Informer.put with the answer's JSON (CachedKube's writes pass Kube.apply_answer's) stores it
    without encoding the decoded object again."""
    obj = cm("c1", 6, "é ✓")
    raw = json.dumps(obj).encode()

    def refuse(*_a: Any, **_k: Any) -> bytes:
        raise AssertionError("encoded again")

    inf = Informer(ScriptedKube(), CONFIGMAP, "a", SEL)
    monkeypatch.setattr(informer_mod.jsoncodec, "dumps", refuse)
    assert inf.put(obj, raw) is None
    assert inf.get("a", "c1") == obj
