"""The REST listers of Call Summaries and Conference Summaries against the fake Voice Insights API."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp.test_utils import TestServer
from prometheus_client import CollectorRegistry

from exporter.config import load_config
from exporter.doors.pull.api import ApiError, InsightsApi
from exporter.metrics import build_pull_metrics
from exporter.models import CallSummary, ConferenceSummary
from tests import fake_insights as fi
from tests.conftest import fixture, sample_sum
from tests.helpers import FakeClock, scrub_environment

NOW = 1_800_000_000.0
HOUR = 3600.0
REQUESTS = "twilio_insights_exporter_pull_api_requests_total"


def ca(n: int) -> str:
    return f"CA{n:032d}"


def call(n: int, **overrides: Any) -> dict[str, Any]:
    """The facts file's realistic call summary (REST shape: no envelope), as call number ``n``."""
    summary: dict[str, Any] = fixture("call_summary_complete.json")["data"]
    for key in ("parent_call_sid", "parent_account_sid", "processing_version"):  # event-only fields
        summary.pop(key)
    return {**summary, "call_sid": ca(n), "account_sid": fi.ACCOUNT_SID, **overrides}


class Api:
    def __init__(self, api: InsightsApi, registry: CollectorRegistry, clock: FakeClock) -> None:
        self.api, self.registry, self.clock = api, registry, clock

    async def all_calls(self, start_after: float, start_before: float | None = None, **kwargs: Any) -> list[list[dict[str, Any]]]:
        return [page async for page in self.api.call_summaries(start_after, start_before, **kwargs)]

    def requests(self, **labels: str) -> float:
        return sample_sum(self.registry, REQUESTS, **labels)


@pytest.fixture
async def fake() -> fi.FakeInsights:
    return fi.FakeInsights(clock=lambda: NOW)


@pytest.fixture
async def server(aiohttp_server: Any, fake: fi.FakeInsights) -> TestServer:
    return await aiohttp_server(fake.app())


@pytest.fixture
async def api(server: TestServer, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Api]:
    scrub_environment(monkeypatch)
    settings = load_config([f"--pull.api-url=http://127.0.0.1:{server.port}", "--pull.page-size=2", "--pull.retries=2"]).settings.pull
    registry = CollectorRegistry()
    clock = FakeClock(NOW)
    insights = InsightsApi(settings, (fi.ACCOUNT_SID, fi.AUTH_TOKEN), build_pull_metrics(registry), sleep=clock.sleep, clock=clock)
    await insights.open()
    yield Api(insights, registry, clock)
    await insights.close()


async def test_completed_calls_are_listed_page_by_page_and_a_partial_one_is_not(api: Api, fake: fi.FakeInsights) -> None:
    for n in range(5):
        fake.add_call(call(n), started=NOW - HOUR + n * 60)
    fake.add_call(call(9), started=NOW - HOUR, processing_state="partial")

    pages = await api.all_calls(NOW - 2 * HOUR)

    assert [len(page) for page in pages] == [2, 2, 1]
    assert sorted(item["call_sid"] for page in pages for item in page) == [ca(n) for n in range(5)]
    assert all(CallSummary.model_validate(item).processing_state == "complete" for page in pages for item in page)
    seen = fake.requests(fi.CALL_SUMMARIES)
    assert len(seen) == 3
    first = seen[0].query
    assert first == {"ProcessingState": "completed", "StartTime": "2027-01-15T06:00:00Z", "SortBy": "start_time", "PageSize": "2"}
    # The next pages follow next_page_url: the same filters, and the API's page token.
    assert [s.query.get("PageToken") for s in seen] == [None, "PT2", "PT4"]
    assert all(s.query["ProcessingState"] == "completed" and s.query["StartTime"] == first["StartTime"] for s in seen)
    assert api.requests(endpoint="call_summaries", code="200") == 3


async def test_a_call_listed_partial_is_listed_once_it_is_complete(api: Api, fake: fi.FakeInsights) -> None:
    sid = fake.add_call(call(1), started=NOW - HOUR, processing_state="partial")

    before = await api.all_calls(NOW - 2 * HOUR)
    fake.update_call(sid, processing_state="complete")
    after = await api.all_calls(NOW - 2 * HOUR)

    assert before == [[]]
    assert [item["call_sid"] for page in after for item in page] == [sid]


async def test_the_window_is_on_the_call_start_and_the_filters_are_sent_as_the_api_names_them(api: Api, fake: fi.FakeInsights) -> None:
    fake.add_call(call(1), started=NOW - 3 * HOUR)  # before the window
    fake.add_call(call(2), started=NOW - 90 * 60)
    fake.add_call(call(3), started=NOW - 10 * 60)  # after it
    inbound = call(4, call_type="sip")
    inbound["properties"] = {**inbound["properties"], "direction": "inbound"}
    fake.add_call(inbound, started=NOW - 80 * 60)
    fake.add_call(call(5, account_sid="AC" + "5" * 32), started=NOW - 70 * 60)  # another subaccount's

    window = await api.all_calls(NOW - 2 * HOUR, NOW - HOUR)
    filtered = await api.all_calls(
        NOW - 2 * HOUR,
        NOW - HOUR,
        subaccount=fi.ACCOUNT_SID,
        call_types=("carrier", "trunking"),
        directions=("outbound_api",),
        filters={"HasTag": "false"},
    )

    assert sorted(item["call_sid"] for page in window for item in page) == [ca(2), ca(4), ca(5)]
    assert [item["call_sid"] for page in filtered for item in page] == [ca(2)]
    query = fake.requests(fi.CALL_SUMMARIES)[-1].query
    assert query["EndTime"] == "2027-01-15T07:00:00Z"
    assert (query["Subaccount"], query["CallType"], query["Direction"], query["HasTag"]) == (
        fi.ACCOUNT_SID,
        "carrier,trunking",
        "outbound_api",
        "false",
    )


async def test_a_429_is_waited_out_as_its_retry_after_asks_and_the_listing_goes_on(api: Api, fake: fi.FakeInsights) -> None:
    fake.add_call(call(1), started=NOW - HOUR)
    fake.fail(429, endpoint=fi.CALL_SUMMARIES, retry_after="7")

    pages = await api.all_calls(NOW - 2 * HOUR)

    assert [item["call_sid"] for page in pages for item in page] == [ca(1)]
    assert api.clock.waits == [7.0]
    assert api.requests(endpoint="call_summaries", code="429") == 1
    assert api.requests(endpoint="call_summaries", code="200") == 1


async def test_a_conference_summary_is_read_from_the_conference_resource(api: Api, fake: fi.FakeInsights) -> None:
    conference = fixture("conference_summary_complete.json")["data"]
    for key in ("conference_sid", "create_time", "start_time", "end_time"):  # the fake's own, an hour ago
        conference.pop(key)
    sid = fake.add_conference("CF" + "0" * 31 + "3", NOW - HOUR, **conference)

    body = await api.api.conference_summary(sid)
    listed = [item async for page in api.api.conferences(NOW - 2 * HOUR) for item in page]

    summary = ConferenceSummary.model_validate(body)
    assert summary.final() and summary.max_concurrent_participants == 3 and summary.issue_counts()[0] == ("call_quality", 3)
    # The conferences the poller already lists are the same resource: each item is a summary.
    assert [ConferenceSummary.model_validate(item) for item in listed] == [summary]
    assert api.requests(endpoint="conference_summary", code="200") == 1


async def test_an_unknown_conference_is_an_error_at_once_without_retries(api: Api) -> None:
    with pytest.raises(ApiError) as raised:
        await api.api.conference_summary("CF" + "9" * 32)

    assert (raised.value.endpoint, raised.value.code) == ("conference_summary", "404")
    assert api.clock.waits == []
