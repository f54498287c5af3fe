"""What must survive a restart for exactly-once counting: dedup keys, the poll watermark, pending conferences.

Without it a restart forgets which delivery ids and participant SIDs were recorded (a webhook retry
or the poller's overlap would count them again) and where the poller stopped (it would skip what
arrived while the exporter was down, or re-read its whole lookback).

The store is SQLite from the standard library, in WAL mode, one file at ``--state.path``; without a
path it lives in memory and dies with the process. Every write is committed at once: the exporter
writes one small row per recorded summary, which WAL with ``synchronous=NORMAL`` makes cheap (no
fsync per commit), and a key that was recorded but never committed is what would count twice.

Calls are synchronous and made from the event loop: each is a single indexed statement on a local
file, shorter than the JSON parsing of the summary that caused it.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

from .dedup import Window

log = logging.getLogger(__name__)

# Kinds of remembered keys (the `kind` column).
EVENT_ID = "event_id"
PARTICIPANT_SID = "participant_sid"
CONFERENCE_SID = "conference_sid"  # conferences the poller has finished with

SCHEMA_VERSION = 1
_SCHEMA = """
CREATE TABLE IF NOT EXISTS dedup_keys (
    kind TEXT NOT NULL,
    key TEXT NOT NULL,
    added_at REAL NOT NULL,
    PRIMARY KEY (kind, key)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS dedup_keys_added_at ON dedup_keys (added_at);
CREATE TABLE IF NOT EXISTS pending_conferences (
    conference_sid TEXT PRIMARY KEY,
    first_seen REAL NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS meta (
    name TEXT PRIMARY KEY,
    value REAL NOT NULL
) WITHOUT ROWID;
"""

WATERMARK = "pull_watermark"

# Expired rows are deleted at open and then once per this many inserts, so the file stays about
# one dedup window large without a timer of its own.
_EXPIRE_EVERY = 1000


class StateStore:
    """Dedup keys, the poll watermark and pending conferences, in one SQLite database.

    ``window`` is how long a key is kept (the dedup window); older rows are neither loaded nor kept.
    """

    def __init__(self, path: Path | None, window: float, clock: Callable[[], float] = time.time) -> None:
        self.path = path
        self.window = window
        self._clock = clock
        self._db: sqlite3.Connection | None = None
        self._inserts = 0
        self._attached: list[Window] = []

    @property
    def persistent(self) -> bool:
        """True when the state outlives the process (a file), False in memory."""
        return self.path is not None

    def open(self) -> None:
        """Open (creating if needed) the database and drop what has expired."""
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        # isolation_level=None: autocommit, each statement is its own transaction.
        db = sqlite3.connect(":memory:" if self.path is None else self.path, isolation_level=None)
        try:
            version = db.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise RuntimeError(f"state file {self.path} has schema {version}, newer than this exporter's {SCHEMA_VERSION}")
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            db.executescript(_SCHEMA)
            db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        except BaseException:
            db.close()
            raise
        self._db = db
        self.expire()
        log.info("state opened", extra={"path": str(self.path) if self.path else ":memory:", "keys": self.count_keys()})

    def close(self) -> None:
        """Detach the windows (they go on in memory) and close the database."""
        for window in self._attached:
            window.on_add = None
        self._attached.clear()
        if self._db is not None:
            self._db.close()
            self._db = None

    @property
    def db(self) -> sqlite3.Connection:
        if self._db is None:
            raise RuntimeError("state store is not open")
        return self._db

    # -- dedup keys ------------------------------------------------------------------------

    def attach(self, kind: str, window: Window) -> None:
        """Load the unexpired keys of ``kind`` into ``window`` and persist every key it adds from now on."""
        rows = self.db.execute(
            "SELECT key, added_at FROM dedup_keys WHERE kind = ? AND added_at > ? ORDER BY added_at",
            (kind, self._clock() - self.window),
        )
        window.load(rows)
        window.on_add = lambda key, added_at: self.add_key(kind, key, added_at)
        self._attached.append(window)

    def add_key(self, kind: str, key: str, added_at: float) -> None:
        self.db.execute("INSERT OR IGNORE INTO dedup_keys (kind, key, added_at) VALUES (?, ?, ?)", (kind, key, added_at))
        self._inserts += 1
        if self._inserts % _EXPIRE_EVERY == 0:
            self.expire()

    def count_keys(self, kind: str | None = None) -> int:
        if kind is None:
            return self.db.execute("SELECT count(*) FROM dedup_keys").fetchone()[0]
        return self.db.execute("SELECT count(*) FROM dedup_keys WHERE kind = ?", (kind,)).fetchone()[0]

    def expire(self) -> int:
        """Delete keys older than the window; returns how many went."""
        return self.db.execute("DELETE FROM dedup_keys WHERE added_at <= ?", (self._clock() - self.window,)).rowcount

    # -- poll watermark --------------------------------------------------------------------

    def watermark(self) -> float | None:
        """Unix time up to which the poller has listed conferences, or None before its first poll."""
        row = self.db.execute("SELECT value FROM meta WHERE name = ?", (WATERMARK,)).fetchone()
        return None if row is None else row[0]

    def set_watermark(self, value: float) -> None:
        self.db.execute("INSERT INTO meta (name, value) VALUES (?, ?) ON CONFLICT (name) DO UPDATE SET value = excluded.value", (WATERMARK, value))

    # -- conferences whose summaries are not all complete yet -------------------------------

    def pending_conferences(self) -> dict[str, float]:
        """``{conference SID: when first seen pending}``."""
        return dict(self.db.execute("SELECT conference_sid, first_seen FROM pending_conferences"))

    def add_pending(self, conference_sid: str, first_seen: float) -> None:
        self.db.execute("INSERT OR IGNORE INTO pending_conferences (conference_sid, first_seen) VALUES (?, ?)", (conference_sid, first_seen))

    def remove_pending(self, conference_sid: str) -> None:
        self.db.execute("DELETE FROM pending_conferences WHERE conference_sid = ?", (conference_sid,))


def state_context(store: StateStore, windows: dict[str, Window]) -> Callable[[Any], AsyncIterator[None]]:
    """A ``cleanup_ctx`` that opens ``store``, loads and persists ``windows`` (``{kind: window}``), and closes it."""

    async def context(_: Any) -> AsyncIterator[None]:
        store.open()
        try:
            for kind, window in windows.items():
                store.attach(kind, window)
            yield
        finally:
            store.close()

    return context
