"""The "Twilio Insights exporter" dashboard: is the exporter receiving, verifying and recording?

Every panel answers a question an on-call engineer asks when summaries stop or look wrong: does
Twilio reach us (requests by status), do we accept what it sends (signatures, rejections, invalid
events), do we count each summary once (duplicates), are labels still bounded (overflow), does the
REST poller keep up (pull mode), and is the process itself healthy.
"""

from __future__ import annotations

from typing import Any

from exporter import metrics as m
from exporter.metrics import Outcome

from . import settings
from .grafana import Cell, Section, dashboard, datasource_variable, heatmap, query, query_variable, stat, thresholds, timeseries
from .promql import TARGET_VARIABLES, by, selector, variable_matchers

UID = "twilio-insights-exporter"
FILE = "twilio-insights-exporter.json"
RATE = "$__rate_interval"
RANGE = "$__range"
FILTERS = variable_matchers(TARGET_VARIABLES)


def sel(*extra: str) -> str:
    return selector(*FILTERS, *extra)


def per_minute(name: str, group: tuple[str, ...] = (), *extra: str) -> str:
    return f"sum{by(group)}(rate({name}{sel(*extra)}[{RATE}])) * 60"


def in_range(name: str, *extra: str) -> str:
    return f"sum(increase({name}{sel(*extra)}[{RANGE}]))"


def overview() -> Section:
    alarm = thresholds((None, "green"), (1, "red"))
    return Section(
        "Overview",
        [
            Cell(
                stat(
                    "Targets up",
                    "Exporter targets Prometheus scrapes successfully, out of those selected.",
                    query(f"sum(up{sel()})", instant=True),
                    "short",
                    thresholds((None, "red"), (1, "green")),
                    decimals=0,
                ),
                3,
                4,
            ),
            Cell(
                stat(
                    "Since last summary",
                    f"Time since the most recent summary was recorded. The alert fires after {settings.NO_SUMMARIES_FOR_SECONDS // 3600} h.",
                    query(f"time() - max({m.LAST_SUMMARY}{sel()} > 0)", instant=True),
                    "s",
                    thresholds((None, "green"), (settings.NO_SUMMARIES_FOR_SECONDS / 2, "orange"), (settings.NO_SUMMARIES_FOR_SECONDS, "red")),
                ),
                3,
                4,
            ),
            Cell(
                stat(
                    "Summaries recorded",
                    "Summary events recorded in the selected range (each counted once).",
                    query(in_range(f"{m.EVENTS}_total", f'outcome="{Outcome.RECORDED}"'), instant=True),
                    "short",
                    thresholds((None, "blue")),
                    decimals=0,
                ),
                3,
                4,
            ),
            Cell(
                stat(
                    "Signature failures",
                    "Webhook requests refused for their X-Twilio-Signature in the selected range. Twilio does not retry a 403: each one from Twilio is lost data.",
                    query(in_range(f"{m.SIGNATURE_FAILURES}_total"), instant=True),
                    "short",
                    alarm,
                    decimals=0,
                ),
                3,
                4,
            ),
            Cell(
                stat(
                    "Invalid events",
                    "Events that failed validation in the selected range (skipped, the rest of their batch was recorded).",
                    query(in_range(f"{m.INVALID_EVENTS}_total"), instant=True),
                    "short",
                    alarm,
                    decimals=0,
                ),
                3,
                4,
            ),
            Cell(
                stat(
                    "Duplicates",
                    "Deliveries of an event already recorded, in the selected range (Twilio delivers at least once; acknowledged, not counted).",
                    query(in_range(f"{m.EVENTS}_total", f'outcome="{Outcome.DUPLICATE}"'), instant=True),
                    "short",
                    thresholds((None, "blue")),
                    decimals=0,
                ),
                3,
                4,
            ),
            Cell(
                stat(
                    "Label overflows",
                    "Label values folded into 'other' in the selected range because the label reached its cap.",
                    query(in_range(f"{m.LABEL_OVERFLOW}_total"), instant=True),
                    "short",
                    thresholds((None, "green"), (1, "orange")),
                    decimals=0,
                ),
                3,
                4,
            ),
            Cell(version(), 3, 4),
        ],
    )


def version() -> dict[str, Any]:
    panel = stat(
        "Version",
        "Exporter version (and Python version) of the selected targets.",
        query(f"count by (version, python_version) ({m.BUILD}_info{sel()})", "{{version}} (Python {{python_version}})", instant=True),
        "short",
        thresholds((None, "text")),
    )
    # The legend (version) is the information, not the count of targets running it.
    panel["options"] = {**panel["options"], "textMode": "name", "colorMode": "none", "graphMode": "none"}
    return panel


def webhook() -> Section:
    return Section(
        "Webhook",
        [
            Cell(
                timeseries(
                    "Webhook requests per minute by status",
                    "2xx: taken (Twilio is done). 4xx other than 429: Twilio discards the delivery. 5xx: Twilio retries for up to 4 h.",
                    [query(per_minute(f"{m.WEBHOOK_REQUESTS}_total", ("code",)), "{{code}}")],
                    "cpm",
                    stack=True,
                )
            ),
            Cell(
                timeseries(
                    "Rejected requests per minute by reason",
                    "Requests refused as a whole before any event was read (too large, not JSON, not a CloudEvent batch).",
                    [query(per_minute(f"{m.WEBHOOK_REJECTIONS}_total", ("reason",)), "{{reason}}")],
                    "cpm",
                    stack=True,
                )
            ),
            Cell(
                timeseries(
                    "Webhook answer time",
                    "Time from a request's arrival to its answer. Twilio gives up on an answer after 5 s and retries.",
                    [
                        query(
                            f"histogram_quantile({q}, sum by (le) (rate({m.WEBHOOK_REQUEST_DURATION}_bucket{sel()}[{RATE}])))",
                            f"p{q * 100:g}",
                        )
                        for q in (0.5, 0.9, 0.99)
                    ],
                    "s",
                    threshold=5,
                )
            ),
            Cell(
                heatmap(
                    "Webhook answer time distribution",
                    "Distribution of the time to answer a webhook request.",
                    query(f"sum by (le) (rate({m.WEBHOOK_REQUEST_DURATION}_bucket{sel()}[{RATE}]))", "{{le}}", heatmap=True),
                    "s",
                )
            ),
            Cell(
                timeseries(
                    "Signature failures per minute by reason",
                    "Requests refused with 403 for a missing or wrong X-Twilio-Signature. From Twilio, this means a wrong auth token or public URL.",
                    [query(per_minute(f"{m.SIGNATURE_FAILURES}_total", ("reason",)), "{{reason}}")],
                    "cpm",
                    stack=True,
                )
            ),
            Cell(
                timeseries(
                    "Basic auth failures per minute",
                    "Requests refused with 401 for missing or wrong HTTP Basic credentials (when configured).",
                    [query(per_minute(f"{m.BASIC_AUTH_FAILURES}_total"), "basic auth failures")],
                    "cpm",
                )
            ),
        ],
    )


def events() -> Section:
    return Section(
        "Events",
        [
            Cell(
                timeseries(
                    "Events per minute by outcome",
                    "Events received, by source (webhook or pull), event type and outcome.",
                    [query(per_minute(f"{m.EVENTS}_total", ("source", "type", "outcome")), "{{source}} {{type}} {{outcome}}")],
                    "cpm",
                    stack=True,
                )
            ),
            Cell(
                timeseries(
                    "Duplicate deliveries per minute",
                    "Events delivered again after being recorded: acknowledged with 200, not counted twice.",
                    [query(per_minute(f"{m.EVENTS}_total", ("source",), f'outcome="{Outcome.DUPLICATE}"'), "{{source}}")],
                    "cpm",
                )
            ),
            Cell(
                timeseries(
                    "Invalid events per minute by reason",
                    "Events skipped because they failed validation; the rest of their batch is recorded.",
                    [query(per_minute(f"{m.INVALID_EVENTS}_total", ("source", "reason")), "{{source}} {{reason}}")],
                    "cpm",
                    stack=True,
                )
            ),
            Cell(
                timeseries(
                    "Label overflows per minute by label",
                    "Values replaced by 'other' because the label reached its cap: raise the cap or set an allowlist.",
                    [query(per_minute(f"{m.LABEL_OVERFLOW}_total", ("label",)), "{{label}}")],
                    "cpm",
                    stack=True,
                )
            ),
            Cell(
                timeseries(
                    "Deduplication keys remembered",
                    "Keys kept to recognise a redelivered event, by kind of key.",
                    [query(f"sum by (key) ({m.DEDUP_ENTRIES}{sel()})", "{{key}}")],
                    "short",
                )
            ),
        ],
    )


def pull() -> Section:
    """The REST poller (--pull.enabled); every panel is empty for a webhook-only exporter."""
    target = "{{instance}}"
    return Section(
        "Pull mode",
        [
            Cell(
                timeseries(
                    "API requests per minute by endpoint and status",
                    "Requests to the Voice Insights REST API, retries included. 429: rate limited (retried after Retry-After); "
                    f"5xx and {m.PULL_NETWORK_ERROR}: retried with backoff; 401/403: wrong credentials (not retried).",
                    [query(per_minute(f"{m.PULL_API_REQUESTS}_total", ("endpoint", "code")), "{{endpoint}} {{code}}")],
                    "cpm",
                    stack=True,
                )
            ),
            Cell(
                timeseries(
                    "Polls per minute by outcome",
                    "A failed poll could not read everything after its retries; the next one starts again from the same watermark.",
                    [query(per_minute(f"{m.PULL_POLLS}_total", ("outcome",)), "{{outcome}}")],
                    "cpm",
                    stack=True,
                )
            ),
            Cell(
                timeseries(
                    "Poll duration",
                    "Time one poll took, retries and backoff included. A poll longer than --pull.interval delays the next one.",
                    [
                        query(f"histogram_quantile({q}, sum by (le) (rate({m.PULL_DURATION}_bucket{sel()}[{RATE}])))", f"p{q * 100:g}")
                        for q in (0.5, 0.9, 0.99)
                    ],
                    "s",
                )
            ),
            Cell(
                timeseries(
                    "Conferences and participant summaries read per minute",
                    "Conferences listed and participant summaries read, each time a poll reads them (a pending conference is "
                    "read again on every poll), by processing_state: only complete and timeout summaries are recorded.",
                    [
                        query(per_minute(f"{m.PULL_CONFERENCES_SEEN}_total"), "conferences"),
                        query(per_minute(f"{m.PULL_PARTICIPANTS_SEEN}_total", ("processing_state",)), "participants {{processing_state}}"),
                    ],
                    "cpm",
                )
            ),
            Cell(
                timeseries(
                    "Time since the last successful poll",
                    f"Per exporter that polls; empty until its first successful poll. The alert fires after {settings.PULL_FAILING_FOR_SECONDS // 60} min "
                    "without one (counted from the process start when it never succeeded).",
                    [query(f"time() - max by (instance) ({m.PULL_LAST_SUCCESS}{sel()} > 0)", target)],
                    "s",
                    threshold=settings.PULL_FAILING_FOR_SECONDS,
                )
            ),
            Cell(
                timeseries(
                    "Watermark lag",
                    "How far behind now the conference list has been read: about one --pull.interval when healthy, growing while polls fail.",
                    [query(f"time() - max by (instance) ({m.PULL_WATERMARK}{sel()} > 0)", target)],
                    "s",
                )
            ),
            Cell(
                timeseries(
                    "Summaries pending completion",
                    "Participant summaries seen in_progress, re-read on every poll until they complete (up to ~30 min after the "
                    "conference ends) or --pull.pending-max-age passes.",
                    [query(f"sum by (instance) ({m.PULL_PENDING}{sel()})", target)],
                    "short",
                )
            ),
            Cell(
                timeseries(
                    "Summaries expired per minute",
                    "Participant summaries given up because they stayed in_progress past --pull.pending-max-age: never recorded.",
                    [query(per_minute(f"{m.PULL_EXPIRED}_total", ("instance",)), target)],
                    "cpm",
                )
            ),
        ],
    )


def process() -> Section:
    return Section(
        "Process",
        [
            Cell(
                timeseries(
                    "CPU",
                    "CPU time used per second by each exporter process (1 = one core).",
                    [query(f"rate(process_cpu_seconds_total{sel()}[{RATE}])", "{{instance}}")],
                    "percentunit",
                ),
                8,
            ),
            Cell(
                timeseries(
                    "Resident memory",
                    "Resident set size of each exporter process.",
                    [query(f"process_resident_memory_bytes{sel()}", "{{instance}}")],
                    "bytes",
                ),
                8,
            ),
            Cell(
                timeseries(
                    "Open file descriptors",
                    "Open file descriptors (sockets included) against the process limit.",
                    [
                        query(f"process_open_fds{sel()}", "open {{instance}}"),
                        query(f"process_max_fds{sel()}", "limit {{instance}}"),
                    ],
                    "short",
                ),
                8,
            ),
        ],
    )


def variables() -> list[dict[str, Any]]:
    found_in = f"{m.BUILD}_info"
    return [
        datasource_variable(),
        query_variable("job", f"label_values({found_in}, job)"),
        query_variable("instance", f'label_values({found_in}{{job=~"$job"}}, instance)'),
    ]


def build(generated: str) -> dict[str, Any]:
    """The whole dashboard as a JSON-ready dict."""
    return dashboard(
        uid=UID,
        title="Twilio Insights exporter",
        description="Health of twilio-insights-exporter: webhook deliveries, signatures, events, label caps, pull mode and the process.",
        generated=generated,
        variables=variables(),
        sections=[overview(), webhook(), events(), pull(), kinesis(), process()],
        tags=["twilio-insights", "exporter"],
    )


def kinesis() -> Section:
    """The Kinesis consumer (--kinesis.stream-name); every panel is empty for an exporter that does not consume."""
    target = "{{instance}}"
    return Section(
        "Kinesis",
        [
            Cell(
                timeseries(
                    "Records read per minute",
                    "Records read from the Kinesis stream (GetRecords), unreadable ones included.",
                    [query(per_minute(f"{m.KINESIS_RECORDS}_total", ("instance",)), target)],
                    "cpm",
                )
            ),
            Cell(
                timeseries(
                    "Kinesis events per minute by outcome",
                    "What became of the events read from the stream: recorded, duplicate (written twice by Twilio, or read again "
                    "after a restart), test, ignored, invalid (not JSON, not a CloudEvent, not a valid summary).",
                    [query(per_minute(f"{m.EVENTS}_total", ("type", "outcome"), 'source="kinesis"'), "{{type}} {{outcome}}")],
                    "cpm",
                    stack=True,
                )
            ),
            Cell(
                timeseries(
                    "Behind the tip of the stream, by shard",
                    f"MillisBehindLatest of the last read of each shard being read. The alert fires above "
                    f"{settings.KINESIS_LAG_SECONDS // 60} min for {settings.KINESIS_LAGGING_FOR}; records older than the stream's "
                    "retention (24 h by default) are lost.",
                    [query(f"max by (instance, shard) ({m.KINESIS_BEHIND}{sel()})", "{{instance}} {{shard}}")],
                    "s",
                    threshold=settings.KINESIS_LAG_SECONDS,
                )
            ),
            Cell(
                timeseries(
                    "Kinesis errors per minute by kind",
                    "throttled: over the 5 reads/s per shard (shared by every consumer of the stream), backed off; expired_iterator: "
                    "renewed from the checkpoint; aws_error: credentials, permissions, a missing stream; network_error: no answer; "
                    "internal: a delivery that failed, read again.",
                    [query(per_minute(f"{m.KINESIS_ERRORS}_total", ("kind",)), "{{kind}}")],
                    "cpm",
                    stack=True,
                )
            ),
            Cell(
                timeseries(
                    "Checkpoints written per minute",
                    "Shard checkpoints, each written after the records before it were recorded; none while the stream is quiet.",
                    [query(per_minute(f"{m.KINESIS_CHECKPOINTS}_total", ("instance",)), target)],
                    "cpm",
                )
            ),
            Cell(
                timeseries(
                    "Time since the last successful read",
                    f"A consumer reads every shard at least once per --kinesis.poll-interval, records or not. The alert fires after "
                    f"{settings.KINESIS_FAILING_FOR_SECONDS // 60} min without a successful read.",
                    [query(f"time() - max by (instance) ({m.KINESIS_LAST_READ}{sel()} > 0)", target)],
                    "s",
                    threshold=settings.KINESIS_FAILING_FOR_SECONDS,
                )
            ),
            Cell(
                timeseries(
                    "Shards being read",
                    "Open shards, and closed ones not yet read to their end. A resharding's children wait until their parents are drained.",
                    [query(f"sum by (instance) ({m.KINESIS_SHARDS}{sel()})", target)],
                    "short",
                )
            ),
        ],
    )
