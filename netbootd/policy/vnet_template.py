"""Network templates as text -> raw fields with their line numbers.  Pure.

Two syntaxes, the same keys (case-insensitive):

* TOML: ``name = "lab"``, ``type = "RANGED"``, ``leases = [{ip = "..."}]``.
* OpenNebula's template syntax: ``NAME = "Public"``, ``TYPE = FIXED``
  (quoted or bare values), ``# comments``, vectors ``LEASES = [ IP = 10.0.0.1,
  MAC = 02:00:0a:00:00:01 ]`` (repeated, and may span lines).

TOML is tried first; text that is not TOML is read as an OpenNebula template.
``parse_template(text) -> dict[KEY, Field]``; every error is a VnetError
naming the line and the key.
"""
from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass


class VnetError(ValueError):
    """A bad network definition: the line (when known) and the key it is about."""

    def __init__(self, message: str, key: str | None = None, line: int | None = None):
        self.message, self.key, self.line = message, key, line
        where = []
        if line is not None:
            where.append(f"line {line}")
        if key is not None:
            where.append(key)
        super().__init__(f"{', '.join(where)}: {message}" if where else message)


@dataclass(frozen=True)
class Field:
    """One key's value as written: a string, a list of strings, a dict (an
    OpenNebula vector / TOML table) or a list of dicts; where it was."""
    key: str
    value: object
    line: int | None
    item_lines: tuple[int, ...] = ()     # a repeated vector key: each item's line


# Keys that may be given more than once in an OpenNebula template (each is a
# vector: one lease, one range).
REPEATABLE = frozenset(("LEASES", "RANGE", "AR"))

_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
MAX_TEMPLATE = 1 << 20       # 1 MiB: a template is a few lines; more is a mistake


def parse_template(text: str) -> dict[str, Field]:
    if len(text) > MAX_TEMPLATE:
        raise VnetError(f"template is {len(text)} characters, at most {MAX_TEMPLATE}")
    if "\0" in text:
        raise VnetError("template contains a NUL character")
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError:
        return parse_opennebula(text)
    except RecursionError:
        raise VnetError("nested too deeply") from None
    return from_toml(doc, text)


def from_toml(doc: dict, text: str = "") -> dict[str, Field]:
    """A TOML document (or a JSON object from the API) -> fields; lines found
    by looking for ``key =`` in the text."""
    out: dict[str, Field] = {}
    lines = _toml_lines(text)          # one pass: a 64 KiB template must not take seconds
    for key, value in doc.items():
        up = key.upper()
        line = lines.get(key)
        if up in out:
            raise VnetError("given twice (keys are case-insensitive)", up, line)
        out[up] = Field(up, _plain(value, up, line), line)
    return out


_TOML_KEY = re.compile(r"^[ \t]*([A-Za-z0-9_-]+)[ \t]*=", re.M)


def _toml_lines(text: str) -> dict[str, int]:
    """key -> the line where ``key =`` first starts a line."""
    lines: dict[str, int] = {}
    line, at = 1, 0
    for m in _TOML_KEY.finditer(text):
        line += text.count("\n", at, m.start())
        at = m.start()
        lines.setdefault(m.group(1), line)
    return lines


# Deeper than LEASES = [{IP = ...}] is never a network: refused before the
# recursion below could be (a JSON body from the API is depth-checked too).
MAX_DEPTH = 4


def _plain(value, key, line, depth: int = 0):
    """TOML/JSON values as template values: scalars become strings (True ->
    "YES"), lists and tables keep their shape."""
    if depth > MAX_DEPTH:
        raise VnetError("nested too deeply", key, line)
    if isinstance(value, bool):
        return "YES" if value else "NO"
    if isinstance(value, (int, float, str)):
        return str(value)
    if isinstance(value, (list, tuple)):
        return [_plain(v, key, line, depth + 1) for v in value]
    if isinstance(value, dict):
        return {str(k).upper(): _plain(v, key, line, depth + 1) for k, v in value.items()}
    raise VnetError(f"unsupported value {value!r:.40}", key, line)


# -- OpenNebula template syntax ---------------------------------------------
class _Reader:
    def __init__(self, text: str):
        self.text, self.pos, self.n = text, 0, len(text)

    @property
    def line(self) -> int:
        return self.text.count("\n", 0, self.pos) + 1

    def skip(self, newlines: bool = True) -> None:
        """Skip blanks (and newlines, and whole-line # comments, when asked)."""
        t = self.text
        while self.pos < self.n:
            ch = t[self.pos]
            if ch in " \t\r" or (newlines and ch == "\n"):
                self.pos += 1
            elif ch == "#" and newlines:
                end = t.find("\n", self.pos)
                self.pos = self.n if end < 0 else end
            else:
                break

    def peek(self) -> str:
        return self.text[self.pos] if self.pos < self.n else ""


def parse_opennebula(text: str) -> dict[str, Field]:
    r = _Reader(text)
    out: dict[str, Field] = {}
    while True:
        r.skip()
        if r.pos >= r.n:
            return out
        line = r.line
        m = _KEY.match(text, r.pos)
        if m is None:
            bad = text[r.pos:].split("\n", 1)[0].strip()
            raise VnetError(f"expected KEY = value, found {bad[:40]!r}", None, line)
        key = m.group().upper()
        r.pos = m.end()
        r.skip(newlines=False)
        if r.peek() != "=":
            raise VnetError("expected '=' after the key", key, line)
        r.pos += 1
        r.skip(newlines=False)
        if r.peek() == "[":
            r.pos += 1
            value = _vector(r, key, line)
        else:
            value = _scalar(r, key, line, stop="\n")
            _end_of_line(r, key)
        if key in REPEATABLE:
            prev = out.get(key)
            items = (prev.value if prev else []) + [value]
            out[key] = Field(key, items, prev.line if prev else line,
                             (prev.item_lines if prev else ()) + (line,))
        elif key in out:
            raise VnetError(f"given twice (first on line {out[key].line})", key, line)
        else:
            out[key] = Field(key, value, line)


def _end_of_line(r: _Reader, key: str) -> None:
    r.skip(newlines=False)
    if r.peek() == "#":
        end = r.text.find("\n", r.pos)
        r.pos = r.n if end < 0 else end
    if r.peek() not in ("", "\n"):
        raise VnetError(f"unexpected {r.text[r.pos:r.pos + 20]!r} after the value", key, r.line)


def _scalar(r: _Reader, key: str, line: int, stop: str) -> str:
    """A quoted ("..." with \\" and \\\\ escapes) or bare value.  A bare value
    ends at a newline, a ' #' comment or one of `stop`."""
    t = r.text
    if r.peek() == '"':
        r.pos += 1
        buf = []
        while True:
            if r.pos >= r.n or t[r.pos] == "\n":
                raise VnetError("unterminated quoted value", key, line)
            ch = t[r.pos]
            if ch == "\\" and r.pos + 1 < r.n and t[r.pos + 1] in '"\\':
                buf.append(t[r.pos + 1])
                r.pos += 2
            elif ch == '"':
                r.pos += 1
                return "".join(buf)
            else:
                buf.append(ch)
                r.pos += 1
    start = r.pos
    while r.pos < r.n and t[r.pos] not in stop and t[r.pos] != "\n" and \
            not (t[r.pos] == "#" and (r.pos == start or t[r.pos - 1] in " \t")):
        if t[r.pos] == '"':
            raise VnetError("a quote inside a bare value", key, r.line)
        r.pos += 1
    value = t[start:r.pos].strip()
    if not value:
        raise VnetError("empty value", key, line)
    return value


def _vector(r: _Reader, key: str, line: int) -> dict[str, str]:
    """``[ SUB = value, SUB = value ]`` after the '[', over any number of lines."""
    out: dict[str, str] = {}
    t = r.text
    while True:
        r.skip()
        if r.pos >= r.n:
            raise VnetError("unterminated vector: no ']'", key, line)
        if r.peek() == "]":
            r.pos += 1
            _end_of_line(r, key)
            if not out:
                raise VnetError("empty vector", key, line)
            return out
        m = _KEY.match(t, r.pos)
        if m is None:
            raise VnetError(f"expected SUBKEY = value in the vector, found "
                            f"{t[r.pos:r.pos + 20]!r}", key, r.line)
        sub = m.group().upper()
        r.pos = m.end()
        r.skip(newlines=False)
        if r.peek() != "=":
            raise VnetError(f"expected '=' after {sub}", key, r.line)
        r.pos += 1
        r.skip(newlines=False)
        if sub in out:
            raise VnetError(f"{sub} given twice in one vector", key, r.line)
        out[sub] = _scalar(r, f"{key}.{sub}", r.line, stop=",]")
        r.skip()
        if r.peek() == ",":
            r.pos += 1
        elif r.peek() == "":
            raise VnetError("unterminated vector: no ']'", key, line)
        elif r.peek() != "]":
            raise VnetError(f"expected ',' or ']' after {sub}", key, r.line)
