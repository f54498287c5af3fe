"""Configuration: command-line flags, environment variables and an optional YAML file.

Precedence, highest first: flags, ``TWILIO_INSIGHTS_EXPORTER_<SECTION>__<FIELD>`` environment
variables, the YAML file named by ``--config.file``, defaults. Every field has a default and a
description; ``--help`` and docs/configuration.md's table are generated from them. A
variable under the prefix that names no setting is refused (:func:`check_environment`), as
argparse refuses an unknown flag and the model an unknown key of the file.

Secrets never travel on the command line (it is visible in ``ps``): they are read from the
environment only, by :class:`Secrets`.

Why one module: every flag, environment variable and YAML key is a field of one
pydantic-settings model; ``--help``, docs/configuration.md's table, the cross-section checks (pull within
the dedup window, credentials for pull) and the list of known variables need the whole model at once.
"""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Callable, Iterator, Mapping
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, get_origin
from urllib.parse import urlsplit

import yaml
from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, SecretStr, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    CliApp,
    CliSettingsSource,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    YamlConfigSettingsSource,
)

from exporter import subjects
from exporter.subjects import participant as participant_subject
from exporter.subjects import thresholds
from exporter.subjects.call import CALL_ALLOWLISTS, CALL_MAX_LABEL_SETS, CALL_MAX_VALUES
from exporter.subjects.common import JOIN_LABELS
from exporter.subjects.conference import CONFERENCE_ALLOWLISTS, CONFERENCE_MAX_LABEL_SETS, CONFERENCE_MAX_VALUES
from exporter.subjects.participant import COMMON_LABELS, DEFAULT_MAX_LABEL_SETS, DEFAULT_MAX_VALUES, OPTIONAL_LABELS
from exporter.values import ByteSize, Duration, HttpUrl, ListenAddress, Network, PositiveDuration, Size, load_yaml
from exporter.values import format_duration as format_duration  # re-exported: scripts/readme_tables.py and the tests read them here
from exporter.values import format_size as format_size
from exporter.values import parse_duration as parse_duration
from exporter.values import parse_size as parse_size

ENV_PREFIX = "TWILIO_INSIGHTS_EXPORTER_"

# Bytes of memory one byte of a delivery holds besides itself until it is answered (the memory
# budget, exporter/doors/webhook/intake.py): its parsed form (3.1 bytes of Python objects per byte of Twilio's
# JSON, tracemalloc), the events' models, aiohttp's read buffer and the allocator's share. Measured
# at the process: concurrent 4.2 MiB deliveries raised the peak RSS by 45 MiB each, 10.7 times their
# size (bench/edge.py; docs/performance.md, "The public door").
PARSED_BYTES_PER_BYTE = 10


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class WebConfigFileSettings(_Section):
    file: Path | None = Field(
        None,
        description="Prometheus web configuration file (the exporter-toolkit format) for the metrics listener: TLS, client certificates, "
        "basic auth, response headers. Re-read on SIGHUP and when it changes. Default: plain HTTP, no auth.",
    )


class WebSettings(_Section):
    listen_address: ListenAddress = Field(":9802", description="Address of the metrics listener (/metrics, /-/healthy, /-/ready). Keep it internal.")
    telemetry_path: str = Field("/metrics", description="Path under which to expose metrics.")
    config: WebConfigFileSettings = Field(default_factory=WebConfigFileSettings)


class WebhookSettings(_Section):
    enabled: bool = Field(
        True,
        description="Listen for Event Streams webhook deliveries. Turn it off (--no-webhook.enabled) in Kinesis or pull mode: "
        "no public listener, no warning about a missing auth token.",
    )
    listen_address: ListenAddress = Field(":8080", description="Address of the webhook listener, the one exposed to Twilio.")
    path: str = Field("/events", description="Path of the Event Streams webhook sink.")
    public_url: str | None = Field(
        None,
        description="The exact URL Twilio calls (scheme, host, port, path), used to verify signatures behind a proxy. "
        "Default: the URL as the exporter sees it.",
    )
    trust_forwarded_headers: bool = Field(
        False, description="Rebuild the public URL from X-Forwarded-Proto/X-Forwarded-Host (first value). Only behind a proxy that sets them."
    )
    max_body_size: ByteSize = Field(Size(16 * 1024**2), description="Largest delivery accepted (bytes, or with KiB/MiB/GiB); larger ones get 413.")
    insecure_skip_signature_verification: bool = Field(
        False, description="INSECURE, for local trials only: accept webhooks without a valid X-Twilio-Signature."
    )
    read_timeout: PositiveDuration = Field(
        Duration(seconds=2),
        description="Time allowed to receive a delivery's whole body; a slower sender gets 503 (Twilio itself gives up after 5s and retries).",
    )
    max_in_flight: int = Field(
        16, ge=1, description="Deliveries handled at once; past it a delivery gets 503 with Retry-After at once (Twilio retries it)."
    )
    shutdown_timeout: PositiveDuration = Field(
        Duration(seconds=10),
        description="On SIGTERM, longest wait for deliveries in flight to finish (new ones get 503). Keep it under the pod's grace period.",
    )
    memory_budget: ByteSize = Field(
        Size(176 * 1024**2),
        description=f"Memory for deliveries being read or recorded, at {1 + PARSED_BYTES_PER_BYTE}x their body bytes (the body plus its "
        "parsed form), charged as the bytes arrive (the first 64 KiB up front); a delivery whose Content-Length (no length: "
        "--webhook.max-body-size) does not fit gets 503 with Retry-After before its body is read, one that finds no room midway gets "
        "503 then. At least that cost of the largest delivery; sized with the chart's memory limit.",
    )
    allowed_networks: list[Network] = Field(
        default_factory=list,
        description="Networks (CIDRs) deliveries may come from, e.g. Twilio's 35.90.102.128/25; others get 403 before anything is "
        "read. Empty: any. Behind a proxy, set --webhook.trusted-proxies too.",
    )
    trusted_proxies: list[Network] = Field(
        default_factory=list,
        description="Networks (CIDRs) of the proxies in front of the webhook: from a peer inside them, the client address is read "
        "from X-Forwarded-For, right to left, past every trusted proxy.",
    )

    @field_validator("path")
    @classmethod
    def _absolute_path(cls, value: str) -> str:
        if not value.startswith("/"):
            raise ValueError("must start with /")
        return value

    @model_validator(mode="after")
    def _largest_delivery_fits(self) -> WebhookSettings:
        # A delivery that can never fit would be answered 503 until Twilio gives up, 4 hours later.
        cost = self.max_body_size * (1 + PARSED_BYTES_PER_BYTE)
        if self.memory_budget < cost:
            raise ValueError(
                f"webhook.memory_budget must be at least {1 + PARSED_BYTES_PER_BYTE} x webhook.max_body_size ({cost} bytes): the largest delivery must fit"
            )
        return self

    @field_validator("public_url")
    @classmethod
    def _absolute_url(cls, value: str | None) -> str | None:
        # Twilio signs the exact URL it calls: anything but an absolute http(s) URL fails every signature.
        if value is not None:
            parts = urlsplit(value)
            if parts.scheme not in ("https", "http") or not parts.hostname:
                raise ValueError("must be the absolute https:// (or http://) URL Twilio calls, e.g. https://hooks.example.com/events")
            if parts.username is not None or parts.password is not None:
                # It is logged and printed by --check-config; the credentials belong in the environment.
                raise ValueError(f"must not carry credentials: set {ENV_PREFIX}BASIC_AUTH_USERNAME and {ENV_PREFIX}BASIC_AUTH_PASSWORD instead")
        return value


class DedupSettings(_Section):
    window: Duration = Field(
        Duration(hours=24),
        description="How long recorded participant SIDs are remembered. At least Twilio's 4 h retry horizon; "
        "longer also covers a pull of a participant that was pushed earlier.",
    )
    max_entries: int = Field(1_000_000, gt=0, description="Most participant SIDs remembered; the oldest are forgotten first.")

    @field_validator("window")
    @classmethod
    def _covers_retries(cls, value: timedelta) -> timedelta:
        if value < timedelta(hours=4):
            raise ValueError("must be at least 4h, Twilio's retry horizon, or retried deliveries would count twice")
        return value


class LabelLimit(_Section):
    max_values: int | None = Field(None, ge=1, description="Distinct values kept before the rest become 'other'.")
    allowlist: list[str] | None = Field(None, description="Only these values are kept; anything else becomes 'other'.")


def _yaml_mapping(value: Any) -> Any:
    """A mapping written on a command line or in a variable as YAML flow syntax (JSON is YAML too).

    >>> _yaml_mapping("{participant_label: {allowlist: [agent, customer]}}")
    {'participant_label': {'allowlist': ['agent', 'customer']}}
    """
    if not isinstance(value, str):
        return value
    try:
        return load_yaml(value)
    except yaml.YAMLError as exc:
        raise ValueError(
            f"not a YAML mapping like {{participant_label: {{allowlist: [agent, customer]}}}}: {getattr(exc, 'problem', None) or exc}"
        ) from None


# Not JSON-decoded by the flag and environment sources (NoDecode): _yaml_mapping reads it.
YamlMapping = Annotated[dict[str, LabelLimit], NoDecode, BeforeValidator(_yaml_mapping)]


class LabelSettings(_Section):
    account_sid: bool = Field(False, description="Add the account_sid label (useful with subaccounts).")
    jitter_buffer_size: bool = Field(False, description="Add the jitter_buffer_size label.")
    limits: YamlMapping = Field(
        default_factory=dict,
        description="Per-label caps and allowlists, e.g. {participant_label: {allowlist: [agent, customer]}}. "
        f"Default caps: {DEFAULT_MAX_VALUES}.",
    )

    max_label_sets: int = Field(
        DEFAULT_MAX_LABEL_SETS,
        ge=1,
        description="Most distinct combinations of the common labels; past it, new combinations are recorded under one set whose "
        'labels are all \'other\' (counted as label_overflow_total{subject="participant",label="label_set"}). Bounds the participant series at about 200 per set.',
    )

    @field_validator("limits")
    @classmethod
    def _known_labels(cls, value: dict[str, LabelLimit]) -> dict[str, LabelLimit]:
        unknown = set(value) - set(DEFAULT_MAX_VALUES)
        if unknown:
            raise ValueError(f"unknown labels {sorted(unknown)}; known: {sorted(DEFAULT_MAX_VALUES)}")
        return value

    def common_labels(self) -> tuple[str, ...]:
        """The common label names in exposition order."""
        return JOIN_LABELS + COMMON_LABELS + tuple(name for name in OPTIONAL_LABELS if getattr(self, name))

    def max_values(self, label: str) -> int:
        limit = self.limits.get(label)
        return limit.max_values if limit and limit.max_values else DEFAULT_MAX_VALUES[label]

    def allowlist(self, label: str) -> frozenset[str] | None:
        limit = self.limits.get(label)
        return frozenset(limit.allowlist) if limit and limit.allowlist is not None else None

    def caps(self) -> dict[str, int]:
        """``{label: cap}`` for every bounded label."""
        return {label: self.max_values(label) for label in DEFAULT_MAX_VALUES}

    def allowlists(self) -> dict[str, frozenset[str]]:
        """``{label: allowlist}`` for the labels that have one."""
        return {label: allowed for label in DEFAULT_MAX_VALUES if (allowed := self.allowlist(label)) is not None}


class _SubjectLabelSettings(_Section):
    """The shape of a subject's label settings beside the participants' ``--labels.*``: per-label caps and allowlists, and the budget of label sets."""

    # The labels of the subject, with their default caps (its module declares them).
    KNOWN: ClassVar[Mapping[str, int]] = {}

    @field_validator("limits", check_fields=False)
    @classmethod
    def _known_labels(cls, value: dict[str, LabelLimit]) -> dict[str, LabelLimit]:
        unknown = set(value) - set(cls.KNOWN)
        if unknown:
            raise ValueError(f"unknown labels {sorted(unknown)}; known: {sorted(cls.KNOWN)}")
        return value

    def caps(self) -> dict[str, int]:
        """The caps set here (the subject's defaults fill in the rest)."""
        return {label: limit.max_values for label, limit in self.limits.items() if limit.max_values}  # type: ignore[attr-defined]

    def allowlists(self) -> dict[str, frozenset[str]]:
        """The allowlists set here (the subject's documented vocabularies fill in the rest)."""
        return {label: frozenset(limit.allowlist) for label, limit in self.limits.items() if limit.allowlist is not None}  # type: ignore[attr-defined]


class CallLabelSettings(_SubjectLabelSettings):
    """The call families' labels (exporter/subjects/call.py)."""

    KNOWN: ClassVar[Mapping[str, int]] = CALL_MAX_VALUES
    limits: YamlMapping = Field(
        default_factory=dict,
        description="Per-label caps and allowlists of the twilio_call_* families, e.g. {carrier: {max_values: 20}}. "
        f"Default caps: {dict(CALL_MAX_VALUES)}; documented vocabularies are allowlisted: {sorted(CALL_ALLOWLISTS)}.",
    )
    max_label_sets: int = Field(
        CALL_MAX_LABEL_SETS,
        ge=1,
        description="Most distinct combinations of the call families' common labels; past it, new ones fold into one set of 'other' "
        '(label_overflow_total{subject="call",label="label_set"}).',
    )


class ConferenceLabelSettings(_SubjectLabelSettings):
    """The conference families' labels (exporter/subjects/conference.py)."""

    KNOWN: ClassVar[Mapping[str, int]] = CONFERENCE_MAX_VALUES
    limits: YamlMapping = Field(
        default_factory=dict,
        description="Per-label caps and allowlists of the twilio_conference_* conference-summary families, e.g. {mixer_region: "
        f"{{allowlist: [us1, ie1]}}}}. Default caps: {dict(CONFERENCE_MAX_VALUES)}; documented vocabularies are allowlisted: "
        f"{sorted(CONFERENCE_ALLOWLISTS)}.",
    )
    max_label_sets: int = Field(
        CONFERENCE_MAX_LABEL_SETS,
        ge=1,
        description="Most distinct combinations of the conference families' common labels; past it, new ones fold into one set of "
        '\'other\' (label_overflow_total{subject="conference",label="label_set"}).',
    )


Buckets = list[float] | None


class BucketSettings(_Section):
    """Histogram bucket overrides; each must keep the threshold edges the dashboards rely on."""

    mos: Buckets = Field(None, description=f"MOS buckets. Default {list(thresholds.MOS_BUCKETS)}.")
    jitter: Buckets = Field(None, description=f"Jitter buckets, seconds. Default {list(thresholds.JITTER_BUCKETS)}.")
    latency: Buckets = Field(None, description=f"Latency buckets, seconds. Default {list(thresholds.LATENCY_BUCKETS)}.")
    packet_loss: Buckets = Field(None, description=f"Packet loss buckets, ratio. Default {list(thresholds.PACKET_LOSS_BUCKETS)}.")
    quality_issues: Buckets = Field(None, description=f"Quality issue count buckets. Default {list(thresholds.QUALITY_ISSUES_BUCKETS)}.")
    duration: Buckets = Field(None, description=f"Participant duration buckets, seconds. Default {list(thresholds.DURATION_BUCKETS)}.")
    queue_time: Buckets = Field(None, description=f"Queue time buckets, seconds. Default {list(thresholds.QUEUE_TIME_BUCKETS)}.")

    @model_validator(mode="after")
    def _keep_threshold_edges(self) -> BucketSettings:
        for name, required in participant_subject.REQUIRED_EDGES.items():
            edges = getattr(self, name)
            if edges is None:
                continue
            if sorted(set(edges)) != edges:
                raise ValueError(f"buckets.{name} must be strictly increasing")
            missing = [edge for edge in required if edge not in edges]
            if missing:
                raise ValueError(f"buckets.{name} must keep the edges {missing}: dashboards and alerts read those buckets")
        return self

    def resolved(self) -> dict[str, tuple[float, ...]]:
        return {name: tuple(getattr(self, name) or default) for name, default in participant_subject.DEFAULT_BUCKETS.items()}


class LogSettings(_Section):
    level: Literal["debug", "info", "warning", "error"] = Field("info", description="Least severe log level written.")
    format: Literal["json", "text"] = Field("json", description="json: one JSON object per line; text: key=value lines.")


class ConfigFileSettings(_Section):
    file: Path | None = Field(None, description="YAML file with any of these settings (labels, caps, allowlists, buckets, ...).")


# The Insights API keeps summaries for 30 days: a longer lookback would ask for nothing.
MAX_LOOKBACK = timedelta(days=30)


def _subject_name(value: str) -> str:
    if value not in subjects.NAMES:
        raise ValueError(f"{value!r} is not a summary subject: {', '.join(subjects.NAMES)}")
    return value


# What pull mode can read: one name per summary subject (exporter/subjects/__init__.py lists them).
PullSummary = Annotated[str, AfterValidator(_subject_name)]
PULL_SUMMARIES: tuple[str, ...] = subjects.NAMES


def _comma_list(value: Any) -> Any:
    """A list written on a command line or in a variable as comma-separated names, or as JSON like the other lists.

    >>> _comma_list("participant, call")
    ['participant', 'call']
    >>> _comma_list('["conference"]')
    ['conference']
    """
    if isinstance(value, str):
        if value.lstrip().startswith("["):
            try:
                return load_yaml(value)  # YAML flow syntax, JSON included
            except yaml.YAMLError:
                raise ValueError("not a list like participant,call or [participant, call]") from None
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


# Not JSON-decoded by the flag and environment sources (NoDecode): _comma_list reads both forms.
PullSummaries = Annotated[list[PullSummary], NoDecode, BeforeValidator(_comma_list)]


class PullSettings(_Section):
    """Pull mode: read summaries from the Voice Insights REST API (credentials from the environment)."""

    enabled: bool = Field(
        False,
        description="Poll the Voice Insights REST API for the summaries of --pull.summaries (needs TWILIO_ACCOUNT_SID with TWILIO_AUTH_TOKEN, or TWILIO_API_KEY with TWILIO_API_SECRET).",
    )
    api_url: HttpUrl = Field("https://insights.twilio.com", description="Base URL of the Voice Insights API (without /v1).")
    interval: PositiveDuration = Field(Duration(minutes=1), description="Time between the start of one poll and the next.")
    summaries: PullSummaries = Field(
        default_factory=lambda: list(PULL_SUMMARIES),
        description="Which summaries to read, comma-separated: participant (the participants of each conference), call (the Call "
        "Summaries list), conference (each listed conference's own summary). --pull.summaries=participant reads what pull mode read "
        "before Call and Conference Summaries.",
    )
    overlap: Duration = Field(
        Duration(hours=1),
        description="Each poll lists conferences created since the last poll minus this much, for conferences the API lists late.",
    )
    call_overlap: Duration = Field(
        Duration(hours=5),
        description="Each poll lists the calls started since the last poll minus this much: a call's summary is complete up to 30m after "
        "it ends, and Twilio ends a call after 4h unless the account allows longer (up to 24h: raise this, and --dedup.window, to match).",
    )
    lookback: Duration = Field(
        Duration(hours=1),
        description="How far back the first poll reads when there is no saved watermark; up to 30d for a deliberate backfill.",
    )
    page_size: int = Field(1000, ge=1, le=1000, description="Items per page of the API's lists (1-1000): fewer requests, fewer 429s.")
    concurrency: int = Field(4, ge=1, le=64, description="Requests to the API in flight at once.")
    pending_max_age: Duration = Field(
        Duration(hours=12),
        description="How long a conference with in_progress summaries is re-read before its summaries are given up (counted as expired).",
    )
    timeout: PositiveDuration = Field(Duration(seconds=30), description="Time allowed for one API request.")
    retries: int = Field(5, ge=0, le=20, description="Retries of a request that got a 429, a 5xx or no answer.")
    backoff: Duration = Field(Duration(seconds=1), description="Wait before the first retry; doubles on each retry (a 429's Retry-After wins).")
    max_backoff: Duration = Field(Duration(minutes=5), description="Longest wait before a retry, Retry-After included.")

    @field_validator("summaries")
    @classmethod
    def _some_summaries(cls, value: list[PullSummary]) -> list[PullSummary]:
        if not value:
            raise ValueError(f"name at least one of {', '.join(PULL_SUMMARIES)}")
        return [name for name in PULL_SUMMARIES if name in value]  # each once, in one order

    @field_validator("lookback")
    @classmethod
    def _within_retention(cls, value: timedelta) -> timedelta:
        if value > MAX_LOOKBACK:
            raise ValueError("must be at most 30d: the Insights API keeps summaries for 30 days")
        return value


class StateSettings(_Section):
    path: Path | None = Field(
        None,
        description="SQLite file keeping the participant counts, the keys of what they hold, the poll watermark and Kinesis checkpoints "
        "across restarts and kill -9: every summary answered 2xx is on disk first. Default: in memory only (a restart loses what "
        "Prometheus has not scraped).",
    )
    sync: Literal["normal", "full"] = Field(
        "normal",
        description="normal: a commit survives the exporter being killed; full: also an OS crash or power loss (an fsync per commit).",
    )
    snapshot_interval: PositiveDuration = Field(
        Duration(minutes=1), description="How often the counts changed since the last snapshot are saved and the journal behind them dropped."
    )
    snapshot_changes: int = Field(
        200_000, ge=1, description="Also snapshot once this many summaries were journaled since the last one (bounds the replay at start)."
    )


class TaskRouterSettings(_Section):
    """The TaskRouter join (exporter/join.py): task queue, workflow and team labels on every summary of a Flex call."""

    join_ttl: Duration = Field(
        Duration(hours=5),
        description="How long a task's join is kept after its last TaskRouter event: the summaries come up to 30 min after the call, "
        "and Event Streams redelivers for up to 4 h.",
    )
    max_joins: int = Field(50_000, gt=0, description="Most tasks the join map holds (about 3 KB each); the oldest are evicted first (counted).")
    max_join_memory: ByteSize = Field(
        Size(192 * 1024**2),
        description="Most memory the join map holds (estimated, its values cut to 64 characters as labels are); the oldest tasks are "
        "evicted first (counted). The default holds the 50,000 tasks of --taskrouter.max-joins with room to spare.",
    )
    team_attributes: list[str] = Field(
        ["team_name"],
        description="Keys of worker_attributes giving the team label, the first present wins. Never the worker's name or SID: "
        "both are personal data.",
    )
    label_values: Literal["name", "sid"] = Field(
        "name",
        description="task_queue and workflow labels from the queue and workflow names, or their SIDs (Twilio flags the names as personal data).",
    )


class KinesisSettings(_Section):
    """Consumer mode: read the events a Twilio Kinesis sink writes (AWS credentials from the standard chain)."""

    stream_name: str | None = Field(
        None,
        description="Read the events of this Amazon Kinesis stream (a Twilio Event Streams Kinesis sink): summaries and TaskRouter events. "
        "AWS credentials come from the standard chain: environment, shared profile, web identity (EKS service accounts), instance role.",
    )
    region: str | None = Field(
        None,
        description="AWS region of the stream. Default: AWS_REGION, else AWS_DEFAULT_REGION or the AWS profile's region; "
        "with none of them the exporter refuses to start.",
    )
    endpoint_url: HttpUrl | None = Field(None, description="Kinesis endpoint URL, for a VPC endpoint or a local test server. Default: the region's.")
    start_position: Literal["trim_horizon", "latest"] = Field(
        "trim_horizon",
        description="Where to begin on a shard with no checkpoint. trim_horizon (the default) loses nothing: it reads everything the "
        "stream still keeps (24 h by default), and what was recorded before is deduplicated within --dedup.window. latest skips "
        "whatever was written before the consumer first started.",
    )
    poll_interval: PositiveDuration = Field(
        Duration(seconds=1),
        description="Wait between two reads of a shard that is caught up. AWS allows 5 reads per second per shard, shared by every consumer of the stream.",
    )
    batch_size: int = Field(1000, ge=1, le=10000, description="Most records asked for in one read (GetRecords Limit, 1-10000).")
    shard_sync_interval: PositiveDuration = Field(
        Duration(seconds=60), description="Time between two listings of the stream's shards (a resharding is also noticed when a shard ends)."
    )
    backoff: PositiveDuration = Field(
        Duration(milliseconds=500), description="First wait after a throttled or failed read; doubles on each failure, with full jitter."
    )
    max_backoff: PositiveDuration = Field(Duration(seconds=30), description="Longest wait after a throttled or failed read.")
    timeout: PositiveDuration = Field(Duration(seconds=30), description="Time allowed for one request to Kinesis.")

    @field_validator("stream_name")
    @classmethod
    def _stream_name(cls, value: str | None) -> str | None:
        # AWS's own pattern for a stream name: refused here rather than at the first request.
        if value is not None and not re.fullmatch(r"[a-zA-Z0-9_.-]{1,128}", value):
            raise ValueError("must be 1-128 characters of a-z, A-Z, 0-9, _ . -")
        return value


class Settings(BaseSettings):
    """
    Receives Twilio Voice Insights participant, call and conference summaries and TaskRouter events
    (Event Streams webhook, REST pull or Kinesis) and serves them as Prometheus metrics.

    Every flag can also be set by an environment variable TWILIO_INSIGHTS_EXPORTER_<SECTION>__<FIELD>
    (e.g. TWILIO_INSIGHTS_EXPORTER_WEBHOOK__PUBLIC_URL) or in the YAML file of --config.file; flags win
    over the environment, the environment over the file; a TWILIO_INSIGHTS_EXPORTER_ variable that
    names no setting is refused. Durations: 30s, 5m, 4h, 1d; sizes: 512KiB, 16MiB, 1GiB (or bytes).

    Secrets are read from the environment only: TWILIO_AUTH_TOKEN (and TWILIO_AUTH_TOKEN_SECONDARY
    during a rotation) verify webhook signatures; TWILIO_INSIGHTS_EXPORTER_BASIC_AUTH_USERNAME and
    _PASSWORD require HTTP Basic credentials on the webhook. Pull mode (--pull.enabled) authenticates
    with TWILIO_ACCOUNT_SID and TWILIO_AUTH_TOKEN, or TWILIO_API_KEY and TWILIO_API_SECRET.
    """

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter="__",
        extra="forbid",
        cli_prog_name="twilio-insights-exporter",
        cli_kebab_case=True,
        cli_implicit_flags=True,
        cli_avoid_json=True,
        cli_hide_none_type=True,
        nested_model_default_partial_update=True,
    )

    web: WebSettings = Field(default_factory=WebSettings)
    webhook: WebhookSettings = Field(default_factory=WebhookSettings)
    dedup: DedupSettings = Field(default_factory=DedupSettings)
    labels: LabelSettings = Field(default_factory=LabelSettings)
    call_labels: CallLabelSettings = Field(default_factory=CallLabelSettings)
    conference_labels: ConferenceLabelSettings = Field(default_factory=ConferenceLabelSettings)
    buckets: BucketSettings = Field(default_factory=BucketSettings)
    log: LogSettings = Field(default_factory=LogSettings)
    config: ConfigFileSettings = Field(default_factory=ConfigFileSettings)
    pull: PullSettings = Field(default_factory=PullSettings)
    state: StateSettings = Field(default_factory=StateSettings)
    kinesis: KinesisSettings = Field(default_factory=KinesisSettings)
    taskrouter: TaskRouterSettings = Field(default_factory=TaskRouterSettings)
    check_config: bool = Field(False, description="Load and validate the configuration, print it (secrets masked) and exit.")

    @model_validator(mode="after")
    def _pull_within_dedup_window(self) -> Settings:
        # The poller re-reads a conference for up to the overlap (or, while summaries are pending,
        # pending_max_age) plus one interval; a participant key that expired before that would be
        # recorded a second time.
        # Calls: a call is re-read for up to the call overlap plus one interval.
        pull = self.pull
        if pull.enabled and max(pull.overlap, pull.pending_max_age) + pull.interval > self.dedup.window:
            raise ValueError(
                "dedup.window must be at least max(pull.overlap, pull.pending_max_age) + pull.interval, "
                "or a re-read participant would be counted twice"
            )
        if pull.enabled and "call" in pull.summaries and pull.call_overlap + pull.interval > self.dedup.window:
            raise ValueError("dedup.window must be at least pull.call_overlap + pull.interval, or a re-read call would be counted twice")
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        # The file of this load (load_config), in the model's configuration as pydantic-settings reads it.
        if settings_cls.model_config.get("yaml_file") is not None:
            sources.append(YamlConfigSettingsSource(settings_cls))
        return tuple(sources)


class Secrets(BaseSettings):
    """Credentials, from the environment only."""

    model_config = SettingsConfigDict(extra="ignore", case_sensitive=True)

    auth_token: SecretStr | None = Field(None, validation_alias="TWILIO_AUTH_TOKEN", description="Auth token of the account that owns the sink.")
    auth_token_secondary: SecretStr | None = Field(
        None, validation_alias="TWILIO_AUTH_TOKEN_SECONDARY", description="A second accepted auth token, for rotations."
    )
    basic_auth_username: str | None = Field(
        None, validation_alias=ENV_PREFIX + "BASIC_AUTH_USERNAME", description="With the password: HTTP Basic credentials the webhook requires."
    )
    basic_auth_password: SecretStr | None = Field(
        None, validation_alias=ENV_PREFIX + "BASIC_AUTH_PASSWORD", description="Password of the webhook's HTTP Basic credentials."
    )
    # Pull mode authenticates to the REST API with the Account SID and auth token, or with an API key.
    account_sid: str | None = Field(None, validation_alias="TWILIO_ACCOUNT_SID", description="Account SID, the REST API user with TWILIO_AUTH_TOKEN.")
    api_key: str | None = Field(None, validation_alias="TWILIO_API_KEY", description="API key SID (SK...), the REST API user with TWILIO_API_SECRET.")
    api_secret: SecretStr | None = Field(None, validation_alias="TWILIO_API_SECRET", description="Secret of TWILIO_API_KEY.")

    @model_validator(mode="after")
    def _basic_auth_pair(self) -> Secrets:
        if (self.basic_auth_username is None) != (self.basic_auth_password is None):
            raise ValueError(f"set both {ENV_PREFIX}BASIC_AUTH_USERNAME and {ENV_PREFIX}BASIC_AUTH_PASSWORD, or neither")
        if (self.api_key is None) != (self.api_secret is None):
            raise ValueError("set both TWILIO_API_KEY and TWILIO_API_SECRET, or neither")
        return self

    def api_credentials(self) -> tuple[str, str] | None:
        """HTTP Basic user and password for the REST API: the API key if set, else the Account SID and auth token."""
        if self.api_key and self.api_secret and self.api_secret.get_secret_value():
            return self.api_key, self.api_secret.get_secret_value()
        if self.account_sid and self.auth_token and self.auth_token.get_secret_value():
            return self.account_sid, self.auth_token.get_secret_value()
        return None

    def auth_tokens(self) -> list[str]:
        """Every accepted auth token, primary first."""
        return [t.get_secret_value() for t in (self.auth_token, self.auth_token_secondary) if t and t.get_secret_value()]


class Config(BaseModel):
    """Settings and secrets together: what the app factory takes."""

    model_config = ConfigDict(frozen=True)

    settings: Settings
    secrets: Secrets

    @model_validator(mode="after")
    def _pull_has_credentials(self) -> Config:
        if self.settings.pull.enabled and self.secrets.api_credentials() is None:
            raise ValueError("--pull.enabled needs TWILIO_ACCOUNT_SID with TWILIO_AUTH_TOKEN, or TWILIO_API_KEY with TWILIO_API_SECRET")
        return self


def load_config(argv: list[str] | None = None, add_argument: Callable[..., Any] | None = None) -> Config:
    """Parse flags, the environment and the YAML file.

    Raises ``SystemExit`` for a malformed command line (argparse's usual behaviour),
    :class:`UnknownVariableError` for a ``TWILIO_INSIGHTS_EXPORTER_*`` variable that names no
    setting, and ``ValueError`` (``pydantic.ValidationError`` included) for a bad value.
    ``add_argument``: pydantic-settings' hook adding each flag to argparse (exporter/cli.py writes
    ``--help`` with it).
    """
    argv = [] if argv is None else argv
    check_environment(os.environ)
    yaml_file = find_config_file(argv, os.environ)
    model: type[Settings] = Settings
    if yaml_file is not None:
        if not yaml_file.is_file():
            raise ValueError(f"--config.file {yaml_file}: no such file")
        _check_yaml_file(yaml_file)
        # A subclass naming the file, for this load only: nothing shared changes.
        model = type("Settings", (Settings,), {"model_config": {**Settings.model_config, "yaml_file": yaml_file}, "__doc__": Settings.__doc__})
    settings = CliApp.run(model, cli_args=argv, cli_settings_source=CliSettingsSource(model, add_argument_method=add_argument or _add_argument))
    return Config(settings=settings, secrets=Secrets())


class UnknownVariableError(ValueError):
    """A ``TWILIO_INSIGHTS_EXPORTER_*`` variable that names no setting: a usage error, like an unknown flag."""


def flag(path: tuple[str, ...]) -> str:
    """The flag of the setting at ``path``.

    >>> flag(("webhook", "max_body_size"))
    '--webhook.max-body-size'
    """
    return "--" + ".".join(part.replace("_", "-") for part in path)


def variable(path: tuple[str, ...]) -> str:
    """The environment variable of the setting (or section) at ``path``, as pydantic-settings names it.

    >>> variable(("webhook", "max_body_size"))
    'TWILIO_INSIGHTS_EXPORTER_WEBHOOK__MAX_BODY_SIZE'
    """
    return ENV_PREFIX + str(Settings.model_config["env_nested_delimiter"]).join(path).upper()


def setting_paths(model: type[BaseModel] = Settings, prefix: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], bool]]:
    """Every section and setting of the model, as ``(path, is_section)``, sections first."""
    for name, info in model.model_fields.items():
        annotation = info.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            yield (*prefix, name), True
            yield from setting_paths(annotation, (*prefix, name))
        else:
            yield (*prefix, name), False


def known_variables() -> dict[str, str | None]:
    """Every variable the exporter reads under its prefix, derived from the models: each setting's (to its flag),
    each prefixed secret's (to ``""``) and each section's (a JSON object, to None)."""
    known: dict[str, str | None] = {variable(path): None if section else flag(path) for path, section in setting_paths()}
    for info in Secrets.model_fields.values():
        if str(info.validation_alias).startswith(ENV_PREFIX):
            known[str(info.validation_alias)] = ""
    return known


def _open_variables() -> tuple[str, ...]:
    """Variables under which pydantic-settings reads nested keys (``..._LABELS__LIMITS__COUNTRY_CODE__MAX_VALUES``):
    the mapping settings, whose keys the model validates itself."""
    return tuple(variable(path) + "__" for path, section in setting_paths() if not section and get_origin(_field(path).annotation) is dict)


def _field(path: tuple[str, ...]) -> Any:
    model: Any = Settings
    for part in path:
        info = model.model_fields[part]
        model = info.annotation
    return info


# Kubernetes' service links: a Service named twilio-insights-exporter(-...) puts variables such as
# TWILIO_INSIGHTS_EXPORTER_SERVICE_HOST and TWILIO_INSIGHTS_EXPORTER_PORT_9802_TCP_ADDR into every
# pod of its namespace unless the pod sets enableServiceLinks: false (the chart does). They are no
# setting, and refusing them would stop an exporter deployed by other means; no setting's
# variable has this shape (a setting's always has a "__").
_SERVICE_LINK = re.compile(r"(?:[A-Z0-9_]+_)?(?:SERVICE_HOST|SERVICE_PORT(?:_[A-Z0-9_]+)?|PORT(?:_\d+_(?:TCP|UDP|SCTP)(?:_(?:PROTO|PORT|ADDR))?)?)")


def check_environment(environ: Mapping[str, str]) -> None:
    """Refuse every ``TWILIO_INSIGHTS_EXPORTER_*`` variable that names no setting, with the closest that does.

    pydantic-settings reads only the names it knows, so a misspelt one would be ignored without a
    word; names are compared without case, as pydantic-settings reads them.
    """
    known = known_variables()
    open_variables = _open_variables()
    problems = []
    for name in sorted(environ):
        upper = name.upper()
        if not upper.startswith(ENV_PREFIX) or upper in known or upper.startswith(open_variables):
            continue
        rest = upper.removeprefix(ENV_PREFIX)
        if "__" not in rest and _SERVICE_LINK.fullmatch(rest):
            continue
        # Settings and secrets, not sections; compared without the prefix every name shares, which
        # would make any two names look alike.
        candidates = {known_name.removeprefix(ENV_PREFIX): known_name for known_name, setting in known.items() if setting is not None}
        closest = difflib.get_close_matches(rest, candidates, n=1, cutoff=0.6)
        if closest:
            meant = candidates[closest[0]]
            problems.append(f"unknown variable {name}: did you mean {meant}{f' ({known[meant]})' if known[meant] else ''}?")
        else:
            problems.append(f"unknown variable {name}: no setting is named like it")
    if problems:
        raise UnknownVariableError("; ".join(problems) + " (see --help)")


def yaml_position(path: os.PathLike[str] | str, loc: tuple[str | int, ...], *, key: bool = False) -> str | None:
    """``file:line:column`` of the value at ``loc`` in the YAML file (of its key, with ``key``), None if it is not there.

    ``loc`` is a pydantic error's: keys of mappings, indexes of lists (``("webhook", "allowed_networks", 1)``).
    """
    try:
        node = yaml.compose(Path(path).read_text())
    except (OSError, yaml.YAMLError):
        return None
    if node is None or not loc:
        return None
    key_mark = None
    for part in loc:
        if isinstance(node, yaml.MappingNode):
            for key_node, value in node.value:
                if isinstance(key_node, yaml.ScalarNode) and key_node.value == str(part):
                    key_mark, node = key_node.start_mark, value
                    break
            else:
                return None
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and 0 <= part < len(node.value):
            node = node.value[part]
            key_mark = node.start_mark
        else:
            return None
    mark = key_mark if key else node.start_mark
    return None if mark is None else f"{path}:{mark.line + 1}:{mark.column + 1}"


def _check_yaml_file(path: Path) -> None:
    """A YAML file that does not parse, writes a key twice, or is not a mapping, is named with its line and column."""
    try:
        data = load_yaml(path.read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        raise ValueError(f"--config.file {where}: not valid YAML: {getattr(exc, 'problem', None) or exc}") from None
    except OSError as exc:
        raise ValueError(f"--config.file {path}: {exc.strerror}") from None
    if data is not None and not isinstance(data, dict):
        raise ValueError(
            f"--config.file {path}: the top level must be a mapping of sections (web, webhook, dedup, labels, ...), not a {type(data).__name__}"
        )


def find_config_file(argv: list[str], environ: Any) -> Path | None:
    """The YAML file must be known before the sources are built, so it is looked up first."""
    for i, arg in enumerate(argv):
        if arg == "--config.file" and i + 1 < len(argv):
            return Path(argv[i + 1])
        if arg.startswith("--config.file="):
            return Path(arg.split("=", 1)[1])
    value = environ.get(ENV_PREFIX + "CONFIG__FILE")
    return Path(value) if value else None


def _add_argument(parser: Any, *names: str, **kwargs: Any) -> Any:
    return parser.add_argument(*names, **kwargs)
