"""YAML output that Kubernetes tools read back exactly as we wrote it.

PyYAML follows YAML 1.1, where a plain ``1234e567`` or ``0o17`` is a string, but ``kubectl``
(sigs.k8s.io/yaml over go-yaml) reads those as numbers: an annotation such as a manifest hash
that happens to be all digits and one ``e`` then fails to decode ("cannot unmarshal number into
... of type string"). This dumper double-quotes every string that any YAML resolver could take
for a number, a boolean or null, so the text means the same thing to every reader.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

import yaml

# Anything a YAML 1.1 or 1.2 resolver (PyYAML, go-yaml v2/v3) may read as a non-string scalar.
_AMBIGUOUS = re.compile(
    r"""^(?:
        [-+]?(?:[0-9][0-9_]*)?\.?[0-9][0-9_]*(?:[eE][-+]?[0-9]+)?   # ints, floats, 1e3, .5
      | [-+]?[0-9][0-9_]*\.(?:[eE][-+]?[0-9]+)?                     # 1.  1.e3
      | [-+]?0[xX][0-9a-fA-F_]+ | [-+]?0[oO]?[0-7_]+ | [-+]?0[bB][01_]+
      | [-+]?[0-9][0-9_]*(?::[0-5]?[0-9])+(?:\.[0-9_]*)?             # sexagesimal (YAML 1.1)
      | [-+]?\.(?:inf|Inf|INF) | \.(?:nan|NaN|NAN)
      | (?:y|Y|yes|Yes|YES|n|N|no|No|NO|true|True|TRUE|false|False|FALSE|on|On|ON|off|Off|OFF)
      | ~ | null | Null | NULL | <<
    )$""",
    re.VERBOSE,
)


class KubeDumper(yaml.SafeDumper):
    """A SafeDumper that quotes strings other YAML readers would not read back as strings."""


def _represent_str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    if value == "" or _AMBIGUOUS.match(value):
        return dumper.represent_scalar("tag:yaml.org,2002:str", value, style='"')
    return dumper.represent_str(value)


KubeDumper.add_representer(str, _represent_str)


def dump_all(docs: Iterable[Any]) -> str:
    """Documents as multi-document YAML, keys in insertion order, strings unambiguous."""
    return yaml.dump_all(docs, Dumper=KubeDumper, sort_keys=False)


def dump(doc: Any) -> str:
    """One document as YAML, keys in insertion order, strings unambiguous."""
    return yaml.dump(doc, Dumper=KubeDumper, sort_keys=False)
