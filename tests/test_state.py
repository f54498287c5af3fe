"""The state store: what it keeps across a restart, what it forgets, and the webhook's dedup surviving a restart."""

from __future__ import annotations

import json
import random
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from exporter.dedup import Window
from exporter.state.store import CONFERENCE_SID, SCHEMA_VERSION, Commit, StateStore, journal_rows, key_rows
from exporter.subjects import PARTICIPANT
from exporter.synthetic import cloud_event, generate_summary
from tests.conftest import HarnessFactory, snapshot
from tests.helpers import FakeClock

DAY = 86400.0
P = "twilio_conference_participant_"
E = "twilio_insights_exporter_"


def window(clock: FakeClock) -> Window:
    return Window(DAY, 1000, clock=clock)


def reopen(path: Path | None, clock: FakeClock) -> StateStore:
    store = StateStore(path, DAY, clock=clock)
    store.open()
    return store


async def started(path: Path | None, clock: FakeClock) -> StateStore:
    """A store open and its writer running, as the pipeline starts it."""
    store = reopen(path, clock)
    store.start()
    return store


async def add_keys(store: StateStore, *keys: tuple[str, str, float]) -> None:
    """Keys written as a delivery writes them: one commit through the writer."""
    future = store.commit(Commit([key_rows(list(keys))]))
    assert future is not None
    await future


async def test_keys_added_are_there_after_a_reopen_and_kinds_stay_apart(tmp_path: Path) -> None:
    clock = FakeClock()
    store = await started(tmp_path / "state.db", clock)
    await add_keys(store, (CONFERENCE_SID, "CF1", clock.now), (PARTICIPANT, "CP1", clock.now), (PARTICIPANT, "CP2", clock.now))
    await store.close()

    clock.now += 3600
    store = reopen(tmp_path / "state.db", clock)
    conferences, participants = window(clock), window(clock)
    store.load_window(CONFERENCE_SID, conferences)
    store.load_window(PARTICIPANT, participants)

    assert "CF1" in conferences and "CP1" in participants and "CP2" in participants
    assert "CP1" not in conferences
    assert len(conferences) == 1 and len(participants) == 2


async def test_a_reloaded_key_expires_when_it_was_first_added_not_when_reloaded(tmp_path: Path) -> None:
    clock = FakeClock()
    store = await started(tmp_path / "state.db", clock)
    await add_keys(store, (PARTICIPANT, "CP1", clock.now))
    await store.close()

    clock.now += DAY - 1
    store = reopen(tmp_path / "state.db", clock)
    second = window(clock)
    store.load_window(PARTICIPANT, second)
    assert "CP1" in second
    clock.now += 1
    assert "CP1" not in second


async def test_keys_older_than_the_window_are_neither_loaded_nor_kept(tmp_path: Path) -> None:
    clock = FakeClock()
    store = await started(tmp_path / "state.db", clock)
    await add_keys(store, (PARTICIPANT, "CPold", clock.now))
    clock.now += DAY / 2
    await add_keys(store, (PARTICIPANT, "CPnew", clock.now))
    await store.close()

    clock.now += DAY / 2  # CPold is exactly one window old
    store = reopen(tmp_path / "state.db", clock)
    w = window(clock)
    store.load_window(PARTICIPANT, w)

    assert "CPold" not in w and "CPnew" in w
    assert store.count_keys(PARTICIPANT) == 1  # deleted from the file on open


def test_a_state_file_of_the_first_version_is_upgraded_in_place(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    with sqlite3.connect(path) as db:  # schema 1, as the first version wrote it
        db.executescript(
            """
            CREATE TABLE dedup_keys (kind TEXT NOT NULL, key TEXT NOT NULL, added_at REAL NOT NULL, PRIMARY KEY (kind, key)) WITHOUT ROWID;
            CREATE INDEX dedup_keys_added_at ON dedup_keys (added_at);
            CREATE TABLE pending_conferences (conference_sid TEXT PRIMARY KEY, first_seen REAL NOT NULL) WITHOUT ROWID;
            CREATE TABLE meta (name TEXT PRIMARY KEY, value REAL NOT NULL) WITHOUT ROWID;
            PRAGMA user_version=1;
            """
        )
        now = FakeClock().now
        db.executemany(
            "INSERT INTO dedup_keys VALUES (?, ?, ?)", [("event_id", "EZ1", now), ("participant_sid", "CP1", now), ("conference_sid", "CF1", now)]
        )
        db.execute("INSERT INTO meta VALUES ('pull_watermark', 1700000000.0)")
        db.execute("INSERT INTO pending_conferences VALUES ('CF2', 10.0)")
    db.close()

    store = reopen(path, FakeClock())

    assert store.db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 4
    assert store.count_keys(PARTICIPANT) == 1 and store.count_keys(CONFERENCE_SID) == 1
    assert store.count_keys() == 2  # the delivery-id window is gone: participant SIDs say the same
    assert store.watermark() == 1_700_000_000.0
    assert store.pending_conferences() == {"CF2": 10.0}
    assert store.load().journal == [] and store.load().series == []


async def test_watermark_and_pending_conferences_survive_a_reopen(tmp_path: Path) -> None:
    clock = FakeClock()
    store = await started(tmp_path / "state.db", clock)
    assert store.watermark() is None
    futures = [
        store.commit_poll(watermark=1_700_000_000.5),
        store.commit_poll(watermark=1_700_000_060.5, pending=[("CF1", 10.0)]),
        store.commit_poll(pending=[("CF1", 20.0), ("CF2", 30.0)]),  # first seen stays first
        store.commit_poll(done=[("CF2", clock.now)], resolved=["CF2"]),
    ]
    # Read on the loop at once, before the writer has them on disk.
    assert store.watermark() == 1_700_000_060.5
    assert store.pending_conferences() == {"CF1": 10.0}
    for future in futures:
        assert future is not None
        await future
    await store.close()

    store = reopen(tmp_path / "state.db", clock)
    assert store.watermark() == 1_700_000_060.5
    assert store.pending_conferences() == {"CF1": 10.0}
    assert store.count_keys(CONFERENCE_SID) == 1


def test_the_file_is_sqlite_in_wal_mode_with_a_schema_version(tmp_path: Path) -> None:
    store = reopen(tmp_path / "sub" / "state.db", FakeClock())  # a missing directory is created
    store.db.close()

    with sqlite3.connect(tmp_path / "sub" / "state.db") as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    db.close()


def test_a_state_file_from_a_newer_exporter_is_refused(tmp_path: Path) -> None:
    with sqlite3.connect(tmp_path / "state.db") as db:
        db.execute(f"PRAGMA user_version={SCHEMA_VERSION + 1}")
    db.close()

    with pytest.raises(RuntimeError, match="newer than this exporter"):
        reopen(tmp_path / "state.db", FakeClock())


async def test_without_a_path_the_store_lives_in_memory_only() -> None:
    clock = FakeClock()
    store = reopen(None, clock)
    assert store.persistent is False
    assert store.commit_poll(watermark=5.0, done=[("CF1", clock.now)]) is None
    assert store.watermark() == 5.0
    await store.close()

    store = reopen(None, clock)
    assert store.watermark() is None and store.count_keys() == 0
    await store.close()


# --- the service, webhook only ----------------------------------------------------------------


def delivery(seed: int, event_id: str) -> list[dict[str, Any]]:
    return [cloud_event(generate_summary(random.Random(seed)), event_id=event_id)]


async def test_webhook_dedup_survives_a_restart_on_the_same_state_file(make_harness: HarnessFactory, tmp_path: Path) -> None:
    flag = f"--state.path={tmp_path / 'state.db'}"
    first = await make_harness(flag)
    assert await (await first.post(delivery(1, "EZ-retried"))).json() == {"recorded": 1}
    await first.metrics.close()  # stopping the metrics app closes the store
    await first.client.close()

    second = await make_harness(flag)
    # The same delivery retried by Twilio, and the same participant under a new delivery id.
    assert await (await second.post(delivery(1, "EZ-retried"))).json() == {"duplicate": 1}
    assert await (await second.post(delivery(1, "EZ-other-id"))).json() == {"duplicate": 1}
    assert await (await second.post(delivery(2, "EZ-new"))).json() == {"recorded": 1}
    assert second.value(P + "summaries_total") == 2  # the first, restored from the state file, and the new one
    assert second.runtime.state is not None and second.runtime.state.count_keys(PARTICIPANT) == 2


async def test_without_a_state_file_a_restart_forgets(make_harness: HarnessFactory) -> None:
    first = await make_harness()
    assert await (await first.post(delivery(1, "EZ-retried"))).json() == {"recorded": 1}
    await first.metrics.close()
    await first.client.close()

    second = await make_harness()
    assert await (await second.post(delivery(1, "EZ-retried"))).json() == {"recorded": 1}


# Schema 2, exactly as the previous version created it: no subject on any row.
SCHEMA_2 = """
CREATE TABLE dedup_keys (kind TEXT NOT NULL, key TEXT NOT NULL, added_at REAL NOT NULL, PRIMARY KEY (kind, key)) WITHOUT ROWID;
CREATE INDEX dedup_keys_added_at ON dedup_keys (added_at);
CREATE TABLE pending_conferences (conference_sid TEXT PRIMARY KEY, first_seen REAL NOT NULL) WITHOUT ROWID;
CREATE TABLE meta (name TEXT PRIMARY KEY, value REAL NOT NULL) WITHOUT ROWID;
CREATE TABLE journal (id INTEGER PRIMARY KEY, changes TEXT NOT NULL);
CREATE TABLE series (family TEXT NOT NULL, labels TEXT NOT NULL, data TEXT NOT NULL, PRIMARY KEY (family, labels)) WITHOUT ROWID;
CREATE TABLE checkpoints (name TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
PRAGMA user_version=2;
"""


def without_join_labels(labels: str) -> str:
    values = json.loads(labels)
    assert values[:3] == ["unknown"] * 3
    return json.dumps(values[3:])


def without_join_labels_journal(changes: str) -> str:
    return json.dumps([[common[3:], observations] for common, observations in json.loads(changes)])


async def test_a_state_file_of_schema_2_is_upgraded_in_place_and_every_count_goes_on(make_harness: HarnessFactory, tmp_path: Path) -> None:
    # What an exporter of this version writes for three summaries (one snapshotted, two journaled after it) ...
    written = tmp_path / "written.db"
    first = await make_harness(f"--state.path={written}")
    assert await (await first.post(delivery(1, "EZ1"))).json() == {"recorded": 1}
    snapshotted = first.runtime.durable.snapshot()
    assert snapshotted is not None
    await snapshotted
    assert await (await first.post(delivery(2, "EZ2") + delivery(3, "EZ3"))).json() == {"recorded": 2}
    expected = snapshot(first.registry)
    db = first.runtime.state.db
    series = db.execute("SELECT subject, family, labels, data FROM series").fetchall()
    journal = db.execute("SELECT id, subject, changes FROM journal").fetchall()
    keys = db.execute("SELECT kind, key, added_at FROM dedup_keys").fetchall()
    assert {row[0] for row in series + [row[1:] for row in journal]} == {"participant"} and len(journal) == 1
    assert {kind for kind, _, _ in keys} == {"participant"} and len(keys) == 3

    # ... written again as schema 2 wrote it: no subject, participant keys under "participant_sid",
    # no TaskRouter join labels (the first three, all unknown here).
    old = tmp_path / "schema2.db"
    with sqlite3.connect(old) as db2:
        db2.executescript(SCHEMA_2)
        db2.executemany("INSERT INTO series VALUES (?, ?, ?)", [(row[1], without_join_labels(row[2]), row[3]) for row in series])
        db2.executemany("INSERT INTO journal VALUES (?, ?)", [(row[0], without_join_labels_journal(row[2])) for row in journal])
        db2.executemany("INSERT INTO dedup_keys VALUES ('participant_sid', ?, ?)", [(key, at) for _, key, at in keys])
        db2.execute("INSERT INTO dedup_keys VALUES ('conference_sid', 'CF1', ?)", (keys[0][2],))
        db2.execute("INSERT INTO meta VALUES ('pull_watermark', 1700000000.0)")
        db2.execute("INSERT INTO checkpoints VALUES ('kinesis/stream/shardId-000000000000', '4961')")
    db2.close()

    upgraded = await make_harness(f"--state.path={old}")

    assert snapshot(upgraded.registry) == expected  # the snapshot and the journal after it, both replayed
    state = upgraded.runtime.state
    assert state.db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 4
    assert state.db.execute("SELECT DISTINCT subject FROM series").fetchall() == [("participant",)]
    assert state.db.execute("SELECT id, subject FROM journal").fetchall() == [(journal[0][0], "participant")]
    assert state.count_keys(PARTICIPANT) == 3 and state.count_keys(CONFERENCE_SID) == 1 and state.count_keys() == 4
    assert state.watermark() == 1_700_000_000.0
    assert upgraded.runtime.pipeline.checkpoint("kinesis/stream/shardId-000000000000") == "4961"
    assert await (await upgraded.post(delivery(3, "EZ3-retried"))).json() == {"duplicate": 1}
    assert await (await upgraded.post(delivery(4, "EZ4"))).json() == {"recorded": 1}
    assert upgraded.value(P + "summaries_total") == 4


async def test_a_commit_of_two_subjects_is_journaled_as_one_row_each_and_loaded_back_in_order(tmp_path: Path) -> None:
    store = reopen(tmp_path / "state.db", FakeClock())
    store.start()
    call, participant = (["outbound"], [["twilio_call_summaries", [], 1.0]]), (["GB"], [["twilio_conference_participant_summaries", [], 1.0]])
    done = store.commit(
        Commit([journal_rows([("participant", participant), ("call", call), ("participant", participant)]), key_rows([("call", "CA1", 1.0)])])
    )
    assert done is not None
    await done

    assert store.db.execute("SELECT subject, changes FROM journal ORDER BY id").fetchall() == [
        ("participant", json.dumps([participant, participant], separators=(",", ":"))),
        ("call", json.dumps([call], separators=(",", ":"))),
    ]
    assert store.load().journal == [("participant", list(map(list, participant)))] * 2 + [("call", list(map(list, call)))]
    assert store.count_keys("call") == 1
    await store.close()
