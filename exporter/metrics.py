"""Every metric the exporter defines: the product's public API.

Names, bucket edges and Twilio's quality thresholds are written here once; the recorder, the
dashboards generator, the alert rules and the README all read them from this module.

Everything is built against an injected :class:`~prometheus_client.CollectorRegistry` so that each
test (and each app) owns its registry; nothing here touches the global ``REGISTRY``.

Why one module: it is the product's public API, every name, bucket edge and threshold written
once, and the dashboards, the rules and the README read them from this one place.
"""

from __future__ import annotations

import platform
from dataclasses import dataclass
from enum import StrEnum

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    Info,
    PlatformCollector,
    ProcessCollector,
)

from . import __version__
from .families import CounterFamily, HistogramFamily

# ---------------------------------------------------------------------------------------------
# Twilio's own detected-issue thresholds (twilio-facts.md). Each is also a bucket edge below, so
# "share of participants past the threshold" is an exact bucket ratio, not an interpolation.
# Prometheus buckets are "less than or equal", so the MOS share (<= 3.5) is exact; for jitter,
# latency and loss the bucket ratio gives "strictly above the edge", which differs from Twilio's
# ">=" only for a value exactly on the edge.
# ---------------------------------------------------------------------------------------------
MOS_THRESHOLD = 3.5
JITTER_AVG_THRESHOLD_SECONDS = 0.005
JITTER_MAX_THRESHOLD_SECONDS = 0.020
# One Twilio page names 30 ms for the max jitter threshold: both are edges.
JITTER_MAX_ALT_THRESHOLD_SECONDS = 0.030
LATENCY_AVG_THRESHOLD_SECONDS = 0.150
PACKET_LOSS_THRESHOLD_RATIO = 0.05

# ---------------------------------------------------------------------------------------------
# Default buckets. Each list is dense around the threshold where operators make decisions and
# sparse in the tails, so a histogram stays at about ten series per label set.
# ---------------------------------------------------------------------------------------------
# MOS (ITU-T G.107 E-model) runs from 1 to about 4.5 for narrowband audio: 4.0+ is "satisfied",
# 3.6-4.0 "some users dissatisfied", <= 3.5 Twilio's low-MOS tag, below 3.1 "many dissatisfied".
MOS_BUCKETS = (1.0, 2.0, 2.5, 3.0, 3.25, MOS_THRESHOLD, 3.75, 4.0, 4.2, 4.4, 4.5)
# Jitter: 5 ms average and 20/30 ms max are Twilio's edges; above 100 ms calls are unusable.
JITTER_BUCKETS = (
    0.001,
    0.0025,
    JITTER_AVG_THRESHOLD_SECONDS,
    0.010,
    JITTER_MAX_THRESHOLD_SECONDS,
    JITTER_MAX_ALT_THRESHOLD_SECONDS,
    0.050,
    0.100,
    0.250,
)
# Latency (edge to mixer): 150 ms is Twilio's edge and ITU-T G.114's one-way comfort limit.
LATENCY_BUCKETS = (0.010, 0.025, 0.050, 0.100, LATENCY_AVG_THRESHOLD_SECONDS, 0.200, 0.300, 0.500, 1.0)
# Packet loss ratio: an edge at exactly 0 separates clean calls; 1 % is audible with PLC, 5 % is
# Twilio's edge, above 20 % speech is unintelligible.
PACKET_LOSS_BUCKETS = (0.0, 0.001, 0.005, 0.01, 0.02, PACKET_LOSS_THRESHOLD_RATIO, 0.10, 0.20, 0.50, 1.0)
# Quality issues per participant: 0 (a clean call) must be its own bucket.
QUALITY_ISSUES_BUCKETS = (0.0, 1.0, 2.0, 3.0, 5.0, 10.0)
# Participant time in a conference: contact-centre calls cluster between 1 and 20 minutes.
DURATION_BUCKETS = (10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1200.0, 1800.0, 3600.0, 7200.0)
# Time in queue before joining (Add Participant API): service-level targets are usually 20-60 s.
QUEUE_TIME_BUCKETS = (1.0, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0, 600.0)
# Webhook handling time: Twilio gives a receiver 5 s before it retries.
REQUEST_DURATION_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
# One poll of the REST API: a few requests when quiet, minutes for a 30-day backfill or under 429s.
PULL_DURATION_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 900.0)

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

# ---------------------------------------------------------------------------------------------
# Names. The prefix says who measured: Twilio (twilio_conference_participant_) or the exporter
# itself (twilio_insights_exporter_).
# ---------------------------------------------------------------------------------------------
PARTICIPANT = "twilio_conference_participant"
EXPORTER = "twilio_insights_exporter"

SUMMARIES = f"{PARTICIPANT}_summaries"
MOS = f"{PARTICIPANT}_mos"
JITTER = f"{PARTICIPANT}_jitter_seconds"
LATENCY = f"{PARTICIPANT}_latency_seconds"
PACKET_LOSS = f"{PARTICIPANT}_packet_loss_ratio"
PACKETS_RECEIVED = f"{PARTICIPANT}_packets_received"
PACKETS_LOST = f"{PARTICIPANT}_packets_lost"
TAGS = f"{PARTICIPANT}_tags"
TAG_SEVERITY = f"{PARTICIPANT}_tag_severity"
DEGRADATIONS = f"{PARTICIPANT}_degradations"
QUALITY_ISSUES = f"{PARTICIPANT}_quality_issues"
DURATION = f"{PARTICIPANT}_duration_seconds"
QUEUE_TIME = f"{PARTICIPANT}_queue_time_seconds"
ACTIONS = f"{PARTICIPANT}_actions"
REGION_MISMATCH = f"{PARTICIPANT}_region_mismatch"

WEBHOOK_REQUESTS = f"{EXPORTER}_webhook_requests"
WEBHOOK_REJECTIONS = f"{EXPORTER}_webhook_rejections"
WEBHOOK_REQUEST_DURATION = f"{EXPORTER}_webhook_request_duration_seconds"
WEBHOOK_IN_FLIGHT = f"{EXPORTER}_webhook_in_flight"
WEBHOOK_MEMORY_RESERVED = f"{EXPORTER}_webhook_memory_reserved_bytes"
SIGNATURE_VERIFICATION_ENABLED = f"{EXPORTER}_signature_verification_enabled"
EVENTS = f"{EXPORTER}_events"
INVALID_EVENTS = f"{EXPORTER}_invalid_events"
SIGNATURE_FAILURES = f"{EXPORTER}_signature_failures"
BASIC_AUTH_FAILURES = f"{EXPORTER}_basic_auth_failures"
LABEL_OVERFLOW = f"{EXPORTER}_label_overflow"
DEDUP_ENTRIES = f"{EXPORTER}_dedup_entries"
# promtool lints a name containing "summary" (a metric type), hence "recorded".
LAST_SUMMARY = f"{EXPORTER}_last_recorded_timestamp_seconds"
BUILD = f"{EXPORTER}_build"
METRICS_RENDERS = f"{EXPORTER}_metrics_renders"

PULL_API_REQUESTS = f"{EXPORTER}_pull_api_requests"
PULL_POLLS = f"{EXPORTER}_pull_polls"
PULL_DURATION = f"{EXPORTER}_pull_duration_seconds"
PULL_CONFERENCES_SEEN = f"{EXPORTER}_pull_conferences_seen"
PULL_PARTICIPANTS_SEEN = f"{EXPORTER}_pull_participants_seen"
PULL_LAST_SUCCESS = f"{EXPORTER}_pull_last_success_timestamp_seconds"
PULL_WATERMARK = f"{EXPORTER}_pull_watermark_timestamp_seconds"
PULL_PENDING = f"{EXPORTER}_pull_pending_summaries"
PULL_EXPIRED = f"{EXPORTER}_pull_expired"

# Values of the pull metrics' bounded labels.
# The requests of insights_api.py: the conference list, a conference's participants, the Call
# Summaries list and one conference's summary (re-read while it is not final).
PULL_ENDPOINTS = ("conferences", "participants", "call_summaries", "conference_summary")
PULL_NETWORK_ERROR = "network_error"  # the `code` of a request that got no HTTP answer
PROCESSING_STATES = ("complete", "in_progress", "timeout", "other")

STREAMS = ("inbound", "outbound")
STATS = ("avg", "max")


# ---------------------------------------------------------------------------------------------
# The vocabulary of events_total{source, type, outcome}: every value each label can take.
# ---------------------------------------------------------------------------------------------
class Source(StrEnum):
    """The door an event came through (the ``source`` label)."""

    WEBHOOK = "webhook"
    PULL = "pull"
    KINESIS = "kinesis"


class EventType(StrEnum):
    """The ``type`` label: three values, whatever arrives.

    ``summary`` counts the summaries of every subject (exporter/subjects.py) alike: each
    subject's own ``*_summaries_total`` says which were recorded, and a new subject adds no
    value here (so no dashboard or alert has to learn one).
    """

    SUMMARY = "summary"
    TEST = "test"
    OTHER = "other"
    # TaskRouter events (exporter/join.py): recorded (taken into the join map), ignored (a
    # non-voice task, or a type the join does not use) or invalid. Not summaries: no summary
    # ratio or alert counts them.
    TASKROUTER = "taskrouter"


class Outcome(StrEnum):
    """What became of one event (the ``outcome`` label)."""

    RECORDED = "recorded"
    DUPLICATE = "duplicate"
    INVALID = "invalid"
    IGNORED = "ignored"
    TEST = "test"
    # A summary event of a subject that is acknowledged but not recorded (a partial one: the
    # final one follows). No subject has such events yet, so no child is pre-created for it.
    NOT_FINAL = "not_final"


# The children dashboards and alerts divide by, pre-created at 0 for every source.
EVENT_CHILDREN: dict[EventType, tuple[Outcome, ...]] = {
    EventType.SUMMARY: (Outcome.RECORDED, Outcome.DUPLICATE, Outcome.INVALID),
    EventType.TEST: (Outcome.TEST,),
    EventType.OTHER: (Outcome.IGNORED, Outcome.INVALID),
    EventType.TASKROUTER: (Outcome.RECORDED, Outcome.IGNORED, Outcome.INVALID),
}


@dataclass(frozen=True, slots=True)
class ParticipantMetrics:
    """What Twilio measured, one family per row of the README's metrics table.

    The largest part of the registry, so kept in :mod:`exporter.families` (why: see there).
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


@dataclass(frozen=True, slots=True)
class ExporterMetrics:
    """The exporter's own health."""

    webhook_requests: Counter
    webhook_rejections: Counter
    webhook_request_duration: Histogram
    events: Counter
    invalid_events: Counter
    signature_failures: Counter
    basic_auth_failures: Counter
    label_overflow: Counter
    dedup_entries: Gauge
    last_summary: Gauge
    build: Info
    webhook_in_flight: Gauge
    webhook_memory_reserved: Gauge
    signature_verification_enabled: Gauge
    metrics_renders: Counter


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


# ---------------------------------------------------------------------------------------------
# Call Summaries (twilio_call_*) and Conference Summaries (twilio_conference_*, without
# participant_): what Twilio measured per call leg and per conference.
# ---------------------------------------------------------------------------------------------
CALL = "twilio_call"
CONFERENCE = "twilio_conference"

CALL_SUMMARIES = f"{CALL}_summaries"
CALL_JITTER = f"{CALL}_jitter_seconds"
CALL_PACKET_LOSS = f"{CALL}_packet_loss_ratio"
CALL_PACKETS = f"{CALL}_packets"
CALL_PACKETS_LOST = f"{CALL}_packets_lost"
CALL_MOS = f"{CALL}_mos"
CALL_RTT = f"{CALL}_rtt_seconds"
CALL_POST_DIAL_DELAY = f"{CALL}_post_dial_delay_seconds"
CALL_DURATION = f"{CALL}_duration_seconds"
CALL_QUEUE_TIME = f"{CALL}_queue_time_seconds"
CALL_TAGS = f"{CALL}_tags"
CALL_SIP_RESPONSES = f"{CALL}_sip_responses"
CALL_DISCONNECTS = f"{CALL}_disconnects"
CALL_ANSWERED_BY = f"{CALL}_answered_by"
CALL_CODECS = f"{CALL}_codecs"

CONFERENCE_SUMMARIES = f"{CONFERENCE}_summaries"
CONFERENCE_DURATION = f"{CONFERENCE}_duration_seconds"
CONFERENCE_CONCURRENT = f"{CONFERENCE}_concurrent_participants"
CONFERENCE_TAGS = f"{CONFERENCE}_tags"
CONFERENCE_ISSUES = f"{CONFERENCE}_detected_issues"

# The `edge` label of the call families: where on the call's path Twilio measured.
EDGES = ("carrier_edge", "sip_edge", "sdk_edge", "client_edge")
# The `stat` label of the SDK's MOS (the minimum is what a caller heard at worst).
MOS_STATS = ("avg", "min")

# The Voice SDK's own warning thresholds (twilio.js, "Voice SDK call quality warnings"): high-rtt
# past 400 ms, high-packet-loss past 1 %; each is a bucket edge so the share past it is exact.
RTT_THRESHOLD_SECONDS = 0.400
SDK_PACKET_LOSS_THRESHOLD_RATIO = 0.01
# Round-trip time from the caller's app to Twilio: a same-continent path is 20-100 ms.
RTT_BUCKETS = (0.025, 0.050, 0.100, 0.150, 0.200, 0.300, RTT_THRESHOLD_SECONDS, 0.600, 1.0)
# Post-dial delay (dial to ringback): PSTN calls see 1-4 s; past 10 s callers hang up.
POST_DIAL_DELAY_BUCKETS = (0.5, 1.0, 2.0, 3.0, 4.0, 5.0, 7.5, 10.0, 15.0, 20.0, 30.0)
# Connect duration of a call and length of a conference: 0 (never answered, never started) is its
# own bucket; contact-centre calls cluster between 1 and 20 minutes.
CALL_DURATION_BUCKETS = (0.0, *DURATION_BUCKETS)
# Participants at once: two is a call; Twilio caps a conference at 250.
CONCURRENT_PARTICIPANTS_BUCKETS = (1.0, 2.0, 3.0, 4.0, 5.0, 10.0, 20.0, 50.0, 100.0, 250.0)

CALL_DEFAULT_BUCKETS = {
    "mos": MOS_BUCKETS,
    "jitter": JITTER_BUCKETS,
    "packet_loss": PACKET_LOSS_BUCKETS,
    "rtt": RTT_BUCKETS,
    "post_dial_delay": POST_DIAL_DELAY_BUCKETS,
    "duration": CALL_DURATION_BUCKETS,
    "queue_time": QUEUE_TIME_BUCKETS,
}
CONFERENCE_DEFAULT_BUCKETS = {
    "duration": CALL_DURATION_BUCKETS,
    "concurrent_participants": CONCURRENT_PARTICIPANTS_BUCKETS,
}


@dataclass(frozen=True, slots=True)
class CallMetrics:
    """What Twilio measured on one call, per edge and direction where it measured there."""

    summaries: CounterFamily
    jitter: HistogramFamily
    packet_loss: HistogramFamily
    packets: CounterFamily
    packets_lost: CounterFamily
    mos: HistogramFamily
    rtt: HistogramFamily
    post_dial_delay: HistogramFamily
    duration: HistogramFamily
    queue_time: HistogramFamily
    tags: CounterFamily
    sip_responses: CounterFamily
    disconnects: CounterFamily
    answered_by: CounterFamily
    codecs: CounterFamily


def build_call_metrics(
    registry: CollectorRegistry, common_labels: tuple[str, ...], buckets: dict[str, tuple[float, ...]] | None = None
) -> CallMetrics:
    """Create the twilio_call_* families with ``common_labels`` first."""
    b = {**CALL_DEFAULT_BUCKETS, **(buckets or {})}
    common = list(common_labels)
    edge = [*common, "edge", "stream"]
    edge_stat = [*edge, "stat"]

    def counter(name: str, doc: str, labels: list[str]) -> CounterFamily:
        return CounterFamily(name, doc, labels, registry)

    def histogram(name: str, doc: str, labels: list[str], key: str) -> HistogramFamily:
        return HistogramFamily(name, doc, labels, registry, buckets=b[key])

    return CallMetrics(
        summaries=counter(CALL_SUMMARIES, "Call summaries recorded, each call exactly once (from its complete summary).", common),
        jitter=histogram(CALL_JITTER, "Jitter of a call's media at one edge and direction, average or maximum.", edge_stat, "jitter"),
        packet_loss=histogram(CALL_PACKET_LOSS, "Packet loss of a call's media at one edge and direction, as a ratio.", edge, "packet_loss"),
        packets=counter(CALL_PACKETS, "RTP packets of calls at one edge: received (inbound) or sent (outbound).", edge),
        packets_lost=counter(CALL_PACKETS_LOST, "RTP packets lost at one edge and direction, summed over calls.", edge),
        mos=histogram(CALL_MOS, "Mean opinion score the Voice SDK computed for a call (SDK edge), average or minimum.", edge_stat, "mos"),
        rtt=histogram(CALL_RTT, "Round-trip time the Voice SDK measured to Twilio (SDK edge), average or maximum.", edge_stat, "rtt"),
        post_dial_delay=histogram(CALL_POST_DIAL_DELAY, "Post-dial delay: from dialling to the far end ringing.", common, "post_dial_delay"),
        duration=histogram(CALL_DURATION, "Connect duration of a call: from answer to hang-up (0 when never answered).", common, "duration"),
        queue_time=histogram(CALL_QUEUE_TIME, "Time a call spent queued at Twilio before it was placed.", common, "queue_time"),
        tags=counter(CALL_TAGS, "Voice Insights tags (detected issues) of calls.", [*common, "tag"]),
        sip_responses=counter(CALL_SIP_RESPONSES, "Calls by the class of their last SIP response (2xx, 4xx, ...).", [*common, "sip_response_class"]),
        disconnects=counter(CALL_DISCONNECTS, "Calls by who hung up.", [*common, "disconnected_by"]),
        answered_by=counter(CALL_ANSWERED_BY, "Calls by who answered, as answering machine detection decided.", [*common, "answered_by"]),
        codecs=counter(CALL_CODECS, "Codec of a call's media at one edge and direction.", [*edge, "codec"]),
    )


@dataclass(frozen=True, slots=True)
class ConferenceMetrics:
    """What Twilio summarised about a whole conference."""

    summaries: CounterFamily
    duration: HistogramFamily
    concurrent_participants: HistogramFamily
    tags: CounterFamily
    detected_issues: CounterFamily


def build_conference_metrics(
    registry: CollectorRegistry, common_labels: tuple[str, ...], buckets: dict[str, tuple[float, ...]] | None = None
) -> ConferenceMetrics:
    """Create the twilio_conference_* conference-summary families with ``common_labels`` first."""
    b = {**CONFERENCE_DEFAULT_BUCKETS, **(buckets or {})}
    common = list(common_labels)
    return ConferenceMetrics(
        summaries=CounterFamily(
            CONFERENCE_SUMMARIES, "Conference summaries recorded, each conference exactly once.", [*common, "processing_state"], registry
        ),
        duration=HistogramFamily(CONFERENCE_DURATION, "How long a conference lasted.", common, registry, buckets=b["duration"]),
        concurrent_participants=HistogramFamily(
            CONFERENCE_CONCURRENT, "Most participants a conference had at once.", common, registry, buckets=b["concurrent_participants"]
        ),
        tags=CounterFamily(CONFERENCE_TAGS, "Voice Insights tags of conferences.", [*common, "tag"], registry),
        detected_issues=CounterFamily(
            CONFERENCE_ISSUES, "Issues Voice Insights detected in conferences, by category.", [*common, "category"], registry
        ),
    )


def build_exporter_metrics(registry: CollectorRegistry) -> ExporterMetrics:
    """Create the twilio_insights_exporter_* families and the process collectors."""
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    GCCollector(registry=registry)
    m = ExporterMetrics(
        webhook_requests=Counter(WEBHOOK_REQUESTS, "Webhook requests answered, by HTTP status code.", ["code"], registry=registry),
        webhook_rejections=Counter(
            WEBHOOK_REJECTIONS, "Webhook requests refused as a whole before any event was read, by reason.", ["reason"], registry=registry
        ),
        webhook_request_duration=Histogram(
            WEBHOOK_REQUEST_DURATION,
            "Time from a webhook request's arrival to its answer.",
            buckets=REQUEST_DURATION_BUCKETS,
            registry=registry,
        ),
        events=Counter(EVENTS, "Events received, by source, event type and outcome.", ["source", "type", "outcome"], registry=registry),
        invalid_events=Counter(INVALID_EVENTS, "Events that failed validation, by reason.", ["source", "reason"], registry=registry),
        signature_failures=Counter(
            SIGNATURE_FAILURES, "Webhook requests refused for their X-Twilio-Signature, by reason.", ["reason"], registry=registry
        ),
        basic_auth_failures=Counter(BASIC_AUTH_FAILURES, "Webhook requests refused for missing or wrong HTTP Basic credentials.", registry=registry),
        # By subject as well as label: a label name (country_code, tag, label_set) means another
        # thing, with its own cap, in each subject's families, so their overflows must not add up.
        label_overflow=Counter(
            LABEL_OVERFLOW,
            "Label values replaced by 'other' because the label reached its cap, by summary subject and label.",
            ["subject", "label"],
            registry=registry,
        ),
        dedup_entries=Gauge(DEDUP_ENTRIES, "Keys remembered for deduplication, by kind of key.", ["key"], registry=registry),
        # A child per subject once it recorded a summary, none before: the no-summaries alert
        # watches only the subjects a job has recorded (a user without call summaries has no call child).
        last_summary=Gauge(LAST_SUMMARY, "Unix time at which the last summary of each subject was recorded.", ["subject"], registry=registry),
        build=Info(BUILD, "Version of the exporter.", registry=registry),
        webhook_in_flight=Gauge(
            WEBHOOK_IN_FLIGHT, "Deliveries being recorded now, their body read (bounded by --webhook.max-in-flight).", registry=registry
        ),
        webhook_memory_reserved=Gauge(
            WEBHOOK_MEMORY_RESERVED,
            "Bytes of --webhook.memory-budget held by deliveries being read or recorded (their body and its parsed form).",
            registry=registry,
        ),
        signature_verification_enabled=Gauge(
            SIGNATURE_VERIFICATION_ENABLED,
            "1 when webhook deliveries must carry a valid X-Twilio-Signature, 0 in the insecure mode "
            "(--webhook.insecure-skip-signature-verification).",
            registry=registry,
        ),
        # Scrapes of one format that arrive while it is being rendered share that render (exposition.py).
        metrics_renders=Counter(METRICS_RENDERS, "Renders of /metrics, by format (text or openmetrics).", ["format"], registry=registry),
    )
    m.build.info({"version": __version__, "python_version": platform.python_version()})
    for source in Source:
        for event_type, outcomes in EVENT_CHILDREN.items():
            for outcome in outcomes:
                m.events.labels(source, event_type, outcome)
    return m


@dataclass(frozen=True, slots=True)
class PullMetrics:
    """The REST poller's own health (pull mode only)."""

    api_requests: Counter
    polls: Counter
    duration: Histogram
    conferences_seen: Counter
    participants_seen: Counter
    last_success: Gauge
    watermark: Gauge
    pending: Gauge
    expired: Counter


def build_pull_metrics(registry: CollectorRegistry) -> PullMetrics:
    """Create the twilio_insights_exporter_pull_* families, with the children alerts divide by at 0."""
    m = PullMetrics(
        # endpoint: PULL_ENDPOINTS; code: an HTTP status (a few dozen exist) or network_error.
        api_requests=Counter(
            PULL_API_REQUESTS, "Requests to the Voice Insights REST API, by endpoint and HTTP status.", ["endpoint", "code"], registry=registry
        ),
        polls=Counter(PULL_POLLS, "Polls of the REST API, by outcome (success or failure).", ["outcome"], registry=registry),
        duration=Histogram(PULL_DURATION, "Time one poll of the REST API took, retries included.", buckets=PULL_DURATION_BUCKETS, registry=registry),
        conferences_seen=Counter(PULL_CONFERENCES_SEEN, "Conferences listed by the poller, each time it read them.", registry=registry),
        participants_seen=Counter(
            PULL_PARTICIPANTS_SEEN,
            "Participant summaries listed by the poller, each time it read them, by processing_state.",
            ["processing_state"],
            registry=registry,
        ),
        last_success=Gauge(PULL_LAST_SUCCESS, "Unix time at which the last successful poll ended.", registry=registry),
        watermark=Gauge(PULL_WATERMARK, "Unix time up to which conferences have been listed (before the overlap).", registry=registry),
        pending=Gauge(PULL_PENDING, "Participant summaries seen in_progress and waiting for completion.", registry=registry),
        expired=Counter(
            PULL_EXPIRED, "Participant summaries given up on because they stayed in_progress past --pull.pending-max-age.", registry=registry
        ),
    )
    for endpoint in PULL_ENDPOINTS:
        m.api_requests.labels(endpoint, "200")
    for outcome in ("success", "failure"):
        m.polls.labels(outcome)
    for state in PROCESSING_STATES:
        m.participants_seen.labels(state)
    return m


# ---------------------------------------------------------------------------------------------
# Kinesis consumer mode (--kinesis.stream-name).
# ---------------------------------------------------------------------------------------------
KINESIS_RECORDS = f"{EXPORTER}_kinesis_records_read"
KINESIS_BEHIND = f"{EXPORTER}_kinesis_behind_latest_seconds"
KINESIS_ERRORS = f"{EXPORTER}_kinesis_errors"
KINESIS_CHECKPOINTS = f"{EXPORTER}_kinesis_checkpoints_written"
KINESIS_SHARDS = f"{EXPORTER}_kinesis_shards_reading"
KINESIS_LAST_READ = f"{EXPORTER}_kinesis_last_read_timestamp_seconds"

# Values of the `kind` label of the errors counter: throttled (ProvisionedThroughputExceeded or
# LimitExceeded, backed off), expired_iterator (renewed from the checkpoint), aws_error (any other
# error answer), network_error (no answer), internal (a bug of ours; logged with its traceback).
KINESIS_ERROR_KINDS = ("throttled", "expired_iterator", "aws_error", "network_error", "internal")


@dataclass(frozen=True, slots=True)
class KinesisMetrics:
    """The Kinesis consumer's own health (consumer mode only)."""

    records: Counter
    behind: Gauge
    errors: Counter
    checkpoints: Counter
    shards: Gauge
    last_read: Gauge


def build_kinesis_metrics(registry: CollectorRegistry) -> KinesisMetrics:
    """Create the twilio_insights_exporter_kinesis_* families, with every error kind at 0."""
    m = KinesisMetrics(
        records=Counter(KINESIS_RECORDS, "Records read from the Kinesis stream, unreadable ones included.", registry=registry),
        # shard: only the shards being read; a finished shard's child is removed, so the label
        # stays bounded by the stream's open shards however often it is resharded.
        behind=Gauge(
            KINESIS_BEHIND, "How far the last read of a shard was behind the tip of the stream (MillisBehindLatest).", ["shard"], registry=registry
        ),
        errors=Counter(KINESIS_ERRORS, "Failed requests to Kinesis, by kind.", ["kind"], registry=registry),
        checkpoints=Counter(KINESIS_CHECKPOINTS, "Shard checkpoints written (after the records before them were recorded).", registry=registry),
        shards=Gauge(KINESIS_SHARDS, "Shards being read now.", registry=registry),
        last_read=Gauge(KINESIS_LAST_READ, "Unix time of the last successful read of any shard.", registry=registry),
    )
    for kind in KINESIS_ERROR_KINDS:
        m.errors.labels(kind)
    return m
