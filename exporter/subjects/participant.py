"""The participant subject: Conference Participant Summaries, ``twilio_conference_participant_*``.

Its families and their buckets, its label policy (the labels, their caps, the budget of label
sets: ``--labels.*`` overrides them), its plan (a summary to observations) and the exemplar; its
event types, model and dedup key are given in exporter/subjects/build.py.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry

from exporter.models import ParticipantSummary, StreamMetrics
from exporter.record.families import CounterFamily, HistogramFamily
from exporter.record.labels import OTHER, LabelPolicy
from exporter.record.recorder import MAX_DETAILS, SID, Change, Observation, SummaryRecorder, distinct, folded
from exporter.subjects.common import JOIN_LABEL_SETS, JOIN_LABELS, JOIN_MAX_VALUES
from exporter.subjects.thresholds import (
    DURATION_BUCKETS,
    JITTER_AVG_THRESHOLD_SECONDS,
    JITTER_BUCKETS,
    JITTER_MAX_ALT_THRESHOLD_SECONDS,
    JITTER_MAX_THRESHOLD_SECONDS,
    LATENCY_AVG_THRESHOLD_SECONDS,
    LATENCY_BUCKETS,
    MOS_BUCKETS,
    MOS_THRESHOLD,
    PACKET_LOSS_BUCKETS,
    PACKET_LOSS_THRESHOLD_RATIO,
    QUALITY_ISSUES_BUCKETS,
    QUEUE_TIME_BUCKETS,
)

# The subject's name: its state-file rows, its label_overflow and join children, --pull.summaries.
NAME = "participant"
PREFIX = "twilio_conference_participant"
SUMMARIES = f"{PREFIX}_summaries"
MOS = f"{PREFIX}_mos"
JITTER = f"{PREFIX}_jitter_seconds"
LATENCY = f"{PREFIX}_latency_seconds"
PACKET_LOSS = f"{PREFIX}_packet_loss_ratio"
PACKETS_RECEIVED = f"{PREFIX}_packets_received"
PACKETS_LOST = f"{PREFIX}_packets_lost"
TAGS = f"{PREFIX}_tags"
TAG_SEVERITY = f"{PREFIX}_tag_severity"
DEGRADATIONS = f"{PREFIX}_degradations"
QUALITY_ISSUES = f"{PREFIX}_quality_issues"
DURATION = f"{PREFIX}_duration_seconds"
QUEUE_TIME = f"{PREFIX}_queue_time_seconds"
ACTIONS = f"{PREFIX}_actions"
REGION_MISMATCH = f"{PREFIX}_region_mismatch"

STREAMS = ("inbound", "outbound")
STATS = ("avg", "max")


# The threshold each configurable histogram must keep as an edge (config validation checks it,
# because the dashboards and alert rules read exactly these buckets).
REQUIRED_EDGES = {
    "mos": (MOS_THRESHOLD,),
    "jitter": (JITTER_AVG_THRESHOLD_SECONDS, JITTER_MAX_THRESHOLD_SECONDS, JITTER_MAX_ALT_THRESHOLD_SECONDS),
    "latency": (LATENCY_AVG_THRESHOLD_SECONDS,),
    "packet_loss": (PACKET_LOSS_THRESHOLD_RATIO,),
    "quality_issues": (0.0,),
    "duration": (),
    "queue_time": (),
}
DEFAULT_BUCKETS = {
    "mos": MOS_BUCKETS,
    "jitter": JITTER_BUCKETS,
    "latency": LATENCY_BUCKETS,
    "packet_loss": PACKET_LOSS_BUCKETS,
    "quality_issues": QUALITY_ISSUES_BUCKETS,
    "duration": DURATION_BUCKETS,
    "queue_time": QUEUE_TIME_BUCKETS,
}


# The labels every participant series carries, in exposition order.
COMMON_LABELS = ("call_type", "call_direction", "participant_region", "conference_region", "country_code", "participant_label")
# Common labels an operator can switch on.
OPTIONAL_LABELS = ("account_sid", "jitter_buffer_size")

# Why each cap: the documented vocabulary plus headroom for values Twilio adds later. country_code
# and participant_label are the open ones, bounded by what a dashboard can still show.
DEFAULT_MAX_VALUES = {
    "call_type": 10,
    "call_direction": 5,
    "participant_region": 20,
    "conference_region": 20,
    "country_code": 100,
    "participant_label": 50,
    "account_sid": 50,
    "jitter_buffer_size": 10,
    "processing_state": 10,
    "call_status": 20,
    "tag": 50,
    "issue": 20,
    "severity": 10,
    "metric": 20,
    "action": 30,
    **JOIN_MAX_VALUES,
}

# Distinct common label sets kept before new combinations fold into the overflow set. A contact
# centre uses a few hundred (a handful of regions x call types x a few dozen countries x a few
# roles); each set costs about 200 samples, so the default bounds the participant families at
# about 200k samples whatever arrives (docs/metrics.md, "Cardinality").
#
# The join labels multiply the sets: a centre of 50 queues x 20 teams, with up to four sets of
# the other labels per (queue, team) pair (the customer's and the agent's legs, a country or
# two), needs 4,000 more; so the budget is today's 1000 (kept whole: an upgrade's sets, all
# 'unknown' in the join labels, never fold) plus 4,000.
DEFAULT_MAX_LABEL_SETS = 1000 + 4 * JOIN_LABEL_SETS


def label_policy(
    common_names: tuple[str, ...] = JOIN_LABELS + COMMON_LABELS,
    max_values: Mapping[str, int] | None = None,
    allowlists: Mapping[str, frozenset[str]] | None = None,
    max_label_sets: int = DEFAULT_MAX_LABEL_SETS,
) -> LabelPolicy:
    """The bounded labels of the participant families (``--labels.*`` sets ``common_names``, caps, allowlists and the budget)."""
    return LabelPolicy(common_names, max_values, allowlists, max_label_sets=max_label_sets, defaults=DEFAULT_MAX_VALUES)


@dataclass(frozen=True, slots=True)
class ParticipantMetrics:
    """What Twilio measured, one family per row of docs/metrics.md's table.

    The largest part of the registry, so kept in :mod:`exporter.record.families` (why: see there).
    """

    summaries: CounterFamily
    mos: HistogramFamily
    jitter: HistogramFamily
    latency: HistogramFamily
    packet_loss: HistogramFamily
    packets_received: CounterFamily
    packets_lost: CounterFamily
    tags: CounterFamily
    tag_severity: CounterFamily
    degradations: CounterFamily
    quality_issues: HistogramFamily
    duration: HistogramFamily
    queue_time: HistogramFamily
    actions: CounterFamily
    region_mismatch: CounterFamily


def build_participant_metrics(
    registry: CollectorRegistry,
    common_labels: tuple[str, ...],
    buckets: dict[str, tuple[float, ...]] | None = None,
) -> ParticipantMetrics:
    """Create the twilio_conference_participant_* families with ``common_labels`` first."""
    b = {**DEFAULT_BUCKETS, **(buckets or {})}
    common = list(common_labels)
    stream = [*common, "stream"]
    stream_stat = [*stream, "stat"]

    def counter(name: str, doc: str, labels: list[str]) -> CounterFamily:
        return CounterFamily(name, doc, labels, registry)

    def histogram(name: str, doc: str, labels: list[str], key: str) -> HistogramFamily:
        return HistogramFamily(name, doc, labels, registry, buckets=b[key])

    return ParticipantMetrics(
        summaries=counter(
            SUMMARIES,
            "Conference participant summaries recorded, each exactly once.",
            [*common, "processing_state", "call_status"],
        ),
        mos=histogram(MOS, "Mean opinion score (ITU-T G.107) of a participant's media stream.", stream, "mos"),
        jitter=histogram(JITTER, "Jitter of a participant's media stream, average or maximum.", stream_stat, "jitter"),
        latency=histogram(LATENCY, "Latency from Twilio's media edge to the conference mixer, average or maximum.", stream_stat, "latency"),
        packet_loss=histogram(PACKET_LOSS, "Cumulative packet loss of a participant's media stream, as a ratio.", stream, "packet_loss"),
        packets_received=counter(PACKETS_RECEIVED, "RTP packets received, summed over participants.", stream),
        packets_lost=counter(PACKETS_LOST, "RTP packets lost, summed over participants.", stream),
        tags=counter(TAGS, "Voice Insights quality tags applied to participants' streams.", [*stream, "tag"]),
        tag_severity=counter(TAG_SEVERITY, "Severity of each detected quality issue (tags_info).", [*stream, "issue", "severity"]),
        degradations=counter(DEGRADATIONS, "Degradation occurrences reported within a participant's stream.", [*stream, "metric"]),
        quality_issues=histogram(QUALITY_ISSUES, "Number of quality issues Voice Insights detected per participant.", common, "quality_issues"),
        duration=histogram(DURATION, "Time a participant spent in the conference.", common, "duration"),
        queue_time=histogram(QUEUE_TIME, "Time in queue before joining (Add Participant API only).", common, "queue_time"),
        actions=counter(ACTIONS, "Participant actions (hold, mute, coaching, ...) by kind.", [*common, "action"]),
        region_mismatch=counter(REGION_MISMATCH, "Participants whose media region differs from the conference's mixer region.", common),
    )


class ParticipantRecorder(SummaryRecorder[ParticipantMetrics]):
    """Records validated participant summaries into the ``twilio_conference_participant_*`` families."""

    def __init__(
        self,
        registry: CollectorRegistry,
        labels: LabelPolicy,
        buckets: Mapping[str, tuple[float, ...]] | None = None,
    ) -> None:
        super().__init__(labels, build_participant_metrics(registry, labels.common_names, dict(buckets or {})))

    # -- plan: read only ---------------------------------------------------------------------

    def plan(self, summary: ParticipantSummary, joined: Mapping[str, str | None] | None = None) -> Change:
        """What recording ``summary`` would add. Changes nothing."""
        m = self.metrics
        lp = self.labels
        pending: dict[str, set[str]] = {}
        overflow: list[str] = []
        details: list[tuple[str, str]] = []

        def detail(name: str, raw: str | None) -> str:
            value = lp.detail(name, raw, pending, overflow)
            details.append((name, value))
            return value

        common = lp.common(
            {
                **(joined or {}),
                "call_type": summary.call_type,
                "call_direction": summary.call_direction,
                "participant_region": summary.participant_region,
                "conference_region": summary.conference_region,
                "country_code": summary.country_code,
                "participant_label": summary.label,
                "account_sid": summary.account_sid,
                "jitter_buffer_size": summary.jitter_buffer_size,
            },
            pending,
            overflow,
        )
        obs: list[Observation] = [(m.summaries, (detail("processing_state", summary.processing_state), detail("call_status", summary.status)), 1)]
        for stream, sm in summary.streams():
            self._plan_stream(obs, detail, stream, sm)
        if summary.quality_issues is not None:
            obs.append((m.quality_issues, (), summary.quality_issues))
        if summary.duration_seconds is not None:
            obs.append((m.duration, (), summary.duration_seconds))
        if summary.outbound_time_in_queue is not None:
            obs.append((m.queue_time, (), summary.outbound_time_in_queue))
        if summary.events is not None:
            for action, count in folded(detail, "action", summary.events.counts()).items():
                obs.append((m.actions, (action,), count))
        if summary.participant_region and summary.conference_region and summary.participant_region != summary.conference_region:
            obs.append((m.region_mismatch, (), 1))
        return Change(common, tuple(obs), tuple(details), tuple(overflow), exemplar(summary))

    def _plan_stream(self, obs: list[Observation], detail: Any, stream: str, sm: StreamMetrics) -> None:
        m = self.metrics
        if sm.mos is not None:
            obs.append((m.mos, (stream,), sm.mos))
        for histogram, stat in ((m.jitter, sm.jitter), (m.latency, sm.latency)):
            if stat is None:
                continue
            if stat.avg is not None:
                obs.append((histogram, (stream, "avg"), stat.avg / 1000))
            if stat.max is not None:
                obs.append((histogram, (stream, "max"), stat.max / 1000))
        if sm.packet_loss_percentage is not None:
            obs.append((m.packet_loss, (stream,), sm.packet_loss_percentage / 100))
        if sm.total_packets_received is not None:
            obs.append((m.packets_received, (stream,), sm.total_packets_received))
        if sm.total_packets_lost is not None:
            obs.append((m.packets_lost, (stream,), sm.total_packets_lost))
        # A tag says "this stream had that condition": once per stream, however often listed.
        for tag in distinct(detail, "tag", sm.tags):
            obs.append((m.tags, (stream, tag), 1))
        if sm.tags_info is not None:
            severities = list(sm.tags_info.severities().items())
            for issue, severity in severities[:MAX_DETAILS]:
                obs.append((m.tag_severity, (stream, detail("issue", issue), detail("severity", severity)), 1))
            if len(severities) > MAX_DETAILS:
                obs.append((m.tag_severity, (stream, OTHER, OTHER), 1))
        if sm.occurrences is not None:
            for metric, count in folded(detail, "metric", sm.occurrences.counts()).items():
                obs.append((m.degradations, (stream, metric), count))


def exemplar(summary: ParticipantSummary) -> dict[str, str] | None:
    exemplar = {
        name: value for name, value in (("call_sid", summary.call_sid), ("conference_sid", summary.conference_sid)) if value and SID.fullmatch(value)
    }
    return exemplar or None
