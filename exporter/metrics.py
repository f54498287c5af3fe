"""The exporter's own health: its metrics (``twilio_insights_exporter_*``) and the vocabulary of their labels.

What Twilio measured is each subject's (exporter/subjects/: a subject's families, names and
buckets in its module, Twilio's thresholds in exporter/subjects/thresholds.py). The doors count
here what they did, and never reach the recording machinery (exporter/record/).

Everything is built against an injected :class:`~prometheus_client.CollectorRegistry` so that each
test (and each app) owns its registry; nothing here touches the global ``REGISTRY``.

Why one module: it is the exporter's own health, every name written once, which the health
dashboard, the rules and the README read from this one place.
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

from exporter import __version__

# Webhook handling time: Twilio gives a receiver 5 s before it retries.
REQUEST_DURATION_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
# One poll of the REST API: a few requests when quiet, minutes for a 30-day backfill or under 429s.
PULL_DURATION_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 900.0)

# ---------------------------------------------------------------------------------------------
# Names. The prefix says who measured: Twilio (twilio_conference_participant_) or the exporter
# itself (twilio_insights_exporter_).
# ---------------------------------------------------------------------------------------------
EXPORTER = "twilio_insights_exporter"

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

    ``summary`` counts the summaries of every subject (exporter/subjects/__init__.py) alike: each
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
    # A summary event of a subject that is acknowledged but not recorded (a call's partial or
    # predicted-complete summary, a conference still in progress: the final one follows). No
    # dashboard divides by it, so no child is pre-created for it.
    NOT_FINAL = "not_final"


# The children dashboards and alerts divide by, pre-created at 0 for every source.
EVENT_CHILDREN: dict[EventType, tuple[Outcome, ...]] = {
    EventType.SUMMARY: (Outcome.RECORDED, Outcome.DUPLICATE, Outcome.INVALID),
    EventType.TEST: (Outcome.TEST,),
    EventType.OTHER: (Outcome.IGNORED, Outcome.INVALID),
    EventType.TASKROUTER: (Outcome.RECORDED, Outcome.IGNORED, Outcome.INVALID),
}


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
