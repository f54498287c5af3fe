"""What a summary becomes: exact metric values for the reference event and real-payload shapes."""

from __future__ import annotations

import json

import pytest

from tests.conftest import JOINLESS, REST_PARTICIPANT_LABELS, Harness, fixture

P = "twilio_conference_participant_"
E = "twilio_insights_exporter_"

REFERENCE_LABELS = {
    **JOINLESS,
    "call_type": "sip",
    "call_direction": "inbound",
    "participant_region": "us1",
    "conference_region": "us1",
    "country_code": "US",
    "participant_label": "advisor",
}


async def test_reference_event_is_recorded_with_every_metric_of_the_contract(harness: Harness) -> None:
    response = await harness.post([fixture("reference_event.json")])
    assert response.status == 200
    assert await response.json() == {"recorded": 1}

    r = harness.registry
    common = REFERENCE_LABELS
    assert r.get_sample_value(P + "summaries_total", {**common, "processing_state": "complete", "call_status": "completed"}) == 1
    for stream in ("inbound", "outbound"):
        s = {**common, "stream": stream}
        assert r.get_sample_value(P + "mos_count", s) == 1
        assert r.get_sample_value(P + "mos_sum", s) == 1.0
        assert r.get_sample_value(P + "mos_bucket", {**s, "le": "1.0"}) == 1
        assert r.get_sample_value(P + "jitter_seconds_sum", {**s, "stat": "avg"}) == pytest.approx(0.0055)
        assert r.get_sample_value(P + "jitter_seconds_sum", {**s, "stat": "max"}) == pytest.approx(0.010)
        # 5.5 ms is past the 5 ms edge and within the 10 ms one.
        assert r.get_sample_value(P + "jitter_seconds_bucket", {**s, "stat": "avg", "le": "0.005"}) == 0
        assert r.get_sample_value(P + "jitter_seconds_bucket", {**s, "stat": "avg", "le": "0.01"}) == 1
        assert r.get_sample_value(P + "latency_seconds_sum", {**s, "stat": "avg"}) == pytest.approx(0.0055)
        assert r.get_sample_value(P + "latency_seconds_sum", {**s, "stat": "max"}) == pytest.approx(0.010)
        assert r.get_sample_value(P + "packet_loss_ratio_sum", s) == 0.0
        assert r.get_sample_value(P + "packet_loss_ratio_bucket", {**s, "le": "0.0"}) == 1
        assert r.get_sample_value(P + "packets_received_total", s) == 1000
        assert r.get_sample_value(P + "packets_lost_total", s) == 0
        assert r.get_sample_value(P + "tags_total", {**s, "tag": "silent"}) == 1
        for issue in ("packet_loss", "jitter", "latency", "low_mos"):
            assert r.get_sample_value(P + "tag_severity_total", {**s, "issue": issue, "severity": "high"}) == 1
        for metric in ("packet_loss", "jitter", "latency"):
            assert r.get_sample_value(P + "degradations_total", {**s, "metric": metric}) == 1
    assert r.get_sample_value(P + "quality_issues_bucket", {**common, "le": "0.0"}) == 1
    assert r.get_sample_value(P + "duration_seconds_sum", common) == 1800
    assert r.get_sample_value(P + "queue_time_seconds_sum", common) == 30
    for action in ("hold", "unhold", "mute", "unmute", "modify_beep", "modify_exit", "coaching", "coaching_stopped", "modify_coached_participant"):
        assert r.get_sample_value(P + "actions_total", {**common, "action": action}) == 1
    assert harness.value(P + "region_mismatch_total") == 0
    assert harness.value(E + "events_total", source="webhook", type="summary", outcome="recorded") == 1
    assert r.get_sample_value(E + "last_recorded_timestamp_seconds", {"subject": "participant"}) > 1.7e9


async def test_v1_schema_and_the_legacy_type_name_are_recorded_alike(harness: Harness) -> None:
    response = await harness.post([fixture("reference_event_v1.json")])

    assert await response.json() == {"recorded": 1}
    # No call_status in this payload: call_state names the status instead.
    assert harness.value(P + "summaries_total", call_status="completed", processing_state="complete") == 1
    assert harness.value(P + "mos_count", stream="inbound") == 1


async def test_null_heavy_summary_is_recorded_as_unknown_without_measurements(harness: Harness) -> None:
    response = await harness.post([fixture("null_heavy_event.json")])

    assert await response.json() == {"recorded": 1}
    unknown = {name: "unknown" for name in REFERENCE_LABELS}
    assert harness.registry.get_sample_value(P + "summaries_total", {**unknown, "processing_state": "unknown", "call_status": "unknown"}) == 1
    assert harness.value(P + "mos_count") == 0
    assert harness.value(P + "duration_seconds_count") == 0
    assert harness.value(P + "actions_total") == 0


async def test_rest_shaped_payload_with_real_quirks_is_recorded(harness: Harness) -> None:
    # call_state instead of call_status, ints for floats, millisecond event timestamps,
    # undocumented keys, a null outbound direction, null label.
    event = fixture("reference_event.json")
    event["data"] = fixture("rest_participant.json")
    response = await harness.post([event])

    assert await response.json() == {"recorded": 1}
    labels = REST_PARTICIPANT_LABELS
    r = harness.registry
    assert r.get_sample_value(P + "summaries_total", {**labels, "processing_state": "complete", "call_status": "completed"}) == 1
    assert r.get_sample_value(P + "mos_sum", {**labels, "stream": "inbound"}) == 4.0
    assert r.get_sample_value(P + "latency_seconds_bucket", {**labels, "stream": "inbound", "stat": "avg", "le": "0.15"}) == 0
    assert r.get_sample_value(P + "latency_seconds_bucket", {**labels, "stream": "inbound", "stat": "avg", "le": "0.2"}) == 1
    assert r.get_sample_value(P + "tag_severity_total", {**labels, "stream": "inbound", "issue": "latency", "severity": "medium"}) == 1
    assert harness.value(P + "mos_count", stream="outbound") == 0
    assert r.get_sample_value(P + "actions_total", {**labels, "action": "mute"}) == 2
    assert r.get_sample_value(P + "actions_total", {**labels, "action": "unmute"}) == 1
    assert harness.value(P + "actions_total", action="hold") == 0
    assert r.get_sample_value(P + "region_mismatch_total", labels) == 1
    assert r.get_sample_value(P + "queue_time_seconds_sum", labels) == 12


async def test_data_as_a_json_string_is_decoded_like_an_object(harness: Harness) -> None:
    event = fixture("reference_event.json")
    event["data"] = json.dumps(event["data"])
    response = await harness.post(event)  # a bare object, as a Kinesis-style sink sends it

    assert await response.json() == {"recorded": 1}
    assert harness.value(P + "mos_count") == 2


async def test_repeated_tags_in_one_stream_count_once(harness: Harness) -> None:
    event = fixture("reference_event.json")
    event["data"]["metrics"]["inbound"]["tags"] = ["silent", "silent", "high_jitter"]
    await harness.post([event])

    assert harness.value(P + "tags_total", stream="inbound", tag="silent") == 1
    assert harness.value(P + "tags_total", stream="inbound", tag="high_jitter") == 1


async def test_exemplars_carry_call_and_conference_sid_in_openmetrics(harness: Harness) -> None:
    await harness.post([fixture("reference_event.json")])

    response = await harness.metrics.get("/metrics", headers={"Accept": "application/openmetrics-text; version=1.0.0"})
    text = await response.text()

    assert response.headers["Content-Type"].startswith("application/openmetrics-text")
    exemplar = '# {call_sid="CA0000000000000000000000000000001",conference_sid="CF0000000000000000000000000000001"}'
    mos_line = next(line for line in text.splitlines() if line.startswith(P + "mos_bucket{") and 'le="1.0"' in line and 'stream="inbound"' in line)
    assert exemplar + " 1.0 " in mos_line
    for family in ("jitter_seconds", "latency_seconds", "packet_loss_ratio"):
        assert any(line.startswith(P + family + "_bucket{") and exemplar in line for line in text.splitlines()), family
    # The classic text format has no exemplars and must stay parseable by old scrapers.
    plain = await (await harness.metrics.get("/metrics")).text()
    assert 'call_sid="' not in plain  # (the dedup gauge names the call subject's key, key="call_sid": no exemplar)


async def test_an_exemplar_leaves_out_a_sid_too_long_to_fit_openmetrics_128_characters(harness: Harness) -> None:
    event = fixture("reference_event.json")
    event["data"].update(call_sid="CA" + "0" * 47, conference_sid="CF" + "1" * 46)  # 49 characters, and 48

    await harness.post([event])

    text = await (await harness.metrics.get("/metrics", headers={"Accept": "application/openmetrics-text; version=1.0.0"})).text()
    mos_line = next(line for line in text.splitlines() if line.startswith(P + "mos_bucket{") and 'le="1.0"' in line and 'stream="inbound"' in line)
    assert '# {conference_sid="CF' + "1" * 46 + '"} 1.0 ' in mos_line
