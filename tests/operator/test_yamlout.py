"""`mdctl render -o yaml` output is read back as the same strings by go-yaml (kubectl), not only
by PyYAML: a manifest hash such as ``35123e45`` is a float to kubectl unless quoted."""

from __future__ import annotations

import yaml
from hypothesis import given
from hypothesis import strategies as st

from modeldeploy import yamlout


def _numeric_to_someone(s: str) -> bool:
    """An oracle independent of the dumper's regex: Python's own number parsers."""
    t = s.replace("_", "")
    for parse in (float, lambda v: int(v, 0)):
        try:
            parse(t)
            return True
        except ValueError:
            pass
    return t.lower() in {"true", "false", "yes", "no", "on", "off", "y", "n", "null", "~"}


def _scalar_text(value: str) -> str:
    return yamlout.dump({"k": value}).strip().removeprefix("k: ")


@given(st.text(alphabet="0123456789eE", min_size=1, max_size=16))
def test_digit_and_e_strings_are_quoted_when_numeric(value: str) -> None:
    text = _scalar_text(value)
    if _numeric_to_someone(value):
        assert text.startswith('"') and text.endswith('"'), text
    assert yaml.safe_load(yamlout.dump({"k": value})) == {"k": value}


def test_known_ambiguous_scalars_are_quoted() -> None:
    for value in [
        "35123e45",
        "1e3",
        "0x1F",
        "0o17",
        "017",
        ".5",
        "1_000",
        "yes",
        "off",
        "null",
        "",
        ".inf",
        "1:30",
    ]:
        text = _scalar_text(value)
        assert text.startswith('"'), f"{value!r} dumped as {text}"
        assert yaml.safe_load(yamlout.dump({"k": value})) == {"k": value}


def test_plain_strings_stay_plain_and_order_is_kept() -> None:
    out = yamlout.dump_all([{"b": "35e7e5a08a591dae", "a": "nginx", "m": 3}, {"z": True}])
    assert out.splitlines()[:3] == ["b: 35e7e5a08a591dae", "a: nginx", "m: 3"]
    assert list(yaml.safe_load_all(out)) == [{"b": "35e7e5a08a591dae", "a": "nginx", "m": 3}, {"z": True}]
