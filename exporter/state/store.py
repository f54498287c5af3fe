"""What must survive a restart: the participant counts, the keys that say what they already hold,
the poll watermark and pending conferences, and the Kinesis checkpoints.

Twilio never redelivers what was answered 2xx, so a summary acknowledged and not yet scraped
exists only here. With ``--state.path`` it is written to SQLite (standard library, WAL) before the
2xx, in a form that survives ``kill -9``:

- **Journal.** Every delivery's changes (exporter/record/recorder.py :class:`~exporter.record.recorder.Change`)
  are one row of ``journal`` per summary subject (exporter/subjects/__init__.py), written in the same
  transaction as the keys they recorded (``dedup_keys``: participant SIDs) and, for Kinesis, the
  shard checkpoint they reach. Every row names its subject (schema 3). A delivery is
  answered only after that transaction committed, so "counted" and "remembered as counted" are
  one fact on disk: a redelivery after a crash is either a duplicate of a committed change or
  the first record of one that never was.
- **Snapshot.** Every so often the values of the series changed since the last snapshot are
  upserted into ``series`` and the journal rows they cover are deleted, in one transaction. The
  loop copies those values in one synchronous step, between deliveries, and hands them to the
  writer behind every commit queued before it: the snapshot holds exactly the journal rows
  before it and none after.
- **Start.** Series from ``series``, then the journal replayed in order: every counter, bucket
  and sum goes on from where it was (no reset for Prometheus), and so does the set of values
  each bounded label admitted.

Writes happen in one writer thread, never on the event loop: deliveries queue their changes,
the writer commits all that waits in one transaction (group commit) and resolves their futures.
``synchronous=NORMAL`` with WAL: a commit survives the process being killed (the OS has it);
an OS crash or power loss may lose the last commits (``--state.sync=full`` fsyncs each commit).

If a write fails (disk full, file gone), the deliveries waiting for it get an error (a 5xx: Twilio
retries) and the store stays failed: the in-memory counts are ahead of the disk, so the process
reports unhealthy and must be restarted, which reloads the last committed state.

Without a path the store lives in memory: no journal (nothing would survive anyway), only what
pull mode keeps between polls.

Why one module: the schema, the writer thread and the load are one on-disk format, and a change
to one read apart from the others would break a state file written by the last version.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import queue
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from exporter.dedup import Window

log = logging.getLogger(__name__)

# Kinds of remembered keys (the `kind` column): a summary subject's name (exporter/subjects/__init__.py)
# for the keys of its summaries, or this one of the poller's own.
# Conferences whose participants the poller has finished with (a conference's own summary, once
# recorded, is a key of the conference subject's instead).
CONFERENCE_SID = "conference_sid"
# Schema 1 (the first version) also kept delivery ids; schema 2 deduplicates by participant only.
_LEGACY_EVENT_ID = "event_id"
# Schemas 1 and 2 held participant summaries only, their keys under this kind; schema 3 names the
# summary subject of every row (journal, series, dedup_keys), and upgrades older files to it.
_LEGACY_PARTICIPANT_KIND = "participant_sid"
_LEGACY_SUBJECT = "participant"

SCHEMA_VERSION = 4
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
CREATE TABLE IF NOT EXISTS checkpoints (
    name TEXT PRIMARY KEY,
    value TEXT NOT NULL
) WITHOUT ROWID;
"""
# Each row names the summary subject it belongs to (exporter/subjects/__init__.py).
_JOURNAL = """
CREATE TABLE IF NOT EXISTS journal (
    id INTEGER PRIMARY KEY,
    subject TEXT NOT NULL,
    changes TEXT NOT NULL
)"""
_SERIES = """
CREATE TABLE IF NOT EXISTS series (
    subject TEXT NOT NULL,
    family TEXT NOT NULL,
    labels TEXT NOT NULL,
    data TEXT NOT NULL,
    PRIMARY KEY (subject, family, labels)
) WITHOUT ROWID"""

# -- Schema 4: the TaskRouter join (exporter/join.py) -------------------------------------------
# One row per (task, reservation) of the join map, upserted with the delivery that changed it and
# dropped once its task is past --taskrouter.join-ttl (seen_at: the exporter's clock at the task's
# last TaskRouter event) or evicted. A file of schema 3 gains the table, and every saved series and
# journaled label set of the summary subjects gains the join labels (JOIN_LABELS, first among the
# common ones) as 'unknown': its series go on, and its label sets keep their place in the budget.
_JOINS = """
CREATE TABLE IF NOT EXISTS taskrouter_joins (
    task_sid TEXT NOT NULL,
    reservation_sid TEXT NOT NULL,
    data TEXT NOT NULL,
    seen_at REAL NOT NULL,
    PRIMARY KEY (task_sid, reservation_sid)
) WITHOUT ROWID"""
_JOIN_LABELS_ADDED = ("unknown", "unknown", "unknown")  # task_queue, workflow, team


def _upgrade_3_to_4(db: sqlite3.Connection) -> None:
    """Schema 3 -> 4, inside the caller's transaction: the join labels, 'unknown', in front of every label set."""
    db.execute(_JOINS)
    rows = db.execute("SELECT subject, family, labels FROM series").fetchall()
    db.executemany(
        "UPDATE series SET labels = ? WHERE subject = ? AND family = ? AND labels = ?",
        ((json.dumps([*_JOIN_LABELS_ADDED, *json.loads(labels)]), subject, family, labels) for subject, family, labels in rows),
    )
    journal = db.execute("SELECT id, changes FROM journal").fetchall()
    db.executemany(
        "UPDATE journal SET changes = ? WHERE id = ?",
        (
            (
                json.dumps([[[*_JOIN_LABELS_ADDED, *common], observations] for common, observations in json.loads(changes)], separators=(",", ":")),
                row_id,
            )
            for row_id, changes in journal
        ),
    )


WATERMARK = "pull_watermark"
CALL_WATERMARK = "pull_call_watermark"  # how far the poller has listed Call Summaries (a row of meta, like WATERMARK)

# Expired keys are deleted once per this many commits, so the file stays about one dedup window
# large without a timer of its own.
_EXPIRE_EVERY = 1000

# A change as journaled: (common label values, [(family name, other label values, value), ...]).
JournaledChange = tuple[Sequence[str], Sequence[tuple[str, Sequence[str], float]]]
# A saved series: (subject, family name, label values, [value] or [sum, *bucket counts]).
SeriesRow = tuple[str, str, tuple[str, ...], list[float]]


@dataclass(slots=True)
class Commit:
    """What one delivery (or one chunk of it, or one poll) must have on disk before it is answered.

    A list of per-table rows (:class:`Rows`: a statement and its parameters), written in order in
    one transaction: a new table is a new :class:`Rows` where its feature commits, not a field here.
    ``checkpoint`` is one such row too, kept apart because the store also serves it from memory once
    it is on disk (:meth:`StateStore.checkpoints`).
    """

    rows: list[Rows] = field(default_factory=list)
    checkpoint: tuple[str, str] | None = None
    # How many summaries' changes the journal rows hold: the snapshot policy counts them.
    changes: int = 0
    future: asyncio.Future[None] | None = None


@dataclass(frozen=True, slots=True)
class Rows:
    """Rows of one table: ``statement`` run once per parameter tuple (``executemany``)."""

    statement: str
    params: Sequence[tuple[Any, ...]]


def journal_rows(changes: Sequence[tuple[str, JournaledChange]]) -> Rows:
    """The journal's rows of a delivery's changes: one per subject (a delivery may carry several)."""
    by_subject: dict[str, list[JournaledChange]] = {}
    for subject, change in changes:
        by_subject.setdefault(subject, []).append(change)
    return Rows(
        "INSERT INTO journal (subject, changes) VALUES (?, ?)", [(subject, json.dumps(c, separators=(",", ":"))) for subject, c in by_subject.items()]
    )


def key_rows(keys: Sequence[tuple[str, str, float]]) -> Rows:
    """Dedup keys remembered: (kind, key, added_at)."""
    return Rows("INSERT OR IGNORE INTO dedup_keys (kind, key, added_at) VALUES (?, ?, ?)", keys)


def join_rows(joins: Sequence[tuple[str, str, str, float]], evicted: Sequence[str]) -> list[Rows]:
    """The TaskRouter join's rows to upsert, (task, reservation, data, seen_at), and the tasks evicted."""
    return [
        Rows(
            "INSERT INTO taskrouter_joins (task_sid, reservation_sid, data, seen_at) VALUES (?, ?, ?, ?) "
            "ON CONFLICT (task_sid, reservation_sid) DO UPDATE SET data = excluded.data, seen_at = excluded.seen_at",
            joins,
        ),
        Rows("DELETE FROM taskrouter_joins WHERE task_sid = ?", [(sid,) for sid in evicted]),
    ]


_CHECKPOINT = "INSERT INTO checkpoints (name, value) VALUES (?, ?) ON CONFLICT (name) DO UPDATE SET value = excluded.value"
_META = "INSERT INTO meta (name, value) VALUES (?, ?) ON CONFLICT (name) DO UPDATE SET value = excluded.value"


@dataclass(slots=True)
class _Snapshot:
    rows: list[SeriesRow]
    future: asyncio.Future[None] | None = None


@dataclass(slots=True)
class _Stop:
    future: asyncio.Future[None] | None = None


@dataclass
class Loaded:
    """What a durable store held at start."""

    series: list[SeriesRow] = field(default_factory=list)
    journal: list[tuple[str, JournaledChange]] = field(default_factory=list)  # (subject, change), in order


class StateStore:
    """The state in one SQLite database: read on the loop at start, then written by one writer thread.

    Every write after the start (a delivery's changes and keys, a Kinesis checkpoint, a snapshot,
    the poller's watermark and pending conferences) is an item of the writer's queue: the loop
    never waits for SQLite, whose lock another transaction may hold for seconds. What the loop
    reads afterwards (checkpoints, the watermark, pending conferences) it keeps in memory.

    ``window`` is how long a key is kept (the dedup window); older rows are neither loaded nor kept.
    """

    def __init__(self, path: Path | None, window: float, clock: Callable[[], float] = time.time, fsync: bool = False) -> None:
        self.path = path
        self.window = window
        self._clock = clock
        self._fsync = fsync
        self._db: sqlite3.Connection | None = None
        self._queue: queue.SimpleQueue[Commit | _Snapshot | _Stop] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.failed: BaseException | None = None
        self.checkpoints: dict[str, str] = {}
        self._watermark: float | None = None
        self._call_watermark: float | None = None
        self._pending: dict[str, float] = {}
        # Called by the writer inside each transaction, before COMMIT: tests hold a commit open with it.
        self.commit_hook: Callable[[], None] | None = None
        self.journaled = 0  # changes journaled since the last snapshot
        # How long a TaskRouter join row is kept after its task's last event (--taskrouter.join-ttl).
        self.join_ttl = 5 * 3600.0

    @property
    def persistent(self) -> bool:
        """True when the state outlives the process (a file), False in memory."""
        return self.path is not None

    # -- open and load (at start, on the loop, before any delivery: the only SQLite on the loop) --

    def open(self) -> None:
        """Open (creating or upgrading if needed) the database and drop what has expired."""
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        db = self._connect()
        try:
            version = db.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise RuntimeError(f"state file {self.path} has schema {version}, newer than this exporter's {SCHEMA_VERSION}")
            if version in (1, 2, 3):
                _upgrade(db, version)
            db.executescript(f"{_SCHEMA}{_JOURNAL};{_SERIES};{_JOINS};")
            db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        except BaseException:
            db.close()
            raise
        self._db = db
        self.expire()
        self.checkpoints = dict(db.execute("SELECT name, value FROM checkpoints"))
        marks = dict(db.execute("SELECT name, value FROM meta WHERE name IN (?, ?)", (WATERMARK, CALL_WATERMARK)))
        self._watermark = None if WATERMARK not in marks else float(marks[WATERMARK])
        self._call_watermark = None if CALL_WATERMARK not in marks else float(marks[CALL_WATERMARK])
        self._pending = dict(db.execute("SELECT conference_sid, first_seen FROM pending_conferences"))
        log.info("state opened", extra={"path": str(self.path) if self.path else ":memory:", "keys": self.count_keys()})

    def _connect(self) -> sqlite3.Connection:
        # isolation_level=None: autocommit unless a transaction is begun explicitly.
        db = sqlite3.connect(":memory:" if self.path is None else self.path, isolation_level=None, check_same_thread=False)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute(f"PRAGMA synchronous={'FULL' if self._fsync else 'NORMAL'}")
        # The writer's connection and the one read at start (and by tests) share the file: a
        # write waits for the other's transaction instead of failing.
        db.execute("PRAGMA busy_timeout=10000")
        return db

    def load(self) -> Loaded:
        """The saved series and the journal after them, for the recorder to replay."""
        loaded = Loaded()
        if not self.persistent:
            return loaded
        for subject, family, labels, data in self.db.execute("SELECT subject, family, labels, data FROM series"):
            loaded.series.append((subject, family, tuple(json.loads(labels)), json.loads(data)))
        for subject, changes in self.db.execute("SELECT subject, changes FROM journal ORDER BY id"):
            loaded.journal.extend((subject, change) for change in json.loads(changes))
        self.journaled = len(loaded.journal)
        return loaded

    def load_window(self, kind: str, window: Window) -> None:
        """Load the unexpired keys of ``kind`` into ``window``."""
        rows = self.db.execute(
            "SELECT key, added_at FROM dedup_keys WHERE kind = ? AND added_at > ? ORDER BY added_at",
            (kind, self._clock() - self.window),
        )
        window.load(rows)

    @property
    def db(self) -> sqlite3.Connection:
        if self._db is None:
            raise RuntimeError("state store is not open")
        return self._db

    def count_keys(self, kind: str | None = None) -> int:
        if kind is None:
            return int(self.db.execute("SELECT count(*) FROM dedup_keys").fetchone()[0])
        return int(self.db.execute("SELECT count(*) FROM dedup_keys WHERE kind = ?", (kind,)).fetchone()[0])

    def expire(self) -> int:
        """Delete keys older than the window (and joins past their TTL); returns how many keys went."""
        self.db.execute("DELETE FROM taskrouter_joins WHERE seen_at <= ?", (self._clock() - self.join_ttl,))
        return int(self.db.execute("DELETE FROM dedup_keys WHERE added_at <= ?", (self._clock() - self.window,)).rowcount)

    def load_joins(self) -> Iterator[tuple[str, str, str, float]]:
        """The TaskRouter join's rows within their TTL, read one by one (exporter/join.py restores them, cutting each)."""
        if not self.persistent:
            return
        yield from self.db.execute(
            "SELECT task_sid, reservation_sid, data, seen_at FROM taskrouter_joins WHERE seen_at > ?", (self._clock() - self.join_ttl,)
        )

    # -- the writer ------------------------------------------------------------------------

    def start(self) -> None:
        """Start the writer thread (durable stores only). Call from the event loop."""
        if not self.persistent or self._thread is not None:
            return
        self._loop = asyncio.get_running_loop()
        writer_db = self._connect()
        self._thread = threading.Thread(target=self._write, args=(writer_db,), name="state-writer", daemon=True)
        self._thread.start()

    def commit(self, commit: Commit) -> asyncio.Future[None] | None:
        """Queue ``commit``; the future is done once it is on disk. None for a store in memory."""
        if not self.persistent:
            if commit.checkpoint is not None:
                self.checkpoints[commit.checkpoint[0]] = commit.checkpoint[1]
            return None
        if self.failed is not None:
            raise StateWriteError("the state store failed earlier; restart the exporter") from self.failed
        if self._thread is None or self._loop is None:
            raise StateWriteError("the state store is not open")
        commit.future = self._loop.create_future()
        self.journaled += commit.changes
        self._queue.put(commit)
        return commit.future

    def snapshot(self, rows: list[SeriesRow]) -> asyncio.Future[None] | None:
        """Queue a snapshot of ``rows`` (copied on the loop just now); the journal before it goes."""
        if not self.persistent or self._thread is None or self._loop is None or self.failed is not None:
            return None
        future = self._loop.create_future()
        self._queue.put(_Snapshot(rows, future))
        self.journaled = 0
        return future

    async def close(self) -> None:
        """Wait for every queued write, stop the writer and close the database."""
        if self._thread is not None and self._loop is not None:
            future = self._loop.create_future()
            self._queue.put(_Stop(future))
            with contextlib.suppress(Exception):
                await future
            await asyncio.to_thread(self._thread.join)
        self._thread = None
        self._loop = None
        if self._db is not None:
            self._db.close()
            self._db = None

    def _write(self, db: sqlite3.Connection) -> None:
        """The writer thread: one transaction for everything waiting, then the futures."""
        since_expiry = 0
        try:
            while True:
                items = [self._queue.get()]
                with contextlib.suppress(queue.Empty):
                    while len(items) < 10_000:
                        items.append(self._queue.get_nowait())
                stop = None
                done: list[Commit | _Snapshot] = []
                error = self.failed if self.failed is not None else self._transaction(db, items)
                for item in items:
                    if isinstance(item, _Stop):
                        stop = item
                    else:
                        done.append(item)
                self._resolve(done, error)
                since_expiry += 1
                if error is None and since_expiry >= _EXPIRE_EVERY:
                    since_expiry = 0
                    db.execute("DELETE FROM dedup_keys WHERE added_at <= ?", (self._clock() - self.window,))
                    db.execute("DELETE FROM taskrouter_joins WHERE seen_at <= ?", (self._clock() - self.join_ttl,))
                if stop is not None:
                    self._resolve([stop], None)
                    return
        finally:
            db.close()

    def _transaction(self, db: sqlite3.Connection, items: list[Commit | _Snapshot | _Stop]) -> BaseException | None:
        """Everything waiting in one transaction; the error that failed it (the store is then failed for good)."""
        try:
            db.execute("BEGIN IMMEDIATE")
            for item in items:
                if isinstance(item, Commit):
                    self._write_commit(db, item)
                elif isinstance(item, _Snapshot):
                    self._write_snapshot(db, item)
            if self.commit_hook is not None:
                self.commit_hook()
            db.execute("COMMIT")
        except BaseException as exc:  # disk full, file removed, ...
            with contextlib.suppress(Exception):
                db.execute("ROLLBACK")
            log.critical("state write failed: the exporter must be restarted", extra={"error": repr(exc)})
            self.failed = exc
            return exc
        return None

    def _write_commit(self, db: sqlite3.Connection, item: Commit) -> None:
        for rows in item.rows:
            if rows.params:
                db.executemany(rows.statement, rows.params)
        if item.checkpoint is not None:
            db.execute(_CHECKPOINT, item.checkpoint)

    def _write_snapshot(self, db: sqlite3.Connection, item: _Snapshot) -> None:
        db.executemany(
            "INSERT INTO series (subject, family, labels, data) VALUES (?, ?, ?, ?) "
            "ON CONFLICT (subject, family, labels) DO UPDATE SET data = excluded.data",
            ((subject, family, json.dumps(labels), json.dumps(data)) for subject, family, labels, data in item.rows),
        )
        # Every commit queued before this snapshot is in this transaction or an earlier one: the
        # whole journal so far is covered by the series just written.
        db.execute("DELETE FROM journal")

    def _resolve(self, items: Iterable[Commit | _Snapshot | _Stop], error: BaseException | None) -> None:
        loop = self._loop
        if loop is None:
            return
        futures = [item.future for item in items if item.future is not None]
        checkpoints = [item.checkpoint for item in items if isinstance(item, Commit) and item.checkpoint is not None]

        def settle() -> None:
            if error is None:
                for name, value in checkpoints:
                    self.checkpoints[name] = value
            for future in futures:
                if future.done():
                    continue
                if error is None:
                    future.set_result(None)
                else:
                    future.set_exception(StateWriteError(f"state write failed: {error!r}"))

        with contextlib.suppress(RuntimeError):  # the loop closed: nobody waits any more
            loop.call_soon_threadsafe(settle)

    # -- poll watermark and pending conferences (pull mode: kept in memory, written by the writer) --

    def commit_poll(
        self,
        *,
        done: Sequence[tuple[str, float]] = (),
        pending: Sequence[tuple[str, float]] = (),
        resolved: Sequence[str] = (),
        watermark: float | None = None,
        call_watermark: float | None = None,
    ) -> asyncio.Future[None] | None:
        """Queue the poller's bookkeeping as one commit, like a delivery's; None for a store in memory.

        ``done``: conferences whose participants are finished with, and when; ``pending``:
        conferences the poller reads again (summaries still in progress) and when first seen (a
        conference already pending keeps its first time); ``resolved``: no longer pending;
        ``watermark``: how far the conference list was read; ``call_watermark``: how far the Call
        Summaries list was. The values read on the loop (:meth:`watermark`, :meth:`call_watermark`,
        :meth:`pending_conferences`) change at once.
        """
        for sid, first_seen in pending:
            self._pending.setdefault(sid, first_seen)
        for sid in resolved:
            self._pending.pop(sid, None)
        if watermark is not None:
            self._watermark = watermark
        if call_watermark is not None:
            self._call_watermark = call_watermark
        keys = [(CONFERENCE_SID, sid, at) for sid, at in done]
        marks = [(name, mark) for name, mark in ((WATERMARK, watermark), (CALL_WATERMARK, call_watermark)) if mark is not None]
        return self.commit(
            Commit(
                [
                    key_rows(keys),
                    Rows("INSERT OR IGNORE INTO pending_conferences (conference_sid, first_seen) VALUES (?, ?)", list(pending)),
                    Rows("DELETE FROM pending_conferences WHERE conference_sid = ?", [(sid,) for sid in resolved]),
                    Rows(_META, marks),
                ]
            )
        )

    def watermark(self) -> float | None:
        """Unix time up to which the poller has listed conferences, or None before its first poll."""
        return self._watermark

    def call_watermark(self) -> float | None:
        """Unix time up to which the poller has listed Call Summaries (by call start), or None before it first did."""
        return self._call_watermark

    def pending_conferences(self) -> dict[str, float]:
        """``{conference SID: when first seen pending}``."""
        return dict(self._pending)

    def journal_rows(self) -> Iterator[int]:
        """Ids of the journal rows on disk (tests and the snapshot's bookkeeping)."""
        return (row[0] for row in self.db.execute("SELECT id FROM journal"))


def _upgrade(db: sqlite3.Connection, version: int) -> None:
    """Upgrade a file of schema 1, 2 or 3 to this one in place, in one transaction.

    Schema 1 kept delivery ids (gone: participant SIDs say the same) and had no journal or series;
    schemas 1 and 2 held participant summaries only, so every row they have is the participant
    subject's: the journal and series rows gain that subject, the participant keys its name.
    The poller's state (watermark, pending and done conferences) and the checkpoints are kept.
    Schema 3 -> 4 (every older file passes through it): :func:`_upgrade_3_to_4`.
    """
    db.execute("BEGIN IMMEDIATE")
    try:
        if version in (1, 2):
            _upgrade_to_3(db, version)
        _upgrade_3_to_4(db)
        db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        db.execute("COMMIT")
    except BaseException:
        db.execute("ROLLBACK")
        raise
    log.info("state file upgraded", extra={"from_schema": version, "to_schema": SCHEMA_VERSION})


def _upgrade_to_3(db: sqlite3.Connection, version: int) -> None:
    """Schema 1 or 2 -> 3, inside the caller's transaction (see :func:`_upgrade`)."""
    db.execute("DELETE FROM dedup_keys WHERE kind = ?", (_LEGACY_EVENT_ID,))
    db.execute("UPDATE dedup_keys SET kind = ? WHERE kind = ?", (_LEGACY_SUBJECT, _LEGACY_PARTICIPANT_KIND))
    if version == 2:
        db.execute("ALTER TABLE journal RENAME TO journal_v2")
        db.execute("ALTER TABLE series RENAME TO series_v2")
    db.execute(_JOURNAL)
    db.execute(_SERIES)
    if version == 2:
        db.execute("INSERT INTO journal (id, subject, changes) SELECT id, ?, changes FROM journal_v2", (_LEGACY_SUBJECT,))
        db.execute("INSERT INTO series (subject, family, labels, data) SELECT ?, family, labels, data FROM series_v2", (_LEGACY_SUBJECT,))
        db.execute("DROP TABLE journal_v2")
        db.execute("DROP TABLE series_v2")


class StateWriteError(RuntimeError):
    """The durable state could not be written: the delivery must be retried."""
