"""No acknowledged summary lost: with --state.path the counts of every subject survive restarts and kill -9.

In-process tests reopen the same state file in a second exporter while the first is left as a
crash leaves it (nothing flushed beyond what each 2xx waited for); the subprocess test kills the
real exporter with SIGKILL at seeded random points while Twilio-like senders stream deliveries,
of participant summaries alone and of every kind of summary mixed.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import random
import signal
from pathlib import Path
from typing import Any

import aiohttp
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from exporter.app import create_apps
from exporter.config import load_config
from exporter.models import CALL_SUMMARY_PARTIAL, CALL_SUMMARY_PREDICTED
from exporter.subjects import CALL, CONFERENCE, PARTICIPANT
from exporter.synthetic import (
    batch_body,
    call_event,
    cloud_event,
    conference_event,
    generate_call_summary,
    generate_conference_summary,
    generate_summary,
    sign,
)
from tests.conftest import TOKEN, HarnessFactory, deliveries, post_all, snapshot
from tests.exporter_process import start_exporter

P = "twilio_conference_participant_"
E = "twilio_insights_exporter_"


def mixed_deliveries(count: int, seed: int) -> tuple[list[list[dict[str, Any]]], list[dict[str, set[str]]]]:
    """``count`` summaries, a third of each kind, in deliveries of two events mixed in a seeded order.

    Each call comes as its ``partial``, ``predicted-complete`` and ``complete`` events, each
    conference as a ``complete`` still ``in_progress`` and its final one, apart (in other
    deliveries, any order). Also returns, per delivery, the keys it records of each subject.
    """
    rng = random.Random(seed)
    events: list[tuple[str | None, str, dict[str, Any]]] = []  # (subject recorded or None, key, event)
    for n in range(count):
        i = f"EZ{seed}-{n}"
        kind = n % 3
        if kind == 0:
            participant = generate_summary(rng)
            events.append((PARTICIPANT, participant["participant_sid"], cloud_event(participant, event_id=i)))
        elif kind == 1:
            call = generate_call_summary(rng)
            partial = call | {"processing_state": "partial"}
            events.append((None, "", call_event(partial, event_id=i + "p", event_type=CALL_SUMMARY_PARTIAL)))
            events.append((None, "", call_event(partial, event_id=i + "f", event_type=CALL_SUMMARY_PREDICTED)))
            events.append((CALL, call["call_sid"], call_event(call, event_id=i)))
        else:
            conference = generate_conference_summary(rng)
            still_open = conference | {"processing_state": "in_progress"}
            events.append((None, "", conference_event(still_open, event_id=i + "o")))
            events.append((CONFERENCE, conference["conference_sid"], conference_event(conference, event_id=i)))
    rng.shuffle(events)
    batches, keys = [], []
    for start in range(0, len(events), 2):
        chunk = events[start : start + 2]
        batches.append([event for _, _, event in chunk])
        recorded: dict[str, set[str]] = {PARTICIPANT: set(), CALL: set(), CONFERENCE: set()}
        for subject, key, _ in chunk:
            if subject is not None:
                recorded[subject].add(key)
        keys.append(recorded)
    return batches, keys


async def reference(batches: list[list[dict[str, Any]]], prefixes: tuple[str, ...] = (P,)) -> dict[Any, float]:
    """The samples under ``prefixes`` of an in-memory exporter that got every delivery once."""
    os.environ["TWILIO_AUTH_TOKEN"] = TOKEN
    try:
        apps = create_apps(load_config([]), registry := CollectorRegistry())
    finally:
        del os.environ["TWILIO_AUTH_TOKEN"]
    for batch in batches:
        await apps.runtime.pipeline.deliver(batch, "webhook")
    return {key: value for prefix in prefixes for key, value in snapshot(registry, prefix).items()}


def assert_same(actual: dict[Any, float], expected: dict[Any, float]) -> None:
    """Counts exactly equal; sums equal up to the order in which floats were added."""
    assert actual.keys() == expected.keys()
    for key, value in expected.items():
        if key[0].endswith("_sum"):
            assert math.isclose(actual[key], value, rel_tol=1e-9, abs_tol=1e-9), key
        else:
            assert actual[key] == value, key


async def test_counts_go_on_after_a_clean_restart_and_nothing_is_replayed(make_harness: HarnessFactory, tmp_path: Path) -> None:
    flag = f"--state.path={tmp_path / 'state.db'}"
    batches = deliveries(30, per_delivery=3)
    first = await make_harness(flag)
    await post_all(first, batches[:20])
    await first.metrics.close()  # a clean stop: the last snapshot is taken, the journal emptied
    await first.client.close()

    second = await make_harness(flag)
    assert list(second.runtime.state.journal_rows()) == []
    assert snapshot(second.registry) == await reference(batches[:20])
    await post_all(second, batches)  # every delivery again, and the ten new ones

    assert_same(snapshot(second.registry), await reference(batches))
    assert second.value(P + "summaries_total") == 90
    assert second.value(E + "events_total", outcome="duplicate") == 60


async def test_after_a_crash_the_journal_gives_back_every_acknowledged_summary(make_harness: HarnessFactory, tmp_path: Path) -> None:
    flag = f"--state.path={tmp_path / 'state.db'}"
    batches = deliveries(12, per_delivery=2)
    crashed = await make_harness(flag)
    await post_all(crashed, batches[:5])
    snapshot_done = crashed.runtime.durable.snapshot()
    assert snapshot_done is not None
    await snapshot_done
    await post_all(crashed, batches[5:9])  # journaled after the snapshot

    # The crashed exporter is simply abandoned: what is on disk is what each 2xx waited for.
    second = await make_harness(flag)

    assert len(list(second.runtime.state.journal_rows())) == 4
    assert snapshot(second.registry) == await reference(batches[:9])
    await post_all(second, batches)
    assert_same(snapshot(second.registry), await reference(batches))


async def test_label_values_admitted_before_a_restart_keep_their_places(make_harness: HarnessFactory, tmp_path: Path) -> None:
    flags = (f"--state.path={tmp_path / 'state.db'}", "--labels.limits", '{"participant_label": {"max_values": 1}}')
    rng = random.Random(1)
    first = await make_harness(*flags)
    assert (await first.post([cloud_event(generate_summary(rng, label="agent"), event_id="EZ1")])).status == 200

    second = await make_harness(*flags)  # after a crash of the first
    assert (await second.post([cloud_event(generate_summary(rng, label="customer"), event_id="EZ2")])).status == 200

    assert second.value(P + "summaries_total", participant_label="agent") == 1
    assert second.value(P + "summaries_total", participant_label="other") == 1


async def test_a_failure_mid_batch_commits_what_was_recorded_before_answering_500(
    make_harness: HarnessFactory, tmp_path: Path, monkeypatch: Any
) -> None:
    flag = f"--state.path={tmp_path / 'state.db'}"
    batches = deliveries(1, per_delivery=3)
    first = await make_harness(flag)
    recorder = first.runtime.subjects[PARTICIPANT].recorder
    real_apply = recorder.apply
    calls = [0]

    def third_fails(change: Any) -> None:
        calls[0] += 1
        if calls[0] == 3:
            raise RuntimeError("forced")
        real_apply(change)

    monkeypatch.setattr(recorder, "apply", third_fails)
    assert (await first.post(batches[0])).status == 500

    second = await make_harness(flag)  # the first crashes right after its 500
    retried = await second.post(batches[0])

    assert await retried.json() == {"duplicate": 2, "recorded": 1}
    assert_same(snapshot(second.registry), await reference(batches))


# --- the real process, killed -----------------------------------------------------------------


async def scrape_total(session: aiohttp.ClientSession, metrics_url: str) -> float:
    async with session.get(metrics_url + "/metrics") as response:
        text = await response.text()
    return sum(s.value for f in text_string_to_metric_families(text) for s in f.samples if s.name == P + "summaries_total")


async def participant_samples(session: aiohttp.ClientSession, metrics_url: str) -> dict[Any, float]:
    async with session.get(metrics_url + "/metrics") as response:
        text = await response.text()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value for f in text_string_to_metric_families(text) for s in f.samples if s.name.startswith(P)
    }


async def send(session: aiohttp.ClientSession, webhook_url: str, batch: list[dict[str, Any]]) -> bool:
    """One signed delivery; True if answered 2xx (a promise), False if not answered or not 2xx."""
    body = batch_body(batch)
    url, signature = sign(webhook_url, body, TOKEN)
    try:
        async with session.post(url, data=body, headers={"X-Twilio-Signature": signature}) as response:
            await response.read()
            return 200 <= response.status < 300
    except (TimeoutError, aiohttp.ClientError):
        return False


async def test_kill_9_at_random_points_loses_no_acknowledged_summary_and_counts_none_twice(tmp_path: Path) -> None:
    rng = random.Random(20261122)
    batches = deliveries(240, seed=11, per_delivery=2)
    state = tmp_path / "state.db"
    args = (f"--state.path={state}", "--state.snapshot-changes=50")
    acknowledged: set[int] = set()
    last_seen = 0.0
    kills = [rng.randrange(10, 60) for _ in range(3)]  # acknowledgements before each kill; 240 deliveries outlast them
    env = {"TWILIO_AUTH_TOKEN": TOKEN}

    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
        for kill_after in kills:
            with start_exporter(*args, env=env, tmp_path=tmp_path) as exporter:
                after_restart = await scrape_total(session, exporter.metrics_url)
                # Nothing acknowledged before the kill is missing, and no counter went down.
                assert after_restart >= 2 * len(acknowledged)
                assert after_restart >= last_seen
                pending = [i for i in range(len(batches)) if i not in acknowledged]
                rng.shuffle(pending)  # Twilio retries in any order
                queue = iter(pending)
                acked_now = 0

                async def sender() -> None:
                    nonlocal acked_now
                    for i in queue:
                        if exporter.proc.poll() is not None:
                            return
                        if await send(session, exporter.webhook_url, batches[i]):
                            acknowledged.add(i)
                            acked_now += 1
                            if acked_now == kill_after and exporter.proc.poll() is None:
                                os.kill(exporter.proc.pid, signal.SIGKILL)  # mid-flight for the other senders

                await asyncio.gather(*(sender() for _ in range(8)))
                assert acked_now >= kill_after
                exporter.proc.wait()
                assert exporter.proc.returncode == -signal.SIGKILL
                last_seen = after_restart

        # Finally Twilio redelivers every delivery, acknowledged or not.
        with start_exporter(*args, env=env, tmp_path=tmp_path) as exporter:
            assert await scrape_total(session, exporter.metrics_url) >= 2 * len(acknowledged)
            for batch in batches:
                assert await send(session, exporter.webhook_url, batch)
            final = await participant_samples(session, exporter.metrics_url)

    assert sum(v for k, v in final.items() if k[0] == P + "summaries_total") == 2 * len(batches)
    assert_same(final, await reference(batches))


SUMMARIES = {PARTICIPANT: P + "summaries_total", CALL: "twilio_call_summaries_total", CONFERENCE: "twilio_conference_summaries_total"}
EVERY_KIND = ("twilio_call_", "twilio_conference_")  # the conference prefix holds the participant families too


async def samples_of(session: aiohttp.ClientSession, metrics_url: str, prefixes: tuple[str, ...]) -> dict[Any, float]:
    async with session.get(metrics_url + "/metrics") as response:
        text = await response.text()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for f in text_string_to_metric_families(text)
        for s in f.samples
        if s.name.startswith(prefixes)
    }


def recorded_per_subject(samples: dict[Any, float]) -> dict[str, float]:
    return {subject: sum(v for k, v in samples.items() if k[0] == name) for subject, name in SUMMARIES.items()}


async def test_kill_9_with_every_kind_of_summary_mixed_loses_none_acknowledged_and_counts_none_twice(tmp_path: Path) -> None:
    rng = random.Random(20261202)
    batches, keys = mixed_deliveries(240, seed=13)  # 480 events in 240 deliveries: they outlast the kills
    state = tmp_path / "state.db"
    args = (f"--state.path={state}", "--state.snapshot-changes=50")
    acknowledged: set[int] = set()
    last_seen = dict.fromkeys(SUMMARIES, 0.0)
    kills = [rng.randrange(10, 60) for _ in range(3)]
    env = {"TWILIO_AUTH_TOKEN": TOKEN}

    def promised() -> dict[str, int]:
        """Per subject, the distinct keys of every acknowledged delivery: each must be recorded."""
        return {subject: len(set().union(*(keys[i][subject] for i in acknowledged))) for subject in SUMMARIES}

    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
        for kill_after in kills:
            with start_exporter(*args, env=env, tmp_path=tmp_path) as exporter:
                after_restart = recorded_per_subject(await samples_of(session, exporter.metrics_url, EVERY_KIND))
                for subject, count in promised().items():
                    assert after_restart[subject] >= count, subject  # nothing acknowledged is missing
                    assert after_restart[subject] >= last_seen[subject], subject  # no counter went down
                pending = [i for i in range(len(batches)) if i not in acknowledged]
                rng.shuffle(pending)
                queue = iter(pending)
                acked_now = 0

                async def sender() -> None:
                    nonlocal acked_now
                    for i in queue:
                        if exporter.proc.poll() is not None:
                            return
                        if await send(session, exporter.webhook_url, batches[i]):
                            acknowledged.add(i)
                            acked_now += 1
                            if acked_now == kill_after and exporter.proc.poll() is None:
                                os.kill(exporter.proc.pid, signal.SIGKILL)

                await asyncio.gather(*(sender() for _ in range(8)))
                assert acked_now >= kill_after
                exporter.proc.wait()
                assert exporter.proc.returncode == -signal.SIGKILL
                last_seen = after_restart

        with start_exporter(*args, env=env, tmp_path=tmp_path) as exporter:
            for batch in batches:
                assert await send(session, exporter.webhook_url, batch)
            final = await samples_of(session, exporter.metrics_url, EVERY_KIND)

    everything = {subject: sum(len(k[subject]) for k in keys) for subject in SUMMARIES}
    assert recorded_per_subject(final) == everything
    assert all(everything.values())
    assert_same(final, await reference(batches, EVERY_KIND))


def test_state_file_stays_readable_json_rows(tmp_path: Path) -> None:
    """The journal and series rows are plain JSON text: an operator can inspect them with sqlite3."""
    import sqlite3

    from exporter.state.store import StateStore

    store = StateStore(tmp_path / "s.db", 86400.0)
    store.open()
    store.db.execute("INSERT INTO journal (subject, changes) VALUES ('participant', ?)", (json.dumps([[["a"], [["f", [], 1.0]]]]),))
    assert store.load().journal == [("participant", [["a"], [["f", [], 1.0]]])]
    store.db.close()
    with sqlite3.connect(tmp_path / "s.db") as db:
        assert db.execute("SELECT count(*) FROM journal").fetchone()[0] == 1
    db.close()


async def test_a_delivery_is_answered_only_after_its_commit_is_on_disk(make_harness: HarnessFactory, tmp_path: Path, monkeypatch: Any) -> None:
    import threading

    harness = await make_harness(f"--state.path={tmp_path / 'state.db'}")
    store = harness.runtime.state
    writing, release = threading.Event(), threading.Event()
    real = store._write_commit

    def held(db: Any, item: Any) -> None:
        writing.set()
        release.wait()
        real(db, item)

    monkeypatch.setattr(store, "_write_commit", held)
    answer = asyncio.ensure_future(harness.post(deliveries(1)[0]))
    await asyncio.to_thread(writing.wait)  # the writer holds the commit

    # Not answered while the commit is held (a bounded wait proving something does not happen).
    done, _ = await asyncio.wait([answer], timeout=0.3)
    assert not done
    release.set()

    assert (await answer).status == 200
    assert store.count_keys() == 1


async def test_a_failed_state_write_answers_500_and_reports_unhealthy_until_restarted(
    make_harness: HarnessFactory, tmp_path: Path, monkeypatch: Any
) -> None:
    import sqlite3

    flag = f"--state.path={tmp_path / 'state.db'}"
    batches = deliveries(3)
    harness = await make_harness(flag)
    assert (await harness.post(batches[0])).status == 200
    store = harness.runtime.state

    def disk_full(db: Any, item: Any) -> None:
        raise sqlite3.OperationalError("database or disk is full")

    monkeypatch.setattr(store, "_write_commit", disk_full)
    assert (await harness.post(batches[1])).status == 500
    assert (await harness.metrics.get("/-/healthy")).status == 503
    assert (await harness.post(batches[2])).status == 500  # stays failed: memory is ahead of the disk
    assert harness.value(E + "webhook_requests_total", code="500") == 2

    # The restart reloads what was committed; Twilio's retries count the rest once.
    restarted = await make_harness(flag)
    for batch in batches:
        assert (await restarted.post(batch)).status == 200
    assert (await restarted.metrics.get("/-/healthy")).status == 200
    assert_same(snapshot(restarted.registry), await reference(batches))
