"""The state store: what it keeps across a restart, what it forgets, and the webhook's dedup surviving a restart."""

from __future__ import annotations

import random
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from exporter.dedup import Window
from exporter.state import CONFERENCE_SID, PARTICIPANT_SID, SCHEMA_VERSION, Commit, StateStore
from exporter.synthetic import cloud_event, generate_summary
from tests.conftest import HarnessFactory
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
    future = store.commit(Commit([], list(keys)))
    assert future is not None
    await future


async def test_keys_added_are_there_after_a_reopen_and_kinds_stay_apart(tmp_path: Path) -> None:
    clock = FakeClock()
    store = await started(tmp_path / "state.db", clock)
    await add_keys(store, (CONFERENCE_SID, "CF1", clock.now), (PARTICIPANT_SID, "CP1", clock.now), (PARTICIPANT_SID, "CP2", clock.now))
    await store.close()

    clock.now += 3600
    store = reopen(tmp_path / "state.db", clock)
    conferences, participants = window(clock), window(clock)
    store.load_window(CONFERENCE_SID, conferences)
    store.load_window(PARTICIPANT_SID, participants)

    assert "CF1" in conferences and "CP1" in participants and "CP2" in participants
    assert "CP1" not in conferences
    assert len(conferences) == 1 and len(participants) == 2


async def test_a_reloaded_key_expires_when_it_was_first_added_not_when_reloaded(tmp_path: Path) -> None:
    clock = FakeClock()
    store = await started(tmp_path / "state.db", clock)
    await add_keys(store, (PARTICIPANT_SID, "CP1", clock.now))
    await store.close()

    clock.now += DAY - 1
    store = reopen(tmp_path / "state.db", clock)
    second = window(clock)
    store.load_window(PARTICIPANT_SID, second)
    assert "CP1" in second
    clock.now += 1
    assert "CP1" not in second


async def test_keys_older_than_the_window_are_neither_loaded_nor_kept(tmp_path: Path) -> None:
    clock = FakeClock()
    store = await started(tmp_path / "state.db", clock)
    await add_keys(store, (PARTICIPANT_SID, "CPold", clock.now))
    clock.now += DAY / 2
    await add_keys(store, (PARTICIPANT_SID, "CPnew", clock.now))
    await store.close()

    clock.now += DAY / 2  # CPold is exactly one window old
    store = reopen(tmp_path / "state.db", clock)
    w = window(clock)
    store.load_window(PARTICIPANT_SID, w)

    assert "CPold" not in w and "CPnew" in w
    assert store.count_keys(PARTICIPANT_SID) == 1  # deleted from the file on open


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

    assert store.db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 2
    assert store.count_keys(PARTICIPANT_SID) == 1 and store.count_keys(CONFERENCE_SID) == 1
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
    assert second.runtime.state is not None and second.runtime.state.count_keys(PARTICIPANT_SID) == 2


async def test_without_a_state_file_a_restart_forgets(make_harness: HarnessFactory) -> None:
    first = await make_harness()
    assert await (await first.post(delivery(1, "EZ-retried"))).json() == {"recorded": 1}
    await first.metrics.close()
    await first.client.close()

    second = await make_harness()
    assert await (await second.post(delivery(1, "EZ-retried"))).json() == {"recorded": 1}
