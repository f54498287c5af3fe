"""Pydantic models of the CloudEvent envelope and the Conference Participant Summary.

Tolerant parsing lives here and nowhere else. Real payloads (twilio-facts.md) carry nulls and
absent fields anywhere, ints where floats are documented, ``call_state`` or ``call_status``,
event timestamps in seconds or milliseconds, and keys nobody documented; all of that is accepted.
What is refused is what would corrupt a metric: a wrong type, a negative count, a MOS outside
0-5, a loss percentage outside 0-100, NaN or infinity, a summary without a participant SID.

One summary model serves both paths: the ``data`` of a pushed CloudEvent and the body of the
REST resource ``GET /v1/Conferences/{CF}/Participants/{CP}``.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator
from pydantic_core import from_json

SUMMARY_TYPES = frozenset(
    {
        "com.twilio.voice.insights.conference-participant-summary.complete",
        # The name one Twilio page gives the same event.
        "com.twilio.voice.insights.participant-summary.complete",
    }
)
TEST_EVENT_TYPE = "com.twilio.eventstreams.test-event"


class _Tolerant(BaseModel):
    # extra="ignore": unknown keys (last_rtp_count, unique_ssrc_count, early_media, ...) are
    # accepted and dropped. coerce_numbers_to_str: a numeric label or country code is still text.
    model_config = ConfigDict(extra="ignore", allow_inf_nan=False, coerce_numbers_to_str=True, frozen=True)


NonNegative = Annotated[float, Field(ge=0)]
Count = Annotated[int, Field(ge=0)]

# Unix timestamps after 5138-11-16 in seconds are read as milliseconds: the documented unit is
# seconds, real payloads carry milliseconds (1636007397844), and no summary is that far away.
_MILLISECONDS_FROM = 10**11


def _to_seconds(value: float) -> float:
    """Normalise a Unix timestamp given in seconds or milliseconds to seconds.

    >>> _to_seconds(1636007397844)
    1636007397.844
    >>> _to_seconds(1621837451)
    1621837451
    """
    return value / 1000 if value >= _MILLISECONDS_FROM else value


Timestamp = Annotated[NonNegative, AfterValidator(_to_seconds)]


class Stat(_Tolerant):
    """Average and maximum of a measurement, in Twilio's unit (milliseconds for jitter and latency)."""

    avg: NonNegative | None = None
    max: NonNegative | None = None


class TagInfo(_Tolerant):
    severity: str | None = None


class TagsInfo(_Tolerant):
    """Per-issue severities of the tags on one stream; keys beyond the documented four are kept."""

    model_config = ConfigDict(extra="allow")

    description: str | None = None
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


class PacketLossOccurrence(_Tolerant):
    percent: NonNegative | None = None
    timestamp: Timestamp | None = None


class StatOccurrence(_Tolerant):
    avg: NonNegative | None = None
    max: NonNegative | None = None
    timestamp: Timestamp | None = None


class Occurrences(_Tolerant):
    """Times a stream degraded, per metric; undocumented metrics are counted too."""

    model_config = ConfigDict(extra="allow")

    packet_loss: list[PacketLossOccurrence] | None = None
    jitter: list[StatOccurrence] | None = None
    latency: list[StatOccurrence] | None = None

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

    total_packets_lost: Count | None = None
    total_packets_received: Count | None = None
    packet_loss_percentage: Annotated[float, Field(ge=0, le=100)] | None = None
    jitter: Stat | None = None
    latency: Stat | None = None
    mos: Annotated[float, Field(ge=0, le=5)] | None = None
    tags: list[str] | None = None
    tags_info: TagsInfo | None = None
    occurrences: Occurrences | None = None


class Metrics(_Tolerant):
    inbound: StreamMetrics | None = None
    outbound: StreamMetrics | None = None


class Properties(_Tolerant):
    """Conference settings at the participant's start."""

    start_conference_on_enter: bool | None = None
    end_conference_on_exit: bool | None = None
    play_early_media: bool | None = None
    recording_enabled: bool | None = None
    trim_recording: bool | None = None
    requested_region: str | None = None
    enter_muted: bool | None = None
    beep_on_enter: bool | None = None
    beep_on_exit: bool | None = None


Timestamps = list[Timestamp] | None


class Events(_Tolerant):
    """When the participant took each action; undocumented actions are kept and counted."""

    model_config = ConfigDict(extra="allow")

    hold: Timestamps = None
    unhold: Timestamps = None
    mute: Timestamps = None
    unmute: Timestamps = None
    modify_beep: Timestamps = None
    modify_exit: Timestamps = None
    coaching: Timestamps = None
    coaching_stopped: Timestamps = None
    modify_coached_participant: Timestamps = None

    def counts(self) -> dict[str, int]:
        """``{action: how many times}``, zero counts left out."""
        found = {name: len(value) for name, value in self if isinstance(value, list) and value}
        for name, value in (self.model_extra or {}).items():
            if isinstance(value, list) and value:
                found[name] = len(value)
        return found


class ParticipantSummary(_Tolerant):
    """A Conference Participant Summary: the pushed event's ``data`` and the REST resource alike."""

    participant_sid: Annotated[str, Field(min_length=1)]
    label: str | None = None
    conference_sid: str | None = None
    call_sid: str | None = None
    account_sid: str | None = None
    call_direction: str | None = None
    from_: str | None = Field(None, alias="from")
    to: str | None = None
    # The event documents call_state, the REST resource call_status; payloads carry either or both.
    call_state: str | None = None
    call_status: str | None = None
    country_code: str | None = None
    is_moderator: bool | None = None
    join_time: datetime | None = None
    leave_time: datetime | None = None
    duration_seconds: NonNegative | None = None
    whisper: str | None = None
    agent_audio: bool | None = None
    outbound_queue_length: Count | None = None
    outbound_time_in_queue: NonNegative | None = None
    jitter_buffer_size: str | None = None
    is_coach: bool | None = None
    coached_participants: list[str] | None = None
    participant_region: str | None = None
    conference_region: str | None = None
    call_type: str | None = None
    quality_issues: Count | None = None
    processing_state: str | None = None
    properties: Properties | None = None
    events: Events | None = None
    metrics: Metrics | None = None
    url: str | None = None

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
        # Kinesis-style sinks carry data as a JSON-encoded string.
        if isinstance(value, str | bytes):
            try:
                return json.loads(value, parse_constant=_reject_constant)
            except ValueError as exc:
                raise ValueError("data is a string but not JSON") from exc
        return value


def _reject_constant(name: str) -> Any:
    """``json`` accepts NaN and Infinity, which are not JSON and would poison a histogram sum."""
    raise ValueError(f"{name} is not valid JSON")


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
