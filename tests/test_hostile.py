"""Hostile input is normal input: the findings of issue 9, each as the behaviour it now has.

Every delivery here is validly signed: these are what an attacker with the auth token, or a
broken producer, could send. None may answer 5xx, corrupt a metric, or break ``/metrics``.
"""

from __future__ import annotations

import json
import math
import random
from typing import Any

import pytest
from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse_openmetrics
from prometheus_client.parser import text_string_to_metric_families as parse_text

from exporter.record.recorder import MAX_DETAILS
from exporter.subjects import PARTICIPANT
from exporter.synthetic import call_event, cloud_event, conference_event, generate_call_summary, generate_conference_summary, generate_summary
from tests.conftest import Harness, HarnessFactory, fixture, snapshot

P = "twilio_conference_participant_"
E = "twilio_insights_exporter_"
OPENMETRICS = "application/openmetrics-text; version=1.0.0"


def summary(**changes: Any) -> dict[str, Any]:
    data = fixture("reference_event.json")["data"]
    data.update(changes)
    return data


def with_inbound(**changes: Any) -> dict[str, Any]:
    data = summary()
    data["metrics"]["inbound"].update(changes)
    return data


async def scrape_both(harness: Harness) -> tuple[str, str]:
    """Both exposition formats, each parsed by prometheus_client's own parser."""
    text_response = await harness.metrics.get("/metrics")
    om_response = await harness.metrics.get("/metrics", headers={"Accept": OPENMETRICS})
    assert text_response.status == 200 and om_response.status == 200
    text, om = await text_response.text(), await om_response.text()
    list(parse_text(text))
    list(parse_openmetrics(om))
    return text, om


# --- 1. one event broke /metrics until restart -------------------------------------------------


async def test_lone_surrogate_in_a_data_string_is_recorded_as_the_replacement_character_and_metrics_still_parse(harness: Harness) -> None:
    data = json.dumps(summary()).replace('"label": "advisor"', '"label": "\\ud800"')
    assert "\\ud800" in data

    response = await harness.post([{**cloud_event(summary()), "data": data}])

    assert response.status == 200
    assert await response.json() == {"recorded": 1}
    assert harness.value(P + "summaries_total", participant_label="\ufffd") == 1
    await scrape_both(harness)


async def test_control_characters_and_odd_unicode_in_labels_reach_the_registry_cleaned(harness: Harness) -> None:
    response = await harness.post([cloud_event(summary(label="ag\x00ent\n\x1b[31m", country_code="\u202eSU"))])

    assert await response.json() == {"recorded": 1}
    assert harness.value(P + "summaries_total", participant_label="agent[31m", country_code="SU") == 1
    text, _ = await scrape_both(harness)
    assert "\x00" not in text and "\x1b" not in text


async def test_a_label_value_longer_than_64_characters_is_recorded_as_its_first_64(harness: Harness) -> None:
    long_label, exact = "a" * 63 + "bc" + "d" * 500, "e" * 64

    response = await harness.post([cloud_event(summary(label=long_label)), cloud_event(summary(label=exact, participant_sid="CP" + "1" * 32))])

    assert await response.json() == {"recorded": 2}
    assert harness.value(P + "summaries_total", participant_label="a" * 63 + "b") == 1
    assert harness.value(P + "summaries_total", participant_label=exact) == 1
    assert harness.value(P + "summaries_total") == 2


# --- 2. a delivery that can never succeed was retried for 4 hours --------------------------------


async def test_deeply_nested_data_string_is_an_invalid_event_not_a_5xx(harness: Harness) -> None:
    deep = "[" * 2000 + "]" * 2000
    response = await harness.post([{**cloud_event(summary()), "data": deep}])

    assert response.status == 200
    assert harness.value(E + "invalid_events_total", reason="data_not_json") == 1


async def test_deeply_nested_body_is_refused_with_400(harness: Harness) -> None:
    response = await harness.post(b"[" * 5000 + b"]" * 5000)

    assert response.status == 400
    assert harness.value(E + "webhook_rejections_total", reason="not_cloudevents") == 1


# --- 3. a 500 counted the summary again on every retry -------------------------------------------


async def test_huge_integer_count_is_invalid_and_three_deliveries_count_nothing(harness: Harness) -> None:
    event = cloud_event(with_inbound(total_packets_received=10**300))
    for _ in range(3):
        response = await harness.post([event])
        assert response.status == 200
        assert await response.json() == {"invalid": 1}

    assert harness.value(P + "summaries_total") == 0
    assert harness.value(P + "mos_count") == 0
    assert harness.value(E + "webhook_requests_total", code="500") == 0


# --- 4. nonsense numbers were recorded ------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("mos", True),
        ("mos", "4.2"),
        ("mos", 5.01),
        ("packet_loss_percentage", False),
        ("packet_loss_percentage", 100.5),
        ("total_packets_received", 10**30),
        ("total_packets_received", 1.5),
        ("total_packets_lost", -1),
        ("latency", {"avg": 1e308}),
        ("jitter", {"max": 60_000.5}),
    ],
)
async def test_a_number_that_is_not_a_number_or_outside_its_physical_range_makes_the_summary_invalid(
    harness: Harness, field: str, value: Any
) -> None:
    response = await harness.post([cloud_event(with_inbound(**{field: value}))])

    assert await response.json() == {"invalid": 1}
    assert harness.value(E + "invalid_events_total", reason="bad_field") == 1
    assert snapshot(harness.registry) == {}


@pytest.mark.parametrize(("field", "value"), [("duration_seconds", 10**12), ("quality_issues", True), ("outbound_time_in_queue", -0.5)])
async def test_top_level_numbers_are_strict_too(harness: Harness, field: str, value: Any) -> None:
    response = await harness.post([cloud_event(summary(**{field: value}))])

    assert await response.json() == {"invalid": 1}


async def test_negative_zero_is_recorded_as_zero(harness: Harness) -> None:
    response = await harness.post([cloud_event(with_inbound(packet_loss_percentage=-0.0))])

    assert await response.json() == {"recorded": 1}
    text, _ = await scrape_both(harness)
    sums = [line for line in text.splitlines() if line.startswith(P + "packet_loss_ratio_sum") and 'stream="inbound"' in line]
    assert sums and all(line.endswith(" 0.0") for line in sums), sums


async def test_an_integral_float_count_is_accepted_as_its_integer(harness: Harness) -> None:
    response = await harness.post([cloud_event(with_inbound(total_packets_received=1200.0))])

    assert await response.json() == {"recorded": 1}
    assert harness.value(P + "packets_received_total", stream="inbound") == 1200


# --- 5. summaries lost over fields we never export ------------------------------------------------


@pytest.mark.parametrize(
    "changes",
    [
        {"join_time": "yesterday-ish"},
        {"leave_time": 12},
        {"is_moderator": "maybe"},
        {"coached_participants": {"not": "a list"}},
        {"whisper": ["x"]},
        {"properties": {"enter_muted": "sometimes", "requested_region": 7}},
        {"properties": "not an object"},
        {"from": {"weird": True}, "to": [1, 2]},
        {"outbound_queue_length": -3},
        {"agent_audio": "loud"},
        {"url": 42},
        {"events": {"mute": ["not a timestamp", None]}},
        {"events": "not an object"},
    ],
)
async def test_a_malformed_field_nothing_is_recorded_from_never_costs_the_summary(harness: Harness, changes: dict[str, Any]) -> None:
    response = await harness.post([cloud_event(summary(**changes))])

    assert await response.json() == {"recorded": 1}
    assert harness.value(P + "summaries_total") == 1


async def test_occurrence_details_are_counted_not_validated(harness: Harness) -> None:
    response = await harness.post([cloud_event(with_inbound(occurrences={"jitter": [{"avg": "bad", "timestamp": "never"}, None]}))])

    assert await response.json() == {"recorded": 1}
    assert harness.value(P + "degradations_total", stream="inbound", metric="jitter") == 2


# --- 8. label caps multiplied into 10^8 possible label sets ---------------------------------------


async def test_past_the_label_set_budget_new_combinations_fold_into_one_overflow_set(make_harness: HarnessFactory) -> None:
    harness = await make_harness("--labels.max-label-sets=2")
    rng = random.Random(3)
    countries = ["US", "GB", "DE", "FR"]
    for i, country in enumerate(countries):
        data = generate_summary(rng, country_code=country, call_type="carrier", participant_region="us1", conference_region="us1", label="agent")
        data["call_direction"] = "inbound"
        response = await harness.post([cloud_event(data, event_id=f"EZ{i}")])
        assert await response.json() == {"recorded": 1}

    assert harness.value(P + "summaries_total") == 4
    assert harness.value(P + "summaries_total", country_code="US") == 1
    assert harness.value(P + "summaries_total", country_code="GB") == 1
    overflow = dict.fromkeys(("call_type", "call_direction", "participant_region", "conference_region", "country_code", "participant_label"), "other")
    assert harness.value(P + "summaries_total", **overflow) == 2
    assert harness.value(E + "label_overflow_total", subject="participant", label="label_set") == 2
    # The series stay bounded: three label sets, whatever arrives.
    sets = {tuple(labels for name, labels in key[1] if name in overflow) for key in snapshot(harness.registry)}
    assert len(sets) == 3


async def test_the_worst_case_series_count_follows_from_the_budget(make_harness: HarnessFactory) -> None:
    harness = await make_harness()
    policy = harness.runtime.subjects[PARTICIPANT].recorder.labels

    # 5,000 since the TaskRouter join labels (issue 23): 50 queues x 20 teams stay inside.
    assert policy.worst_case_label_sets() == 5000 + 1


# --- an exposition no input can break --------------------------------------------------------------


async def test_every_accepted_oddity_at_once_still_gives_a_parseable_exposition(harness: Harness) -> None:
    odd = summary(
        label='a"b\\c\n',
        country_code="\u0000",
        call_type="\ufeffcarrier",
        participant_region="x" * 500,
        call_sid="CA" + "\u00e9" * 40,
        conference_sid='CF"}',
    )
    odd["metrics"]["inbound"]["tags"] = ["\n", "", " ", "t\u2028ag"]
    response = await harness.post([cloud_event(odd)])

    assert await response.json() == {"recorded": 1}
    await scrape_both(harness)
    assert not math.isnan(harness.value(P + "mos_sum"))


# --- a summary's tags are a set, bounded -----------------------------------------------------


@pytest.mark.parametrize(
    ("subject", "counter"),
    [("participant", P + "tags_total"), ("call", "twilio_call_tags_total"), ("conference", "twilio_conference_tags_total")],
)
async def test_a_summary_with_200000_tags_adds_at_most_the_bound_to_its_tag_counter(harness: Harness, subject: str, counter: str) -> None:
    rng = random.Random(29)
    tags = ["silence"] * 3 + [f"t{i}" for i in range(200_000)]
    if subject == "participant":
        data = generate_summary(rng)
        data["metrics"]["inbound"]["tags"] = tags
        data["metrics"]["outbound"]["tags"] = ["silence", "silence"]
        event = cloud_event(data)
    elif subject == "call":
        event = call_event(generate_call_summary(rng, tags=tags))
    else:
        event = conference_event(generate_conference_summary(rng, tags=tags))

    response = await harness.post([event])

    assert await response.json() == {"recorded": 1}
    # silence, then t0..t14 (16 distinct in all, each once), then every other one once as `other`.
    assert harness.value(counter) == MAX_DETAILS + 1 + (1 if subject == "participant" else 0)
    assert harness.value(counter, tag="silence") == (2 if subject == "participant" else 1)
    assert harness.value(counter, tag="t14") == 1
    assert harness.value(counter, tag="t15") == 0
    assert harness.value(counter, tag="other") == 1
