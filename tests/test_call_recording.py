"""What a Call Summary becomes: exact values for the facts file's realistic call, and the bounds around it.

All or nothing, custom buckets and implausible numbers: tests/test_summary_recording.py, for conferences too.
"""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from exporter.config import load_config
from exporter.models import CALL_SUMMARY_COMPLETE, CALL_SUMMARY_PARTIAL, CALL_SUMMARY_PREDICTED, CallSummary, CloudEvent
from exporter.record.labels import OTHER
from exporter.subjects.build import build_subjects
from exporter.subjects.call import CALL_COMMON_LABELS
from tests.conftest import fixture, snapshot
from tests.recording import CALL, REALISTIC_CALL, Boom, Recording, failing_at, realistic_call, tagged_inbound_call

C = "twilio_call_"


def summary_of(event: dict[str, Any]) -> CallSummary:
    return CallSummary.model_validate(CloudEvent.model_validate(event).data)


def test_the_realistic_complete_call_gives_the_values_the_issue_names() -> None:
    calls = Recording(CALL)
    calls.record(realistic_call())

    assert calls.exact(C + "summaries_total") == 1
    assert calls.exact(C + "mos_sum", edge="sdk_edge", stream="inbound", stat="avg") == pytest.approx(4.43, rel=1e-9)
    assert calls.exact(C + "mos_sum", edge="sdk_edge", stream="inbound", stat="min") == pytest.approx(4.33, rel=1e-9)
    assert calls.exact(C + "jitter_seconds_sum", edge="carrier_edge", stream="outbound", stat="max") == pytest.approx(0.00440106, rel=1e-9)
    assert calls.exact(C + "packet_loss_ratio_sum", edge="sdk_edge", stream="inbound") == pytest.approx(0.00010012015, rel=1e-9)
    assert calls.exact(C + "rtt_seconds_sum", edge="sdk_edge", stream="inbound", stat="avg") == pytest.approx(0.0858, rel=1e-9)
    assert calls.exact(C + "rtt_seconds_sum", edge="sdk_edge", stream="inbound", stat="max") == pytest.approx(0.098, rel=1e-9)
    assert calls.exact(C + "post_dial_delay_seconds_sum") == pytest.approx(2.917, rel=1e-9)
    assert calls.exact(C + "duration_seconds_sum") == 131
    assert calls.exact(C + "packets_total", edge="sdk_edge", stream="inbound") == 9987
    assert calls.exact(C + "packets_total", edge="sdk_edge", stream="outbound") == 9997
    assert calls.exact(C + "packets_total", edge="carrier_edge", stream="outbound") == 6513
    assert calls.exact(C + "packets_lost_total", edge="sdk_edge", stream="inbound") == 1
    assert calls.exact(C + "packets_lost_total", edge="carrier_edge", stream="inbound") == 0
    assert calls.exact(C + "sip_responses_total", sip_response_class="2xx") == 1
    assert calls.exact(C + "disconnects_total", disconnected_by="caller") == 1
    assert calls.exact(C + "codecs_total", edge="sdk_edge", stream="outbound", codec="opus") == 1
    assert calls.exact(C + "codecs_total", edge="carrier_edge", stream="inbound", codec="pcmu") == 1
    # 0.0 % loss on the carrier edge is a measured zero: in the le="0.0" bucket.
    assert calls.exact(C + "packet_loss_ratio_bucket", edge="carrier_edge", stream="inbound", le="0.0") == 1
    # 4.43 is past 4.4 and within 4.5; 85.8 ms within 100 ms.
    assert calls.exact(C + "mos_bucket", edge="sdk_edge", stream="inbound", stat="avg", le="4.4") == 0
    assert calls.exact(C + "mos_bucket", edge="sdk_edge", stream="inbound", stat="avg", le="4.5") == 1
    assert calls.exact(C + "rtt_seconds_bucket", edge="sdk_edge", stream="inbound", stat="avg", le="0.1") == 1
    assert calls.exact(C + "rtt_seconds_bucket", edge="sdk_edge", stream="inbound", stat="avg", le="0.05") == 0


def test_what_an_edge_did_not_measure_leaves_no_sample_rather_than_a_zero() -> None:
    calls = Recording(CALL)
    calls.record(realistic_call())

    # No SIP or client edge; the SDK's outbound direction has packets and a codec only.
    for edge in ("sip_edge", "client_edge"):
        assert calls.value(C + "packets_total", edge=edge) == 0
        assert calls.value(C + "jitter_seconds_count", edge=edge) == 0
    assert calls.value(C + "jitter_seconds_count", edge="sdk_edge", stream="outbound") == 0
    assert calls.value(C + "packet_loss_ratio_count", edge="sdk_edge", stream="outbound") == 0
    assert calls.value(C + "packets_lost_total", edge="sdk_edge", stream="outbound") == 0
    # MOS and RTT only where the SDK measured them, and MOS's max is not a stat of its own.
    assert calls.value(C + "mos_count") == 2
    assert calls.value(C + "mos_count", stat="max") == 0
    assert calls.value(C + "rtt_seconds_count") == 2
    assert calls.value(C + "queue_time_seconds_count") == 0
    assert calls.value(C + "answered_by_total") == 0
    assert calls.value(C + "tags_total") == 0
    # Exactly the series the summary measured, and no more.
    series = {
        (s.name, s.labels.get("edge"), s.labels.get("stream")) for f in calls.registry.collect() for s in f.samples if s.name.endswith("_count")
    }
    assert {(name, edge, stream) for name, edge, stream in series if name == C + "jitter_seconds_count"} == {
        (C + "jitter_seconds_count", "sdk_edge", "inbound"),
        (C + "jitter_seconds_count", "carrier_edge", "inbound"),
        (C + "jitter_seconds_count", "carrier_edge", "outbound"),
    }


def test_a_v1_event_with_data_as_a_json_string_is_recorded_like_the_object() -> None:
    event = fixture("call_summary_v1.json")
    assert isinstance(event["data"], str)
    calls = Recording(CALL)

    change = calls.recorder.plan(summary_of(event))
    calls.recorder.apply(change)

    assert calls.exact(C + "mos_sum", edge="sdk_edge", stream="inbound", stat="avg") == pytest.approx(4.43, rel=1e-9)
    assert change.exemplar == {"call_sid": "CA" + "0" * 31 + "2"}


def test_only_the_complete_event_is_final_whatever_its_processing_state_says() -> None:
    partial = fixture("call_summary_partial.json")
    predicted = fixture("call_summary_predicted_complete.json")
    complete = fixture("call_summary_complete.json")
    complete["data"]["processing_state"] = "partial"
    subjects = build_subjects(load_config([]), CollectorRegistry())

    assert (partial["type"], predicted["type"], complete["type"]) == (CALL_SUMMARY_PARTIAL, CALL_SUMMARY_PREDICTED, CALL_SUMMARY_COMPLETE)
    assert [(subject.name, final) for subject, final in map(subjects.carried_by, (partial["type"], predicted["type"]))] == [("call", False)] * 2
    call, final = subjects.carried_by(complete["type"]) or (None, False)
    assert call is not None and final and call.is_final(summary_of(complete))
    assert (call.key_field, call.key(summary_of(partial))) == ("call_sid", "CA04917eab5c194f4c86207384933c0c41")


def test_the_far_end_of_an_inbound_call_is_the_caller_and_the_edge_location_comes_from_the_first_edge_naming_it() -> None:
    data = realistic_call()
    data["properties"]["direction"] = "inbound"
    data["from"] = {"caller": "+441234567890", "carrier": "Vodafone", "connection": "mobile", "country_code": "GB"}
    data["sip_edge"] = {"properties": {"edge_location": "dublin", "media_region": "ie1"}}  # properties only: no metrics
    data["carrier_edge"]["properties"]["edge_location"] = "frankfurt"
    calls = Recording(CALL)

    change = calls.record(data)

    assert dict(zip(CALL_COMMON_LABELS, change.common, strict=True)) == {
        **REALISTIC_CALL,
        "direction": "inbound",
        "country_code": "GB",
        "carrier": "Vodafone",
        "media_region": "us1",  # the carrier edge comes first
        "edge_location": "frankfurt",
    }
    assert calls.value(C + "packets_total", edge="sip_edge") == 0

    data["properties"].update(edge_location="ashburn", media_region="us2")  # the top level wins
    data["call_sid"] = "CA2"
    assert dict(zip(CALL_COMMON_LABELS, calls.record(data).common, strict=True))["edge_location"] == "ashburn"


def test_a_call_of_no_known_direction_has_no_far_end_and_an_empty_summary_counts_with_unknown_labels() -> None:
    calls = Recording(CALL)

    change = calls.record({"call_sid": "CA1"})

    assert change.common == ("unknown",) * len(CALL_COMMON_LABELS)
    assert [family.name for family, _, _ in change.observations] == [C + "summaries"]
    assert change.exemplar == {"call_sid": "CA1"}


def test_odd_values_in_fields_no_metric_is_made_of_never_drop_the_summary() -> None:
    data = realistic_call()
    data.update(
        trust=["not", "an", "object"],
        annotation="spam",
        attributes=7,
        start_time=12,
        duration="long",  # duration is not recorded (connect_duration is)
        created_time={"x": 1},
        answered_by=["human"],
    )
    data["from"] = "+12569231992"
    data["to"]["location"] = "somewhere"
    data["to"]["carrier"] = {"name": "T-Mobile"}  # a label of no readable text: unknown
    data["properties"].update(last_sip_response_num="abc", q850_cause={"a": 1}, disconnected_by=None)
    data["sdk_edge"]["events"] = "many"
    data["sdk_edge"]["properties"] = ["x"]
    data["sdk_edge"]["metrics"]["inbound"].update(audio_in="loud", codec="opus?")
    data["carrier_edge"]["metrics"]["outbound"]["packet_delay_variation"] = "wide"
    data["sip_edge"] = {"metrics": {"outbound": {"latency": {"avg": "no unit", "max": -3}, "packets_sent": 10}}}
    calls = Recording(CALL)

    change = calls.record(data)

    labels = dict(zip(CALL_COMMON_LABELS, change.common, strict=True))
    assert labels["carrier"] == "unknown" and labels["country_code"] == "US"
    assert calls.value(C + "mos_sum", stat="avg") == pytest.approx(4.43, rel=1e-9)
    assert calls.value(C + "packets_total", edge="sip_edge", stream="outbound") == 10
    assert calls.value(C + "sip_responses_total") == 0  # "abc" is no response code
    assert calls.value(C + "disconnects_total") == 0
    assert calls.value(C + "answered_by_total") == 0


def test_the_sip_edge_latency_is_left_out_until_its_unit_is_known() -> None:
    data = realistic_call()
    data["sip_edge"] = {"metrics": {"outbound": {"latency": {"avg": 0.3765, "max": 0.386}}}}
    calls = Recording(CALL)

    change = calls.record(data)

    assert not any("latency" in family.name for family, _, _ in change.observations)
    assert not any("latency" in family.name for family in calls.recorder.families())


def test_call_labels_are_bounded_by_the_call_policy_caps_allowlists_and_budget() -> None:
    calls = Recording(CALL, max_values={"carrier": 1}, max_label_sets=2)
    first = realistic_call()
    second = {**realistic_call(), "call_sid": "CA2", "call_type": "pigeon"}
    second["to"] = {**second["to"], "carrier": "AT&T"}
    third = {**realistic_call(), "call_sid": "CA3", "call_state": "busy"}
    fourth = {**realistic_call(), "call_sid": "CA4", "call_state": "noanswer"}

    calls.record(first)
    second_change = calls.record(second)
    calls.record(third)
    fourth_change = calls.record(fourth)

    # pigeon is no documented call type, AT&T found the one carrier place taken.
    assert dict(zip(CALL_COMMON_LABELS, second_change.common, strict=True)) == {**REALISTIC_CALL, "call_type": OTHER, "carrier": OTHER}
    assert sorted(second_change.overflow) == ["call_type", "carrier"]
    # Three sets fill the budget of two: the fourth folds into the overflow set.
    assert fourth_change.common == (OTHER,) * len(CALL_COMMON_LABELS)
    assert fourth_change.overflow == ("label_set",)
    assert calls.value(C + "summaries_total") == 4


def test_a_tag_listed_twice_counts_once_and_tags_are_an_open_but_capped_vocabulary() -> None:
    calls = Recording(CALL, max_values={"tag": 2})
    data = {**realistic_call(), "tags": ["high_pdd", "high_pdd", "silence", "high_jitter"]}

    change = calls.record(data)

    assert calls.exact(C + "tags_total", tag="high_pdd") == 1
    assert calls.exact(C + "tags_total", tag="silence") == 1
    assert calls.exact(C + "tags_total", tag=OTHER) == 1
    assert change.overflow == ("tag",)


# -- all or nothing, and the durable state's round trip ------------------------------------


def test_journaled_changes_and_saved_series_give_back_the_same_samples_after_a_restart() -> None:
    original = Recording(CALL)
    original.recorder.dirty = set()
    journal = []
    for data in (realistic_call(), tagged_inbound_call()):
        change = original.record(data)
        # As the durable state journals a change: names and values, through JSON.
        journal.append(json.loads(json.dumps((change.common, [(f.name, others, v) for f, others, v in change.observations]))))
    rows = [(*original.recorder.key_of(s), original.recorder.saved_values(s)) for s in original.recorder.dirty]

    replayed = Recording(CALL)
    for entry in journal:
        change = replayed.recorder.unjournal(entry)
        assert change is not None
        replayed.recorder.apply(change)
    restored = Recording(CALL)
    assert restored.recorder.restore(rows) == len(rows)

    expected = snapshot(original.registry, C)
    assert snapshot(replayed.registry, C) == expected
    assert snapshot(restored.registry, C) == expected
    assert replayed.policy_state() == original.policy_state() == restored.policy_state()


# -- what the fixture does not carry: queue time, answered_by, averages, edges and exemplars --


def exemplars(registry: CollectorRegistry, prefix: str = C) -> dict[tuple[str, tuple[tuple[str, str], ...]], Any]:
    """Every bucket's exemplar under ``prefix`` (``snapshot`` compares values only)."""
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.exemplar
        for family in registry.collect()
        if family.name.startswith(prefix)
        for s in family.samples
        if s.exemplar is not None
    }


def test_queue_time_answered_by_and_the_average_jitter_are_recorded_exactly() -> None:
    calls = Recording(CALL)

    calls.record(realistic_call())
    calls.record(tagged_inbound_call())  # queue_time 1500 ms, answered_by human, a client edge's jitter avg 1.0 ms

    assert calls.value(C + "queue_time_seconds_sum") == pytest.approx(1.5, rel=1e-9)
    assert calls.value(C + "queue_time_seconds_count") == 1
    assert calls.value(C + "answered_by_total", answered_by="human") == 1
    assert calls.value(C + "answered_by_total") == 1
    assert calls.value(C + "jitter_seconds_sum", edge="client_edge", stream="inbound", stat="avg") == pytest.approx(0.001, rel=1e-9)
    # The realistic call's SDK inbound jitter: avg 0.17 ms, max 3.0 ms.
    assert calls.exact(C + "jitter_seconds_sum", edge="sdk_edge", stream="inbound", stat="avg") == pytest.approx(0.00017, rel=1e-9)
    assert calls.exact(C + "jitter_seconds_sum", edge="sdk_edge", stream="inbound", stat="max") == pytest.approx(0.003, rel=1e-9)


def test_an_edge_without_metrics_before_a_measured_one_hides_nothing_after_it() -> None:
    data = realistic_call()
    del data["carrier_edge"]["metrics"]  # the first edge in label order: properties only
    calls = Recording(CALL)

    calls.record(data)

    assert calls.value(C + "packets_total", edge="carrier_edge") == 0
    assert calls.exact(C + "mos_sum", edge="sdk_edge", stream="inbound", stat="avg") == pytest.approx(4.43, rel=1e-9)
    assert calls.exact(C + "packets_total", edge="sdk_edge", stream="outbound") == 9997


def test_a_call_sid_that_is_not_a_sid_gives_no_exemplar() -> None:
    calls = Recording(CALL)

    change = calls.record({**realistic_call(), "call_sid": "+15551234567"})  # a phone number must never be exposed

    assert change.exemplar is None
    assert exemplars(calls.registry) == {}
    assert calls.exact(C + "summaries_total") == 1


def test_every_exemplar_of_one_summary_carries_one_timestamp_of_its_recording() -> None:
    calls = Recording(CALL)
    before = time.time()
    calls.record(realistic_call())
    after = time.time()

    stamps = {exemplar.timestamp for exemplar in exemplars(calls.registry).values()}
    assert len(exemplars(calls.registry)) > 10
    assert len(stamps) == 1
    assert before <= stamps.pop() <= after
    assert {exemplar.labels["call_sid"] for exemplar in exemplars(calls.registry).values()} == {realistic_call()["call_sid"]}


def test_a_failed_recording_gives_back_the_exemplars_it_overwrote_and_leaves_no_empty_label_set(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = Recording(CALL)
    calls.record(realistic_call())
    before, sets_before = exemplars(calls.registry), dict(calls.recorder._series_of)
    # The same call again under a new SID: the same buckets, so each observation overwrites an exemplar.
    same = calls.recorder.plan(CallSummary.model_validate({**realistic_call(), "call_sid": "CA" + "1" * 32}))
    # A new label set, whose failure must not leave its (empty) set of series behind.
    other = calls.recorder.plan(CallSummary.model_validate(tagged_inbound_call()))
    steps = len(same.observations)

    with failing_at(steps, monkeypatch), pytest.raises(Boom):
        calls.recorder.apply(same)
    assert exemplars(calls.registry) == before
    with failing_at(1, monkeypatch), pytest.raises(Boom):
        calls.recorder.apply(other)
    assert calls.recorder._series_of.keys() == sets_before.keys()
