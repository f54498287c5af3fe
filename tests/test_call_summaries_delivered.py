"""Call and Conference Summaries through the webhook (the real app): recorded once, from their final summary."""

from __future__ import annotations

import copy
import itertools
import random
from pathlib import Path
from typing import Any

import pytest

from exporter.models import CONFERENCE_SUMMARY_COMPLETE
from exporter.synthetic import cloud_event, generate_summary
from tests.conftest import Harness, HarnessFactory, fixture

C = "twilio_call_"
CF = "twilio_conference_"
E = "twilio_insights_exporter_"


def call_events() -> dict[str, dict[str, Any]]:
    return {
        "partial": fixture("call_summary_partial.json"),
        "predicted": fixture("call_summary_predicted_complete.json"),
        "complete": fixture("call_summary_complete.json"),
    }


async def deliver(harness: Harness, *events: dict[str, Any]) -> dict[str, int]:
    response = await harness.post(list(events))
    assert response.status == 200, await response.text()
    answer: dict[str, int] = await response.json()
    return answer


async def test_the_realistic_complete_call_summary_gives_the_issues_exact_values(harness: Harness) -> None:
    assert await deliver(harness, fixture("call_summary_complete.json")) == {"recorded": 1}

    assert harness.value(C + "summaries_total") == 1
    assert harness.value(C + "summaries_total", call_type="carrier", direction="outbound_api", country_code="US", carrier="T-Mobile USA, Inc.") == 1
    assert harness.value(C + "mos_sum", edge="sdk_edge", stat="avg") == pytest.approx(4.43, rel=1e-9)
    assert harness.value(C + "jitter_seconds_sum", edge="carrier_edge", stream="outbound", stat="max") == pytest.approx(0.00440106, rel=1e-9)
    assert harness.value(C + "packet_loss_ratio_sum", edge="sdk_edge", stream="inbound") == pytest.approx(0.00010012015, rel=1e-9)
    assert harness.value(C + "rtt_seconds_sum", edge="sdk_edge", stat="avg") == pytest.approx(0.0858, rel=1e-9)
    assert harness.value(C + "post_dial_delay_seconds_sum") == pytest.approx(2.917, rel=1e-9)
    assert harness.value(E + "events_total", source="webhook", type="summary", outcome="recorded") == 1


@pytest.mark.parametrize("order", list(itertools.permutations(["partial", "predicted", "complete"])))
async def test_partial_predicted_and_complete_in_any_order_with_redeliveries_count_the_call_once(harness: Harness, order: tuple[str, ...]) -> None:
    events = call_events()
    for name in order:
        await deliver(harness, events[name])
    # Twilio redelivers whatever it pleases, in one batch or apart.
    assert await deliver(harness, events["complete"], events["partial"]) == {"duplicate": 1, "not_final": 1}

    assert harness.value(C + "summaries_total") == 1
    assert harness.value(E + "events_total", type="summary", outcome="not_final") == 3
    assert harness.value(E + "events_total", type="summary", outcome="duplicate") == 1
    assert harness.value(C + "post_dial_delay_seconds_sum") == pytest.approx(2.917, rel=1e-9)


async def test_a_call_summary_with_a_non_numeric_mos_is_a_counted_invalid_event_in_a_200(harness: Harness) -> None:
    broken = copy.deepcopy(fixture("call_summary_complete.json"))
    broken["data"]["sdk_edge"]["metrics"]["inbound"]["mos"]["avg"] = "4.4"

    assert await deliver(harness, broken, fixture("conference_summary_complete.json")) == {"invalid": 1, "recorded": 1}
    assert harness.value(C + "summaries_total") == 0
    assert harness.value(E + "invalid_events_total", source="webhook", reason="bad_field") == 1


async def test_a_conference_summary_is_recorded_once_and_only_when_its_processing_state_is_final(harness: Harness) -> None:
    final = fixture("conference_summary_complete.json")
    assert final["type"] == CONFERENCE_SUMMARY_COMPLETE
    still_open = copy.deepcopy(final)
    still_open["data"]["processing_state"] = "in_progress"

    assert await deliver(harness, still_open) == {"not_final": 1}
    assert harness.value(CF + "summaries_total") == 0
    assert harness.value(E + "events_total", source="webhook", type="summary", outcome="not_final") == 1
    assert await deliver(harness, final, final) == {"recorded": 1, "duplicate": 1}
    assert harness.value(CF + "summaries_total") == 1
    # A participant's summary of the same conference is another subject: recorded in its own families.
    assert harness.value("twilio_conference_participant_summaries_total") == 0


async def test_a_restart_on_the_state_file_keeps_the_call_and_conference_counts_and_their_dedup(make_harness: HarnessFactory, tmp_path: Path) -> None:
    state = f"--state.path={tmp_path / 'state.db'}"
    first = await make_harness(state)
    assert await deliver(first, fixture("call_summary_complete.json"), fixture("conference_summary_complete.json")) == {"recorded": 2}
    await first.client.close()  # the webhook application's cleanup closes (flushes) the state

    second = await make_harness(state)
    assert second.value(C + "summaries_total") == 1
    assert second.value(CF + "summaries_total") == 1
    assert second.value(C + "post_dial_delay_seconds_sum") == pytest.approx(2.917, rel=1e-9)
    assert await deliver(second, fixture("call_summary_complete.json"), fixture("conference_summary_complete.json")) == {"duplicate": 2}
    assert second.value(C + "summaries_total") == 1


async def test_the_last_recorded_time_is_per_subject_and_a_subject_never_recorded_has_no_series(make_harness: HarnessFactory) -> None:
    clock = [1_800_000_000.0]
    harness = await make_harness()
    harness.runtime.pipeline._clock = lambda: clock[0]
    assert await deliver(harness, fixture("call_summary_complete.json")) == {"recorded": 1}
    clock[0] += 60
    assert await deliver(harness, fixture("conference_summary_complete.json"), fixture("call_summary_partial.json")) == {
        "recorded": 1,
        "not_final": 1,
    }

    last = E + "last_recorded_timestamp_seconds"
    assert harness.registry.get_sample_value(last, {"subject": "call"}) == 1_800_000_000.0
    assert harness.registry.get_sample_value(last, {"subject": "conference"}) == 1_800_000_060.0
    # No participant summary came: no child, so the no-summaries alert never watches that subject.
    assert harness.registry.get_sample_value(last, {"subject": "participant"}) is None


async def test_label_overflows_are_counted_by_subject_and_a_label_name_of_two_subjects_does_not_add_up(make_harness: HarnessFactory) -> None:
    harness = await make_harness("--labels.limits", '{"call_type": {"max_values": 1}}')
    participants = [cloud_event(generate_summary(random.Random(i), call_type=kind), event_id=f"EZp{i}") for i, kind in enumerate(["sip", "carrier"])]
    odd_call = copy.deepcopy(fixture("call_summary_complete.json"))
    odd_call["data"]["call_type"] = "pigeon"  # not in the call allowlist: 'other' at once

    assert await deliver(harness, *participants, odd_call) == {"recorded": 3}
    overflow = E + "label_overflow_total"
    assert harness.value(overflow, subject="participant", label="call_type") == 1
    assert harness.value(overflow, subject="call", label="call_type") == 1
    assert harness.value(overflow, subject="conference", label="call_type") == 0
