"""Recording is all or nothing: a failure at any step of it leaves no trace, and the retry counts once.

The failure is forced at every step a summary's recording takes (creating a series, observing a
histogram, incrementing a counter), one step per run; after the 5xx and Twilio's retry, every
participant sample must equal what one clean delivery gives, value for value.
"""

from __future__ import annotations

from typing import Any

import pytest

from exporter.synthetic import cloud_event
from tests.conftest import Harness, HarnessFactory, fixture, snapshot
from tests.recording import failing_at

P = "twilio_conference_participant_"
E = "twilio_insights_exporter_"


def delivery(prefix: str = "") -> list[dict[str, Any]]:
    first = fixture("reference_event.json")
    second = cloud_event(fixture("rest_participant.json"), event_id="EZsecond")
    for event in (first, second):
        event["id"] = prefix + event["id"]
        event["data"]["participant_sid"] = prefix + event["data"]["participant_sid"]
    return [first, second]


async def warm(make_harness: HarnessFactory) -> Harness:
    """An exporter whose series already exist (the same label sets, other participants): a
    failure must then put values back, not merely drop new series."""
    harness = await make_harness()
    assert await (await harness.post(delivery("warm"))).json() == {"recorded": 2}
    return harness


async def clean_snapshot(make_harness: HarnessFactory) -> dict[Any, float]:
    harness = await warm(make_harness)
    assert await (await harness.post(delivery())).json() == {"recorded": 2}
    return snapshot(harness.registry)


async def count_steps(make_harness: HarnessFactory, monkeypatch: pytest.MonkeyPatch) -> int:
    harness = await warm(make_harness)
    with failing_at(0, monkeypatch) as taken:
        await harness.post(delivery())
    return taken[0]


async def test_a_failure_at_any_step_of_recording_leaves_nothing_and_the_retry_counts_once(
    make_harness: HarnessFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    expected = await clean_snapshot(make_harness)
    steps = await count_steps(make_harness, monkeypatch)
    assert steps > 30  # two summaries, every stream and stat: the loop below covers them all

    for step in range(1, steps + 1):
        harness: Harness = await warm(make_harness)
        with failing_at(step, monkeypatch):
            failed = await harness.post(delivery())
        assert failed.status == 500, step

        retried = await harness.post(delivery())

        assert retried.status == 200, step
        assert sum((await retried.json()).values()) == 2
        assert snapshot(harness.registry) == expected, f"step {step}"
        assert harness.value(P + "summaries_total") == 4
        assert harness.value(E + "webhook_requests_total", code="500") == 1
        await harness.client.close()
        await harness.metrics.close()


async def test_a_failed_summary_does_not_keep_the_label_values_it_would_have_admitted(
    make_harness: HarnessFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    harness = await make_harness("--labels.limits", '{"participant_label": {"max_values": 1}}')
    agent = fixture("reference_event.json")
    agent["data"]["label"] = "agent"
    with failing_at(3, monkeypatch):
        assert (await harness.post([agent])).status == 500
    customer = cloud_event({**agent["data"], "participant_sid": "CP2", "label": "customer"}, event_id="EZ2")

    assert await (await harness.post([customer])).json() == {"recorded": 1}

    # "agent" never took the one place: the customer, recorded first, has it.
    assert harness.value(P + "summaries_total", participant_label="customer") == 1
    assert harness.value(E + "label_overflow_total") == 0  # no label overflowed (no child was made)
