"""Pydantic models of the CloudEvent envelope and the Conference Participant Summary.

Tolerant parsing lives here and nowhere else (exporter/parse.py, beside it, applies these models
to what the doors hand on and turns their errors into the counted reasons). Real payloads (twilio-facts.md) carry nulls and
absent fields anywhere, ints where floats are documented, ``call_state`` or ``call_status``,
event timestamps in seconds or milliseconds, and keys nobody documented; all of that is accepted.
What is refused is what would corrupt a metric, and only in the fields that become one: a
value that is not a number (booleans and numeric strings included), NaN or infinity, a number
outside its physical range (written once, below), a summary without a participant SID. Fields
nothing is recorded from are never a reason to refuse a summary.

One summary model serves both paths: the ``data`` of a pushed CloudEvent and the body of the
REST resource ``GET /v1/Conferences/{CF}/Participants/{CP}``.

Why one module: tolerant parsing lives in one place, so the envelope, the summary and the JSON
reader share one set of rules and no road into the exporter meets weaker ones.
"""

from __future__ import annotations

from typing import Annotated, Any, TypeAlias

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, Strict, field_validator
from pydantic_core import from_json

# The event types carrying a participant summary (exporter/subjects.py: the participant subject).
SUMMARY_TYPES = frozenset(
    {
        "com.twilio.voice.insights.conference-participant-summary.complete",
        # The name one Twilio page gives the same event.
        "com.twilio.voice.insights.participant-summary.complete",
    }
)
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


def loads(raw: bytes | str) -> Any:
    """Strict JSON: no NaN or Infinity; ``ValueError`` for anything that is not JSON.

    pydantic's own parser (``from_json``, in Rust) rather than ``json.loads``: about twice as fast
    on a delivery body, the webhook's largest per-summary cost after validation
    (docs/performance.md). It refuses what ``json.loads`` would have refused, and also two
    things it would have accepted: a lone UTF-16 surrogate escape (``"\\ud800"``, which no
    exposition could encode) and nesting deeper than 200 (a summary is 5 deep).

    >>> loads(b'[{"mos": 4.2}]')
    [{'mos': 4.2}]
    >>> loads(b'[NaN]')
    Traceback (most recent call last):
    ...
    ValueError: expected value at line 1 column 2
    """
    return from_json(raw, allow_inf_nan=False)
