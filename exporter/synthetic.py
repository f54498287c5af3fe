"""Realistic synthetic participant summaries, for tests, benchmarks and demos.

The shapes follow Twilio's published event and REST resource; the distributions follow what a
contact centre sees: most calls are clean, a tail is degraded, and a degraded stream carries the
tags, severities and occurrences that Voice Insights would attach to it.
"""

from __future__ import annotations

import json
import random
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

SUMMARY_TYPE = "com.twilio.voice.insights.conference-participant-summary.complete"
LEGACY_SUMMARY_TYPE = "com.twilio.voice.insights.participant-summary.complete"
TEST_EVENT_TYPE = "com.twilio.eventstreams.test-event"

REGIONS = ("us1", "us1", "us1", "us2", "ie1", "de1", "au1", "sg1", "jp1", "br1", "in1")
COUNTRIES = ("US", "US", "US", "GB", "DE", "FR", "IN", "AU", "BR", "JP", "MX", "CA")
CALL_TYPES = ("carrier", "carrier", "client", "sip")
LABELS = ("agent", "customer", "customer", "supervisor", None)
JITTER_BUFFERS = ("small", "medium", "large", "off")


def _sid(prefix: str, rng: random.Random) -> str:
    # One draw of 128 bits, not 32 choices: the bench's request files took minutes of this.
    return f"{prefix}{rng.getrandbits(128):032x}"


def generate_summary(rng: random.Random, **overrides: Any) -> dict[str, Any]:
    """One participant summary (the CloudEvent ``data`` / REST resource body).

    ``overrides`` replace top-level fields after generation, e.g. ``label="agent"``.
    """
    degraded = rng.random() < 0.15
    join = datetime(2026, 11, 1, tzinfo=UTC) + timedelta(seconds=rng.randrange(0, 86400 * 20))
    duration = max(5, int(rng.lognormvariate(5.5, 0.9)))
    participant_region = rng.choice(REGIONS)
    conference_region = participant_region if rng.random() < 0.9 else rng.choice(REGIONS)
    t0 = int(join.timestamp())

    def stream() -> dict[str, Any]:
        jitter_avg = rng.uniform(6, 25) if degraded and rng.random() < 0.5 else rng.uniform(0.3, 4.5)
        latency_avg = rng.uniform(150, 400) if degraded and rng.random() < 0.4 else rng.uniform(10, 120)
        loss = rng.uniform(5, 20) if degraded and rng.random() < 0.4 else rng.choice((0, 0, 0, rng.uniform(0, 1.5)))
        received = rng.randrange(500, 100_000)
        lost = int(received * loss / 100)
        mos = round(max(1.0, min(4.5, 4.45 - loss * 0.08 - max(0.0, jitter_avg - 5) * 0.05 - max(0.0, latency_avg - 150) * 0.003)), 2)
        tags: list[str] = []
        tags_info: dict[str, Any] = {}
        occurrences: dict[str, list[dict[str, Any]]] = {}
        if jitter_avg >= 5:
            tags.append("high_jitter")
            tags_info["jitter"] = {"severity": "high" if jitter_avg > 15 else "medium"}
            occurrences["jitter"] = [{"avg": jitter_avg, "max": jitter_avg * 2, "timestamp": t0 + 10}]
        if latency_avg >= 150:
            tags.append("high_latency")
            tags_info["latency"] = {"severity": "high" if latency_avg > 250 else "medium"}
            occurrences["latency"] = [{"avg": latency_avg, "max": latency_avg * 1.5, "timestamp": t0 + 20}]
        if loss >= 5:
            tags.append("high_packet_loss")
            tags_info["packet_loss"] = {"severity": "high" if loss > 10 else "medium"}
            occurrences["packet_loss"] = [{"percent": loss, "timestamp": t0 + 30}]
        if mos <= 3.5:
            tags.append("low_mos")
            tags_info["low_mos"] = {"severity": "high" if mos < 3 else "medium"}
        if rng.random() < 0.03:
            tags.append("silent")
        if tags_info:
            tags_info["description"] = "Quality degradation detected"
        return {
            "total_packets_lost": lost,
            "total_packets_received": received,
            "packet_loss_percentage": round(loss, 3),
            "jitter": {"avg": round(jitter_avg, 3), "max": round(jitter_avg * rng.uniform(1.5, 6), 3)},
            "latency": {"avg": round(latency_avg, 2), "max": round(latency_avg * rng.uniform(1.1, 2), 2)},
            "mos": mos,
            "tags": tags,
            "tags_info": tags_info or None,
            "occurrences": occurrences or None,
        }

    events: dict[str, list[int]] = {}
    if rng.random() < 0.2:
        events["hold"] = [t0 + 60]
        events["unhold"] = [t0 + 90]
    if rng.random() < 0.15:
        events["mute"] = [t0 + 30]
        events["unmute"] = [t0 + 45]
    if rng.random() < 0.05:
        events["coaching"] = [t0 + 100]
        events["coaching_stopped"] = [t0 + 200]
    inbound, outbound = stream(), stream()
    quality_issues = len(inbound["tags"]) + len(outbound["tags"])
    summary: dict[str, Any] = {
        "participant_sid": _sid("CP", rng),
        "label": rng.choice(LABELS),
        "conference_sid": _sid("CF", rng),
        "call_sid": _sid("CA", rng),
        "account_sid": "AC" + "0" * 31 + "1",
        "call_direction": rng.choice(("inbound", "outbound")),
        "from": "+15005550006",
        "to": "+15005550009",
        "call_status": "completed",
        "country_code": rng.choice(COUNTRIES),
        "is_moderator": rng.random() < 0.5,
        "join_time": join.isoformat().replace("+00:00", "Z"),
        "leave_time": (join + timedelta(seconds=duration)).isoformat().replace("+00:00", "Z"),
        "duration_seconds": duration,
        "outbound_queue_length": 0,
        "outbound_time_in_queue": rng.randrange(0, 120) if rng.random() < 0.5 else None,
        "jitter_buffer_size": rng.choice(JITTER_BUFFERS),
        "is_coach": False,
        "coached_participants": None,
        "participant_region": participant_region,
        "conference_region": conference_region,
        "call_type": rng.choice(CALL_TYPES),
        "quality_issues": quality_issues,
        "properties": {"start_conference_on_enter": True, "end_conference_on_exit": False, "requested_region": conference_region},
        "events": events or None,
        "metrics": {"inbound": inbound, "outbound": outbound},
        "processing_state": "complete",
    }
    summary.update(overrides)
    return summary


def cloud_event(summary: dict[str, Any], *, event_id: str | None = None, event_type: str = SUMMARY_TYPE) -> dict[str, Any]:
    """Wrap a summary in the CloudEvents 1.0 envelope Event Streams delivers."""
    return {
        "specversion": "1.0",
        "type": event_type,
        "source": "/v1/Conferences/" + str(summary.get("conference_sid")),
        "id": event_id or "EZ" + uuid.uuid4().hex,
        "dataschema": "https://events-schemas.twilio.com/VoiceInsights.ConferenceParticipantSummary/2",
        "datacontenttype": "application/json",
        "time": summary.get("leave_time") or "2026-11-01T00:00:00Z",
        "data": summary,
    }


def sink_test_event(test_id: str | None = None) -> dict[str, Any]:
    """The event Twilio sends when a sink is tested from the Console or the API."""
    return {
        "specversion": "1.0",
        "type": TEST_EVENT_TYPE,
        "source": "/v1/Sinks/DG" + "0" * 32,
        "id": "EZ" + uuid.uuid4().hex,
        "datacontenttype": "application/json",
        "time": "2026-11-01T00:00:00Z",
        "data": {"test_id": test_id or str(uuid.uuid4())},
    }


def summaries(count: int, seed: int = 0) -> Iterator[dict[str, Any]]:
    """``count`` distinct summaries, reproducible for a given ``seed``."""
    rng = random.Random(seed)
    for _ in range(count):
        yield generate_summary(rng)


def batch_body(events: list[dict[str, Any]]) -> bytes:
    """A delivery body as Event Streams sends it: a JSON array of CloudEvents."""
    return json.dumps(events, separators=(",", ":")).encode()


def sign(url: str, body: bytes, auth_token: str) -> tuple[str, str]:
    """Sign a delivery the way Event Streams does, with the ``twilio`` SDK's own validator.

    Returns ``(url_twilio_calls, x_twilio_signature)``: Twilio appends ``bodySHA256`` to the sink
    URL's query and signs that whole URL with HMAC-SHA1 of the auth token.
    """
    from urllib.parse import urlencode, urlsplit, urlunsplit

    from twilio.request_validator import RequestValidator

    validator = RequestValidator(auth_token)
    parts = urlsplit(url)
    query = "&".join(q for q in (parts.query, urlencode({"bodySHA256": validator.compute_hash(body.decode())})) if q)
    signed_url = urlunsplit(parts._replace(query=query))
    return signed_url, validator.compute_signature(signed_url, {})
