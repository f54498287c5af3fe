"""Structured logs: one JSON object (or one key=value line) per record.

Hand-written rather than a dependency because it is twenty lines over the standard library's
``logging.Formatter`` and the exporter logs little. Values are never secrets: no code path puts
an auth token, a password or a signature into a log record.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime

# Attributes every LogRecord has; anything else was passed through ``extra=`` and is a field.
_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}


def _fields(record: logging.LogRecord) -> dict[str, object]:
    fields: dict[str, object] = {
        "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "level": record.levelname.lower(),
        "logger": record.name,
        "msg": record.getMessage(),
    }
    # A field without a value (``public_url`` when none is set) is left out, not written as None.
    fields.update({k: v for k, v in vars(record).items() if k not in _STANDARD and v is not None})
    if record.exc_info:
        fields["exc"] = logging.Formatter().formatException(record.exc_info)
    return fields


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return json.dumps(_fields(record), default=str)


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return " ".join(f"{k}={json.dumps(v, default=str) if isinstance(v, str) and (' ' in v or not v) else v}" for k, v in _fields(record).items())


def configure(level: str, fmt: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # Per-request access logs would dominate the output under load and add nothing the
    # webhook_requests_total counter does not say.
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)


class Throttle:
    """At most one log line per key per ``interval`` seconds; the lines held back are counted.

    Every refused request used to log a line, so whoever can reach the webhook could fill the
    disk through it. The line that is let through carries ``suppressed``: how many of the same
    key were held back since the previous one (the exact totals are in the metrics). Keys are
    reasons, a fixed vocabulary, never anything the sender chooses, so the table stays small.
    """

    def __init__(self, interval: float = 60.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.interval = interval
        self._clock = clock
        # key -> [when the next line may be written, lines held back since the last one]
        self._state: dict[str, list[float]] = {}

    def log(self, logger: logging.Logger, level: int, key: str, msg: str, **fields: object) -> bool:
        """Log ``msg`` with ``fields`` unless ``key`` was logged within the interval; True when written."""
        if not logger.isEnabledFor(level):
            return False
        now = self._clock()
        state = self._state.get(key)
        if state is not None and now < state[0]:
            state[1] += 1
            return False
        suppressed = int(state[1]) if state is not None else 0
        self._state[key] = [now + self.interval, 0]
        logger.log(level, msg, extra={**fields, "suppressed": suppressed} if suppressed else fields)
        return True

    def warning(self, logger: logging.Logger, key: str, msg: str, **fields: object) -> bool:
        return self.log(logger, logging.WARNING, key, msg, **fields)

    def info(self, logger: logging.Logger, key: str, msg: str, **fields: object) -> bool:
        return self.log(logger, logging.INFO, key, msg, **fields)
