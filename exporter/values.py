"""The value types of the settings, each written once: durations, sizes, networks, listen addresses, URLs.

Each is an annotated type (a parser and its checks), so a field says what it holds by its type
(``PositiveDuration``, ``ByteSize``, ``Network``, ``HttpUrl``) and no model repeats a validator.
``--help`` and ``--check-config`` print durations and sizes the way they are written (``4h``,
``16MiB``). :func:`load_yaml` reads the YAML the settings are written in (the configuration file,
the web configuration file, a mapping on a flag) and refuses a key written twice.
"""

from __future__ import annotations

import ipaddress
import re
from datetime import timedelta
from typing import Annotated, Any

import yaml
from pydantic import AfterValidator, BeforeValidator, Field, IPvAnyNetwork
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


# IEC units only: "16MB" is 16,000,000 bytes to some readers and 16 MiB to others, so the SI and
# Kubernetes spellings are refused with the exact figure each would mean (:func:`_size_hint`).
_SIZE = re.compile(r"^\s*(\d+)\s*([A-Za-z]*)\s*$")
_SIZE_FACTOR = {"": 1, "B": 1, "KiB": 1024, "MiB": 1024**2, "GiB": 1024**3}
_POWER = {"K": 1, "M": 2, "G": 3}


def parse_size(value: Any) -> int:
    """Parse a byte size: an integer, or a number with B, KiB, MiB or GiB (IEC units, powers of 1024).

    >>> parse_size("16MiB")
    16777216
    >>> parse_size("16MB")
    Traceback (most recent call last):
    ...
    ValueError: 16MB is ambiguous: use 16MiB for 16,777,216 bytes, or write 16000000
    """
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and (m := _SIZE.match(value)):
        number, unit = int(m.group(1)), m.group(2)
        if unit in _SIZE_FACTOR:
            return number * _SIZE_FACTOR[unit]
        if hint := _size_hint(number, unit):
            raise ValueError(hint)
    raise ValueError(f"not a size like 1048576 or 16MiB: {value!r}")


def _size_hint(number: int, unit: str) -> str | None:
    """What a size in another spelling (``16MB``, ``16M``, ``16Mi``, ``16mib``) would mean in IEC units, or None.

    >>> _size_hint(512, "Ki")
    'not a size: write 512KiB (524,288 bytes)'
    """
    power = _POWER.get(unit[:1].upper())
    if power is None or unit.upper() not in {unit[:1].upper() + rest for rest in ("", "B", "I", "IB")}:
        return None
    iec = f"{number}{unit[:1].upper()}iB"
    if unit.upper().startswith(unit[:1].upper() + "I"):  # Kubernetes' 16Mi, or the case of 16mib
        return f"not a size: write {iec} ({number * 1024**power:,} bytes)"
    return f"{number}{unit} is ambiguous: use {iec} for {number * 1024**power:,} bytes, or write {number * 1000**power}"


def format_size(value: int) -> str:
    """The shortest exact form of a byte size, as --help, --check-config and the README show it.

    >>> format_size(16 * 1024**2), format_size(1500)
    ('16MiB', '1500B')
    """
    for unit in ("GiB", "MiB", "KiB"):
        if value and value % _SIZE_FACTOR[unit] == 0:
            return f"{value // _SIZE_FACTOR[unit]}{unit}"
    return f"{value}B"


class Size(int):
    """A number of bytes, written in IEC units (``16MiB``) and serialized so (--check-config).

    ``str()`` stays the plain number: messages such as "body larger than 16777216 bytes" format it.
    """

    @classmethod
    def __get_pydantic_core_schema__(cls, source: Any, handler: Any) -> core_schema.CoreSchema:
        return core_schema.no_info_plain_validator_function(
            lambda value: cls(parse_size(value)),
            serialization=core_schema.plain_serializer_function_ser_schema(format_size),
        )


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


# BeforeValidator(parse_size): how --help and docs/configuration.md's table tell a size from another number.
ByteSize = Annotated[Size, BeforeValidator(parse_size), Field(gt=0)]


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


def _network(value: Any) -> Any:
    """A CIDR; one with host bits set (``10.0.0.1/8``) is refused with the network it probably means.

    >>> _network("10.0.0.1/8")
    Traceback (most recent call last):
    ...
    ValueError: 10.0.0.1/8 has host bits set: did you mean 10.0.0.0/8?
    """
    if not isinstance(value, str):
        return value
    try:
        return ipaddress.ip_network(value.strip())
    except ValueError:
        pass
    try:
        meant = ipaddress.ip_network(value.strip(), strict=False)
    except ValueError:
        raise ValueError(f"not a network like 10.0.0.0/8 or 2001:db8::/32: {value!r}") from None
    raise ValueError(f"{value.strip()} has host bits set: did you mean {meant}?")


# Networks are not secrets: a refusal names the value, so that the hint can name the network meant.
Network = Annotated[IPvAnyNetwork, BeforeValidator(_network)]


def _http_url(value: str) -> str:
    if not value.startswith(("https://", "http://")):
        raise ValueError("must be an http(s) URL")
    return value.rstrip("/")


# An http(s) base URL, without its trailing slash.
HttpUrl = Annotated[str, AfterValidator(_http_url)]


class _UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML's safe loader, refusing a key written twice in one mapping (PyYAML keeps the last one silently).

    The YAML spec requires unique keys; a second ``path:`` further down a long file would otherwise
    win without a word. Keys merged in with ``<<`` may be overridden, as YAML intends.
    """

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, yaml.Node] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=True)
            try:
                first = seen.setdefault(key, key_node)
            except TypeError:  # an unhashable key: SafeLoader refuses it with its own message
                continue
            if first is not key_node:
                mark = first.start_mark
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r} (first at line {mark.line + 1}, column {mark.column + 1})", key_node.start_mark
                )
        return super().construct_mapping(node, deep=deep)


def load_yaml(text: str) -> Any:
    r"""``yaml.safe_load``, except that a key written twice in one mapping is a ``yaml.YAMLError`` at the second.

    >>> load_yaml("a: 1\nb: 2\na: 3\n")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    yaml.constructor.ConstructorError: duplicate key 'a' (first at line 1, column 1)
      in "<unicode string>", line 3, column 1...
    """
    return yaml.load(text, Loader=_UniqueKeyLoader)  # a SafeLoader subclass: no arbitrary objects
