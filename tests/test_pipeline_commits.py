"""The pipeline's commits: chunked deliveries, door checkpoints, and a duplicate answered only once its original is on disk."""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from exporter.config import load_config
from exporter.metrics import Source
from exporter.pipeline import CHUNK
from exporter.runtime import Runtime
from exporter.state.store import Commit, StateStore
from exporter.subjects import PARTICIPANT
from exporter.synthetic import cloud_event, generate_summary, sink_test_event
from tests.conftest import sample_sum
from tests.helpers import HeldCommit, until

P = "twilio_conference_participant_"
E = "twilio_insights_exporter_"


@pytest.fixture
async def durable(tmp_path: Path) -> AsyncIterator[tuple[Runtime, list[Commit]]]:
    """A runtime on a state file whose store records every commit it is handed."""
    runtime = Runtime.build(load_config([f"--state.path={tmp_path / 'state.db'}"]), CollectorRegistry())
    commits: list[Commit] = []
    store = runtime.state
    real = store.commit

    def recording(commit: Commit) -> Any:
        commits.append(commit)
        return real(commit)

    store.commit = recording  # type: ignore[method-assign]
    await runtime.durable.open()
    yield runtime, commits
    await runtime.durable.close()


def keys_of(commit: Commit) -> list[tuple[str, str, float]]:
    """The dedup keys a commit writes (its rows of the dedup_keys table)."""
    return [key for rows in commit.rows if "dedup_keys" in rows.statement for key in rows.params]


def events(count: int, first: int = 0) -> list[dict[str, Any]]:
    return [cloud_event(generate_summary(random.Random(n), participant_sid=f"CP{n:032d}"), event_id=f"EZ{n}") for n in range(first, first + count)]


def reopened(path: Path) -> StateStore:
    store = StateStore(path, 86400.0)
    store.open()
    return store


async def test_a_delivery_longer_than_a_chunk_is_committed_chunk_by_chunk_and_the_checkpoint_with_its_last(
    durable: tuple[Runtime, list[Commit]], tmp_path: Path
) -> None:
    runtime, commits = durable
    count = 2 * CHUNK + 2

    outcomes = await runtime.pipeline.deliver(events(count), Source.KINESIS, ("shard-1", "seq-130"))

    assert outcomes == {"recorded": count}
    assert [(len(keys_of(c)), c.checkpoint) for c in commits] == [(CHUNK, None), (CHUNK, None), (2, ("shard-1", "seq-130"))]
    assert runtime.pipeline.checkpoint("shard-1") == "seq-130"
    assert reopened(tmp_path / "state.db").checkpoints == {"shard-1": "seq-130"}
    assert sample_sum(runtime.registry, P + "summaries_total") == count


async def test_a_delivery_of_exactly_two_chunks_commits_its_second_chunk_with_the_checkpoint(
    durable: tuple[Runtime, list[Commit]], tmp_path: Path
) -> None:
    runtime, commits = durable

    outcomes = await runtime.pipeline.deliver(events(2 * CHUNK), Source.KINESIS, ("shard-1", "seq-128"))

    assert outcomes == {"recorded": 2 * CHUNK}
    # Not a third commit holding the checkpoint alone: the last chunk carries it.
    assert [(len(keys_of(c)), c.checkpoint) for c in commits] == [(CHUNK, None), (CHUNK, ("shard-1", "seq-128"))]
    assert reopened(tmp_path / "state.db").checkpoints == {"shard-1": "seq-128"}


def fail_recording_at(runtime: Runtime, monkeypatch: pytest.MonkeyPatch, call: int) -> list[int]:
    """Make the participant recorder's ``call``-th apply raise ``RuntimeError("forced")``; returns its call count."""
    recorder = runtime.subjects[PARTICIPANT].recorder
    real_apply = recorder.apply
    calls = [0]

    def failing(change: Any) -> None:
        calls[0] += 1
        if calls[0] == call:
            raise RuntimeError("forced")
        real_apply(change)

    monkeypatch.setattr(recorder, "apply", failing)
    return calls


async def test_a_failure_in_the_second_chunk_is_raised_once_what_was_recorded_before_it_is_committed_and_the_retry_counts_each_summary_once(
    durable: tuple[Runtime, list[Commit]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    runtime, commits = durable
    count = CHUNK + 3
    batch = events(count)
    calls = fail_recording_at(runtime, monkeypatch, CHUNK + 2)  # the second chunk's second summary
    held = HeldCommit()
    runtime.state.commit_hook = held
    delivery = asyncio.create_task(runtime.pipeline.deliver(batch, Source.KINESIS, ("shard-1", "seq-67")))
    try:
        await until(held.holding.is_set, "the writer holding the first chunk's commit")
        await until(lambda: calls[0] == CHUNK + 2, "the failure in the second chunk")
        await asyncio.sleep(0)  # one more turn of the loop: a delivery that waits for nothing would be done now
        assert not delivery.done()  # its 5xx must wait until the retry will find these summaries duplicates
    finally:
        runtime.state.commit_hook = None
        held.release()
    with pytest.raises(RuntimeError, match=r"^forced$"):
        await delivery

    # The first chunk's 64 and the one summary recorded before the failure; the checkpoint stays.
    assert [(len(keys_of(c)), c.checkpoint) for c in commits] == [(CHUNK, None), (1, None)]
    on_disk = reopened(tmp_path / "state.db")
    assert (on_disk.count_keys(PARTICIPANT), on_disk.checkpoints) == (CHUNK + 1, {})

    monkeypatch.undo()
    assert await runtime.pipeline.deliver(batch, Source.KINESIS, ("shard-1", "seq-67")) == {"duplicate": CHUNK + 1, "recorded": 2}
    assert sample_sum(runtime.registry, P + "summaries_total") == count
    assert sample_sum(runtime.registry, E + "events_total", source="kinesis", outcome="recorded") == count
    assert runtime.pipeline.checkpoint("shard-1") == "seq-67"


class HeldThenFailing(HeldCommit):
    """Holds the writer inside its first transaction until released, then fails it (a disk full)."""

    def __call__(self) -> None:
        super().__call__()
        raise OSError("disk full")


async def test_a_failure_while_recording_is_raised_even_when_the_commit_of_the_chunks_before_it_fails_too(
    durable: tuple[Runtime, list[Commit]], monkeypatch: pytest.MonkeyPatch
) -> None:
    runtime, _ = durable
    calls = fail_recording_at(runtime, monkeypatch, CHUNK + 2)
    held = HeldThenFailing()
    runtime.state.commit_hook = held
    delivery = asyncio.create_task(runtime.pipeline.deliver(events(CHUNK + 3), Source.KINESIS))
    try:
        await until(held.holding.is_set, "the writer holding the first chunk's commit")
        await until(lambda: calls[0] == CHUNK + 2, "the failure in the second chunk")
    finally:
        held.release()
    # The recording's own error, not the commit's (the state's failure is reported by the writer).
    with pytest.raises(RuntimeError, match=r"^forced$"):
        await delivery
    assert isinstance(runtime.state.failed, OSError)
    runtime.state.commit_hook = None


async def test_a_checkpoint_of_a_page_that_recorded_nothing_is_committed_alone(durable: tuple[Runtime, list[Commit]], tmp_path: Path) -> None:
    runtime, commits = durable

    outcomes = await runtime.pipeline.deliver([b"not json", sink_test_event()], Source.KINESIS, ("shard-1", "seq-2"))

    assert outcomes == {"invalid": 1, "test": 1}
    assert [(c.changes, keys_of(c), c.checkpoint) for c in commits] == [(0, [], ("shard-1", "seq-2"))]
    assert reopened(tmp_path / "state.db").checkpoints == {"shard-1": "seq-2"}
    assert sample_sum(runtime.registry, E + "events_total", source="kinesis", type="test", outcome="test") == 1


async def test_a_delivery_with_nothing_to_keep_commits_nothing(durable: tuple[Runtime, list[Commit]]) -> None:
    runtime, commits = durable

    assert await runtime.pipeline.deliver([sink_test_event()], Source.WEBHOOK) == {"test": 1}
    assert commits == []


async def test_a_duplicate_of_a_summary_still_being_committed_is_answered_only_after_the_original_commits(
    durable: tuple[Runtime, list[Commit]],
) -> None:
    runtime, _ = durable
    held = HeldCommit()
    runtime.state.commit_hook = held
    [event] = events(1)
    original = asyncio.create_task(runtime.pipeline.deliver([event], Source.WEBHOOK))
    try:
        await until(held.holding.is_set, "the writer holding the original's commit")
        duplicate = asyncio.create_task(runtime.pipeline.deliver([event], Source.PULL))
        await until(lambda: sample_sum(runtime.registry, E + "events_total", source="pull", outcome="duplicate") == 1, "the duplicate counted")
        await asyncio.sleep(0)  # one more turn of the loop: a duplicate that waits for nothing would be done now
        assert not duplicate.done() and not original.done()  # its 2xx would promise what a crash could still lose
    finally:
        runtime.state.commit_hook = None
        held.release()
    assert await duplicate == {"duplicate": 1}
    assert await original == {"recorded": 1}
    # Once committed, a later duplicate waits for nothing (no commit is left to wait on), and the
    # pipeline keeps no entry of it: one per summary ever recorded would be a leak.
    assert await runtime.pipeline.deliver([event], Source.WEBHOOK) == {"duplicate": 1}
    assert runtime.pipeline._uncommitted == {}


async def test_an_invalid_event_is_logged_with_its_source_reason_field_and_error(caplog: pytest.LogCaptureFixture) -> None:
    runtime = Runtime.build(load_config([]), CollectorRegistry())
    [event] = events(1)
    event["data"]["metrics"] = {"inbound": {"mos": "4.2"}}

    with caplog.at_level(logging.WARNING, logger="exporter.pipeline"):
        assert await runtime.pipeline.deliver([event], Source.KINESIS) == {"invalid": 1}

    [record] = [r for r in caplog.records if r.getMessage() == "invalid event"]
    assert (record.source, record.reason, record.field) == ("kinesis", "bad_field", "metrics.inbound.mos")  # type: ignore[attr-defined]
    assert record.error  # type: ignore[attr-defined]
    assert sample_sum(runtime.registry, E + "invalid_events_total", source="kinesis", reason="bad_field") == 1
