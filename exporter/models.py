"""Pydantic models of the CloudEvent envelope and the Voice Insights summaries (participant, call, conference).

Tolerant parsing lives here and nowhere else (exporter/parse.py, beside it, applies these models
to what the doors hand on and turns their errors into the counted reasons). Real payloads (twilio-facts.md) carry nulls and
absent fields anywhere, ints where floats are documented, ``call_state`` or ``call_status``,
event timestamps in seconds or milliseconds, and keys nobody documented; all of that is accepted.
What is refused is what would corrupt a metric, and only in the fields that become one: a
value that is not a number (booleans and numeric strings included), NaN or infinity, a number
outside its physical range (written once, below), a summary without a participant SID. Fields
nothing is recorded from are never a reason to refuse a summary.

One model per kind of summary serves both paths: the ``data`` of a pushed CloudEvent and the
body of the REST resource (``GET /v1/Conferences/{CF}/Participants/{CP}``, ``GET
/v1/Voice/Summaries``, ``GET /v1/Conferences/{CF}``).

Why one module: tolerant parsing lives in one place, so the envelope, the summary and the JSON
reader share one set of rules and no road into the exporter meets weaker ones.
"""

from __future__ import annotations

from typing import Annotated, Any, TypeAlias

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, Strict, field_validator

from exporter.reader import loads as loads  # re-exported: the one JSON reader (exporter/reader.py)

# The participant summary's event type, as Event Streams' catalogue names it (the one a
# subscription names: exporter/subscribe.py), and the name one Twilio page gives the same event.
PARTICIPANT_SUMMARY_COMPLETE = "com.twilio.voice.insights.conference-participant-summary.complete"
PARTICIPANT_SUMMARY_ALIAS = "com.twilio.voice.insights.participant-summary.complete"
# The event types carrying a participant summary (exporter/subjects/__init__.py: the participant subject).
SUMMARY_TYPES = frozenset({PARTICIPANT_SUMMARY_COMPLETE, PARTICIPANT_SUMMARY_ALIAS})
TEST_EVENT_TYPE = "com.twilio.eventstreams.test-event"


class _Tolerant(BaseModel):
    # extra="ignore": unknown keys (last_rtp_count, unique_ssrc_count, early_media, ...) and the
    # documented fields nothing is recorded from are accepted and dropped (see ParticipantSummary).
    # coerce_numbers_to_str: a numeric label or country code is still text.
    model_config = ConfigDict(extra="ignore", allow_inf_nan=False, coerce_numbers_to_str=True, frozen=True)


# ---------------------------------------------------------------------------------------------
# Numbers that become metrics. Each is a JSON number (never a boolean, never a string), finite,
# and inside a physical range: a value outside it is a broken or hostile payload, and recording
# it would poison a histogram's sum or a counter for good. The ranges are written here once.
# ---------------------------------------------------------------------------------------------
# MOS follows ITU-T G.107: 1 to about 4.5; Twilio's scale never exceeds 5, and 0 is seen for a
# stream without audio.
MOS_RANGE = (0.0, 5.0)
# Jitter (ms): a jitter buffer holds well under a second; 60 s of jitter is no longer audio.
JITTER_MS_RANGE = (0.0, 60_000.0)
# Latency edge-to-mixer (ms): intercontinental paths are ~300 ms; a minute is no longer a call.
LATENCY_MS_RANGE = (0.0, 60_000.0)
# A percentage.
PACKET_LOSS_PERCENT_RANGE = (0.0, 100.0)
# Packets per stream: 50 packets/s (20 ms frames) for a year is 1.6e9; 1e12 leaves room for any
# packetisation and stays far below 2**53, so a counter sum of many summaries stays exact.
PACKETS_RANGE = (0, 10**12)
# Quality issues detected on one participant: a handful of issue types; 10,000 is any plausible list.
QUALITY_ISSUES_RANGE = (0, 10_000)
# Seconds in a conference or in a queue: a conference lasts at most 24 h on Twilio; a year is the
# bound beyond which a value is certainly not a duration of this call.
SECONDS_RANGE = (0.0, 366 * 86400.0)


def _positive_zero(value: float) -> float:
    """``-0.0`` becomes ``0.0``: the two are equal, but a sum of ``-0.0`` prints as ``-0.0``.

    >>> _positive_zero(-0.0)
    0.0
    """
    return value + 0.0


def _integral(value: Any) -> Any:
    """A count: an integer, or a float with an integral value (``12.0``); never a boolean or a string."""
    if isinstance(value, bool):
        raise ValueError("a count must be a number, not a boolean")
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


# Written out rather than built by a helper function: a type checker only accepts an alias it can
# read statically, and pydantic sees exactly the same Annotated metadata either way.
Mos: TypeAlias = Annotated[float, Strict(), Field(ge=MOS_RANGE[0], le=MOS_RANGE[1]), AfterValidator(_positive_zero)]
JitterMs: TypeAlias = Annotated[float, Strict(), Field(ge=JITTER_MS_RANGE[0], le=JITTER_MS_RANGE[1]), AfterValidator(_positive_zero)]
LatencyMs: TypeAlias = Annotated[float, Strict(), Field(ge=LATENCY_MS_RANGE[0], le=LATENCY_MS_RANGE[1]), AfterValidator(_positive_zero)]
PacketLossPercent: TypeAlias = Annotated[
    float, Strict(), Field(ge=PACKET_LOSS_PERCENT_RANGE[0], le=PACKET_LOSS_PERCENT_RANGE[1]), AfterValidator(_positive_zero)
]
Packets: TypeAlias = Annotated[int, BeforeValidator(_integral), Strict(), Field(ge=PACKETS_RANGE[0], le=PACKETS_RANGE[1])]
QualityIssues: TypeAlias = Annotated[int, BeforeValidator(_integral), Strict(), Field(ge=QUALITY_ISSUES_RANGE[0], le=QUALITY_ISSUES_RANGE[1])]
Seconds: TypeAlias = Annotated[float, Strict(), Field(ge=SECONDS_RANGE[0], le=SECONDS_RANGE[1]), AfterValidator(_positive_zero)]


class JitterStat(_Tolerant):
    """Average and maximum jitter of a stream, in milliseconds."""

    avg: JitterMs | None = None
    max: JitterMs | None = None


class LatencyStat(_Tolerant):
    """Average and maximum latency of a stream, in milliseconds."""

    avg: LatencyMs | None = None
    max: LatencyMs | None = None


class TagInfo(_Tolerant):
    severity: str | None = None


class TagsInfo(_Tolerant):
    """Per-issue severities of the tags on one stream; keys beyond the documented four are kept."""

    model_config = ConfigDict(extra="allow")

    description: Any = None  # not recorded: any value is accepted
    packet_loss: TagInfo | None = None
    jitter: TagInfo | None = None
    latency: TagInfo | None = None
    low_mos: TagInfo | None = None

    def severities(self) -> dict[str, str]:
        """``{issue: severity}`` for every issue that names a severity, documented or not."""
        found = {
            issue: info.severity
            for issue, info in (("packet_loss", self.packet_loss), ("jitter", self.jitter), ("latency", self.latency), ("low_mos", self.low_mos))
            if info is not None and info.severity
        }
        for issue, info in (self.model_extra or {}).items():
            if isinstance(info, dict) and isinstance(info.get("severity"), str) and info["severity"]:
                found[issue] = info["severity"]
        return found


def _counted_list(value: Any) -> Any:
    """Lists whose entries are only counted: the entries' contents are never a reason to refuse."""
    return value if isinstance(value, list) else None


# Only the length of these lists is recorded, so their entries (timestamps, occurrence details)
# are not validated: a malformed timestamp must not cost the participant's whole summary.
CountedList = Annotated[list[Any] | None, BeforeValidator(_counted_list)]


class Occurrences(_Tolerant):
    """Times a stream degraded, per metric; undocumented metrics are counted too."""

    model_config = ConfigDict(extra="allow")

    packet_loss: CountedList = None
    jitter: CountedList = None
    latency: CountedList = None

    def counts(self) -> dict[str, int]:
        """``{metric: number of occurrences}``, zero counts left out."""
        found = {
            name: len(entries) for name, entries in (("packet_loss", self.packet_loss), ("jitter", self.jitter), ("latency", self.latency)) if entries
        }
        for name, entries in (self.model_extra or {}).items():
            if isinstance(entries, list) and entries:
                found[name] = len(entries)
        return found


class StreamMetrics(_Tolerant):
    """Quality of one media direction (``inbound`` or ``outbound``) as Twilio measured it."""

    total_packets_lost: Packets | None = None
    total_packets_received: Packets | None = None
    packet_loss_percentage: PacketLossPercent | None = None
    jitter: JitterStat | None = None
    latency: LatencyStat | None = None
    mos: Mos | None = None
    tags: list[str] | None = None
    tags_info: TagsInfo | None = None
    occurrences: Occurrences | None = None


class Metrics(_Tolerant):
    inbound: StreamMetrics | None = None
    outbound: StreamMetrics | None = None


class Events(_Tolerant):
    """How often the participant took each action; undocumented actions are counted too.

    Only the number of timestamps per action is recorded, so the timestamps are not validated.
    """

    model_config = ConfigDict(extra="allow")

    hold: CountedList = None
    unhold: CountedList = None
    mute: CountedList = None
    unmute: CountedList = None
    modify_beep: CountedList = None
    modify_exit: CountedList = None
    coaching: CountedList = None
    coaching_stopped: CountedList = None
    modify_coached_participant: CountedList = None

    def counts(self) -> dict[str, int]:
        """``{action: how many times}``, zero counts left out."""
        found = {name: len(value) for name, value in self if isinstance(value, list) and value}
        for name, value in (self.model_extra or {}).items():
            if isinstance(value, list) and value:
                found[name] = len(value)
        return found


def _tolerant(value: Any) -> Any:
    """A part of the summary that is only partly recorded: a malformed one counts as absent."""
    return value if isinstance(value, dict) else None


class ParticipantSummary(_Tolerant):
    """A Conference Participant Summary: the pushed event's ``data`` and the REST resource alike.

    Strict where a field is recorded, tolerant where it is not. The fields below are the ones that
    become a metric, a label or an exemplar; every other documented field (``from``, ``to``,
    ``join_time``, ``leave_time``, ``is_moderator``, ``whisper``, ``agent_audio``, ``is_coach``,
    ``coached_participants``, ``outbound_queue_length``, ``properties``, ``url``, ...) is accepted
    in any form and dropped, so a malformed value there never costs the participant's summary.
    """

    participant_sid: Annotated[str, Field(min_length=1)]
    label: str | None = None
    conference_sid: str | None = None
    call_sid: str | None = None
    account_sid: str | None = None
    call_direction: str | None = None
    # The event documents call_state, the REST resource call_status; payloads carry either or both.
    call_state: str | None = None
    call_status: str | None = None
    country_code: str | None = None
    duration_seconds: Seconds | None = None
    outbound_time_in_queue: Seconds | None = None
    jitter_buffer_size: str | None = None
    participant_region: str | None = None
    conference_region: str | None = None
    call_type: str | None = None
    quality_issues: QualityIssues | None = None
    processing_state: str | None = None
    events: Annotated[Events | None, BeforeValidator(_tolerant)] = None
    metrics: Metrics | None = None

    @property
    def status(self) -> str | None:
        """The call status, whichever name the payload used."""
        return self.call_status or self.call_state

    def streams(self) -> list[tuple[str, StreamMetrics]]:
        """The media directions present, as ``(stream label, metrics)``."""
        if self.metrics is None:
            return []
        return [(name, m) for name, m in (("inbound", self.metrics.inbound), ("outbound", self.metrics.outbound)) if m is not None]


# ---------------------------------------------------------------------------------------------
# Call Summaries and Conference Summaries (call-and-conference-summary-facts.md). The same rules:
# the fields below become a metric, a label or an exemplar; every other documented field
# (phone numbers, IPs, places, trust, annotation, SDK events, the SIP edge's latency, ...) is
# accepted in any form and dropped.
# ---------------------------------------------------------------------------------------------
CALL_SUMMARY_COMPLETE = "com.twilio.voice.insights.call-summary.complete"
CALL_SUMMARY_PARTIAL = "com.twilio.voice.insights.call-summary.partial"
CALL_SUMMARY_PREDICTED = "com.twilio.voice.insights.call-summary.predicted-complete"
CONFERENCE_SUMMARY_COMPLETE = "com.twilio.voice.insights.conference-summary.complete"
CONFERENCE_SUMMARY_PARTIAL = "com.twilio.voice.insights.conference-summary.partial"
# A conference summary's processing_state once Twilio stops updating it.
CONFERENCE_FINAL_STATES = frozenset({"complete", "timeout"})

# Post-dial delay and queue time (ms): a call rings or queues for minutes at most; past a day the
# value is certainly not a delay of this call.
DELAY_MS_RANGE = (0.0, 86_400_000.0)
# Participants a conference reached at once: Twilio caps a conference at 250; 10,000 is any
# plausible future cap.
PARTICIPANTS_RANGE = (0, 10_000)

DelayMs: TypeAlias = Annotated[float, Strict(), Field(ge=DELAY_MS_RANGE[0], le=DELAY_MS_RANGE[1]), AfterValidator(_positive_zero)]
Participants: TypeAlias = Annotated[int, BeforeValidator(_integral), Strict(), Field(ge=PARTICIPANTS_RANGE[0], le=PARTICIPANTS_RANGE[1])]


def _label_text(value: Any) -> Any:
    """A part of the summary that only becomes a label: anything but text or a number counts as absent."""
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        return None
    return value


# A label from a field nothing is measured from: an odd value there (an object, a list, a
# boolean) becomes ``unknown`` rather than costing the summary.
LabelText = Annotated[str | None, BeforeValidator(_label_text)]


class MosStat(_Tolerant):
    """Average, minimum and maximum MOS the Voice SDK computed for a stream."""

    avg: Mos | None = None
    min: Mos | None = None
    max: Mos | None = None


class RttStat(_Tolerant):
    """Round-trip time the Voice SDK measured (ms), bounded by the latency range (a minute is no longer a call)."""

    avg: LatencyMs | None = None
    min: LatencyMs | None = None
    max: LatencyMs | None = None


class EdgeStream(_Tolerant):
    """One direction of one edge of a call. The SIP edge's ``latency`` has no documented unit and is not read."""

    codec_name: LabelText = None
    packets_received: Packets | None = None
    packets_sent: Packets | None = None
    packets_lost: Packets | None = None
    packets_loss_percentage: PacketLossPercent | None = None
    jitter: JitterStat | None = None
    mos: MosStat | None = None
    rtt: RttStat | None = None


class EdgeMetrics(_Tolerant):
    inbound: EdgeStream | None = None
    outbound: EdgeStream | None = None


class EdgeProperties(_Tolerant):
    """Where an edge's media went: only the region and Twilio edge names, never its IPs or SIP IDs."""

    media_region: LabelText = None
    edge_location: LabelText = None


class Edge(_Tolerant):
    """``carrier_edge``, ``sip_edge``, ``sdk_edge`` or ``client_edge``; any part may be missing."""

    properties: Annotated[EdgeProperties | None, BeforeValidator(_tolerant)] = None
    metrics: EdgeMetrics | None = None


class CallEnd(_Tolerant):
    """The ``from`` or ``to`` of a call: only what can be a bounded label (never the number or the place)."""

    carrier: LabelText = None
    connection: LabelText = None
    country_code: LabelText = None


def _sip_response(value: Any) -> Any:
    """The last SIP response code, or None: it only becomes a label (its class), so an odd value is absent.

    >>> _sip_response(200), _sip_response("486"), _sip_response(0), _sip_response(True), _sip_response("abc")
    (200, 486, None, None, None)
    """
    if isinstance(value, bool):
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, str) and value.isdigit():
        value = int(value)
    return value if isinstance(value, int) and 100 <= value <= 699 else None


class CallProperties(_Tolerant):
    direction: LabelText = None
    disconnected_by: LabelText = None
    # 0 when unknown; only its class (2xx, 4xx, ...) is recorded.
    last_sip_response_num: Annotated[int | None, BeforeValidator(_sip_response)] = None
    pdd_ms: DelayMs | None = None
    queue_time: DelayMs | None = None
    media_region: LabelText = None
    edge_location: LabelText = None


# Which end of a call is the far one (the network Twilio reached), by properties.direction.
_FAR_END_IS_FROM = frozenset({"inbound", "trunking_originating"})
_FAR_END_IS_TO = frozenset({"outbound_api", "outbound_dial", "trunking_terminating"})
# The edges in label order, and those whose properties name the call's edge location and media
# region when the top-level properties do not (the issue's order: carrier, SIP, client).
CALL_EDGES = ("carrier_edge", "sip_edge", "sdk_edge", "client_edge")
_GATEWAY_EDGES = ("carrier_edge", "sip_edge", "client_edge")


class CallSummary(_Tolerant):
    """A Voice Insights Call Summary (schema versions 1 to 7): the pushed event's ``data`` and the REST resource alike.

    Deduplicated by ``call_sid``. Recorded only from a ``complete`` event (exporter/subjects/__init__.py), or, pulled, when ``processing_state`` is ``complete``.
    """

    call_sid: Annotated[str, Field(min_length=1)]
    account_sid: str | None = None
    call_type: LabelText = None
    call_state: LabelText = None
    answered_by: LabelText = None
    processing_state: LabelText = None
    connect_duration: Seconds | None = None
    tags: list[str] | None = None
    from_: Annotated[CallEnd | None, BeforeValidator(_tolerant), Field(alias="from")] = None
    to: Annotated[CallEnd | None, BeforeValidator(_tolerant)] = None
    properties: Annotated[CallProperties | None, BeforeValidator(_tolerant)] = None
    carrier_edge: Edge | None = None
    sip_edge: Edge | None = None
    sdk_edge: Edge | None = None
    client_edge: Edge | None = None

    def edges(self) -> list[tuple[str, Edge]]:
        """The edges present, as ``(edge label, edge)``, in label order."""
        return [(name, edge) for name in CALL_EDGES if (edge := getattr(self, name)) is not None]

    def far_end(self) -> CallEnd | None:
        """The end of the call that is not Twilio's customer: the caller of an inbound call, the callee of an outbound one."""
        direction = self.properties.direction if self.properties is not None else None
        if direction in _FAR_END_IS_FROM:
            return self.from_
        if direction in _FAR_END_IS_TO:
            return self.to
        return None

    def edge_property(self, name: str) -> str | None:
        """``media_region`` or ``edge_location``: the top-level property where present, else the first gateway edge's."""
        top = getattr(self.properties, name) if self.properties is not None else None
        if top:
            return top  # type: ignore[no-any-return]
        for edge_name in _GATEWAY_EDGES:
            edge: Edge | None = getattr(self, edge_name)
            if edge is not None and edge.properties is not None and (value := getattr(edge.properties, name)):
                return value  # type: ignore[no-any-return]
        return None


class DetectedIssues(_Tolerant):
    """How many issues of each documented category Voice Insights detected in a conference."""

    call_quality: QualityIssues | None = None
    region_configuration: QualityIssues | None = None
    participant_behavior: QualityIssues | None = None


class ConferenceSummary(_Tolerant):
    """A Voice Insights Conference Summary: the pushed event's ``data`` and ``GET /v1/Conferences/{CF}`` alike.

    Deduplicated by ``conference_sid`` (a key of its own: the poller's conference keys mean
    "its participants are done"). Recorded only when :meth:`final` (and, pushed, from a ``complete`` event).
    """

    conference_sid: Annotated[str, Field(min_length=1)]
    account_sid: str | None = None
    status: LabelText = None
    end_reason: LabelText = None
    mixer_region: LabelText = None
    processing_state: LabelText = None
    duration_seconds: Seconds | None = None
    max_concurrent_participants: Participants | None = None
    detected_issues: DetectedIssues | None = None
    tags: list[str] | None = None
    # A TaskRouter conference is named after its task (exporter/join.py looks it up by it); PII
    # by Twilio's flags, so never a label. Anything but text counts as absent.
    friendly_name: Annotated[str | None, BeforeValidator(lambda v: v if isinstance(v, str) and v else None)] = None

    def final(self) -> bool:
        """Whether Twilio no longer changes this summary (its ``processing_state``); its event type is the subject's to tell."""
        return self.processing_state in CONFERENCE_FINAL_STATES

    def issue_counts(self) -> list[tuple[str, int]]:
        """``(category, count)`` of the documented categories present (zero counts included: they are measured)."""
        issues = self.detected_issues
        if issues is None:
            return []
        return [(name, count) for name, count in issues if count is not None]


class CloudEvent(_Tolerant):
    """The CloudEvents 1.0 envelope. ``datacontenttype`` and the ``id`` prefix are not relied upon."""

    id: Annotated[str, Field(min_length=1)]
    type: Annotated[str, Field(min_length=1)]
    specversion: str | None = None
    source: str | None = None
    time: str | None = None
    dataschema: str | None = None
    datacontenttype: str | None = None
    data: Any = None

    @field_validator("data", mode="before")
    @classmethod
    def _decode_string_data(cls, value: Any) -> Any:
        # Kinesis-style sinks carry data as a JSON-encoded string. It meets the same parser, with
        # the same rules and limits, as the body it came in: one parser, one set of rules.
        if isinstance(value, str | bytes):
            try:
                return loads(value)
            except ValueError as exc:
                raise ValueError("data is a string but not JSON") from exc
        return value


# ---------------------------------------------------------------------------------------------
# TaskRouter events (schema TaskRouter.WDSEvent, any version: taskrouter-join-facts.md §2). They
# are not recorded: they tell which task queue, workflow and team handled a call
# (exporter/join.py). Only the fields the join reads are modelled; everything else, PII included
# (from, to, caller, worker_name, contact_uri), is dropped here and never reaches the exporter.
# ---------------------------------------------------------------------------------------------
TASKROUTER_PREFIX = "com.twilio.taskrouter."


def _json_object(value: Any) -> Any:
    # task_attributes and worker_attributes are JSON text inside the payload (RNGD, VELO call
    # JSON.parse): the same strict reader as every body, and an object or nothing.
    if value is None or value == "":
        return None
    if isinstance(value, str | bytes):
        try:
            value = loads(value)
        except ValueError as exc:
            raise ValueError("not JSON") from exc
    if not isinstance(value, dict):
        raise ValueError("not a JSON object")
    return value


def _timestamp(value: Any) -> float | None:
    """Unix seconds from an ISO 8601 text or a number (seconds or milliseconds); None if neither."""
    from datetime import datetime

    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int | float):
        seconds = float(value)
        return seconds / 1000 if seconds > 1e11 else seconds
    if isinstance(value, str):
        try:
            return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
        except ValueError:
            return None
    return None


def _text_or_none(value: Any) -> Any:
    return value if isinstance(value, str) and value else None


TolerantText = Annotated[str | None, BeforeValidator(_text_or_none)]


class TaskConferenceParticipants(_Tolerant):
    customer: TolerantText = None
    worker: TolerantText = None


class TaskConference(_Tolerant):
    sid: TolerantText = None
    participants: Annotated[TaskConferenceParticipants | None, BeforeValidator(_tolerant)] = None


class TaskAttributes(_Tolerant):
    """What the join reads of a voice task's attributes (``conference`` is written by TaskRouter's conference instruction)."""

    call_sid: TolerantText = None
    direction: TolerantText = None
    conference: Annotated[TaskConference | None, BeforeValidator(_tolerant)] = None


class TaskRouterPayload(_Tolerant):
    """The ``data.payload`` of a TaskRouter event: the task's (and reservation's) snapshot."""

    task_sid: Annotated[str, Field(min_length=1)]
    eventtype: TolerantText = None
    timestamp: Annotated[float | None, BeforeValidator(_timestamp)] = None
    reservation_sid: TolerantText = None
    task_channel_unique_name: TolerantText = None
    task_queue_sid: TolerantText = None
    task_queue_name: TolerantText = None
    workflow_sid: TolerantText = None
    workflow_name: TolerantText = None
    # Strict: an attribute text that is not a JSON object is a broken event, not a join.
    task_attributes: Annotated[TaskAttributes | None, BeforeValidator(_json_object)] = None
    worker_attributes: Annotated[dict[str, Any] | None, BeforeValidator(_json_object)] = None


class TaskRouterData(_Tolerant):
    """A TaskRouter CloudEvent's ``data``: the payload inside Event Streams' wrapper."""

    payload: TaskRouterPayload
