"""exporter/state/durable.py: when a snapshot is taken, what a restart replays and says, in process."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from exporter.state import durable as durable_module
from exporter.state.durable import DurableState
from exporter.state.store import StateStore
from exporter.subjects import Subjects
from tests.conftest import HarnessFactory, deliveries, post_all
from tests.helpers import FakeClock, until


class Stop(Exception):
    """Ends the snapshot loop after the ticks a test scripted."""


class Policy:
    """``DurableState._snapshot_every`` against a store of a journaled count and a clock the test moves.

    Each check of the loop is a tick: its sleep moves the clock, then ``script[tick]`` runs (the
    summaries journaled meanwhile), then the loop decides. ``snapshots`` lists the ticks a snapshot
    was taken at; a snapshot empties the journal, as the real one does.
    """

    def __init__(self, monkeypatch: pytest.MonkeyPatch, interval: float, changes: int, ticks: int) -> None:
        self.clock = FakeClock(now=1000.0)
        self.store = SimpleNamespace(journaled=0)
        self.state = DurableState(self.store, Subjects([]), interval, changes)  # type: ignore[arg-type]
        self.interval, self.changes, self.ticks = interval, changes, ticks
        self.script: dict[int, Any] = {}
        self.sleeps: list[float] = []
        self.snapshots: list[int] = []
        self.futures: list[asyncio.Future[None] | None] = []
        monkeypatch.setattr(durable_module, "time", SimpleNamespace(monotonic=self.clock))
        monkeypatch.setattr(durable_module, "asyncio", SimpleNamespace(sleep=self._sleep))
        monkeypatch.setattr(self.state, "snapshot", self._snapshot)

    async def _sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        if len(self.sleeps) > self.ticks:
            raise Stop
        self.clock.now += seconds
        action = self.script.get(len(self.sleeps))
        if action is not None:
            action()

    def _snapshot(self) -> asyncio.Future[None] | None:
        self.snapshots.append(len(self.sleeps))
        self.store.journaled = 0
        return self.futures.pop(0) if self.futures else None

    def journal(self, count: int) -> Any:
        def add() -> None:
            self.store.journaled += count

        return add

    async def run(self) -> None:
        with pytest.raises(Stop):
            await self.state._snapshot_every(self.interval, self.changes)


async def test_a_snapshot_is_taken_at_the_first_check_after_snapshot_changes_summaries_were_journaled(monkeypatch: pytest.MonkeyPatch) -> None:
    policy = Policy(monkeypatch, interval=3600.0, changes=3, ticks=6)
    policy.script = {1: policy.journal(2), 2: policy.journal(1), 4: policy.journal(2)}

    await policy.run()

    # 2 journaled: not yet; 3: at once; 2 more: not yet (the hour is far).
    assert policy.snapshots == [2]
    assert policy.sleeps == [1.0] * 7  # a check a second


async def test_a_snapshot_is_taken_once_the_interval_passed_if_anything_was_journaled_and_never_for_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    policy = Policy(monkeypatch, interval=5.0, changes=1000, ticks=14)
    policy.script = {1: policy.journal(1), 12: policy.journal(1)}

    await policy.run()

    # 5 s after the start (exactly the interval); from tick 10 the interval has passed again but
    # nothing was journaled; at 12 one summary was, 7 s after the last snapshot.
    assert policy.snapshots == [5, 12]


async def test_a_check_comes_every_interval_when_it_is_shorter_than_a_second(monkeypatch: pytest.MonkeyPatch) -> None:
    policy = Policy(monkeypatch, interval=0.25, changes=1000, ticks=3)
    policy.script = {1: policy.journal(1)}

    await policy.run()

    assert policy.sleeps == [0.25] * 4
    assert policy.snapshots == [1]


async def test_the_loop_waits_for_each_snapshot_and_goes_on_after_one_that_failed(monkeypatch: pytest.MonkeyPatch) -> None:
    loop = asyncio.get_running_loop()
    policy = Policy(monkeypatch, interval=3600.0, changes=1, ticks=4)
    pending: asyncio.Future[None] = loop.create_future()
    policy.futures = [pending]
    policy.script = {1: policy.journal(1), 3: policy.journal(1)}
    checks_while_pending: list[int] = []

    async def fail_it_later() -> None:
        for _ in range(20):
            await asyncio.sleep(0)
        checks_while_pending.append(len(policy.sleeps))
        pending.set_exception(OSError("disk full"))  # reported by the store itself; the loop goes on

    failer = loop.create_task(fail_it_later())
    await policy.run()
    await failer

    assert checks_while_pending == [1]  # no check while the first snapshot was being written
    assert policy.snapshots == [1, 3]


# -- a real exporter (in process) -----------------------------------------------------------------


def journal_count(path: Path) -> int:
    with sqlite3.connect(path) as db:
        count: int = db.execute("SELECT COUNT(*) FROM journal").fetchone()[0]
    return count


async def test_an_exporter_snapshots_after_snapshot_changes_summaries_and_empties_its_journal(make_harness: HarnessFactory, tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    harness = await make_harness(f"--state.path={path}", "--state.snapshot-changes=2", "--state.snapshot-interval=1h")

    await post_all(harness, deliveries(2))

    await until(lambda: journal_count(path) == 0, "the snapshot after two journaled summaries", seconds=10)
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT COUNT(*) FROM series").fetchone()[0] > 0


async def test_a_restart_replays_the_journal_says_how_many_summaries_and_skips_rows_of_a_subject_it_does_not_have(
    make_harness: HarnessFactory, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "state.db"
    first = await make_harness(f"--state.path={path}")
    await post_all(first, deliveries(3))
    with sqlite3.connect(path) as db:  # a row a later version wrote, of a subject this one does not have
        db.execute("INSERT INTO journal (subject, changes) VALUES (?, ?)", ("ghost", '[[["a"], [["x", [], 1]]]]'))

    with caplog.at_level(logging.INFO, logger="exporter.state.durable"):
        second = await make_harness(f"--state.path={path}")  # after the first crashed

    replayed = [record for record in caplog.records if record.getMessage() == "state replayed"]
    assert [record.summaries for record in replayed] == [3]  # type: ignore[attr-defined]
    assert second.value("twilio_conference_participant_summaries_total") == 3


async def test_an_exporter_without_a_state_file_replays_nothing_and_says_nothing_of_it(
    make_harness: HarnessFactory, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="exporter.state.durable"):
        harness = await make_harness()

    assert [record for record in caplog.records if record.getMessage() == "state replayed"] == []
    assert harness.runtime.durable.restore() == 0


async def test_a_journal_of_other_common_labels_is_not_replayed_and_does_not_stop_the_start(make_harness: HarnessFactory, tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    first = await make_harness(f"--state.path={path}")
    await post_all(first, deliveries(2))

    # After a crash, restarted with one more common label: the journaled changes no longer fit.
    second = await make_harness(f"--state.path={path}", "--labels.account-sid")

    assert second.value("twilio_conference_participant_summaries_total") == 0
    await post_all(second, deliveries(2, seed=8))
    assert second.value("twilio_conference_participant_summaries_total") == 2


async def test_closing_after_the_last_snapshot_failed_to_write_still_closes_the_store(
    make_harness: HarnessFactory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    harness = await make_harness(f"--state.path={tmp_path / 'state.db'}")
    await post_all(harness, deliveries(1))

    def disk_full(self: StateStore, db: Any, item: Any) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(StateStore, "_write_snapshot", disk_full)

    await harness.runtime.durable.close()  # the failure was logged by the store; closing goes on

    assert harness.runtime.state.failed is not None
    assert harness.runtime.state._thread is None  # the writer stopped and the file closed
