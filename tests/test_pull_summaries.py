"""Pull mode's Call Summaries and Conference Summaries against the fake Voice Insights API: each final one recorded once.

The poller is built from the real configuration, on the real pipeline and state store, and
driven with ``poll_once()`` and a clock of its own (the fake API's "now" too): no test waits for
a timer, and every retry wait is asserted. tests/test_pull.py covers the participants.
"""

from __future__ import annotations

import copy
import io
import json
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import redirect_stdout
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestServer
from prometheus_client import CollectorRegistry

from exporter import cli
from exporter.app import Runtime
from exporter.config import load_config
from exporter.doors.pull.poller import Poller
from exporter.metrics import build_pull_metrics
from exporter.models import CONFERENCE_SUMMARY_COMPLETE
from exporter.state.store import StateStore
from exporter.synthetic import generate_summary
from tests import fake_insights as fi
from tests.conftest import fixture, sample_sum
from tests.helpers import FakeClock, scrub_environment

E = "twilio_insights_exporter_"
PULL = E + "pull_"
CALLS = "twilio_call_summaries_total"
PDD = "twilio_call_post_dial_delay_seconds_sum"
CONFERENCES = "twilio_conference_summaries_total"
PARTICIPANTS = "twilio_conference_participant_summaries_total"
HOUR = 3600.0
CREDENTIALS = {"TWILIO_ACCOUNT_SID": fi.ACCOUNT_SID, "TWILIO_AUTH_TOKEN": fi.AUTH_TOKEN}
# The facts file's realistic call: its post-dial delay, 2917 ms.
PDD_SECONDS = 2.917


def ca(n: int) -> str:
    return f"CA{n:032d}"


def cf(n: int) -> str:
    return f"CF{n:032d}"


def call(n: int, **overrides: Any) -> dict[str, Any]:
    """The facts file's realistic Call Summary (REST shape: no envelope, no event-only fields), as call ``n``."""
    summary: dict[str, Any] = copy.deepcopy(fixture("call_summary_complete.json")["data"])
    for key in ("parent_call_sid", "parent_account_sid", "processing_version"):
        summary.pop(key)
    return {**summary, "call_sid": ca(n), "account_sid": fi.ACCOUNT_SID, **overrides}


@dataclass
class Rig:
    fake: fi.FakeInsights
    poller: Poller
    runtime: Runtime
    registry: CollectorRegistry
    time: FakeClock
    store: StateStore

    def value(self, name: str, **labels: str) -> float:
        return sample_sum(self.registry, name, **labels)

    async def poll(self) -> bool:
        return await self.poller.poll_once()

    async def stop(self) -> None:
        await self.poller.stop()
        await self.runtime.durable.close()


RigFactory = Callable[..., Awaitable[Rig]]


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def fake(clock: FakeClock) -> fi.FakeInsights:
    return fi.FakeInsights(clock=clock)


@pytest.fixture
async def fake_server(aiohttp_server: Any, fake: fi.FakeInsights) -> TestServer:
    return await aiohttp_server(fake.app())


@pytest.fixture
async def make_rig(fake: fi.FakeInsights, fake_server: TestServer, clock: FakeClock, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[RigFactory]:
    opened: list[Rig] = []
    scrub_environment(monkeypatch)
    for name, value in CREDENTIALS.items():
        monkeypatch.setenv(name, value)

    async def build(*flags: str, state: Path | None = None) -> Rig:
        state_flag = [f"--state.path={state}"] if state is not None else []
        config = load_config(["--pull.enabled", f"--pull.api-url=http://127.0.0.1:{fake_server.port}", "--pull.page-size=2", *state_flag, *flags])
        registry = CollectorRegistry()
        runtime = Runtime.build(config, registry, clock=clock)
        await runtime.durable.open()
        poller = Poller.build(config, runtime.pipeline, runtime.state, build_pull_metrics(registry), clock=clock, sleep=clock.sleep)
        await poller.start()
        rig = Rig(fake, poller, runtime, registry, clock, runtime.state)
        opened.append(rig)
        return rig

    yield build
    for rig in opened:
        await rig.stop()


@pytest.fixture
async def rig(make_rig: RigFactory) -> Rig:
    return await make_rig()


# --- calls ------------------------------------------------------------------------------------


async def test_completed_calls_over_several_pages_are_each_recorded_once_with_exact_values(rig: Rig) -> None:
    start = rig.time.now
    for n in range(5):
        rig.fake.add_call(call(n), started=start - 50 * 60 + n * 60)

    assert await rig.poll() is True

    assert rig.value(CALLS) == 5
    assert rig.value(CALLS, call_type="carrier", direction="outbound_api", country_code="US", carrier="T-Mobile USA, Inc.") == 5
    assert rig.value(PDD) == pytest.approx(5 * PDD_SECONDS, rel=1e-9)
    assert rig.value(E + "events_total", source="pull", type="summary", outcome="recorded") == 5
    seen = rig.fake.requests(fi.CALL_SUMMARIES)
    # Three pages of two, each asking for completed calls started since the first poll's lookback.
    assert [s.query.get("PageToken") for s in seen] == [None, "PT2", "PT4"]
    assert all(s.query["ProcessingState"] == "completed" and s.query["StartTime"] == fi.iso(start - HOUR) for s in seen)
    assert rig.value(PULL + "api_requests_total", endpoint="call_summaries", code="200") == 3
    assert rig.store.call_watermark() == start


async def test_a_call_partial_on_one_poll_and_complete_on_a_later_one_is_recorded_once(rig: Rig) -> None:
    # A list that answers partial summaries despite ProcessingState=completed: the poller still skips them.
    rig.fake.ignore_processing_state = True
    sid = rig.fake.add_call(call(1), started=rig.time.now - 600, processing_state="partial")
    rig.fake.add_call(call(2), started=rig.time.now - 500, processing_state="started")

    assert await rig.poll() is True
    assert rig.value(CALLS) == 0
    assert rig.value(E + "events_total", source="pull", type="summary") == 0

    rig.fake.update_call(sid, processing_state="complete")
    rig.time.now += 60
    assert await rig.poll() is True
    rig.time.now += 60
    assert await rig.poll() is True

    assert rig.value(CALLS) == 1
    assert rig.value(E + "events_total", source="pull", outcome="recorded") == 1
    assert rig.value(E + "events_total", source="pull", outcome="duplicate") == 0


async def test_the_overlap_reads_a_long_call_again_and_counts_what_it_reads_again_nothing(rig: Rig) -> None:
    first = rig.time.now
    rig.fake.add_call(call(1), started=first - 600)
    assert await rig.poll() is True

    # Three hours later a call that started half an hour before the first poll has completed: the
    # 5h call overlap, counted back from the last poll's start, still reaches it.
    rig.time.now = second = first + 3 * HOUR
    rig.fake.add_call(call(2), started=first - 1800)
    rig.fake.add_call(call(3), started=first - 5 * HOUR - 60)  # started before the overlap: not listed
    assert await rig.poll() is True

    assert [s.query["StartTime"] for s in rig.fake.requests(fi.CALL_SUMMARIES)] == [fi.iso(first - HOUR), fi.iso(first - 5 * HOUR)]
    assert rig.value(CALLS) == 2
    # Call 1 was listed again by the second poll: not handed over again, so not even a duplicate.
    assert rig.value(E + "events_total", source="pull", outcome="recorded") == 2
    assert rig.value(E + "events_total", source="pull", outcome="duplicate") == 0
    assert rig.store.call_watermark() == second


async def test_a_call_pushed_by_the_webhook_then_listed_is_counted_once(rig: Rig) -> None:
    event = fixture("call_summary_complete.json")
    assert await rig.runtime.pipeline.deliver([event], "webhook") == {"recorded": 1}
    rig.fake.add_call(call(0, call_sid=event["data"]["call_sid"]), started=rig.time.now - 600)

    assert await rig.poll() is True

    assert rig.value(CALLS) == 1
    assert rig.value(E + "events_total", source="pull", type="summary") == 0


async def test_an_invalid_call_summary_is_counted_invalid_once_not_on_every_reread(rig: Rig) -> None:
    bad = call(1)
    bad["properties"] = {**bad["properties"], "pdd_ms": -5}  # a negative delay: invalid
    rig.fake.add_call(bad, started=rig.time.now - 600)
    rig.fake.add_call(call(2), started=rig.time.now - 500)

    for _ in range(3):
        assert await rig.poll() is True
        rig.time.now += 60

    assert rig.value(CALLS) == 1
    assert rig.value(E + "events_total", source="pull", outcome="invalid") == 1
    assert rig.value(E + "invalid_events_total", source="pull") == 1


async def test_an_unreadable_call_summary_costs_its_page_only_itself_and_is_counted_invalid_once(rig: Rig) -> None:
    for n in range(1, 7):
        rig.fake.add_call(call(n), started=rig.time.now - 600 + n)
    for n, how in ((4, "surrogate"), (5, "deep"), (6, "nan")):
        rig.fake.spoil(rig.fake.calls[ca(n)], how)

    for _ in range(3):  # the overlap lists them again
        assert await rig.poll() is True
        rig.time.now += 60

    assert rig.value(CALLS) == 4
    assert rig.value(E + "invalid_events_total", source="pull", reason="nested_too_deep") == 1
    assert rig.value(E + "invalid_events_total", source="pull", reason="not_json") == 1
    assert rig.value(E + "invalid_events_total", source="pull") == 2


async def test_a_429_on_the_call_list_is_waited_out_and_the_poll_goes_on(rig: Rig) -> None:
    rig.fake.add_call(call(1), started=rig.time.now - 600)
    rig.fake.fail(429, endpoint=fi.CALL_SUMMARIES, retry_after="7")

    assert await rig.poll() is True

    assert rig.time.waits == [7.0]
    assert rig.value(CALLS) == 1
    assert rig.value(PULL + "api_requests_total", endpoint="call_summaries", code="429") == 1
    assert rig.value(PULL + "api_requests_total", endpoint="call_summaries", code="200") == 1
    assert rig.value(PULL + "polls_total", outcome="success") == 1


async def test_a_call_list_failing_past_its_retries_fails_the_poll_keeps_the_call_watermark_and_spares_the_conferences(rig: Rig) -> None:
    rig.fake.add_call(call(1), started=rig.time.now - 600)
    rig.fake.add_conference(cf(1), rig.time.now - 600)
    rig.fake.fail(500, times=6, endpoint=fi.CALL_SUMMARIES)  # the first try and 5 retries

    assert await rig.poll() is False

    assert rig.value(PULL + "polls_total", outcome="failure") == 1
    assert rig.store.call_watermark() is None
    assert rig.value(CALLS) == 0
    assert rig.value(CONFERENCES) == 1  # the conference list was read all the same
    rig.time.now += 60
    assert await rig.poll() is True
    assert rig.value(CALLS) == 1


async def test_a_conference_list_failing_past_its_retries_spares_the_calls(rig: Rig) -> None:
    rig.fake.add_call(call(1), started=rig.time.now - 600)
    rig.fake.add_conference(cf(1), rig.time.now - 600)
    rig.fake.fail(500, times=6, endpoint=fi.CONFERENCES)

    assert await rig.poll() is False

    assert rig.store.watermark() is None
    assert rig.value(CONFERENCES) == 0
    assert rig.value(CALLS) == 1
    assert rig.store.call_watermark() == rig.time.now - sum(rig.time.waits)


# --- conference summaries ------------------------------------------------------------------


async def test_a_conference_not_final_then_final_is_recorded_once(rig: Rig) -> None:
    sid = rig.fake.add_conference(cf(1), rig.time.now - 600, processing_state="in_progress")

    assert await rig.poll() is True
    assert rig.value(CONFERENCES) == 0
    assert rig.value(E + "events_total", source="pull", type="summary") == 0
    assert sid in rig.store.pending_conferences()

    rig.fake.conferences[sid].update(processing_state="complete", status="completed", end_time=fi.iso(rig.time.now), duration_seconds=600)
    rig.time.now += 60
    assert await rig.poll() is True
    rig.time.now += 60
    assert await rig.poll() is True

    assert rig.value(CONFERENCES) == 1
    assert rig.value(CONFERENCES, mixer_region="us1", status="completed", end_reason="last_participant_left") == 1
    assert rig.value("twilio_conference_duration_seconds_sum") == 600
    assert rig.value(E + "events_total", source="pull", outcome="recorded") == 1
    assert rig.value(E + "events_total", source="pull", outcome="duplicate") == 0
    assert rig.store.pending_conferences() == {}
    # Every time it was listed, read from the list: no request of its own.
    assert rig.fake.requests(fi.CONFERENCE, status=None) == []


async def test_a_timed_out_conference_summary_is_final(rig: Rig) -> None:
    rig.fake.add_conference(cf(1), rig.time.now - 600, processing_state="timeout", status="summary_timeout")

    assert await rig.poll() is True

    assert rig.value(CONFERENCES, status="summary_timeout") == 1
    assert rig.store.pending_conferences() == {}


async def test_a_conference_pushed_by_the_webhook_then_listed_is_counted_once(rig: Rig) -> None:
    event = fixture("conference_summary_complete.json")
    assert event["type"] == CONFERENCE_SUMMARY_COMPLETE
    assert await rig.runtime.pipeline.deliver([event], "webhook") == {"recorded": 1}
    rig.fake.add_conference(event["data"]["conference_sid"], rig.time.now - 600)

    assert await rig.poll() is True

    assert rig.value(CONFERENCES) == 1
    assert rig.value(E + "events_total", source="pull", type="summary") == 0


async def test_a_pending_conference_the_list_no_longer_covers_has_its_summary_read_by_its_own_request(make_rig: RigFactory) -> None:
    rig = await make_rig("--pull.overlap=10m", "--pull.summaries=conference")
    sid = rig.fake.add_conference(cf(1), rig.time.now - 1800, processing_state="in_progress")
    assert await rig.poll() is True

    rig.time.now += 3 * HOUR
    assert await rig.poll() is True  # still in progress: read, not recorded
    rig.fake.conferences[sid].update(processing_state="complete", status="completed")
    rig.time.now += 60
    assert await rig.poll() is True

    assert rig.value(CONFERENCES) == 1
    assert [s.status for s in rig.fake.requests(fi.CONFERENCE, status=None)] == [200, 200]
    assert rig.value(PULL + "api_requests_total", endpoint="conference_summary", code="200") == 2
    assert rig.store.pending_conferences() == {}
    assert rig.fake.requests(fi.PARTICIPANTS, status=None) == []


# --- --pull.summaries ----------------------------------------------------------------------


async def test_participant_only_reads_no_call_list_and_records_no_conference_summary(make_rig: RigFactory) -> None:
    rig = await make_rig("--pull.summaries=participant")
    rig.fake.add_call(call(1), started=rig.time.now - 600)
    rig.fake.add_conference(cf(1), rig.time.now - 600)
    rig.fake.add_participant(cf(1), generate_summary(random.Random(1), participant_sid="CP" + "1" * 32))

    assert await rig.poll() is True

    assert rig.fake.requests(fi.CALL_SUMMARIES, status=None) == []
    assert rig.value(PULL + "api_requests_total", endpoint="call_summaries") == 0
    assert rig.value(CALLS) == 0
    assert rig.value(CONFERENCES) == 0
    assert rig.value(PARTICIPANTS) == 1


async def test_call_only_reads_no_conference_list(make_rig: RigFactory) -> None:
    rig = await make_rig("--pull.summaries=call")
    rig.fake.add_call(call(1), started=rig.time.now - 600)
    rig.fake.add_conference(cf(1), rig.time.now - 600)

    assert await rig.poll() is True

    assert rig.fake.requests(fi.CONFERENCES, status=None) == []
    assert rig.value(CALLS) == 1
    assert rig.value(CONFERENCES) == 0


def test_summaries_are_named_by_flag_or_variable_and_anything_else_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    scrub_environment(monkeypatch)
    assert load_config([]).settings.pull.summaries == ["participant", "call", "conference"]
    assert load_config(["--pull.summaries=conference,participant"]).settings.pull.summaries == ["participant", "conference"]
    monkeypatch.setenv("TWILIO_INSIGHTS_EXPORTER_PULL__SUMMARIES", "call")
    assert load_config([]).settings.pull.summaries == ["call"]
    for wrong in ("calls", "", "participant,voicemail"):
        with pytest.raises(ValueError, match="summaries"):
            load_config([f"--pull.summaries={wrong}"])


def test_a_call_overlap_beyond_the_dedup_window_is_refused_unless_calls_are_not_read(monkeypatch: pytest.MonkeyPatch) -> None:
    scrub_environment(monkeypatch)
    for name, value in CREDENTIALS.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ValueError, match=r"pull\.call_overlap"):
        load_config(["--pull.enabled", "--pull.call-overlap=1d"])
    assert load_config(["--pull.enabled", "--pull.call-overlap=1d", "--pull.summaries=participant,conference"]).settings.pull.call_overlap.days == 1
    assert load_config(["--pull.enabled", "--pull.call-overlap=1d", "--dedup.window=2d"]).settings.pull.call_overlap.days == 1


def test_check_config_shows_the_summaries_read(monkeypatch: pytest.MonkeyPatch) -> None:
    scrub_environment(monkeypatch)
    out = io.StringIO()
    with redirect_stdout(out):
        assert cli.main(["--pull.summaries=call", "--pull.call-overlap=6h", "--check-config"]) == 0

    pull = json.loads(out.getvalue())["settings"]["pull"]
    assert (pull["summaries"], pull["call_overlap"]) == (["call"], "6h")


# --- restarts ------------------------------------------------------------------------------


@pytest.mark.parametrize("summaries", ["participant,call,conference", "call,conference"])
async def test_restart_on_the_same_state_file_keeps_the_watermarks_and_the_pending_conference(
    make_rig: RigFactory, tmp_path: Path, summaries: str
) -> None:
    # Without participants, only the conference's own summary keeps it pending.
    flags = ("--pull.lookback=3h", f"--pull.summaries={summaries}")
    state = tmp_path / "state.db"
    first = await make_rig(*flags, state=state)
    fake, start = first.fake, first.time.now
    fake.ignore_processing_state = True
    fake.add_call(call(1), started=start - 600)
    fake.add_call(call(2), started=start - 300, processing_state="partial")
    # Created before the next poll's conference overlap: only the saved pending row brings it back.
    fake.add_conference(cf(1), start - 2 * HOUR, processing_state="in_progress")
    fake.add_conference(cf(2), start - 600)
    assert await first.poll() is True
    assert (first.value(CALLS), first.value(CONFERENCES)) == (1, 1)
    await first.stop()

    # While the exporter is down (two hours, longer than the conference overlap): call 2 and the
    # long conference complete, a new call happens.
    fake.update_call(ca(2), processing_state="complete")
    fake.conferences[cf(1)].update(processing_state="complete", status="completed")
    fake.add_call(call(3), started=start + 1800)
    first.time.now = start + 2 * HOUR

    second = await make_rig(*flags, state=state)
    assert await second.poll() is True

    # What the first exporter recorded, restored from the state file, and exactly what it had not.
    assert second.value(CALLS) == 1 + 2
    assert second.value(CONFERENCES) == 1 + 1
    assert second.value(PDD) == pytest.approx(3 * PDD_SECONDS, rel=1e-9)
    assert second.value(E + "events_total", source="pull", outcome="recorded") == 3  # calls 2 and 3, conference 1
    assert second.value(E + "events_total", source="pull", outcome="duplicate") == 0
    # The call list went on from the saved call watermark minus the call overlap, not the lookback.
    assert fake.requests(fi.CALL_SUMMARIES)[-1].query["StartTime"] == fi.iso(start - 5 * HOUR)
    # The pending conference, out of the list, read by its own request; conference 2 not read again.
    assert [s.path for s in fake.requests(fi.CONFERENCE)] == [f"/v1/Conferences/{cf(1)}"]
    assert second.store.pending_conferences() == {}

    # A third poll, once more within every overlap: nothing new.
    second.time.now += 60
    assert await second.poll() is True
    assert (second.value(CALLS), second.value(CONFERENCES)) == (3, 2)
    assert second.value(E + "events_total", source="pull", outcome="recorded") == 3
    assert second.value(E + "events_total", source="pull", outcome="duplicate") == 0
