"""One entry, one parser, summary subjects: what the pipeline makes of each raw item, whichever door it came through."""

from __future__ import annotations

import dataclasses
import json
import logging
import random
from collections.abc import AsyncIterator
from typing import Any

import pytest
from prometheus_client import CollectorRegistry
from pydantic import ValidationError

from exporter.config import load_config
from exporter.metrics import Source
from exporter.models import CONFERENCE_SUMMARY_COMPLETE, CONFERENCE_SUMMARY_PARTIAL, SUMMARY_TYPES
from exporter.pipeline import Pipeline
from exporter.runtime import Runtime, build_subjects
from exporter.subjects import CALL, CONFERENCE, PARTICIPANT, Subjects
from exporter.synthetic import cloud_event, generate_summary
from tests.conftest import fixture, sample_sum
from tests.helpers import FakeClock

P = "twilio_conference_participant_"
E = "twilio_insights_exporter_"
PARTIAL = "com.twilio.voice.insights.conference-participant-summary.partial"


@pytest.fixture
async def runtime() -> AsyncIterator[Runtime]:
    runtime = Runtime.build(load_config([]), CollectorRegistry())
    await runtime.durable.open()
    yield runtime
    await runtime.durable.close()


def events(runtime: Runtime, **labels: str) -> float:
    return sample_sum(runtime.registry, E + "events_total", **labels)


def summary(n: int) -> dict[str, Any]:
    return generate_summary(random.Random(n), participant_sid=f"CP{n:032d}")


async def test_an_event_type_no_subject_carries_is_acknowledged_ignored_and_counted(runtime: Runtime) -> None:
    unknown = cloud_event(summary(1), event_type="com.twilio.voice.insights.recording-summary.complete")

    assert await runtime.pipeline.deliver([unknown], Source.WEBHOOK) == {"ignored": 1}

    assert events(runtime, source="webhook", type="other", outcome="ignored") == 1
    assert events(runtime, type="summary") == 0
    assert sample_sum(runtime.registry, P + "summaries_total") == 0


async def test_every_type_of_the_participant_subject_is_recorded_in_it(runtime: Runtime) -> None:
    delivered = [cloud_event(summary(n), event_type=type_, event_id=f"EZ{n}") for n, type_ in enumerate(sorted(SUMMARY_TYPES))]

    assert await runtime.pipeline.deliver(delivered, Source.WEBHOOK) == {"recorded": 2}
    assert sample_sum(runtime.registry, P + "summaries_total") == 2
    assert f"CP{0:032d}" in runtime.subjects[PARTICIPANT].window


async def test_a_not_final_event_of_a_subject_is_acknowledged_and_counted_but_not_recorded(runtime: Runtime) -> None:
    participant = dataclasses.replace(runtime.subjects[PARTICIPANT], not_final_types=frozenset({PARTIAL}))
    pipeline = Pipeline(Subjects([participant]), runtime.exporter_metrics, runtime.state)
    data = summary(1)

    assert await pipeline.deliver([cloud_event(data, event_type=PARTIAL)], Source.KINESIS) == {"not_final": 1}
    assert events(runtime, source="kinesis", type="summary", outcome="not_final") == 1
    assert sample_sum(runtime.registry, P + "summaries_total") == 0
    # The final summary of the same participant, after its partial one, is recorded.
    assert await pipeline.deliver([cloud_event(data)], Source.KINESIS) == {"recorded": 1}


async def test_rest_items_of_a_named_subject_meet_the_same_parser_and_dedup_as_events(runtime: Runtime) -> None:
    rest = fixture("rest_participant.json")
    without_sid = {**rest, "participant_sid": None}

    outcomes = await runtime.pipeline.deliver([rest, without_sid, "not an object"], Source.PULL, subject=PARTICIPANT)

    assert outcomes == {"recorded": 1, "invalid": 2}
    assert sample_sum(runtime.registry, E + "invalid_events_total", source="pull", reason="missing_participant_sid") == 1
    assert sample_sum(runtime.registry, E + "invalid_events_total", source="pull", reason="data_not_an_object") == 1
    assert events(runtime, source="pull", type="summary", outcome="invalid") == 2
    # The same participant pushed afterwards is a duplicate: one key, whichever road.
    assert await runtime.pipeline.deliver([cloud_event(rest)], Source.WEBHOOK) == {"duplicate": 1}


async def test_json_bytes_are_parsed_like_decoded_events_and_a_poison_record_is_logged_once_a_minute(
    runtime: Runtime, caplog: pytest.LogCaptureFixture
) -> None:
    record = json.dumps(cloud_event(summary(1))).encode()
    with caplog.at_level(logging.WARNING, logger="exporter.pipeline"):
        outcomes = await runtime.pipeline.deliver([b"\x00not json{", record, b"[" * 5000, b"{}"], Source.KINESIS)

    assert outcomes == {"invalid": 3, "recorded": 1}
    assert sample_sum(runtime.registry, E + "invalid_events_total", source="kinesis", reason="not_json") == 1
    assert sample_sum(runtime.registry, E + "invalid_events_total", source="kinesis", reason="nested_too_deep") == 1
    assert sample_sum(runtime.registry, E + "invalid_events_total", source="kinesis", reason="missing_id") == 1
    assert events(runtime, source="kinesis", type="other", outcome="invalid") == 3
    lines = [(r.getMessage(), getattr(r, "reason", None), getattr(r, "source", None)) for r in caplog.records]
    assert lines == [
        ("invalid event", "not_json", "kinesis"),
        ("invalid event", "nested_too_deep", "kinesis"),
        ("invalid event", "missing_id", "kinesis"),
    ]


def test_two_subjects_may_not_share_a_name_or_an_event_type(runtime: Runtime) -> None:
    participant = runtime.subjects[PARTICIPANT]
    with pytest.raises(ValueError, match="two subjects are called 'participant'"):
        Subjects([participant, dataclasses.replace(participant, final_types=frozenset())])
    with pytest.raises(ValueError, match="carries two subjects"):
        Subjects([participant, dataclasses.replace(participant, name="call")])


def test_the_exposition_serves_the_families_of_every_subject(runtime: Runtime) -> None:
    every = [family for name in (PARTICIPANT, CALL, CONFERENCE) for family in runtime.subjects[name].recorder.families()]
    assert runtime.subjects.families() == every
    assert [subject.name for subject in runtime.subjects] == [PARTICIPANT, CALL, CONFERENCE]
    assert [family.name for family in runtime.subjects.families()][:2] == [P + "summaries", P + "mos"]


# -- build_subjects: each subject's window, buckets and event types, as configured -------------


def test_every_subjects_dedup_window_keeps_the_clock_it_is_given() -> None:
    clock = FakeClock()
    config = load_config(["--dedup.window=4h"])
    subjects = build_subjects(config, CollectorRegistry(), clock=clock)

    for subject in subjects:
        subject.window.add("KEY")
    clock.now += 4 * 3600 - 1
    assert all("KEY" in subject.window for subject in subjects)
    clock.now += 2  # past the window on the given clock, whatever the wall clock says
    assert [subject.name for subject in subjects if "KEY" in subject.window] == []


def test_the_participant_buckets_come_from_the_configuration() -> None:
    registry = CollectorRegistry()
    subjects = build_subjects(load_config(["--buckets.mos=1.0,2.0,3.5,4.0,4.5"]), registry)

    mos = next(family for family in subjects[PARTICIPANT].recorder.families() if family.name.endswith("_mos"))
    assert tuple(mos.upper) == (1.0, 2.0, 3.5, 4.0, 4.5, float("inf"))


def test_a_conference_summarys_partial_event_is_carried_but_not_final_and_its_complete_event_is_final() -> None:
    subjects = build_subjects(load_config([]), CollectorRegistry())

    assert subjects.carried_by(CONFERENCE_SUMMARY_PARTIAL) == (subjects[CONFERENCE], False)
    assert subjects.carried_by(CONFERENCE_SUMMARY_COMPLETE) == (subjects[CONFERENCE], True)


def test_the_call_and_conference_label_policies_are_configured_in_the_participants_shape() -> None:
    config = load_config(["--call-labels.max-label-sets=1", "--conference-labels.limits={mixer_region: {allowlist: [us1]}, tag: {max_values: 2}}"])
    subjects = build_subjects(config, CollectorRegistry())
    call_policy, conference_policy = subjects[CALL].recorder.labels, subjects[CONFERENCE].recorder.labels

    assert call_policy.max_label_sets == 1
    assert conference_policy["mixer_region"].allowlist == frozenset({"us1"}) and conference_policy["tag"].max_values == 2
    # What is not set keeps the subject's defaults: a documented vocabulary stays allowlisted.
    assert conference_policy["status"].allowlist == frozenset({"in_progress", "not_started", "completed", "summary_timeout"})
    assert conference_policy.max_label_sets == build_subjects(load_config([]), CollectorRegistry())[CONFERENCE].recorder.labels.max_label_sets
    with pytest.raises(ValidationError, match="unknown labels \\['carrier'\\]"):
        load_config(["--conference-labels.limits={carrier: {max_values: 3}}"])
