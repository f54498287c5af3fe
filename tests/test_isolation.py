"""One event's bytes cost only that event: a bad string or a deep nesting never loses its neighbours.

Each delivery here is signed and holds, beside valid summaries of one subject, events whose JSON
the one-call parser refuses: a lone surrogate escape (read tolerantly, as U+FFFD, and recorded), a
nesting 10,000 deep (``nested_too_deep``) and a NaN (``not_json``). The webhook answers 200 and
records every other summary; the Kinesis and REST doors' versions are in tests/test_kinesis.py and
tests/test_pull_summaries.py.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from typing import Any

import pytest
from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse_openmetrics
from prometheus_client.parser import text_string_to_metric_families as parse_text

from exporter import parse
from exporter.synthetic import call_event, cloud_event, conference_event, generate_call_summary, generate_conference_summary, generate_summary
from tests.conftest import Harness

E = "twilio_insights_exporter_"
# subject -> (its summaries counter, a generator of valid summaries, their envelope, a string field the surrogate goes into)
SUBJECTS: dict[str, tuple[str, Callable[[random.Random], dict[str, Any]], Callable[[dict[str, Any]], dict[str, Any]], str]] = {
    "participant": ("twilio_conference_participant_summaries_total", generate_summary, cloud_event, "label"),
    "call": ("twilio_call_summaries_total", generate_call_summary, call_event, "account_sid"),
    "conference": ("twilio_conference_summaries_total", generate_conference_summary, conference_event, "account_sid"),
}
DEEP = b"[" * 10_000 + b"]" * 10_000


def encoded(event: dict[str, Any]) -> bytes:
    return json.dumps(event, separators=(",", ":")).encode()


def with_raw_data(event: dict[str, Any], data: bytes) -> bytes:
    """``event`` with its ``data`` replaced by raw JSON text (which json.dumps could not write)."""
    return encoded({**event, "data": "@DATA@"}).replace(b'"@DATA@"', data)


def surrogate_in(event: dict[str, Any], field: str) -> bytes:
    """``event`` with a lone surrogate escape appended to ``data[field]`` (a truncated emoji)."""
    value = event["data"][field]
    return encoded(event).replace(json.dumps(value).encode(), json.dumps(value)[:-1].encode() + b'\\ud83d"', 1)


async def post_raw(harness: Harness, members: list[bytes]) -> Any:
    response = await harness.post(b"[" + b",".join(members) + b"]")
    assert response.status == 200
    return await response.json()


@pytest.mark.parametrize("subject", list(SUBJECTS))
async def test_a_batch_with_a_lone_surrogate_a_deep_nesting_and_a_nan_records_every_other_summary(harness: Harness, subject: str) -> None:
    counter, generate, envelope, field = SUBJECTS[subject]
    rng = random.Random(29)
    valid = [envelope(generate(rng)) for _ in range(20)]
    surrogate = surrogate_in(envelope(generate(rng)), field)
    deep = with_raw_data(envelope(generate(rng)), b'{"x": ' + DEEP + b"}")
    nan = with_raw_data(envelope(generate(rng)), b'{"x": NaN}')

    outcomes = await post_raw(harness, [*map(encoded, valid[:10]), surrogate, deep, *map(encoded, valid[10:]), nan])

    assert outcomes == {"recorded": 21, "invalid": 2}
    assert harness.value(counter) == 21
    assert harness.value(E + "invalid_events_total", reason="nested_too_deep") == 1
    assert harness.value(E + "invalid_events_total", reason="not_json") == 1
    assert harness.value(E + "invalid_events_total") == 2
    assert harness.value(E + "webhook_rejections_total") == 0
    # The same delivery again: every summary a duplicate, the two invalid again, nothing counted twice.
    again = await post_raw(harness, [*map(encoded, valid), surrogate, deep, nan])
    assert again == {"duplicate": 21, "invalid": 2}
    assert harness.value(counter) == 21


async def test_a_lone_surrogate_in_a_label_is_recorded_as_the_replacement_character_and_metrics_still_parse(harness: Harness) -> None:
    event = cloud_event(generate_summary(random.Random(1), label="agent"))

    outcomes = await post_raw(harness, [encoded(event).replace(b'"label":"agent"', b'"label":"agent\\ud83d"')])

    assert outcomes == {"recorded": 1}
    assert harness.value("twilio_conference_participant_summaries_total", participant_label="agent\ufffd") == 1
    text = await (await harness.metrics.get("/metrics")).text()
    om = await (await harness.metrics.get("/metrics", headers={"Accept": "application/openmetrics-text; version=1.0.0"})).text()
    assert 'participant_label="agent\ufffd"' in text
    list(parse_text(text))
    list(parse_openmetrics(om))


def test_a_record_whose_bytes_are_not_utf8_is_read_with_replacement_characters() -> None:
    # The webhook refuses such a body at its signature (the SDK hashes UTF-8 text): Kinesis records
    # are the road where they can arrive.
    event = parse.event(b'{"id": "EZ1", "type": "com.twilio.x", "source": "ag\xffent", "data": {"label": "\xed\xa0\x80"}}')

    assert (event.source, event.data) == ("ag\ufffdent", {"label": "\ufffd\ufffd\ufffd"})


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b'[{"id": "EZ1", "type": "x"}, {"id": ', "invalid_json"),  # cut off
        (b'[{"id": "EZ1", "type": "x"},, {"id": "EZ2"}]', "invalid_json"),
        (b'[{"id": "EZ1", "type": "x"}] trailing', "invalid_json"),
        (b'[{"id": "EZ1", "type": "x"}, "\\ud800"]', "not_cloudevents"),  # an element that is not an object
        (b"[" * 5000 + b"]" * 5000, "not_cloudevents"),
    ],
)
async def test_a_body_that_is_not_an_array_of_objects_even_member_by_member_is_still_refused_with_400(
    harness: Harness, body: bytes, reason: str
) -> None:
    response = await harness.post(body)

    assert response.status == 400
    assert harness.value(E + "webhook_rejections_total", reason=reason) == 1
    assert harness.value(E + "events_total") == 0
