"""The webhook's contract with Twilio: who gets in, which status code, what is counted once."""

from __future__ import annotations

import base64
import json

import pytest

from exporter.subjects import PARTICIPANT
from exporter.synthetic import batch_body, cloud_event, generate_summary, sign, sink_test_event
from tests.conftest import SECONDARY_TOKEN, TOKEN, Harness, HarnessFactory, fixture, snapshot
from tests.helpers import path_and_query, signed_query

P = "twilio_conference_participant_"
E = "twilio_insights_exporter_"


def events(count: int, seed: int = 1) -> list[dict]:
    import random

    rng = random.Random(seed)
    return [cloud_event(generate_summary(rng)) for _ in range(count)]


# --- signatures -------------------------------------------------------------------------------


async def test_valid_signature_is_accepted(harness: Harness) -> None:
    response = await harness.post(events(2))

    assert response.status == 200
    assert harness.value(E + "events_total", outcome="recorded") == 2
    assert harness.value(E + "webhook_requests_total", code="200") == 1


async def test_missing_signature_is_refused_and_counted(harness: Harness) -> None:
    response = await harness.post(events(1), token=None)

    assert response.status == 403
    assert await response.json() == {"error": "signature check failed: missing_signature"}
    assert harness.value(E + "signature_failures_total", reason="missing_signature") == 1
    assert harness.value(E + "webhook_requests_total", code="403") == 1
    assert harness.value(P + "summaries_total") == 0


async def test_signature_made_with_another_token_is_refused(harness: Harness) -> None:
    response = await harness.post(events(1), token="not-the-token")

    assert response.status == 403
    assert harness.value(E + "signature_failures_total", reason="invalid_signature") == 1
    assert harness.value(P + "summaries_total") == 0


async def test_signature_replayed_on_a_changed_body_is_refused(harness: Harness) -> None:
    original = batch_body(events(1, seed=1))
    forged = batch_body(events(1, seed=2))
    url, signature = sign(harness.url(), original, TOKEN)

    response = await harness.client.post(path_and_query(url), data=forged, headers={"X-Twilio-Signature": signature})

    assert response.status == 403
    assert harness.value(E + "signature_failures_total", reason="invalid_signature") == 1
    assert harness.value(P + "summaries_total") == 0


async def test_signature_without_body_hash_in_the_url_is_refused(harness: Harness) -> None:
    # A URL-only signature covers no body: accepting it would let a captured one carry any body.
    from twilio.request_validator import RequestValidator

    body = batch_body(events(1))
    signature = RequestValidator(TOKEN).compute_signature(harness.url(), {})
    response = await harness.client.post(harness.path, data=body, headers={"X-Twilio-Signature": signature})

    assert response.status == 403
    assert harness.value(E + "signature_failures_total", reason="missing_body_hash") == 1


async def test_secondary_token_verifies_during_a_rotation(make_harness: HarnessFactory) -> None:
    harness = await make_harness(env={"TWILIO_AUTH_TOKEN": TOKEN, "TWILIO_AUTH_TOKEN_SECONDARY": SECONDARY_TOKEN})

    assert (await harness.post(events(1, seed=1), token=SECONDARY_TOKEN)).status == 200
    assert (await harness.post(events(1, seed=2), token=TOKEN)).status == 200
    assert harness.value(E + "events_total", outcome="recorded") == 2


async def test_without_an_auth_token_every_delivery_is_answered_503_for_twilio_to_retry(make_harness: HarnessFactory) -> None:
    # Our configuration, not the sender's fault: a 403 would make Twilio discard the delivery.
    harness = await make_harness(env={})

    response = await harness.post(events(1), token="anything")

    assert response.status == 503
    assert response.headers["Retry-After"] == "5"
    assert harness.value(E + "webhook_rejections_total", reason="no_auth_token_configured") == 1
    assert harness.value(E + "signature_failures_total") == 0
    assert harness.value(P + "summaries_total") == 0


async def test_insecure_switch_accepts_unsigned_deliveries(make_harness: HarnessFactory) -> None:
    harness = await make_harness("--webhook.insecure-skip-signature-verification", env={})

    response = await harness.post(events(1), token=None)

    assert response.status == 200
    assert harness.value(E + "events_total", outcome="recorded") == 1


async def test_signature_verifies_behind_a_proxy_with_the_public_url(make_harness: HarnessFactory) -> None:
    public = "https://hooks.example.com/twilio/events"
    harness = await make_harness(f"--webhook.public-url={public}")

    # Twilio signed the public URL; the proxy forwarded to /events on the exporter.
    body = batch_body(events(1))
    signed_url, signature = sign(public, body, TOKEN)
    response = await harness.client.post(f"/events?{signed_query(signed_url)}", data=body, headers={"X-Twilio-Signature": signature})

    assert response.status == 200
    assert harness.value(E + "events_total", outcome="recorded") == 1


async def test_public_url_mismatch_is_refused(make_harness: HarnessFactory) -> None:
    harness = await make_harness("--webhook.public-url=https://hooks.example.com/events")

    response = await harness.post(events(1))  # signed for the loopback URL, not the public one

    assert response.status == 403
    assert harness.value(E + "signature_failures_total", reason="invalid_signature") == 1


async def test_forwarded_headers_are_used_only_when_trusted(make_harness: HarnessFactory) -> None:
    body = batch_body(events(1))
    signed_url, signature = sign("https://hooks.example.com/events", body, TOKEN)
    query = signed_query(signed_url)
    headers = {"X-Twilio-Signature": signature, "X-Forwarded-Proto": "https, http", "X-Forwarded-Host": "hooks.example.com, internal:8080"}

    untrusting = await make_harness()
    assert (await untrusting.client.post(f"/events?{query}", data=body, headers=headers)).status == 403

    trusting = await make_harness("--webhook.trust-forwarded-headers")
    assert (await trusting.client.post(f"/events?{query}", data=body, headers=headers)).status == 200
    assert trusting.value(E + "events_total", outcome="recorded") == 1


# --- basic credentials --------------------------------------------------------------------------


@pytest.fixture
async def basic(make_harness: HarnessFactory) -> Harness:
    return await make_harness(
        env={
            "TWILIO_AUTH_TOKEN": TOKEN,
            "TWILIO_INSIGHTS_EXPORTER_BASIC_AUTH_USERNAME": "twilio",
            "TWILIO_INSIGHTS_EXPORTER_BASIC_AUTH_PASSWORD": "s3cret",
        }
    )


def _basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


async def test_basic_credentials_are_required_when_configured(basic: Harness) -> None:
    missing = await basic.post(events(1))
    wrong = await basic.post(events(1), headers=_basic("twilio", "guess"))

    assert (missing.status, wrong.status) == (401, 401)
    assert missing.headers["WWW-Authenticate"].startswith("Basic ")
    assert basic.value(E + "basic_auth_failures_total") == 2
    assert basic.value(P + "summaries_total") == 0


async def test_right_basic_credentials_and_signature_are_accepted(basic: Harness) -> None:
    response = await basic.post(events(1), headers=_basic("twilio", "s3cret"))

    assert response.status == 200
    assert basic.value(E + "events_total", outcome="recorded") == 1


async def test_right_basic_credentials_do_not_replace_the_signature(basic: Harness) -> None:
    response = await basic.post(events(1), token=None, headers=_basic("twilio", "s3cret"))

    assert response.status == 403
    assert basic.value(E + "signature_failures_total", reason="missing_signature") == 1
    assert basic.value(E + "basic_auth_failures_total") == 0
    assert basic.value(P + "summaries_total") == 0


# --- whole-request rejections ------------------------------------------------------------------


async def test_body_over_the_size_limit_is_refused_with_413(make_harness: HarnessFactory) -> None:
    harness = await make_harness("--webhook.max-body-size=1KiB")

    response = await harness.post(events(3))

    assert response.status == 413
    assert harness.value(E + "webhook_rejections_total", reason="too_large") == 1
    assert harness.value(P + "summaries_total") == 0


async def test_chunked_body_over_the_size_limit_is_refused_with_413(make_harness: HarnessFactory) -> None:
    harness = await make_harness("--webhook.max-body-size=1KiB")
    body = batch_body(events(3))
    url, signature = sign(harness.url(), body, TOKEN)

    async def chunks():  # no Content-Length: the limit must hold while reading
        for i in range(0, len(body), 256):
            yield body[i : i + 256]

    response = await harness.client.post(path_and_query(url), data=chunks(), headers={"X-Twilio-Signature": signature})

    assert response.status == 413
    assert harness.value(E + "webhook_rejections_total", reason="too_large") == 1


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"{not json", "invalid_json"),
        (b"", "invalid_json"),
        (b"\xff\xfe", "invalid_json"),
        (b"42", "not_cloudevents"),
        (b'"a string"', "not_cloudevents"),
        (b'[{"id": "EZ1", "type": "x"}, 5]', "not_cloudevents"),
    ],
)
async def test_body_that_is_not_cloudevents_is_refused_with_400(make_harness: HarnessFactory, body: bytes, reason: str) -> None:
    harness = await make_harness("--webhook.insecure-skip-signature-verification", env={})

    response = await harness.post(body, token=None)

    assert response.status == 400
    assert list(await response.json()) == ["error"]
    assert harness.value(E + "webhook_rejections_total", reason=reason) == 1


async def test_non_utf8_body_with_a_signature_is_refused_as_unverifiable(harness: Harness) -> None:
    body = b"\xff\xfe[]"
    from twilio.request_validator import RequestValidator

    signature = RequestValidator(TOKEN).compute_signature(harness.url() + "?bodySHA256=00", {})
    response = await harness.client.post("/events?bodySHA256=00", data=body, headers={"X-Twilio-Signature": signature})

    assert response.status == 403
    assert harness.value(E + "signature_failures_total", reason="body_not_utf8") == 1


async def test_internal_failure_answers_500_without_a_trace_and_the_retry_records_once(harness: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    batch = events(2)
    recorder = harness.runtime.subjects[PARTICIPANT].recorder
    real_apply = recorder.apply
    calls = {"n": 0}

    def flaky(change):  # the second summary of the batch fails once
        calls["n"] += 1
        if calls["n"] == 2:
            raise RuntimeError("disk on fire at /secret/path")
        real_apply(change)

    monkeypatch.setattr(recorder, "apply", flaky)
    failed = await harness.post(batch)

    assert failed.status == 500
    text = await failed.text()
    assert "Traceback" not in text and "secret" not in text
    assert harness.value(E + "webhook_requests_total", code="500") == 1

    retried = await harness.post(batch)  # Twilio's retry of the same delivery

    assert retried.status == 200
    assert await retried.json() == {"duplicate": 1, "recorded": 1}
    assert harness.value(P + "summaries_total") == 2


# --- batches, test events, duplicates -------------------------------------------------------------


async def test_test_event_is_acknowledged_and_counted_not_recorded(harness: Harness) -> None:
    response = await harness.post([sink_test_event()])

    assert response.status == 200
    assert await response.json() == {"test": 1}
    assert harness.value(E + "events_total", type="test", outcome="test") == 1
    assert harness.value(P + "summaries_total") == 0


async def test_unknown_event_type_is_acknowledged_and_ignored(harness: Harness) -> None:
    response = await harness.post({"specversion": "1.0", "id": "EZ9", "type": "com.twilio.voice.insights.recording-summary.complete", "data": {}})

    assert response.status == 200
    assert harness.value(E + "events_total", type="other", outcome="ignored") == 1
    assert harness.value(P + "summaries_total") == 0


async def test_mixed_batch_records_the_valid_events_and_counts_each_invalid_one(harness: Harness) -> None:
    good = events(2)
    bad_mos = cloud_event(fixture("reference_event.json")["data"] | {"participant_sid": "CPbad1"})
    bad_mos["data"]["metrics"]["inbound"]["mos"] = "excellent"
    out_of_range = cloud_event(fixture("reference_event.json")["data"] | {"participant_sid": "CPbad2"})
    out_of_range["data"]["metrics"]["outbound"]["packet_loss_percentage"] = 250
    no_sid = cloud_event(fixture("reference_event.json")["data"])
    del no_sid["data"]["participant_sid"]
    not_object = cloud_event({}) | {"data": [1, 2]}
    bad_string = cloud_event({}) | {"data": "{truncated"}
    no_id = {"type": "com.twilio.voice.insights.conference-participant-summary.complete", "data": {}}

    response = await harness.post([good[0], bad_mos, out_of_range, no_sid, not_object, bad_string, no_id, good[1]])

    assert response.status == 200
    assert await response.json() == {"recorded": 2, "invalid": 6}
    assert harness.value(P + "summaries_total") == 2
    assert harness.value(P + "mos_count") == 4  # two streams each of the two good ones
    assert harness.value(E + "invalid_events_total", reason="bad_field") == 2
    assert harness.value(E + "invalid_events_total", reason="missing_participant_sid") == 1
    assert harness.value(E + "invalid_events_total", reason="data_not_an_object") == 1
    assert harness.value(E + "invalid_events_total", reason="data_not_json") == 1
    assert harness.value(E + "invalid_events_total", reason="missing_id") == 1
    assert harness.value(E + "events_total", outcome="invalid") == 6


async def test_invalid_events_change_no_participant_metric(harness: Harness) -> None:
    await harness.post(events(3))
    before = snapshot(harness.registry)
    bad = cloud_event(fixture("reference_event.json")["data"] | {"participant_sid": "CPnew", "country_code": "ZZ", "label": "brand-new"})
    bad["data"]["metrics"]["inbound"]["jitter"]["avg"] = -1

    await harness.post([bad])

    assert snapshot(harness.registry) == before


async def test_redelivered_event_is_acknowledged_but_not_counted_again(harness: Harness) -> None:
    batch = events(3)
    first = await harness.post(batch)
    again = await harness.post(batch)

    assert (first.status, again.status) == (200, 200)
    assert await again.json() == {"duplicate": 3}
    assert harness.value(P + "summaries_total") == 3
    assert harness.value(E + "events_total", outcome="duplicate") == 3


async def test_duplicate_within_one_delivery_counts_once(harness: Harness) -> None:
    [event] = events(1)

    response = await harness.post([event, event])

    assert await response.json() == {"recorded": 1, "duplicate": 1}
    assert harness.value(P + "summaries_total") == 1


async def test_same_participant_under_a_new_event_id_counts_once(harness: Harness) -> None:
    [event] = events(1)
    await harness.post([event])
    again = dict(event, id="EZ-another-delivery-of-the-same-participant")

    response = await harness.post([again])

    assert await response.json() == {"duplicate": 1}
    assert harness.value(P + "summaries_total") == 1


async def test_dedup_gauge_reports_the_window_size(harness: Harness) -> None:
    await harness.post(events(4))

    assert harness.value(E + "dedup_entries", key="participant_sid") == 4
    assert harness.value(E + "dedup_entries", key="event_id") == 0  # one window: participant SIDs


async def test_empty_batch_is_acknowledged(harness: Harness) -> None:
    response = await harness.post([])

    assert response.status == 200
    assert await response.json() == {}


# --- labels under a flood ---------------------------------------------------------------------


async def test_label_cap_turns_a_flood_of_distinct_values_into_other(make_harness: HarnessFactory, tmp_path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text("labels:\n  limits:\n    participant_label: {max_values: 5}\n")
    harness = await make_harness(f"--config.file={config}")
    import random

    rng = random.Random(7)
    flood = [cloud_event(generate_summary(rng, label=f"agent-{i}")) for i in range(40)]

    await harness.post(flood)

    kept = {s.labels["participant_label"] for f in harness.registry.collect() for s in f.samples if s.name == P + "summaries_total"}
    assert kept == {"agent-0", "agent-1", "agent-2", "agent-3", "agent-4", "other"}
    assert harness.value(P + "summaries_total") == 40
    assert harness.value(P + "summaries_total", participant_label="other") == 35
    assert harness.value(E + "label_overflow_total", subject="participant", label="participant_label") == 35


async def test_label_allowlist_keeps_only_the_listed_values(make_harness: HarnessFactory, tmp_path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text("labels:\n  limits:\n    participant_label: {allowlist: [agent, customer]}\n")
    harness = await make_harness(f"--config.file={config}")

    await harness.post(
        [
            cloud_event(generate_summary(__import__("random").Random(i), label=label))
            for i, label in enumerate(["agent", "Bob Smith +1555", "customer", None])
        ]
    )

    for label, count in {"agent": 1, "customer": 1, "other": 1, "unknown": 1}.items():
        assert harness.value(P + "summaries_total", participant_label=label) == count
    assert harness.value(E + "label_overflow_total", subject="participant", label="participant_label") == 1


async def test_optional_labels_appear_only_when_enabled(make_harness: HarnessFactory) -> None:
    default = await make_harness()
    enabled = await make_harness("--labels.account-sid", "--labels.jitter-buffer-size")

    for h in (default, enabled):
        await h.post([fixture("reference_event.json")])

    def label_names(h: Harness) -> set[str]:
        return {k for f in h.registry.collect() for s in f.samples if s.name == P + "summaries_total" for k in s.labels}

    assert {"account_sid", "jitter_buffer_size"} & label_names(default) == set()
    assert enabled.value(P + "summaries_total", account_sid="AC0000000000000000000000000000001", jitter_buffer_size="small") == 1


# --- endpoints ------------------------------------------------------------------------------------


async def test_health_and_readiness_endpoints_answer_on_the_metrics_listener(harness: Harness) -> None:
    assert (await harness.metrics.get("/-/healthy")).status == 200
    assert (await harness.metrics.get("/-/ready")).status == 200
    # metrics are never served on the public webhook listener (health is, for load balancers: tests/test_door.py)
    assert (await harness.client.get("/metrics")).status == 404


async def test_readiness_fails_once_shutdown_begins(harness: Harness) -> None:
    assert (await harness.metrics.get("/-/ready")).status == 200
    await harness.client.app.shutdown()

    response = await harness.metrics.get("/-/ready")
    assert response.status == 503
    assert await response.text() == "Not ready.\n"


async def test_request_duration_is_observed_for_every_answer(harness: Harness) -> None:
    await harness.post(events(1))
    await harness.post(events(1), token=None)

    assert harness.value(E + "webhook_request_duration_seconds_count") == 2


def test_response_bodies_are_one_line_json() -> None:
    from exporter.doors.webhook.handler import _reply

    body = _reply(400, error="body is not valid JSON").body
    assert b"\n" not in body and json.loads(body) == {"error": "body is not valid JSON"}
