"""The JSON reader every road in shares: one event's bytes cost only that event.

:func:`loads` reads a JSON text in one call of pydantic-core's parser (in Rust: the fast path,
what every well-formed delivery takes). Only when that parser refuses a text does the slower,
tolerant path run, and it accepts exactly one more thing: **text whose only fault is its
encoding**, a lone UTF-16 surrogate escape (``"\\ud800"``, what a truncated emoji in a caller
name or a task attribute becomes) or bytes that are not UTF-8. Those characters are replaced by
U+FFFD where they are read, so nothing downstream (a label, the exposition, the journal, a log
line) ever holds a character it cannot encode. Decoding tolerantly rather than refusing the
event keeps a summary whose measured fields are intact: the bad character sits in a field that is
at most a label, never in a number.

Everything else the fast parser refuses stays refused (NaN, Infinity, a syntax error), and so is
nesting deeper than :data:`MAX_DEPTH` (pydantic-core's own limit, here checked before the
recursive standard-library parser runs).

:func:`clean_value` is what a text may be once it becomes a label or a join value (exporter/record/labels.py,
exporter/join.py): valid Unicode, no control characters, at most 64 characters.

:func:`split_array` and :func:`split_object` cut a container into its direct members' texts
without decoding them, so that a delivery whose whole body cannot be read still has its members
read one by one (exporter/parse.py): a bad string or a deep nesting in one event never loses its
neighbours. They are hand-written (a regular expression over the string tokens and brackets)
because no JSON library offers "the members of this array, undecoded": ``json.JSONDecoder.raw_decode``
decodes each member, which is what fails here. They run only when the one-call parse failed.
"""

from __future__ import annotations

import json
import re
import unicodedata
from typing import Any

from pydantic_core import from_json

# pydantic-core refuses nesting deeper than this (its recursion limit); the tolerant path keeps
# the same limit, so both paths accept the same depths.
MAX_DEPTH = 200

# A JSON string token (escapes included), a bracket, a separator, or a lone quote (a string never
# closed: malformed). Over bytes: quotes, backslashes and brackets are ASCII, and no byte of a
# multi-byte UTF-8 sequence is ASCII, so the scan is right whatever the encoding of the strings.
_TOKEN = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"|[][{},:]|"', re.DOTALL)
_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_SURROGATE = re.compile("[\ud800-\udfff]")
_WHITESPACE = b" \t\r\n"


# Twilio caps a participant label at 64 characters; nothing else we label by is longer.
MAX_VALUE_LENGTH = 64


def clean_value(value: str) -> str:
    """A label value the exposition can always write: valid Unicode, no control characters, at most 64 characters (also what the TaskRouter join keeps).

    >>> clean_value(" agent\\x00\\n ")
    'agent'
    >>> clean_value("caf\\udce9")
    'caf\\ufffd'
    """
    if not value.isascii() or not value.isprintable():
        if _has_surrogate(value):
            value = "".join("\ufffd" if "\ud800" <= c <= "\udfff" else c for c in value)
        value = "".join(c for c in value if unicodedata.category(c)[0] != "C" or c == " ")
    return value.strip()[:MAX_VALUE_LENGTH]


def _has_surrogate(value: str) -> bool:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


class TooDeep(ValueError):
    """A JSON text nested deeper than :data:`MAX_DEPTH`."""


def loads(raw: bytes | str) -> Any:
    """Strict JSON, tolerant of encoding only; ``ValueError`` for anything else that is not JSON.

    >>> loads(b'[{"mos": 4.2}]')
    [{'mos': 4.2}]
    >>> loads(b'["caller \\\\ud83d", "\\xff"]')
    ['caller \\ufffd', '\\ufffd']
    >>> loads(b'[NaN]')
    Traceback (most recent call last):
    ...
    ValueError: expected value at line 1 column 2
    >>> loads(b'[' * 300 + b']' * 300)
    Traceback (most recent call last):
    ...
    exporter.reader.TooDeep: nested deeper than 200
    """
    try:
        return from_json(raw, allow_inf_nan=False)
    except ValueError as refused:
        strict = refused
    data = raw if isinstance(raw, bytes) else raw.encode("utf-8", "surrogatepass")
    if depth(data) > MAX_DEPTH:
        raise TooDeep(f"nested deeper than {MAX_DEPTH}") from None
    try:
        value = json.loads(data.decode("utf-8", "replace"), parse_constant=_no_constant)
    except (ValueError, RecursionError):
        raise strict from None
    return _clean(value)


def depth(data: bytes) -> int:
    """The deepest nesting of brackets in ``data`` (brackets inside strings do not count).

    >>> depth(b'[{"a": "[[[", "b": [1]}]')
    3
    """
    level = deepest = 0
    for token in _TOKEN.findall(data):
        if token in (b"[", b"{"):
            level += 1
            deepest = max(deepest, level)
        elif token in (b"]", b"}"):
            level -= 1
    return deepest


def split_array(data: bytes) -> list[bytes] | None:
    """The undecoded texts of a JSON array's elements, or None when ``data`` is not one array.

    Only the array's own structure is checked (balanced brackets, closed strings, commas between
    elements, nothing after it); each element is left for :func:`loads` to accept or refuse.

    >>> split_array(b' [{"id": "a,]"}, {"x": [1, 2]} ,3] ')
    [b'{"id": "a,]"}', b'{"x": [1, 2]}', b'3']
    >>> split_array(b'[]'), split_array(b'[1,,2]'), split_array(b'[1] 2'), split_array(b'{"a": 1}')
    ([], None, None, None)
    """
    members = _members(data, b"[", b"]")
    if members is None:
        return None
    if members == [b""]:
        return []
    return None if b"" in members else members


def split_object(data: bytes) -> list[tuple[bytes, bytes]] | None:
    """The (key, value) texts of a JSON object's members, undecoded; None when ``data`` is not one object.

    >>> split_object(b'{"meta": {"a": 1}, "items": [1, [2]]}')
    [(b'"meta"', b'{"a": 1}'), (b'"items"', b'[1, [2]]')]
    >>> split_object(b'{"a" 1}'), split_object(b'{}')
    (None, [])
    """
    members = _members(data, b"{", b"}")
    if members is None:
        return None
    if members == [b""]:
        return []
    pairs = []
    for member in members:
        key = _STRING.match(member)
        if key is None:
            return None
        rest = member[key.end() :].lstrip(_WHITESPACE)
        if not rest.startswith(b":"):
            return None
        value = rest[1:].strip(_WHITESPACE)
        if not value:
            return None
        pairs.append((key.group(), value))
    return pairs


def _members(data: bytes, opening: bytes, closing: bytes) -> list[bytes] | None:
    start = len(data) - len(data.lstrip(_WHITESPACE))
    if data[start : start + 1] != opening:
        return None
    members: list[bytes] = []
    level = 0
    begin = start + 1
    for match in _TOKEN.finditer(data, start):
        token = match.group()
        if token == b'"':
            return None  # a string never closed
        if token in (b"[", b"{"):
            level += 1
        elif token in (b"]", b"}"):
            level -= 1
            if level == 0:
                if token != closing or data[match.end() :].strip(_WHITESPACE):
                    return None
                members.append(data[begin : match.start()].strip(_WHITESPACE))
                return members
        elif token == b"," and level == 1:
            members.append(data[begin : match.start()].strip(_WHITESPACE))
            begin = match.end()
    return None  # never closed


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _clean(value: Any) -> Any:
    """``value`` with every lone surrogate of its strings (keys too) replaced by U+FFFD."""
    if isinstance(value, str):
        return _SURROGATE.sub("\ufffd", value)
    if isinstance(value, list):
        return [_clean(item) for item in value]
    if isinstance(value, dict):
        return {_clean(key): _clean(item) for key, item in value.items()}
    return value
