"""Prometheus recording and alerting rules, from the same thresholds as the dashboards.

Quality alerts compare recorded shares (one recording rule per Twilio threshold, per scrape job and
stream direction) with :data:`settings.QUALITY_ALERT_SHARE`, and only when at least
:data:`settings.QUALITY_MIN_STREAMS` streams were observed, so a single bad call never pages.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from exporter import metrics as m

from . import settings
from .promql import QUALITY_THRESHOLDS, QualityThreshold

GROUP = ("job", "stream")
TARGET = ("job", "instance")
UP = f'up{{job=~"{settings.EXPORTER_JOB_REGEX}"}}'
NAMES = {"mos": "LowMOS", "jitter": "HighJitter", "latency": "HighLatency", "packet_loss": "HighPacketLoss"}
WHAT = {
    "mos": "MOS at or below",
    "jitter": "average jitter above",
    "latency": "average latency above",
    "packet_loss": "packet loss above",
}
EDGE_TEXT = {
    "mos": f"{m.MOS_THRESHOLD:g}",
    "jitter": f"{m.JITTER_AVG_THRESHOLD_SECONDS * 1000:g} ms",
    "latency": f"{m.LATENCY_AVG_THRESHOLD_SECONDS * 1000:g} ms",
    "packet_loss": f"{m.PACKET_LOSS_THRESHOLD_RATIO * 100:g} %",
}


@dataclass(frozen=True, slots=True)
class Alert:
    """An alerting rule, plus the parts of its expression that hold data whenever the exporter runs.

    ``probes`` are what the end-to-end test evaluates against a real Prometheus: the alert itself
    only returns data while it fires, its probes always do (so a misspelt metric is caught).
    """

    name: str
    expr: str
    duration: str
    severity: str
    summary: str
    description: str
    probes: tuple[str, ...]

    def rule(self) -> dict[str, Any]:
        rule: dict[str, Any] = {"alert": self.name, "expr": self.expr}
        if self.duration != "0m":
            rule["for"] = self.duration
        rule["labels"] = {"severity": self.severity}
        rule["annotations"] = {
            "summary": self.summary,
            "description": self.description,
            "runbook_url": f"{settings.RUNBOOK_BASE_URL}/{self.name}.md",
        }
        return rule


def share_record(threshold: QualityThreshold) -> str:
    return f"job_stream:{m.PARTICIPANT}_{threshold.tag}:ratio_rate{settings.QUALITY_WINDOW}"


def count_record(threshold: QualityThreshold) -> str:
    stat = "_avg" if threshold.matchers else ""
    return f"job_stream:{threshold.metric}{stat}_count:increase{settings.QUALITY_WINDOW}"


def recording_rules() -> list[dict[str, str]]:
    rules = []
    for threshold in QUALITY_THRESHOLDS:
        rules.append({"record": share_record(threshold), "expr": threshold.share(settings.QUALITY_WINDOW, group=GROUP)})
        rules.append({"record": count_record(threshold), "expr": threshold.count(settings.QUALITY_WINDOW, group=GROUP)})
    return rules


def quality_alerts() -> list[Alert]:
    alerts = []
    for threshold in QUALITY_THRESHOLDS:
        share, count = share_record(threshold), count_record(threshold)
        what = f"{WHAT[threshold.key]} {EDGE_TEXT[threshold.key]}"
        alerts.append(
            Alert(
                name=f"TwilioConference{NAMES[threshold.key]}",
                expr=f"{share} > {settings.QUALITY_ALERT_SHARE:g} and on (job, stream) {count} >= {settings.QUALITY_MIN_STREAMS}",
                duration=settings.QUALITY_ALERT_FOR,
                severity="warning",
                summary=f"Many conference participants with {what}",
                description=(
                    f"{{{{ $value | humanizePercentage }}}} of {{{{ $labels.stream }}}} media streams reported by {{{{ $labels.job }}}} "
                    f"had {what} (Twilio's threshold) over the last {settings.QUALITY_WINDOW}; the alert fires above "
                    f"{settings.QUALITY_ALERT_SHARE:.0%} with at least {settings.QUALITY_MIN_STREAMS} streams."
                ),
                probes=(share, count),
            )
        )
    return alerts


def exporter_alerts() -> list[Alert]:
    signature = f"{m.SIGNATURE_FAILURES}_total"
    requests = f"{m.WEBHOOK_REQUESTS}_total"
    invalid = f'{m.EVENTS}_total{{outcome="{m.INVALID}"}}'
    events = f"{m.EVENTS}_total"
    w = settings.WEBHOOK_WINDOW
    target = ", ".join(TARGET)
    signature_share = f"sum by ({target}) (rate({signature}[{w}])) / sum by ({target}) (rate({requests}[{w}]))"
    signature_count = f"sum by ({target}) (increase({signature}[{w}]))"
    invalid_share = f"sum by ({target}) (rate({invalid}[{w}])) / sum by ({target}) (rate({events}[{w}]))"
    invalid_count = f"sum by ({target}) (increase({invalid}[{w}]))"
    # The later of the last summary and the process start: a restart resets the gauge to 0, and
    # "no summary since the exporter started" is what matters then. `A > B or B` is max(A, B).
    last = f"{m.LAST_SUMMARY}"
    started = f"(process_start_time_seconds and on ({target}) {m.BUILD}_info)"
    since_last = f"time() - (({last} > on ({target}) {started}) or on ({target}) {started})"
    overflow = f"sum by ({target}, label) (increase({m.LABEL_OVERFLOW}_total[{settings.LABEL_OVERFLOW_WINDOW}]))"
    hours = settings.NO_SUMMARIES_FOR_SECONDS / 3600
    return [
        Alert(
            name="TwilioInsightsExporterDown",
            expr=f"{UP} == 0 or absent({UP})",
            duration=settings.EXPORTER_DOWN_FOR,
            severity="critical",
            summary="twilio-insights-exporter is down or not scraped",
            description=(
                "Prometheus cannot scrape {{ $labels.instance }} of job {{ $labels.job }} (or finds no target whose job matches "
                f'"{settings.EXPORTER_JOB_REGEX}"). Twilio retries failed deliveries for 4 hours: after that, summaries are lost.'
            ),
            probes=(UP,),
        ),
        Alert(
            name="TwilioInsightsNoSummaries",
            expr=f"{since_last} > {settings.NO_SUMMARIES_FOR_SECONDS}",
            duration="0m",
            severity="warning",
            summary="No Twilio participant summary received",
            description=(
                "{{ $labels.instance }} of job {{ $labels.job }} is up but has recorded no participant summary for "
                f"{{{{ $value | humanizeDuration }}}} (the alert fires after {hours:g} h). Check the Event Streams sink, "
                "its subscription and the public webhook URL."
            ),
            probes=(since_last,),
        ),
        Alert(
            name="TwilioInsightsSignatureFailures",
            expr=f"{signature_share} > {settings.SIGNATURE_FAILURE_SHARE:g} and on ({target}) {signature_count} >= {settings.SIGNATURE_FAILURE_MIN}",
            duration=settings.WEBHOOK_ALERT_FOR,
            severity="critical",
            summary="Webhook requests refused for their Twilio signature",
            description=(
                "{{ $value | humanizePercentage }} of the webhook requests to {{ $labels.instance }} over the last "
                f"{w} failed X-Twilio-Signature verification. Twilio discards a delivery answered 403 without retrying: "
                "if these come from Twilio, summaries are being lost (wrong auth token or public URL)."
            ),
            probes=(signature_share, signature_count),
        ),
        Alert(
            name="TwilioInsightsInvalidEvents",
            expr=f"{invalid_share} > {settings.INVALID_EVENT_SHARE:g} and on ({target}) {invalid_count} >= {settings.INVALID_EVENT_MIN}",
            duration=settings.WEBHOOK_ALERT_FOR,
            severity="warning",
            summary="Twilio events failing validation",
            description=(
                "{{ $value | humanizePercentage }} of the events received by {{ $labels.instance }} over the last "
                f"{w} were invalid and skipped. Twilio may have changed the event's shape."
            ),
            probes=(invalid_share, invalid_count),
        ),
        Alert(
            name="TwilioInsightsLabelOverflow",
            expr=f"{overflow} > 0",
            duration="0m",
            severity="info",
            summary="A label of twilio-insights-exporter reached its cap",
            description=(
                "{{ $labels.instance }} folded {{ $value | humanize }} new values of the label {{ $labels.label }} into "
                f"'other' over the last {settings.LABEL_OVERFLOW_WINDOW}. Raise the label's cap or set an allowlist."
            ),
            probes=(overflow,),
        ),
    ]


def pull_alerts() -> list[Alert]:
    """Pull mode's alerts. Pull metrics exist only where --pull.enabled, so a webhook-only
    exporter has none of these series and neither alert can fire for it."""
    target = ", ".join(TARGET)
    # As for the last summary: the later of the last successful poll and the process start, so a
    # poller that has not succeeded since a restart counts from the restart, not from 1970. The
    # start time is taken only from targets that poll (they expose the polls counter).
    polling = f"(process_start_time_seconds and on ({target}) {m.PULL_POLLS}_total)"
    since_success = f"time() - (({m.PULL_LAST_SUCCESS} > on ({target}) {polling}) or on ({target}) {polling})"
    failing_for = settings.PULL_FAILING_FOR_SECONDS
    expired = f"sum by ({target}) (increase({m.PULL_EXPIRED}_total[{settings.PULL_EXPIRED_WINDOW}]))"
    return [
        Alert(
            name="TwilioInsightsPullFailing",
            expr=f"{since_success} > {failing_for}",
            duration="0m",
            severity="warning",
            summary="twilio-insights-exporter cannot poll the Voice Insights API",
            description=(
                "{{ $labels.instance }} of job {{ $labels.job }} polls the Voice Insights REST API but has completed no "
                f"successful poll for {{{{ $value | humanizeDuration }}}} (the alert fires after {failing_for // 60} min). "
                "Nothing is being pulled; the API keeps summaries for 30 days, so a fix within that time loses nothing."
            ),
            probes=(since_success,),
        ),
        Alert(
            name="TwilioInsightsPullSummariesExpired",
            expr=f"{expired} >= {settings.PULL_EXPIRED_MIN}",
            duration="0m",
            severity="warning",
            summary="Pulled participant summaries given up while still in progress",
            description=(
                '{{ $labels.instance }} of job {{ $labels.job }} gave up {{ $value | printf "%.0f" }} participant summaries over the last '
                f"{settings.PULL_EXPIRED_WINDOW}: they stayed in_progress past --pull.pending-max-age and were never recorded."
            ),
            probes=(expired,),
        ),
    ]


def alerts() -> list[Alert]:
    """Every alert, exporter health first."""
    return exporter_alerts() + pull_alerts() + kinesis_alerts() + quality_alerts()


def kinesis_alerts() -> list[Alert]:
    """Kinesis consumer mode's alerts; only targets that consume (they expose the checkpoints counter) can fire them."""
    target = ", ".join(TARGET)
    behind = f"max by ({target}) ({m.KINESIS_BEHIND})"
    # As for pull mode: the later of the last successful read and the process start.
    consuming = f"(process_start_time_seconds and on ({target}) {m.KINESIS_CHECKPOINTS}_total)"
    since_read = f"time() - (({m.KINESIS_LAST_READ} > on ({target}) {consuming}) or on ({target}) {consuming})"
    failing_for = settings.KINESIS_FAILING_FOR_SECONDS
    return [
        Alert(
            name="TwilioInsightsKinesisLagging",
            expr=f"{behind} > {settings.KINESIS_LAG_SECONDS}",
            duration=settings.KINESIS_LAGGING_FOR,
            severity="warning",
            summary="twilio-insights-exporter is falling behind its Kinesis stream",
            description=(
                "{{ $labels.instance }} of job {{ $labels.job }} reads a shard {{ $value | humanizeDuration }} behind the tip of the "
                f"stream (the alert fires above {settings.KINESIS_LAG_SECONDS // 60} min for {settings.KINESIS_LAGGING_FOR}). "
                "Records older than the stream's retention (24 h by default) are deleted unread."
            ),
            probes=(behind,),
        ),
        Alert(
            name="TwilioInsightsKinesisFailing",
            expr=f"{since_read} > {failing_for}",
            duration="0m",
            severity="warning",
            summary="twilio-insights-exporter cannot read its Kinesis stream",
            description=(
                "{{ $labels.instance }} of job {{ $labels.job }} consumes a Kinesis stream but has read no shard successfully for "
                f"{{{{ $value | humanizeDuration }}}} (the alert fires after {failing_for // 60} min). Nothing is lost until the "
                "stream's retention (24 h by default) passes: reading resumes from the checkpoints."
            ),
            probes=(since_read,),
        ),
    ]


def build() -> dict[str, Any]:
    """The rules file as a YAML-ready dict."""
    return {
        "groups": [
            {"name": "twilio-insights-exporter.recording", "rules": recording_rules()},
            {"name": "twilio-insights-exporter.alerts", "rules": [alert.rule() for alert in alerts()]},
        ]
    }
