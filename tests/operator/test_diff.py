"""No-op detection: desired-is-subset-of-live with the API server's normalisations."""

from __future__ import annotations

from modeldeploy.reconcile.diff import first_difference, in_effect, is_subset


def test_quantities_compare_by_value() -> None:
    assert is_subset({"cpu": "0.5", "memory": "1Gi"}, {"cpu": "500m", "memory": "1073741824"})
    assert is_subset({"cpu": 2}, {"cpu": "2"})
    assert not is_subset({"cpu": "2"}, {"cpu": "3"})
    assert not is_subset({"image": "a:1"}, {"image": "a:2"})


def test_omitted_zero_values_match() -> None:
    assert is_subset({"minReadySeconds": 0, "readOnly": False, "value": "", "x": {}}, {})
    assert not is_subset({"replicas": 1}, {})
    assert not is_subset({"replicas": 0}, {"replicas": 1})


def test_server_defaults_in_live_are_ignored() -> None:
    desired = {"ports": [{"name": "http", "port": 8000}]}
    live = {
        "ports": [{"name": "http", "port": 8000, "protocol": "TCP", "targetPort": 8000}],
        "clusterIP": "10.0.0.1",
    }
    assert is_subset(desired, live)


def test_named_lists_match_by_name_and_keep_order() -> None:
    desired = {"containers": [{"name": "a", "image": "x"}, {"name": "b", "image": "y"}]}
    extra = {"containers": [{"name": "a", "image": "x"}, {"name": "b", "image": "y"}, {"name": "injected"}]}
    assert is_subset(desired, extra)  # a sidecar injected by someone else does not cause an apply
    swapped = {"containers": [{"name": "b", "image": "y"}, {"name": "a", "image": "x"}]}
    assert first_difference(desired, swapped) == ".containers[order]"
    missing = {"containers": [{"name": "a", "image": "x"}]}
    assert first_difference(desired, missing) == ".containers[b]"


def test_positional_lists_need_equal_length() -> None:
    assert not is_subset({"args": ["--a", "--b"]}, {"args": ["--a"]})
    assert not is_subset({"args": ["--a"]}, {"args": ["--a", "--b"]})
    assert is_subset({"args": ["--a"]}, {"args": ["--a"]})


def test_booleans_are_not_quantities() -> None:
    assert not is_subset({"a": True}, {"a": 1})
    assert not is_subset({"a": 1}, {"a": True})


def test_in_effect_uses_the_applied_hash_and_the_subset() -> None:
    desired = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "x", "annotations": {"modeldeploy.io/applied-hash": "h2"}},
        "data": {"k": "v"},
    }
    live = {
        "metadata": {"name": "x", "annotations": {"modeldeploy.io/applied-hash": "h2", "other.tool/x": "y"}},
        "data": {"k": "v"},
    }
    assert in_effect(desired, live) == (True, "")
    assert in_effect(desired, None) == (False, "missing")
    stale = {**live, "metadata": {"name": "x", "annotations": {"modeldeploy.io/applied-hash": "h1"}}}
    assert in_effect(desired, stale) == (False, "desired state changed")
    drifted = {**live, "data": {"k": "edited"}}
    assert in_effect(desired, drifted) == (False, "drift at data.k")
