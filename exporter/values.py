"""The value types of the settings, each written once: durations, sizes, listen addresses, URLs.

Each is an annotated type (a parser and its checks), so a field says what it holds by its type
(``PositiveDuration``, ``ByteSize``, ``HttpUrl``) and no model repeats a validator. ``--help``
and ``--check-config`` print durations and sizes the way they are written (``4h``, ``16MiB``).
"""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Annotated, Any

from pydantic import AfterValidator, BeforeValidator, Field
from pydantic_core import core_schema

# Prometheus' duration syntax: one or more <number><unit> groups, e.g. 30s, 5m, 4h, 1h30m, 30d.
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w|y)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, "y": 31536000}


def parse_duration(value: Any) -> timedelta:
    """Parse a Prometheus-style duration.

    >>> parse_duration("1h30m")
    datetime.timedelta(seconds=5400)
    >>> parse_duration(90)
    datetime.timedelta(seconds=90)
    """
    if isinstance(value, timedelta):
        return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        return timedelta(seconds=value)
    if isinstance(value, str):
        text = value.strip()
        if text and _DURATION_PART.sub("", text) == "":
            return timedelta(seconds=sum(float(n) * _UNIT_SECONDS[u] for n, u in _DURATION_PART.findall(text)))
    raise ValueError(f"not a duration like 30s, 5m or 4h: {value!r}")


def format_duration(value: timedelta) -> str:
    """The shortest Prometheus form of a duration.

    >>> format_duration(timedelta(hours=24))
    '1d'
    >>> format_duration(timedelta(seconds=90))
    '90s'
    """
    seconds = value.total_seconds()
    for unit in ("w", "d", "h", "m", "s"):
        if seconds >= _UNIT_SECONDS[unit] and seconds % _UNIT_SECONDS[unit] == 0:
            return f"{int(seconds // _UNIT_SECONDS[unit])}{unit}"
    return f"{int(seconds * 1000)}ms"


_SIZE = re.compile(r"^\s*(\d+)\s*(B|KiB|MiB|GiB|KB|MB|GB)?\s*$")
_SIZE_FACTOR = {None: 1, "B": 1, "KiB": 1024, "MiB": 1024**2, "GiB": 1024**3, "KB": 1000, "MB": 1000**2, "GB": 1000**3}


def parse_size(value: Any) -> int:
    """Parse a byte size: an integer, or a number with B, KiB, MiB, GiB, KB, MB or GB.

    >>> parse_size("16MiB")
    16777216
    """
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and (m := _SIZE.match(value)):
        return int(m.group(1)) * _SIZE_FACTOR[m.group(2)]
    raise ValueError(f"not a size like 1048576 or 16MiB: {value!r}")


def format_size(value: int) -> str:
    """The shortest exact form of a byte size, as --help and the README show it.

    >>> format_size(16 * 1024**2), format_size(1500)
    ('16MiB', '1500B')
    """
    for unit in ("GiB", "MiB", "KiB"):
        if value and value % _SIZE_FACTOR[unit] == 0:
            return f"{value // _SIZE_FACTOR[unit]}{unit}"
    return f"{value}B"


class Duration(timedelta):
    """A timedelta written and printed the Prometheus way (``4h``), in --help and --check-config alike."""

    def __str__(self) -> str:
        return format_duration(self)

    @classmethod
    def __get_pydantic_core_schema__(cls, source: Any, handler: Any) -> core_schema.CoreSchema:
        return core_schema.no_info_plain_validator_function(
            lambda value: cls(seconds=parse_duration(value).total_seconds()),
            serialization=core_schema.plain_serializer_function_ser_schema(format_duration),
        )


ByteSize = Annotated[int, BeforeValidator(parse_size), Field(gt=0)]


def _positive(value: timedelta) -> timedelta:
    if value <= timedelta(0):
        raise ValueError("must be more than 0s")
    return value


PositiveDuration = Annotated[Duration, AfterValidator(_positive)]


def _listen_address(value: str) -> str:
    """``host:port``, ``:port`` or ``[v6]:port``, checked where the settings load so --check-config refuses what a start would."""
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535 or (host.startswith("[") != host.endswith("]")):
        raise ValueError("must look like host:port, :port or [v6]:port, with a port from 0 to 65535")
    return value


ListenAddress = Annotated[str, AfterValidator(_listen_address)]


def _http_url(value: str) -> str:
    if not value.startswith(("https://", "http://")):
        raise ValueError("must be an http(s) URL")
    return value.rstrip("/")


# An http(s) base URL, without its trailing slash.
HttpUrl = Annotated[str, AfterValidator(_http_url)]
