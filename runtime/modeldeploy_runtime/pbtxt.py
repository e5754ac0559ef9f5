"""A small reader for protobuf text format, enough for Triton's ``config.pbtxt``.

It has no schema: messages become ``dict[str, list[value]]`` (every field is a list, because any
field may repeat), scalars stay strings/ints/floats/bools, enum identifiers are strings. Errors
carry the line and column. :mod:`modeldeploy_runtime.config` gives the values their meaning.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

Value = "str | int | float | bool | Message"
Message = dict[str, list[object]]


class PbtxtError(ValueError):
    def __init__(self, message: str, line: int, col: int, source: str = "config.pbtxt") -> None:
        super().__init__(f"{source}:{line}:{col}: {message}")
        self.line = line
        self.col = col
        self.source = source


_TOKEN = re.compile(
    r"""
    (?P<ws>[ \t\r\n]+|\#[^\n]*)
  | (?P<string>"(?:[^"\\\n]|\\.)*"|'(?:[^'\\\n]|\\.)*')
  | (?P<number>[-+]?(?:0[xX][0-9a-fA-F]+|(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)[fF]?)
  | (?P<ident>[A-Za-z_][A-Za-z0-9_.]*)
  | (?P<punct>[{}\[\]:,;<>])
    """,
    re.VERBOSE,
)


@dataclass
class _Tok:
    kind: str
    text: str
    line: int
    col: int


def _tokenize(text: str, source: str) -> list[_Tok]:
    toks: list[_Tok] = []
    pos, line, line_start = 0, 1, 0
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if not m:
            raise PbtxtError(f"unexpected character {text[pos]!r}", line, pos - line_start + 1, source)
        kind = m.lastgroup or ""
        chunk = m.group()
        if kind != "ws":
            toks.append(_Tok(kind, chunk, line, pos - line_start + 1))
        nl = chunk.count("\n")
        if nl:
            line += nl
            line_start = pos + chunk.rindex("\n") + 1
        pos = m.end()
    return toks


def _unquote(s: str) -> str:
    body = s[1:-1]
    return bytes(body, "utf-8").decode("unicode_escape") if "\\" in body else body


class _Parser:
    def __init__(self, text: str, source: str) -> None:
        self.toks = _tokenize(text, source)
        self.i = 0
        self.source = source

    def _err(self, msg: str, tok: _Tok | None = None) -> PbtxtError:
        tok = tok or (self.toks[self.i] if self.i < len(self.toks) else None)
        if tok is None:
            last = self.toks[-1] if self.toks else _Tok("", "", 1, 1)
            return PbtxtError(f"{msg} (at end of file)", last.line, last.col, self.source)
        return PbtxtError(f"{msg}, got {tok.text!r}", tok.line, tok.col, self.source)

    def peek(self) -> _Tok | None:
        return self.toks[self.i] if self.i < len(self.toks) else None

    def take(self) -> _Tok:
        tok = self.peek()
        if tok is None:
            raise self._err("unexpected end of file")
        self.i += 1
        return tok

    def message(self, closer: str | None) -> Message:
        msg: Message = {}
        while True:
            tok = self.peek()
            if tok is None:
                if closer is not None:
                    raise self._err(f"expected {closer!r} to close the message")
                return msg
            if closer is not None and tok.text == closer:
                self.i += 1
                return msg
            if tok.kind != "ident":
                raise self._err("expected a field name")
            self.i += 1
            name = tok.text
            nxt = self.peek()
            if nxt is not None and nxt.text == ":":
                self.i += 1
                nxt = self.peek()
                if nxt is not None and nxt.text == "[":
                    self.i += 1
                    values = self.list_values()
                    msg.setdefault(name, []).extend(values)
                else:
                    msg.setdefault(name, []).append(self.value())
            elif nxt is not None and nxt.text == "[":  # repeated messages: `input [ { ... }, { ... } ]`
                self.i += 1
                msg.setdefault(name, []).extend(self.list_values())
            elif nxt is not None and nxt.text in ("{", "<"):
                msg.setdefault(name, []).append(self.value())
            else:
                raise self._err(f"expected ':' or '{{' after field {name!r}")
            sep = self.peek()
            if sep is not None and sep.text in (",", ";"):
                self.i += 1

    def list_values(self) -> list[object]:
        out: list[object] = []
        tok = self.peek()
        if tok is not None and tok.text == "]":
            self.i += 1
            return out
        while True:
            out.append(self.value())
            tok = self.take()
            if tok.text == "]":
                return out
            if tok.text != ",":
                raise self._err("expected ',' or ']' in list", tok)

    def value(self) -> object:
        tok = self.take()
        if tok.text in ("{", "<"):
            return self.message("}" if tok.text == "{" else ">")
        if tok.kind == "string":
            s = _unquote(tok.text)
            while (nxt := self.peek()) is not None and nxt.kind == "string":  # adjacent strings concatenate
                self.i += 1
                s += _unquote(nxt.text)
            return s
        if tok.kind == "number":
            t = tok.text.rstrip("fF") if not tok.text.lower().startswith(("0x", "-0x", "+0x")) else tok.text
            try:
                return int(t, 0)
            except ValueError:
                try:
                    return float(t)
                except ValueError:
                    raise self._err("invalid number", tok) from None
        if tok.kind == "ident":
            if tok.text in ("true", "True"):
                return True
            if tok.text in ("false", "False"):
                return False
            return tok.text  # enum value
        raise self._err("expected a value", tok)


def loads(text: str, source: str = "config.pbtxt") -> Message:
    """Parse protobuf text format; raises :class:`PbtxtError` naming ``source``, line and column."""
    return _Parser(text, source).message(None)
