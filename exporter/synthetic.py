"""Realistic synthetic participant, call and conference summaries and TaskRouter events, for tests, benchmarks and demos.

The shapes follow Twilio's published events and REST resources, in Twilio's vocabulary (the call
states, types, directions, regions and end reasons the exporter's allowlists hold); the
distributions follow what a contact centre sees: most calls are clean, a tail is degraded, and a
degraded stream carries the tags, severities and occurrences that Voice Insights would attach to
it. A Flex call (:class:`FlexCall`) ties the kinds together: its TaskRouter events name the queue,
workflow and team, and its legs' summaries carry its call and conference SIDs.

Why one module: the kinds draw from one contact-centre mix (regions, countries, call types,
SIDs from one seeded generator) and one envelope and signing helper, for every user of synthetic data.
"""

from __future__ import annotations

import hashlib
import json
import random
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from exporter.models import CALL_SUMMARY_COMPLETE, CONFERENCE_SUMMARY_COMPLETE, TASKROUTER_PREFIX

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
        # The event names the call's status call_state, the REST resource call_status: both, as payloads carry.
        "call_state": "completed",
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


# Call Summaries: the far end's carriers (a few, so labels stay within the call caps), Twilio
# edge locations, and the directions of properties.direction.
CARRIERS = ("T-Mobile USA, Inc.", "Verizon Wireless", "AT&T Wireless", "Vodafone UK", "Deutsche Telekom", "Twilio")
CONNECTIONS = ("mobile", "landline", "voip")
EDGE_LOCATIONS = ("ashburn", "umatilla", "dublin", "frankfurt", "sydney", "singapore", "tokyo", "sao-paulo")
CALL_DIRECTIONS = ("inbound", "outbound_api", "outbound_dial", "trunking_originating", "trunking_terminating")
# Twilio's call_state vocabulary (call-and-conference-summary-facts.md; exporter/record/labels.py allows
# exactly these), not the Calls API's no-answer and failed.
CALL_STATES = ("completed", "completed", "completed", "completed", "busy", "noanswer", "fail", "canceled")
# The final SIP response of a call in each state: 486 Busy Here, 480 Temporarily Unavailable or 487
# Request Terminated (no answer, cancelled), 404 or 503 (failed).
SIP_RESPONSES = {"completed": (200,), "busy": (486,), "noanswer": (480, 487), "fail": (404, 503), "canceled": (487,)}
# The far end's connection where the call type says it (a Voice SDK app, a SIP interface).
FAR_CONNECTIONS = {"client": "twilio_sdk", "sip": "sip_interface"}
# The edge a call's media passed through, by call type (facts, "Edges"; a client call's SDK edge is added below).
GATEWAY_EDGES = {"sip": "sip_edge", "client": "client_edge"}


def _timestamp(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def generate_call_summary(
    rng: random.Random, *, call_type: str | None = None, direction: str | None = None, call_state: str | None = None, **overrides: Any
) -> dict[str, Any]:
    """One complete Call Summary (the CloudEvent ``data`` / REST resource), its shape that of Twilio's schema 7.

    Most calls are clean; a degraded tail has the jitter, loss, MOS and round trip past Twilio's
    thresholds. A call that never connected (busy, noanswer, fail, canceled) has its SIP response
    and no connect duration. ``call_type``, ``direction`` (``properties.direction``) and
    ``call_state`` are drawn unless given, and the edges and SIP response follow them; ``overrides`` replace top-level fields after
    generation.
    """
    degraded = rng.random() < 0.15
    start = datetime(2026, 11, 1, tzinfo=UTC) + timedelta(seconds=rng.randrange(0, 86400 * 20))
    connect = max(1, int(rng.lognormvariate(4.5, 1.0)))
    call_type = call_type or rng.choice(CALL_TYPES)
    direction = direction or rng.choice(CALL_DIRECTIONS)
    region = rng.choice(REGIONS)
    state = call_state or rng.choice(CALL_STATES)
    gateway = GATEWAY_EDGES.get(call_type, "carrier_edge")
    codec, codec_name = (111, "opus") if gateway == "client_edge" else (0, "pcmu")

    def jitter() -> dict[str, float]:
        avg = rng.uniform(6, 25) if degraded and rng.random() < 0.5 else rng.uniform(0.05, 4.0)
        return {"avg": round(avg, 4), "max": round(avg * rng.uniform(1.5, 8), 4)}

    def carrier_stream(received: bool) -> dict[str, Any]:
        loss = rng.uniform(5, 15) if degraded and rng.random() < 0.4 else rng.choice((0.0, 0.0, rng.uniform(0, 1.0)))
        packets = rng.randrange(500, 60_000)
        stream: dict[str, Any] = {
            "codec": codec,
            "codec_name": codec_name,
            "packets_received" if received else "packets_sent": packets,
            "packets_lost": int(packets * loss / 100),
            "packets_loss_percentage": round(loss, 6),
            "jitter": jitter(),
        }
        return stream

    def end(far: bool) -> dict[str, Any]:
        connection = FAR_CONNECTIONS.get(call_type) if far else None
        return {"carrier": rng.choice(CARRIERS), "connection": connection or rng.choice(CONNECTIONS), "country_code": rng.choice(COUNTRIES)}

    far_is_from = direction in ("inbound", "trunking_originating")
    connected = state == "completed"
    duration = connect + 5 if connected else min(connect, 60)  # a call that never connected only rang
    summary: dict[str, Any] = {
        "call_sid": _sid("CA", rng),
        "account_sid": "AC" + "0" * 31 + "1",
        "call_type": call_type,
        "call_state": state,
        "processing_state": "complete",
        "start_time": _timestamp(start),
        "end_time": _timestamp(start + timedelta(seconds=duration)),
        "duration": duration,
        "connect_duration": connect if connected else None,
        "tags": ["silence"] if rng.random() < 0.03 else None,
        "from": {"caller": "+15005550006", **end(far_is_from)},
        "to": {"callee": "+15005550009", **end(not far_is_from)},
        "attributes": {"conference_participant": False},
        "properties": {
            "direction": direction,
            "disconnected_by": rng.choice(("caller", "callee")),
            "last_sip_response_num": rng.choice(SIP_RESPONSES[state]),
            "pdd_ms": rng.randrange(500, 6000),
        },
        gateway: {
            "metrics": {"inbound": carrier_stream(True), "outbound": carrier_stream(False)},
            "properties": {"direction": "outbound", "media_region": region, "edge_location": rng.choice(EDGE_LOCATIONS)},
        },
        "processing_version": 3,
    }
    if call_type == "client":
        mos = round(rng.uniform(2.5, 3.4) if degraded else rng.uniform(4.0, 4.5), 2)
        rtt = rng.uniform(300, 600) if degraded and rng.random() < 0.5 else rng.uniform(30, 150)
        summary["sdk_edge"] = {
            "metrics": {
                "inbound": {
                    "packets_received": rng.randrange(500, 60_000),
                    "packets_lost": 0,
                    "packets_loss_percentage": 0.0,
                    "jitter": jitter(),
                    "mos": {"avg": mos, "min": round(mos * 0.95, 2), "max": mos},
                    "rtt": {"avg": round(rtt, 1), "min": round(rtt * 0.8, 1), "max": round(rtt * 1.3, 1)},
                },
                "outbound": {"codec": 111, "codec_name": "opus", "packets_sent": rng.randrange(500, 60_000)},
            },
        }
    summary.update(overrides)
    return summary


def generate_conference_summary(rng: random.Random, **overrides: Any) -> dict[str, Any]:
    """One final Conference Summary (``processing_state`` complete), its shape that of Twilio's schema 2."""
    start = datetime(2026, 11, 1, tzinfo=UTC) + timedelta(seconds=rng.randrange(0, 86400 * 20))
    duration = max(5, int(rng.lognormvariate(6.0, 0.8)))
    issues = {name: rng.choice((0, 0, 0, 1, 2)) for name in ("call_quality", "region_configuration", "participant_behavior")}
    summary: dict[str, Any] = {
        "conference_sid": _sid("CF", rng),
        "account_sid": "AC" + "0" * 31 + "1",
        "create_time": _timestamp(start),
        "start_time": _timestamp(start + timedelta(seconds=3)),
        "end_time": _timestamp(start + timedelta(seconds=duration)),
        "duration_seconds": duration,
        "connect_duration_seconds": max(1, duration - 3),
        "status": "completed",
        "max_participants": 250,
        "max_concurrent_participants": rng.randrange(2, 8),
        "unique_participants": rng.randrange(2, 10),
        "end_reason": rng.choice(("last_participant_left", "participant_with_end_conference_on_exit_left", "conference_ended_via_api")),
        "mixer_region": rng.choice(REGIONS),
        "recording_enabled": rng.random() < 0.3,
        "detected_issues": issues,
        "tags": (["high_packet_loss", "quality_warnings"] if issues["call_quality"] else None),
        "processing_state": rng.choice(("complete", "complete", "complete", "timeout")),
    }
    summary.update(overrides)
    return summary


def call_event(summary: dict[str, Any], *, event_id: str | None = None, event_type: str = CALL_SUMMARY_COMPLETE) -> dict[str, Any]:
    """Wrap a Call Summary in the CloudEvent Event Streams delivers (``partial`` and ``predicted-complete`` by ``event_type``)."""
    return {
        "specversion": "1.0",
        "type": event_type,
        "source": f"/v1/Voice/{summary.get('call_sid')}/Summary",
        "id": event_id or "EZ" + uuid.uuid4().hex,
        "dataschema": "https://events-schemas.twilio.com/VoiceInsights.CallSummary/7",
        "datacontenttype": "application/json",
        "time": summary.get("end_time") or "2026-11-01T00:00:00Z",
        "data": summary,
    }


def conference_event(summary: dict[str, Any], *, event_id: str | None = None, event_type: str = CONFERENCE_SUMMARY_COMPLETE) -> dict[str, Any]:
    """Wrap a Conference Summary in its CloudEvent (a ``complete`` one may still say ``in_progress``)."""
    return {
        "specversion": "1.0",
        "type": event_type,
        "source": "/v1/Conferences/" + str(summary.get("conference_sid")),
        "id": event_id or "EZ" + uuid.uuid4().hex,
        "dataschema": "https://events-schemas.twilio.com/VoiceInsights.ConferenceSummary/2",
        "datacontenttype": "application/json",
        "time": summary.get("end_time") or "2026-11-01T00:00:00Z",
        "data": summary,
    }


# ---------------------------------------------------------------------------------------------
# Flex: calls routed by TaskRouter (taskrouter-join-facts.md). Each call is a task: the customer's
# leg waits in a queue, an agent of a team answering that queue accepts the reservation, and
# TaskRouter's conference instruction joins both legs into a conference named after the task,
# writing its SID and both legs' call SIDs into the task's attributes (§3.1). The task's events
# reach the sink before the call's summaries, which come up to 30 minutes after the call (§4).
# ---------------------------------------------------------------------------------------------
TASKROUTER_SCHEMA = "https://events-schemas.twilio.com/TaskRouter.WDSEvent/4"
WORKSPACE_SID = "WS" + "0" * 31 + "1"
WORKSPACE = "Flex Task Assignment"
# A handful of queues, each with the workflow that routes to it and the teams whose agents answer
# it: a small centre, so that the queue and team panels have something to compare.
QUEUES = (
    ("Support", "Assign to Anyone", ("Tier 1", "Tier 2")),
    ("Sales", "Assign to Anyone", ("Sales",)),
    ("Billing", "Assign to Anyone", ("Billing", "Tier 2")),
    ("Soporte", "Spanish", ("Tier 1 ES",)),
)
# The events of one task in its life's order, each a type the join takes (exporter/join.py).
TASK_EVENTS = ("reservation.accepted", "reservation.wrapup", "task.completed")
Leg = Literal["customer", "agent"]
LEGS: tuple[Leg, ...] = ("customer", "agent")


def _named_sid(prefix: str, name: str) -> str:
    """The SID of a named resource (a queue, a workflow): the same in every run."""
    return prefix + hashlib.sha256(name.encode()).hexdigest()[:32]


@dataclass(frozen=True, slots=True)
class FlexCall:
    """One call of a Flex centre: its task, the reservation an agent accepted, the conference and both legs."""

    task_sid: str
    reservation_sid: str
    worker_sid: str
    worker: str
    conference_sid: str
    customer_call: str
    agent_call: str
    queue: str
    workflow: str
    team: str
    direction: str  # the task's: inbound (the customer called) or outbound (the agent dialled out)
    accepted: datetime
    ended: datetime


def generate_flex_call(rng: random.Random) -> FlexCall:
    """One Flex voice call: mostly inbound, answered by an agent of one of its queue's teams."""
    queue, workflow, teams = rng.choice(QUEUES)
    accepted = datetime(2026, 11, 1, tzinfo=UTC) + timedelta(seconds=rng.randrange(0, 86400 * 20))
    agent = rng.randrange(1, 41)
    return FlexCall(
        task_sid=_sid("WT", rng),
        reservation_sid=_sid("WR", rng),
        worker_sid=_named_sid("WK", f"agent{agent:02d}"),
        worker=f"agent{agent:02d}",
        conference_sid=_sid("CF", rng),
        customer_call=_sid("CA", rng),
        agent_call=_sid("CA", rng),
        queue=queue,
        workflow=workflow,
        team=rng.choice(teams),
        direction="inbound" if rng.random() < 0.75 else "outbound",
        accepted=accepted,
        ended=accepted + timedelta(seconds=max(20, int(rng.lognormvariate(5.3, 0.8)))),
    )


def taskrouter_event(call: FlexCall, eventtype: str, at: datetime, *, event_id: str | None = None) -> dict[str, Any]:
    """The CloudEvent of ``com.twilio.taskrouter.<eventtype>`` for ``call`` (shaped as taskrouter-join-facts.md §2).

    The task's attributes carry the conference and both legs' call SIDs from the reservation's
    acceptance on (the conference instruction writes them); a reservation event also carries the
    worker, whose attributes name the team.
    """
    attributes: dict[str, Any] = {"direction": call.direction, "from": "+15005550006", "to": "+15005550009"}
    if call.direction == "inbound":
        attributes["call_sid"] = call.customer_call  # a task <Enqueue> created (facts §3.1)
    else:
        attributes["outbound_to"] = "+15005550009"
    attributes["conference"] = {"sid": call.conference_sid, "participants": {"customer": call.customer_call, "worker": call.agent_call}}
    group, _, status = eventtype.partition(".")
    payload: dict[str, Any] = {
        "sid": _named_sid("EV", f"{call.task_sid}{eventtype}"),
        "eventtype": eventtype,
        "timestamp": _timestamp(at),
        "account_sid": "AC" + "0" * 31 + "1",
        "workspace_sid": WORKSPACE_SID,
        "workspace_name": WORKSPACE,
        "resource_type": group,
        "resource_sid": call.reservation_sid if group == "reservation" else call.task_sid,
        "task_sid": call.task_sid,
        "task_attributes": json.dumps(attributes),
        "task_channel_unique_name": "voice",
        "task_queue_sid": _named_sid("WQ", call.queue),
        "task_queue_name": call.queue,
        "workflow_sid": _named_sid("WW", call.workflow),
        "workflow_name": call.workflow,
        "task_date_created": _timestamp(call.accepted - timedelta(seconds=30)),
        "task_assignment_status": {"accepted": "assigned", "wrapup": "wrapping"}.get(status, status),
    }
    if group == "reservation":
        payload |= {
            "reservation_sid": call.reservation_sid,
            "reservation_status": status,
            "worker_sid": call.worker_sid,
            "worker_name": call.worker,
            "worker_attributes": json.dumps({"team_name": call.team, "contact_uri": f"client:{call.worker}", "routing": {"skills": [call.queue]}}),
        }
    return {
        "specversion": "1.0",
        "type": TASKROUTER_PREFIX + eventtype,
        "source": f"/v1/Workspaces/{WORKSPACE_SID}/Tasks/{call.task_sid}",
        "id": event_id or "EZ" + uuid.uuid4().hex,
        "dataschema": TASKROUTER_SCHEMA,
        "datacontenttype": "application/json",
        "time": _timestamp(at),
        "data": {
            "sid": payload["sid"],
            "name": "".join(word.capitalize() for word in eventtype.replace("-", ".").split(".")),
            "account_sid": payload["account_sid"],
            "timestamp": _timestamp(at),
            "level": "INFO",
            "group": group,
            "product_name": "TaskRouter",
            "publisher": WORKSPACE,
            "publisher_metadata": "{}",
            "payload_type": "application/json",
            "payload": payload,
        },
    }


def taskrouter_events(call: FlexCall) -> list[dict[str, Any]]:
    """The task's :data:`TASK_EVENTS`: accepted when the agent answers, wrapup when the call ends, completed a minute later."""
    times = (call.accepted, call.ended, call.ended + timedelta(seconds=60))
    return [taskrouter_event(call, eventtype, at) for eventtype, at in zip(TASK_EVENTS, times, strict=True)]


def flex_participant_summary(rng: random.Random, call: FlexCall, leg: Leg) -> dict[str, Any]:
    """The participant summary of one leg of ``call``: the customer's phone, or the agent's Flex client (Voice SDK)."""
    if leg == "customer":
        fields = {"call_sid": call.customer_call, "call_type": "carrier", "call_direction": call.direction}
    else:
        fields = {"call_sid": call.agent_call, "call_type": "client", "call_direction": "outbound"}
    return generate_summary(rng, conference_sid=call.conference_sid, label=leg, **fields)


def flex_call_summary(rng: random.Random, call: FlexCall, leg: Leg) -> dict[str, Any]:
    """The Call Summary of one leg of ``call``. The conference dials the agent's client; an outbound task's customer may not answer."""
    attributes = {"conference_participant": True}
    if leg == "agent":
        return generate_call_summary(
            rng, call_type="client", direction="outbound_api", call_state="completed", call_sid=call.agent_call, attributes=attributes
        )
    if call.direction == "inbound":
        return generate_call_summary(
            rng, call_type="carrier", direction="inbound", call_state="completed", call_sid=call.customer_call, attributes=attributes
        )
    return generate_call_summary(rng, call_type="carrier", direction="outbound_api", call_sid=call.customer_call, attributes=attributes)


def flex_conference_summary(rng: random.Random, call: FlexCall) -> dict[str, Any]:
    """The Conference Summary of ``call``'s conference, named after its task as TaskRouter names it."""
    return generate_conference_summary(
        rng, conference_sid=call.conference_sid, friendly_name=call.task_sid, unique_participants=2, max_concurrent_participants=2
    )


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
