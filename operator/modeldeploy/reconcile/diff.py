"""No-op detection: is the desired body already in effect in the live object?

``desired`` matches ``live`` when every field we set is present in ``live`` with an equal value, after
normalising what the API server normalises: quantities (``"0.5"`` vs ``"500m"``, ``2`` vs ``"2"``),
zero values it omits (``readOnly: false``, ``""``), and defaulted fields it adds (those are extra in
``live`` and ignored). Lists of named items (containers, ports, volumes, env) are matched by name;
other lists positionally with equal length.

On top of that the applied-hash annotation changes whenever the desired body changes, which catches
fields we *stopped* rendering (a subset check cannot see those).
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from modeldeploy.api.v1alpha1 import parse_quantity


def _quantity(v: Any) -> Decimal | None:
    if isinstance(v, bool) or not isinstance(v, int | str):
        return None
    try:
        return parse_quantity(v)
    except (ValueError, ArithmeticError):
        return None


def _zero(v: Any) -> bool:
    """Values the API server omits when serialising (Go omitempty on non-pointer fields)."""
    return v is None or v is False or v == "" or v == {} or v == [] or (type(v) is int and v == 0)


def scalar_equal(desired: Any, live: Any) -> bool:
    if desired == live and type(desired) is type(live):
        return True
    if isinstance(desired, bool) or isinstance(live, bool):
        return desired == live and isinstance(desired, bool) and isinstance(live, bool)
    a, b = _quantity(desired), _quantity(live)
    return a is not None and b is not None and a == b


def _named(items: list[Any]) -> bool:
    return bool(items) and all(isinstance(i, dict) and isinstance(i.get("name"), str) for i in items)


def first_difference(desired: Any, live: Any, path: str = "") -> str | None:
    """The path of the first desired field not in effect in ``live``, or None when it is a subset."""
    if isinstance(desired, dict):
        if live is None and all(_zero(v) for v in desired.values()):
            return None
        if not isinstance(live, dict):
            return path or "."
        for k, v in desired.items():
            if k not in live or live[k] is None:
                if _zero(v):
                    continue
                return f"{path}.{k}"
            d = first_difference(v, live[k], f"{path}.{k}")
            if d is not None:
                return d
        return None
    if isinstance(desired, list):
        if live is None and not desired:
            return None
        if not isinstance(live, list):
            return path or "."
        if _named(desired) and _named(live):
            by_name = {i["name"]: i for i in live}
            names = [i["name"] for i in desired]
            for n in names:
                if n not in by_name:
                    return f"{path}[{n}]"
            # The order of named items matters for containers/args; the server keeps ours.
            live_order = [i["name"] for i in live if i["name"] in set(names)]
            if live_order != names:
                return f"{path}[order]"
            for item in desired:
                d = first_difference(item, by_name.get(item["name"]), f"{path}[{item['name']}]")
                if d is not None:
                    return d
            return None
        if len(desired) != len(live):
            return f"{path}[len]"
        for i, (a, b) in enumerate(zip(desired, live, strict=True)):
            d = first_difference(a, b, f"{path}[{i}]")
            if d is not None:
                return d
        return None
    if live is None:
        return None if _zero(desired) else path
    return None if scalar_equal(desired, live) else path


def is_subset(desired: Any, live: Any) -> bool:
    return first_difference(desired, live) is None


def in_effect(desired: dict[str, Any], live: dict[str, Any] | None) -> tuple[bool, str]:
    """(True, "") when applying ``desired`` would change nothing we own; else (False, why)."""
    if live is None:
        return False, "missing"
    want_hash = (desired.get("metadata", {}).get("annotations") or {}).get("modeldeploy.io/applied-hash")
    have_hash = (live.get("metadata", {}).get("annotations") or {}).get("modeldeploy.io/applied-hash")
    if want_hash and want_hash != have_hash:
        return False, "desired state changed"
    d = first_difference({k: v for k, v in desired.items() if k not in ("apiVersion", "kind")}, live)
    if d is not None:
        return False, f"drift at {d.lstrip('.')}"
    return True, ""
