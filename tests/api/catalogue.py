"""Loading the examples and the invalid-manifest catalogue (tests/api/invalid/*.yaml).

Each catalogue file starts with comment lines::

    # <what is wrong>
    # field: <path the API server's and pydantic's error must name>
    # message: <substring of the API server's message>
    # pydantic: <substring of pydantic's message>   (optional; default: same as message)

and holds one object, or two documents for an update case (the first is created, the second is
the rejected update).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
INVALID_DIR = HERE / "invalid"
#: Boundary cases that both the API server and pydantic must accept (no false rejections).
VALID_DIR = HERE / "valid"
EXAMPLES_DIR = REPO / "examples"


@dataclass(frozen=True)
class InvalidCase:
    path: Path
    description: str
    field: str
    message: str
    pydantic_message: str
    docs: list[dict[str, Any]]
    text: str

    @property
    def id(self) -> str:
        return self.path.stem

    @property
    def is_update(self) -> bool:
        return len(self.docs) == 2


def load_invalid_cases() -> list[InvalidCase]:
    cases = []
    for path in sorted(INVALID_DIR.glob("*.yaml")):
        text = path.read_text()
        header: dict[str, str] = {}
        description = ""
        for line in text.splitlines():
            if not line.startswith("#"):
                break
            body = line[1:].strip()
            key, sep, value = body.partition(":")
            if sep and key in ("field", "message", "pydantic"):
                header[key] = value.strip()
            elif not description:
                description = body
        for key in ("field", "message"):
            assert key in header, f"{path}: missing '# {key}:' header"
        docs = [d for d in yaml.safe_load_all(text) if d]
        assert 1 <= len(docs) <= 2, f"{path}: expected one object or an update pair"
        cases.append(
            InvalidCase(
                path=path,
                description=description,
                field=header["field"],
                message=header["message"],
                pydantic_message=header.get("pydantic", header["message"]),
                docs=docs,
                text=text,
            )
        )
    return cases


def example_paths() -> list[Path]:
    return sorted(EXAMPLES_DIR.glob("*.yaml"))


def valid_paths() -> list[Path]:
    return sorted(VALID_DIR.glob("*.yaml"))


def load_example(path: Path) -> dict[str, Any]:
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d]
    assert len(docs) == 1, f"{path}: expected one object"
    return docs[0]
