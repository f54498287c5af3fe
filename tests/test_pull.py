"""Pull mode against a fake Voice Insights API: each complete participant summary recorded exactly once.

These tests read participant summaries only (``--pull.summaries=participant``, what pull mode
read before Call and Conference Summaries), so that each count is the participants' alone;
tests/test_pull_summaries.py reads the calls and the conference summaries.

Most tests build the poller from the real configuration and drive it with ``poll_once()``, a
clock and a sleep of their own: no test waits for a timer, and every retry wait is asserted. The
end-to-end tests run the real factory (background task, state store, both listeners) and the real
process.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import subprocess
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from exporter.app import Runtime, create_apps
from exporter.config import load_config
from exporter.synthetic import batch_body, cloud_event, sign
from tests import fake_insights as fi
from tests.conftest import REST_PARTICIPANT_LABELS, fixture, sample_sum
from tests.exporter_process import start_exporter
from tests.helpers import FakeClock, path_and_query, scrub_environment, until
from tests.pull_rig import PARTICIPANTS_ONLY, Rig, RigFactory, cf, conference_with, cp, participant

P = "twilio_conference_participant_"
E = "twilio_insights_exporter_"
PULL = E + "pull_"
HOUR = 3600.0
GB = REST_PARTICIPANT_LABELS


@pytest.fixture
async def rig(make_rig: RigFactory) -> Rig:
    return await make_rig()


# --- every complete summary exactly once ------------------------------------------------------


async def test_an_unreadable_participant_summary_costs_its_page_only_itself_and_is_counted_invalid_once(rig: Rig) -> None:
    sid = conference_with(rig.fake, 1, rig.time.now - 600, [participant(n) for n in range(1, 6)])
    for n, how in ((3, "surrogate"), (4, "deep"), (5, "nan")):
        rig.fake.spoil(rig.fake.participants[sid][cp(n)], how)
    rig.fake.add_conference(cf(2), rig.time.now - 500)
    rig.fake.spoil(rig.fake.conferences[cf(2)], "deep")

    for _ in range(3):
        assert await rig.poll() is True

    assert rig.value(P + "summaries_total") == 3
    assert rig.value(E + "invalid_events_total", source="pull", reason="nested_too_deep") == 2
    assert rig.value(E + "invalid_events_total", source="pull", reason="not_json") == 1
    assert rig.value(E + "invalid_events_total", source="pull") == 3


async def test_every_complete_participant_is_recorded_once_with_exact_values(rig: Rig) -> None:
    now = rig.time.now
    # Five conferences over three pages of two, participants over several pages too.
    conference_with(rig.fake, 1, now - 600, [fixture("rest_participant.json"), participant(10), participant(11)])
    conference_with(rig.fake, 2, now - 500, [participant(20), participant(21), participant(22), participant(23), participant(24)])
    conference_with(rig.fake, 3, now - 400, [participant(30)])
    conference_with(rig.fake, 4, now - 300, [participant(40), participant(41)])
    conference_with(rig.fake, 5, now - 200, [participant(50)])

    assert await rig.poll() is True

    assert rig.value(P + "summaries_total") == 12
    assert rig.value(E + "events_total", source="pull", type="summary", outcome="recorded") == 12
    assert rig.value(E + "events_total", source="pull", outcome="duplicate") == 0
    # The fixture, with every quirk (nulls, ints, call_state, ms timestamps, extra keys), exactly.
    r = rig.registry
    assert r.get_sample_value(P + "summaries_total", {**GB, "processing_state": "complete", "call_status": "completed"}) == 1
    assert r.get_sample_value(P + "mos_sum", {**GB, "stream": "inbound"}) == 4.0
    assert r.get_sample_value(P + "latency_seconds_sum", {**GB, "stream": "inbound", "stat": "avg"}) == 0.16
    assert r.get_sample_value(P + "packets_lost_total", {**GB, "stream": "inbound"}) == 10
    assert r.get_sample_value(P + "actions_total", {**GB, "action": "mute"}) == 2
    assert r.get_sample_value(P + "queue_time_seconds_sum", GB) == 12
    # The paging was followed: 3 pages of conferences, 2+3+1+1+1 pages of participants.
    assert [s.query.get("Page", "0") for s in rig.fake.requests(fi.CONFERENCES)] == ["0", "1", "2"]
    assert len(rig.fake.requests(fi.PARTICIPANTS)) == 8
    assert rig.value(PULL + "api_requests_total", endpoint="participants", code="200") == 8
    assert rig.value(PULL + "conferences_seen_total") == 5
    assert rig.value(PULL + "participants_seen_total", processing_state="complete") == 12
    assert rig.value(PULL + "polls_total", outcome="success") == 1
    assert rig.value(PULL + "last_success_timestamp_seconds") == rig.time.now


async def test_a_second_poll_records_nothing_again_and_does_not_reread_finished_conferences(rig: Rig) -> None:
    now = rig.time.now
    conference_with(rig.fake, 1, now - 600, [participant(10), participant(11)])
    conference_with(rig.fake, 2, now - 500, [participant(20)])
    assert await rig.poll() is True
    before = snapshot_participants(rig)

    rig.time.now += 60
    assert await rig.poll() is True

    assert snapshot_participants(rig) == before
    assert rig.value(P + "summaries_total") == 3
    assert rig.value(E + "events_total", source="pull", outcome="duplicate") == 0
    assert len(rig.fake.requests(fi.PARTICIPANTS)) == 2  # the first poll's, none since
    assert rig.value(PULL + "conferences_seen_total") == 4  # both listed again within the overlap


def snapshot_participants(rig: Rig) -> dict[tuple[str, tuple], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value for family in rig.registry.collect() for s in family.samples if s.name.startswith(P)}


async def test_first_poll_reads_the_lookback_and_later_polls_the_watermark_minus_the_overlap(make_rig: RigFactory) -> None:
    rig = await make_rig("--pull.lookback=6h", "--pull.overlap=10m")
    start = rig.time.now
    conference_with(rig.fake, 1, start - 5 * HOUR, [participant(10)])  # inside the lookback
    conference_with(rig.fake, 2, start - 7 * HOUR, [participant(20)])  # before it

    assert await rig.poll() is True
    rig.time.now += 300
    assert await rig.poll() is True

    created_after = [s.query["CreatedAfter"] for s in rig.fake.requests(fi.CONFERENCES)]
    assert created_after == [fi.iso(start - 6 * HOUR), fi.iso(start - 600)]
    assert rig.value(P + "summaries_total") == 1
    assert rig.store.watermark() == start + 300
    assert rig.value(PULL + "watermark_timestamp_seconds") == start + 300


async def test_api_key_credentials_are_accepted(make_rig: RigFactory) -> None:
    rig = await make_rig(env={"TWILIO_API_KEY": fi.API_KEY, "TWILIO_API_SECRET": fi.API_SECRET})
    conference_with(rig.fake, 1, rig.time.now - 60, [participant(10)])

    assert await rig.poll() is True
    assert rig.value(P + "summaries_total") == 1


# --- in_progress, then complete ---------------------------------------------------------------


async def test_in_progress_summary_is_recorded_once_it_completes(rig: Rig) -> None:
    sid = conference_with(rig.fake, 1, rig.time.now - 600, [participant(10), participant(11, processing_state="in_progress", metrics=None)])

    assert await rig.poll() is True
    assert rig.value(P + "summaries_total") == 1
    assert rig.value(PULL + "pending_summaries") == 1
    assert rig.value(PULL + "participants_seen_total", processing_state="in_progress") == 1
    assert rig.store.pending_conferences() == {sid: rig.time.now}

    rig.time.now += 60
    assert await rig.poll() is True  # still in progress: nothing new
    assert rig.value(P + "summaries_total") == 1

    rig.fake.update_participant(sid, cp(11), **participant(11))
    rig.time.now += 60
    assert await rig.poll() is True

    assert rig.value(P + "summaries_total") == 2
    assert rig.value(E + "events_total", source="pull", outcome="recorded") == 2
    # The participant completed earlier was not offered again on the re-reads.
    assert rig.value(E + "events_total", source="pull", outcome="duplicate") == 0
    assert rig.value(PULL + "pending_summaries") == 0
    assert rig.store.pending_conferences() == {}
    participant_reads = len(rig.fake.requests(fi.PARTICIPANTS))
    rig.time.now += 60
    assert await rig.poll() is True
    assert len(rig.fake.requests(fi.PARTICIPANTS)) == participant_reads  # done: not read again


async def test_conference_still_in_progress_is_reread_after_the_overlap_has_passed(make_rig: RigFactory) -> None:
    rig = await make_rig("--pull.overlap=10m")
    # Inside the first poll's 1h lookback, before the next poll's 10m overlap.
    sid = conference_with(rig.fake, 1, rig.time.now - 1800, [participant(10, processing_state="in_progress")], state="in_progress")
    assert await rig.poll() is True

    rig.time.now += 3 * HOUR
    rig.fake.update_participant(sid, cp(10), **participant(10))
    rig.fake.conferences[sid]["processing_state"] = "complete"
    assert await rig.poll() is True

    assert rig.fake.requests(fi.CONFERENCES)[-1].query["CreatedAfter"] > rig.fake.conferences[sid]["create_time"]
    assert rig.value(P + "summaries_total") == 1
    assert rig.store.pending_conferences() == {}


async def test_timeout_summary_is_recorded_with_what_it_has(rig: Rig) -> None:
    conference_with(rig.fake, 1, rig.time.now - 60, [participant(10, processing_state="timeout", metrics=None, call_status=None)])

    assert await rig.poll() is True

    assert rig.value(P + "summaries_total", processing_state="timeout") == 1
    assert rig.value(P + "mos_count") == 0


async def test_summary_in_progress_past_the_max_age_is_given_up_and_counted(make_rig: RigFactory) -> None:
    rig = await make_rig("--pull.pending-max-age=2h")
    sid = conference_with(
        rig.fake, 1, rig.time.now - 60, [participant(10, processing_state="in_progress"), participant(11, processing_state="in_progress")]
    )
    assert await rig.poll() is True
    assert rig.value(PULL + "pending_summaries") == 2

    rig.time.now += 2 * HOUR
    assert await rig.poll() is True

    assert rig.value(PULL + "expired_total") == 2
    assert rig.value(PULL + "pending_summaries") == 0
    assert rig.store.pending_conferences() == {}
    rig.fake.update_participant(sid, cp(10), processing_state="complete")
    rig.time.now += 60
    assert await rig.poll() is True
    assert rig.value(P + "summaries_total") == 0


# --- both paths, one count --------------------------------------------------------------------


async def test_participant_pushed_by_webhook_then_pulled_is_counted_once(rig: Rig) -> None:
    pushed = participant(10)
    assert await rig.runtime.pipeline.deliver([cloud_event(pushed)], "webhook") == {"recorded": 1}
    conference_with(rig.fake, 1, rig.time.now - 60, [pushed, participant(11)])

    assert await rig.poll() is True

    assert rig.value(P + "summaries_total") == 2
    assert rig.value(E + "events_total", source="webhook", outcome="recorded") == 1
    assert rig.value(E + "events_total", source="pull", outcome="recorded") == 1
    assert rig.value(E + "events_total", source="pull", outcome="duplicate") == 1


async def test_participant_pulled_then_pushed_by_webhook_is_counted_once(rig: Rig) -> None:
    pulled = participant(10)
    conference_with(rig.fake, 1, rig.time.now - 60, [pulled])
    assert await rig.poll() is True

    assert await rig.runtime.pipeline.deliver([cloud_event(pulled)], "webhook") == {"duplicate": 1}
    assert rig.value(P + "summaries_total") == 1


async def test_invalid_pulled_summary_is_counted_not_recorded(rig: Rig) -> None:
    bad = participant(10)
    bad["metrics"]["inbound"]["mos"] = 7  # outside 0-5
    conference_with(rig.fake, 1, rig.time.now - 60, [bad, participant(11)])

    assert await rig.poll() is True

    assert rig.value(P + "summaries_total") == 1
    assert rig.value(E + "invalid_events_total", source="pull", reason="bad_field") == 1
    assert rig.value(E + "events_total", source="pull", type="summary", outcome="invalid") == 1


# --- API trouble ------------------------------------------------------------------------------


async def test_429_is_retried_after_its_retry_after(rig: Rig) -> None:
    conference_with(rig.fake, 1, rig.time.now - 60, [participant(10)])
    rig.fake.fail(429, endpoint=fi.CONFERENCES, retry_after="7")
    rig.fake.fail(429, endpoint=fi.PARTICIPANTS, retry_after="Thu, 01 Jan 2099 00:00:00 GMT")  # capped

    assert await rig.poll() is True

    assert rig.time.waits == [7.0, 300.0]  # Retry-After, then the 5m cap of --pull.max-backoff
    assert rig.value(P + "summaries_total") == 1
    assert rig.value(PULL + "api_requests_total", endpoint="conferences", code="429") == 1
    assert rig.value(PULL + "api_requests_total", endpoint="participants", code="429") == 1
    assert rig.value(PULL + "api_requests_total", endpoint="conferences", code="200") == 1


async def test_5xx_and_dropped_connections_are_retried_with_exponential_backoff(rig: Rig) -> None:
    conference_with(rig.fake, 1, rig.time.now - 60, [participant(10)])
    rig.fake.fail(500, endpoint=fi.CONFERENCES)
    rig.fake.fail(503, endpoint=fi.CONFERENCES)
    rig.fake.fail(fi.BROKEN, endpoint=fi.CONFERENCES)
    rig.fake.fail(429, endpoint=fi.CONFERENCES)  # no Retry-After: exponential too

    assert await rig.poll() is True

    assert rig.time.waits == [1.0, 2.0, 4.0, 8.0]
    assert rig.value(PULL + "api_requests_total", endpoint="conferences", code="500") == 1
    assert rig.value(PULL + "api_requests_total", endpoint="conferences", code="503") == 1
    assert rig.value(PULL + "api_requests_total", endpoint="conferences", code="network_error") == 1
    assert rig.value(P + "summaries_total") == 1


async def test_api_failing_past_its_retries_fails_the_poll_keeps_the_watermark_and_recovers(rig: Rig) -> None:
    conference_with(rig.fake, 1, rig.time.now - 60, [participant(10)])
    rig.fake.fail(500, times=6, endpoint=fi.CONFERENCES)  # the first try and 5 retries

    assert await rig.poll() is False

    assert rig.time.waits == [1.0, 2.0, 4.0, 8.0, 16.0]
    assert rig.value(PULL + "polls_total", outcome="failure") == 1
    assert rig.value(PULL + "last_success_timestamp_seconds") == 0
    assert rig.store.watermark() is None
    assert rig.value(P + "summaries_total") == 0

    second_start = rig.time.now
    assert await rig.poll() is True
    assert rig.value(P + "summaries_total") == 1
    # Still no watermark: the lookback again, from this poll's start.
    assert rig.fake.requests(fi.CONFERENCES)[-1].query["CreatedAfter"] == fi.iso(second_start - HOUR)


async def test_wrong_credentials_are_not_retried(make_rig: RigFactory) -> None:
    rig = await make_rig(env={"TWILIO_ACCOUNT_SID": fi.ACCOUNT_SID, "TWILIO_AUTH_TOKEN": "wrong"})
    conference_with(rig.fake, 1, rig.time.now - 60, [participant(10)])

    assert await rig.poll() is False

    assert rig.time.waits == []
    assert rig.value(PULL + "api_requests_total", endpoint="conferences", code="401") == 1
    assert rig.value(PULL + "polls_total", outcome="failure") == 1


async def test_a_poll_that_breaks_unexpectedly_is_counted_not_raised(rig: Rig, monkeypatch: pytest.MonkeyPatch) -> None:
    conference_with(rig.fake, 1, rig.time.now - 60, [participant(10)])

    def broken(**_: Any) -> None:
        raise RuntimeError("the state store broke")

    with monkeypatch.context() as patch:
        patch.setattr(rig.store, "commit_poll", broken)  # the poll's next state write raises
        assert await rig.poll() is False

    assert rig.value(PULL + "polls_total", outcome="failure") == 1
    assert await rig.poll() is True
    assert rig.value(P + "summaries_total") == 1


async def test_unreadable_conference_is_read_on_the_next_poll(rig: Rig) -> None:
    conference_with(rig.fake, 1, rig.time.now - 60, [participant(10)])
    conference_with(rig.fake, 2, rig.time.now - 50, [participant(20)])
    rig.fake.fail(500, times=6, path=f"/v1/Conferences/{cf(1)}/Participants")

    assert await rig.poll() is False  # one conference could not be read...
    assert rig.value(P + "summaries_total") == 1  # ...the other was
    assert len(rig.store.pending_conferences()) == 1
    assert rig.store.watermark() is not None  # the list itself was read: the watermark moves

    rig.time.now += 60
    assert await rig.poll() is True
    assert rig.value(P + "summaries_total") == 2
    assert rig.store.pending_conferences() == {}


# --- restarts ---------------------------------------------------------------------------------


async def test_restart_on_the_same_state_file_records_nothing_twice_and_misses_nothing(make_rig: RigFactory, tmp_path: Path) -> None:
    state = tmp_path / "state.db"
    first = await make_rig("--pull.lookback=3h", state=state)
    fake, now = first.fake, first.time.now
    conference_with(fake, 1, now - 600, [participant(10), participant(11)])
    # Created before the next poll's overlap: only the saved pending list brings it back.
    long_call = conference_with(fake, 2, now - 2 * HOUR, [participant(20), participant(21, processing_state="in_progress")], state="in_progress")
    pushed = participant(30)
    assert await first.runtime.pipeline.deliver([cloud_event(pushed, event_id="EZpushed")], "webhook") == {"recorded": 1}
    assert await first.poll() is True
    assert first.value(P + "summaries_total") == 4
    await first.poller.stop()
    await first.runtime.durable.close()

    # While the exporter is down: the long call completes, new conferences happen (one of them
    # holding the participant pushed before the restart), and the webhook retries that delivery.
    fake.update_participant(long_call, cp(21), **participant(21))
    fake.conferences[long_call]["processing_state"] = "complete"
    conference_with(fake, 3, now + 300, [participant(40)])
    conference_with(fake, 4, now + 400, [pushed, participant(50)])
    clock = FakeClock()
    clock.now = now + 2 * HOUR  # down longer than the overlap

    second = await make_rig("--pull.lookback=3h", state=state, clock=clock)
    assert await second.runtime.pipeline.deliver([cloud_event(pushed, event_id="EZpushed")], "webhook") == {"duplicate": 1}
    assert await second.poll() is True

    # The four the first exporter recorded, restored from the state, and exactly the three it had
    # not recorded: 21, 40, 50.
    assert second.value(P + "summaries_total") == 4 + 3
    assert second.value(E + "events_total", source="pull", outcome="recorded") == 3
    # 20 (re-read with its pending conference) and the pushed one: seen, not counted.
    assert second.value(E + "events_total", source="pull", outcome="duplicate") == 2
    assert second.fake.requests(fi.CONFERENCES)[-1].query["CreatedAfter"] == fi.iso(now - HOUR)
    # Conference 1 was finished before the restart: listed again, not read again.
    assert [s.path for s in fake.requests(fi.PARTICIPANTS)].count(f"/v1/Conferences/{cf(1)}/Participants") == 1


# --- the service around it --------------------------------------------------------------------


@pytest.fixture
def pull_env(monkeypatch: pytest.MonkeyPatch) -> None:
    scrub_environment(monkeypatch)
    monkeypatch.setenv("TWILIO_ACCOUNT_SID", fi.ACCOUNT_SID)
    # The same variable is the webhook's signing token and the API password, as for one account.
    monkeypatch.setenv("TWILIO_AUTH_TOKEN", fi.AUTH_TOKEN)


@dataclass
class Service:
    webhook: TestClient
    metrics: TestClient
    registry: CollectorRegistry
    runtime: Runtime
    clients: list[TestClient] = field(default_factory=list)

    def value(self, name: str, **labels: str) -> float:
        return sample_sum(self.registry, name, **labels)

    async def close(self) -> None:
        for client in (self.webhook, self.metrics):
            await client.close()


async def start_service(aiohttp_client: Any, *flags: str) -> Service:
    registry = CollectorRegistry()
    apps = create_apps(load_config(["--pull.enabled", "--pull.interval=1h", PARTICIPANTS_ONLY, *flags]), registry)
    # Metrics first, as __main__ starts them; the webhook application holds the state store and the poller.
    metrics = await aiohttp_client(apps.metrics)
    webhook = await aiohttp_client(apps.webhook)
    return Service(webhook, metrics, registry, apps.runtime)


async def post_signed(service: Service, events: list[dict[str, Any]]) -> aiohttp.ClientResponse:
    body = batch_body(events)
    url, signature = sign(str(service.webhook.make_url("/events")), body, fi.AUTH_TOKEN)
    return await service.webhook.post(path_and_query(url), data=body, headers={"X-Twilio-Signature": signature})


async def test_service_polls_in_the_background_and_counts_a_pushed_and_pulled_participant_once(
    aiohttp_client: Any, fake: fi.FakeInsights, fake_server: TestServer, pull_env: None
) -> None:
    both = participant(10)
    conference_with(fake, 1, time.time() - 600, [both, participant(11)])
    fake.gate.clear()  # hold the first poll until the webhook delivery is in
    service = await start_service(aiohttp_client, f"--pull.api-url=http://127.0.0.1:{fake_server.port}")

    response = await post_signed(service, [cloud_event(both)])
    assert response.status == 200
    fake.gate.set()
    await until(lambda: service.value(PULL + "polls_total", outcome="success") == 1)

    assert service.value(P + "summaries_total") == 2
    assert service.value(E + "events_total", source="webhook", outcome="recorded") == 1
    assert service.value(E + "events_total", source="pull", outcome="recorded") == 1
    assert service.value(E + "events_total", source="pull", outcome="duplicate") == 1
    exposition = await (await service.metrics.get("/metrics")).text()
    names = {family.name for family in text_string_to_metric_families(exposition)}
    assert {PULL + "api_requests", PULL + "duration_seconds", PULL + "pending_summaries", PULL + "last_success_timestamp_seconds"} <= names
    await service.close()


async def test_readiness_does_not_wait_for_a_slow_api(aiohttp_client: Any, fake: fi.FakeInsights, fake_server: TestServer, pull_env: None) -> None:
    conference_with(fake, 1, time.time() - 600, [participant(10)])
    fake.gate.clear()  # every API request hangs
    service = await start_service(aiohttp_client, f"--pull.api-url=http://127.0.0.1:{fake_server.port}")

    assert (await service.metrics.get("/-/ready")).status == 200
    assert (await service.metrics.get("/metrics")).status == 200
    assert service.value(PULL + "polls_total") == 0  # the first poll is still waiting on the API
    await service.close()  # stopping cancels the hung poll cleanly
    fake.gate.set()


async def test_service_restarted_on_the_same_state_file_counts_nothing_twice(
    aiohttp_client: Any, fake: fi.FakeInsights, fake_server: TestServer, pull_env: None, tmp_path: Path
) -> None:
    flags = (f"--pull.api-url=http://127.0.0.1:{fake_server.port}", f"--state.path={tmp_path / 'state.db'}")
    now = time.time()
    conference_with(fake, 1, now - 600, [participant(10), participant(11, processing_state="in_progress")])
    pushed = cloud_event(participant(99), event_id="EZ-pushed-once")
    first = await start_service(aiohttp_client, *flags)
    assert await (await post_signed(first, [pushed])).json() == {"recorded": 1}
    await until(lambda: first.value(PULL + "polls_total", outcome="success") == 1)
    assert first.value(P + "summaries_total") == 2
    await first.close()

    fake.update_participant(cf(1), cp(11), processing_state="complete")
    conference_with(fake, 2, now - 300, [participant(20)])
    second = await start_service(aiohttp_client, *flags)
    assert await (await post_signed(second, [pushed])).json() == {"duplicate": 1}
    await until(lambda: second.value(PULL + "polls_total", outcome="success") == 1)

    assert second.value(P + "summaries_total") == 2 + 2  # the first two, restored from the state; then 11 and 20, nothing else
    assert second.value(E + "events_total", source="pull", outcome="recorded") == 2
    await second.close()


async def test_real_process_stays_ready_while_the_api_fails_then_catches_up_and_survives_a_restart(
    fake: fi.FakeInsights, fake_server: TestServer, tmp_path: Path
) -> None:
    now = time.time()
    conference_with(fake, 1, now - 600, [participant(10), participant(11)])
    conference_with(fake, 2, now - 500, [participant(20)])
    for _ in range(4):
        fake.fail(500)
        fake.fail(429, retry_after="0")
        fake.fail(fi.BROKEN)
    args = (
        "--pull.enabled",
        PARTICIPANTS_ONLY,
        f"--pull.api-url=http://127.0.0.1:{fake_server.port}",
        "--pull.interval=50ms",
        "--pull.retries=1",
        "--pull.backoff=10ms",
        f"--state.path={tmp_path / 'state.db'}",
    )
    env = {"TWILIO_API_KEY": fi.API_KEY, "TWILIO_API_SECRET": fi.API_SECRET}

    # Every request bounded: a stalled exporter fails the test instead of hanging the suite.
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=15)) as http:

        async def scrape(base: str) -> dict[str, float]:
            async with http.get(base + "/metrics") as response:
                text = await response.text()
            return {_key(s.name, s.labels): s.value for family in text_string_to_metric_families(text) for s in family.samples}

        async def ready(base: str) -> int:
            async with http.get(base + "/-/ready") as response:
                return response.status

        async def until_metric(base: str, key: str, at_least: float) -> dict[str, float]:
            """Scrape until ``key`` reaches ``at_least``; readiness must hold all along."""

            async def reached() -> dict[str, float] | None:
                seen = await scrape(base)
                if seen.get(key, 0) >= at_least:
                    return seen
                assert await ready(base) == 200
                return None

            return await until(reached, f"{key} reaching {at_least}", seconds=20)

        # start_exporter blocks while it waits for readiness: in a thread, so the fake API (on
        # this loop) answers meanwhile.
        async with _exporter(*args, env=env, tmp_path=tmp_path) as process:
            successes = _key(PULL + "polls_total", {"outcome": "success"})
            seen = await until_metric(process.metrics_url, successes, 1)
            assert seen[_key(PULL + "api_requests_total", {"endpoint": "conferences", "code": "500"})] >= 1
            assert seen[_key(PULL + "api_requests_total", {"endpoint": "conferences", "code": "429"})] >= 1
            assert seen[_key(PULL + "api_requests_total", {"endpoint": "conferences", "code": "network_error"})] >= 1
            assert seen[_key(PULL + "polls_total", {"outcome": "failure"})] >= 1
            assert _total(seen, P + "summaries_total") == 3
            assert fake.faults == []
            assert process.proc.poll() is None

        # The same state file in a new process: polls succeed and nothing is counted again.
        conference_with(fake, 3, time.time() - 60, [participant(30)])
        async with _exporter(*args, env=env, tmp_path=tmp_path) as process:
            seen = await until_metric(process.metrics_url, successes, 2)
            assert _total(seen, P + "summaries_total") == 3 + 1  # the three restored from the state file, and only the new one
            assert seen[_key(E + "events_total", {"source": "pull", "type": "summary", "outcome": "recorded"})] == 1


def _key(name: str, labels: dict[str, str]) -> str:
    return name + str(sorted(labels.items()))


def _total(samples: dict[str, float], name: str) -> float:
    return sum(v for k, v in samples.items() if k.startswith(name + "["))


@contextlib.asynccontextmanager
async def _exporter(*args: str, env: dict[str, str], tmp_path: Path) -> AsyncIterator[Any]:
    manager = start_exporter(*args, env=env, tmp_path=tmp_path)
    process = await asyncio.to_thread(manager.__enter__)
    try:
        yield process
    finally:
        await asyncio.to_thread(manager.__exit__, None, None, None)


# --- documentation ----------------------------------------------------------------------------

DOCS = Path(__file__).resolve().parent.parent / "docs" / "pull.md"


def test_docs_flag_table_matches_the_settings() -> None:
    from exporter.config import ENV_PREFIX, PullSettings, StateSettings

    rows = {m.group(1): (m.group(2), m.group(3)) for m in _table_rows(r"^\| `(--[a-z.-]+)` \| `(\w+)` \| ([^|]+) \|")}
    expected = {}
    for section, model in (("pull", PullSettings), ("state", StateSettings)):
        for name, info in model.model_fields.items():
            default = info.get_default(call_default_factory=True)
            if isinstance(default, list):
                default = ",".join(default)
            shown = "(in memory)" if default is None else ("false" if default is False else f"`{default}`")
            expected[f"--{section}.{name.replace('_', '-')}"] = (f"{ENV_PREFIX}{section.upper()}__{name.upper()}", shown)

    assert {flag: (env, default.strip()) for flag, (env, default) in rows.items()} == expected


async def test_docs_metrics_table_names_every_pull_metric(
    aiohttp_client: Any, fake: fi.FakeInsights, fake_server: TestServer, pull_env: None
) -> None:
    service = await start_service(aiohttp_client, f"--pull.api-url=http://127.0.0.1:{fake_server.port}")
    text = await (await service.metrics.get("/metrics")).text()
    await service.close()

    exported = {m.group(1) for m in re.finditer(r"^# TYPE (twilio_insights_exporter_pull_\w+) \w+", text, re.M)}
    documented = {m.group(1) for m in _table_rows(r"^\| `(twilio_insights_exporter_pull_\w+)` \|")}

    assert documented == exported


async def test_exposition_with_pull_metrics_is_promtool_clean(rig: Rig) -> None:
    conference_with(rig.fake, 1, rig.time.now - 60, [participant(10), participant(11, processing_state="in_progress")])
    rig.fake.fail(429, retry_after="1")
    assert await rig.poll() is True

    result = subprocess.run(["promtool", "check", "metrics"], input=generate_latest(rig.registry).decode(), capture_output=True, text=True)

    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == "" and result.stderr.strip() == ""


def _table_rows(pattern: str) -> list[Any]:
    return [m for line in DOCS.read_text().splitlines() if (m := re.match(pattern, line))]
