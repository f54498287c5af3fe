"""exporter/parse.py on its own: every reason, the field and the message it carries, for each door's input."""

from __future__ import annotations

import json
from typing import Any

import pytest

from exporter import parse
from exporter.models import CallSummary, ConferenceSummary, ParticipantSummary


def test_a_body_that_is_not_json_is_not_a_batch_with_its_reason_and_message() -> None:
    with pytest.raises(parse.NotABatch) as caught:
        parse.batch(b'{"id": ')

    assert (caught.value.reason, caught.value.message, str(caught.value)) == ("invalid_json", "body is not valid JSON", "body is not valid JSON")


@pytest.mark.parametrize("body", [b"[1]", b'"text"', b"[{}, 2]", b"7"])
def test_json_that_is_not_cloudevents_is_not_a_batch_with_its_reason_and_message(body: bytes) -> None:
    with pytest.raises(parse.NotABatch) as caught:
        parse.batch(body)

    message = "body is neither a CloudEvent object nor an array of them"
    assert (caught.value.reason, caught.value.message, str(caught.value)) == ("not_cloudevents", message, message)


def test_an_object_or_an_array_of_objects_is_a_batch() -> None:
    assert parse.batch(b'{"id": "EZ1"}') == [{"id": "EZ1"}]
    assert parse.batch(b'[{"id": "EZ1"}, {}]') == [{"id": "EZ1"}, {}]
    assert parse.batch(b"[]") == []


def test_a_record_that_is_not_json_is_invalid_with_the_parsers_message_and_no_field() -> None:
    with pytest.raises(parse.InvalidEvent) as caught:
        parse.event(b'{"id": "EZ1", ')

    invalid = caught.value
    assert (invalid.reason, invalid.field) == ("not_json", "")
    assert invalid.error.startswith("EOF while parsing")  # pydantic-core's own message, never a value
    assert str(invalid) == f"not_json: : {invalid.error}"


@pytest.mark.parametrize(
    ("raw", "reason", "field"),
    [
        (5, "not_an_object", ""),
        ([{"id": "EZ1"}], "not_an_object", ""),
        ({"type": "t"}, "missing_id", "id"),
        ({"id": ["EZ1"], "type": "t"}, "bad_id", "id"),
        ({"id": "", "type": "t"}, "bad_id", "id"),
        ({"id": "EZ1"}, "missing_type", "type"),
        ({"id": "EZ1", "type": ["t"]}, "bad_type", "type"),
        ({"id": "EZ1", "type": "t", "data": "{not json"}, "data_not_json", "data"),
        # data's reason wins over the others (the summary is what was lost); the field logged is
        # the first error's.
        ({"type": 5, "data": "{not json"}, "data_not_json", "id"),
        ({"id": "EZ1", "type": "t", "time": ["x"]}, "bad_envelope", "time"),
    ],
)
def test_each_broken_envelope_has_its_reason_and_the_field_it_is_about(raw: Any, reason: str, field: str) -> None:
    for form in (raw, json.dumps(raw).encode()):  # a webhook element, or a Kinesis record's bytes
        with pytest.raises(parse.InvalidEvent) as caught:
            parse.event(form)
        assert (caught.value.reason, caught.value.field) == (reason, field), form
        assert caught.value.error and str(caught.value) == f"{reason}: {field}: {caught.value.error}"


@pytest.mark.parametrize(
    ("model", "key", "data", "reason", "field"),
    [
        (ParticipantSummary, "participant_sid", 5, "data_not_an_object", ""),
        (ParticipantSummary, "participant_sid", {"call_sid": "CA1"}, "missing_participant_sid", "participant_sid"),
        (ParticipantSummary, "participant_sid", {"participant_sid": ""}, "missing_participant_sid", "participant_sid"),
        (CallSummary, "call_sid", ["x"], "data_not_an_object", ""),
        (CallSummary, "call_sid", {"call_type": "carrier"}, "missing_call_sid", "call_sid"),
        (CallSummary, "call_sid", {"call_sid": "CA1", "connect_duration": -5}, "bad_field", "connect_duration"),
        (ConferenceSummary, "conference_sid", {}, "missing_conference_sid", "conference_sid"),
    ],
)
def test_each_broken_summary_has_its_reason_and_the_field_it_is_about(model: Any, key: str, data: Any, reason: str, field: str) -> None:
    with pytest.raises(parse.InvalidEvent) as caught:
        parse.summary(model, key, data)

    assert (caught.value.reason, caught.value.field) == (reason, field)


def taskrouter_data(**payload: Any) -> dict[str, Any]:
    return {"payload": {"task_sid": "WT1", **payload}}


@pytest.mark.parametrize(
    ("data", "reason", "field"),
    [
        (5, "data_not_an_object", ""),
        ({}, "missing_task_sid", "payload"),
        ({"payload": {}}, "missing_task_sid", "payload.task_sid"),
        ({"payload": {"task_sid": ""}}, "missing_task_sid", "payload.task_sid"),
        ({"payload": 5}, "bad_field", "payload"),
        (taskrouter_data(task_attributes="[1, 2]"), "bad_task_attributes", "payload.task_attributes"),
        (taskrouter_data(task_attributes="{not json"), "bad_task_attributes", "payload.task_attributes"),
        (taskrouter_data(worker_attributes='"text"'), "bad_worker_attributes", "payload.worker_attributes"),
        # The first broken attribute names the reason; the task SID's absence comes before both.
        (taskrouter_data(task_sid=None, worker_attributes="[]"), "missing_task_sid", "payload.task_sid"),
    ],
)
def test_each_broken_taskrouter_event_has_its_reason_and_the_field_it_is_about(data: Any, reason: str, field: str) -> None:
    with pytest.raises(parse.InvalidEvent) as caught:
        parse.taskrouter(data)

    assert (caught.value.reason, caught.value.field) == (reason, field)


def test_a_taskrouter_payload_with_json_object_attributes_is_read() -> None:
    payload = parse.taskrouter(taskrouter_data(task_attributes='{"conference": {"sid": "CF1"}}', worker_attributes='{"team_name": "Billing"}'))

    assert payload.task_sid == "WT1"
    assert payload.worker_attributes == {"team_name": "Billing"}
