"""Prometheus recording and alerting rules, from the same thresholds as the dashboards.

Quality alerts compare recorded shares of media streams past Twilio's thresholds with an alert
share, and only when a volume guard of streams was observed, so a single bad call never pages:

- account-wide, per scrape job and stream direction (``twilio-insights-exporter.recording`` and
  ``.quality``; the exporter's own health alerts are the group ``.health``);
- per slice: per value of each of :data:`settings.SLICE_DIMENSIONS`, one rule group per dimension
  (``twilio-insights-exporter.slice.<dimension>``), with a threshold alert and the two SLO
  burn-rate alerts of each signal.

Every threshold an alert compares with is a series of its own, recorded in the group
``twilio-insights-exporter.thresholds`` from :mod:`dashboards.settings`: the Helm chart replaces
those few expressions from its values, and a user of the plain rules file edits them there.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from exporter import metrics as m
from exporter import subjects
from exporter.metrics import Outcome
from exporter.subjects import participant as participant_subject
from exporter.subjects import thresholds

from . import quality, settings
from .promql import ALERT_SHARE, MIN_STREAMS, OBJECTIVE, QUALITY_THRESHOLDS, QualityThreshold, burn_factor, seconds

PREFIX = "twilio-insights-exporter"
THRESHOLDS_GROUP = f"{PREFIX}.thresholds"
SLICE_GROUP_PREFIX = f"{PREFIX}.slice."
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
BUDGET_NAME = {"mos": "low-MOS", "jitter": "high-jitter", "latency": "high-latency", "packet_loss": "packet-loss"}
EDGE_TEXT = {
    "mos": f"{thresholds.MOS_THRESHOLD:g}",
    "jitter": f"{thresholds.JITTER_AVG_THRESHOLD_SECONDS * 1000:g} ms",
    "latency": f"{thresholds.LATENCY_AVG_THRESHOLD_SECONDS * 1000:g} ms",
    "packet_loss": f"{thresholds.PACKET_LOSS_THRESHOLD_RATIO * 100:g} %",
}


@dataclass(frozen=True, slots=True)
class Links:
    """The bases of an alert's ``runbook_url`` and ``dashboard_url``. An empty base leaves its
    annotation out: the project serves neither its runbooks nor a Grafana, and a link to an address
    that does not exist is worse than none (docs/alerts.md, "Links")."""

    runbook_base: str = settings.RUNBOOK_BASE_URL
    grafana: str = settings.GRAFANA_URL


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
    # Labels besides severity, e.g. the dimension of a slice alert.
    labels: dict[str, str] = field(default_factory=dict)
    # The dashboard's path and query in Grafana for the alert, filtered to what it is about
    # (``/d/<uid>?var-job=...``); its dashboard_url is Grafana's base URL followed by it.
    dashboard: str = ""

    def rule(self, links: Links | None = None) -> dict[str, Any]:
        links = links or Links()
        rule: dict[str, Any] = {"alert": self.name, "expr": self.expr}
        if self.duration != "0m":
            rule["for"] = self.duration
        rule["labels"] = {"severity": self.severity, **self.labels}
        rule["annotations"] = {"summary": self.summary, "description": self.description}
        if links.runbook_base:
            rule["annotations"]["runbook_url"] = f"{links.runbook_base.rstrip('/')}/{self.name}.md"
        if links.grafana and self.dashboard:
            rule["annotations"]["dashboard_url"] = f"{links.grafana.rstrip('/')}{self.dashboard}"
        return rule


def scalar(name: str, threshold: QualityThreshold | None = None) -> str:
    """A threshold series as a scalar (NaN when missing, so a comparison with it never fires)."""
    return f'scalar({name}{{signal="{threshold.tag}"}})' if threshold else f"scalar({name})"


def shown(name: str, threshold: QualityThreshold | None = None, *, percent: bool, duration: bool = False) -> str:
    """An alert template that prints a threshold series' current value."""
    series = f'{name}{{signal="{threshold.tag}"}}' if threshold else name
    humanize = "humanizeDuration" if duration else "humanizePercentage" if percent else "humanize"
    return f"{{{{ with query `{series}` }}}}{{{{ . | first | value | {humanize} }}}}{{{{ end }}}}"


def dashboard_path(uid: str, **variables: str) -> str:
    """A dashboard's path in Grafana, its variables set to alert labels (``$labels.x``) or literals.

    >>> dashboard_path("twilio-conference-quality", job="{{ $labels.job | urlquery }}")
    '/d/twilio-conference-quality?var-job={{ $labels.job | urlquery }}'
    """
    query = "&".join(f"var-{name}={value}" for name, value in variables.items())
    return f"/d/{uid}?{query}"


def compact(total: int) -> str:
    """Seconds as a Prometheus duration of the largest units.

    >>> compact(3600), compact(23400), compact(261000)
    ('1h', '6h30m', '3d30m')
    """
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        count, total = divmod(total, size)
        if count:
            parts.append(f"{count}{unit}")
    return "".join(parts) or "0s"


def data_age(windows: str, longest: str) -> str:
    """The line every quality alert's description ends with: how old the calls it describes are.

    ``windows`` says what the alert reads ("the last 30m"), ``longest`` is the longest of them. Its
    ``for`` is named, not given: the Helm chart's values may change it.

    >>> data_age("the last 30m", "30m").split(": ")[-1]
    'each evaluation speaks of calls that ended up to 1h earlier, and it fires once that held its `for`.'
    """
    total = compact(seconds(settings.SUMMARY_DELAY) + seconds(longest))
    return (
        f"Data age: Twilio sends a summary up to {settings.SUMMARY_DELAY} after its call ends and this alert reads {windows}: "
        f"each evaluation speaks of calls that ended up to {total} earlier, and it fires once that held its `for`."
    )


def label(name: str) -> str:
    return f"{{{{ $labels.{name} | urlquery }}}}"


def health_threshold(key: str) -> str:
    """The series of one exporter-health threshold; the Helm chart sets it from
    ``prometheusRule.health.<key in camelCase>``.

    >>> health_threshold("no_summaries_after_seconds")
    'twilio_insights_exporter:no_summaries_after_seconds:threshold'
    """
    assert key in HEALTH_THRESHOLDS, key
    return f"{m.EXPORTER}:{key}:threshold"


# Each summary subject (exporter/subjects/__init__.py) and the family that counts its recorded summaries.
SUBJECT_SUMMARIES = subjects.SUMMARIES


# The numbers the exporter-health alerts compare with, each a series of the thresholds group (as
# the quality thresholds are), so that the chart's values or one edit of that group change them.
HEALTH_THRESHOLDS: dict[str, float] = {
    "no_summaries_after_seconds": settings.NO_SUMMARIES_FOR_SECONDS,
    "no_summaries_week_ago_min": settings.NO_SUMMARIES_WEEK_AGO_MIN,
    "signature_failure_share": settings.SIGNATURE_FAILURE_SHARE,
    "signature_failure_min": settings.SIGNATURE_FAILURE_MIN,
    "invalid_event_share": settings.INVALID_EVENT_SHARE,
    "invalid_event_min": settings.INVALID_EVENT_MIN,
    "pull_failing_after_seconds": settings.PULL_FAILING_FOR_SECONDS,
    "pull_expired_min": settings.PULL_EXPIRED_MIN,
    "kinesis_lag_seconds": settings.KINESIS_LAG_SECONDS,
    "kinesis_failing_after_seconds": settings.KINESIS_FAILING_FOR_SECONDS,
}


def threshold_rules() -> list[dict[str, Any]]:
    """The thresholds every quality and exporter-health alert compares with, each a constant series."""
    rules: list[dict[str, Any]] = [
        {"record": ALERT_SHARE, "expr": f"vector({settings.QUALITY_ALERT_SHARE:g})"},
        {"record": MIN_STREAMS, "expr": f"vector({settings.QUALITY_MIN_STREAMS:g})"},
    ]
    for threshold in QUALITY_THRESHOLDS:
        rules.append({"record": OBJECTIVE, "expr": f"vector({settings.SLO_OBJECTIVES[threshold.tag]:g})", "labels": {"signal": threshold.tag}})
    rules.extend({"record": health_threshold(key), "expr": f"vector({value:g})"} for key, value in HEALTH_THRESHOLDS.items())
    return rules


def share_record(threshold: QualityThreshold) -> str:
    return f"job_stream:{participant_subject.PREFIX}_{threshold.tag}:ratio_rate{settings.QUALITY_WINDOW}"


def count_record(threshold: QualityThreshold) -> str:
    stat = "_avg" if threshold.matchers else ""
    return f"job_stream:{threshold.metric}{stat}_count:increase{settings.QUALITY_WINDOW}"


def recording_rules() -> list[dict[str, str]]:
    rules = []
    for threshold in QUALITY_THRESHOLDS:
        rules.append({"record": share_record(threshold), "expr": threshold.share(settings.QUALITY_WINDOW, group=GROUP)})
        rules.append({"record": count_record(threshold), "expr": threshold.count(settings.QUALITY_WINDOW, group=GROUP)})
    return rules


def what(threshold: QualityThreshold) -> str:
    return f"{WHAT[threshold.key]} {EDGE_TEXT[threshold.key]}"


GUARD_TEXT = f"the alert fires above {shown(ALERT_SHARE, percent=True)} with at least {shown(MIN_STREAMS, percent=False)} streams"


def quality_alerts() -> list[Alert]:
    alerts = []
    for threshold in QUALITY_THRESHOLDS:
        share, count = share_record(threshold), count_record(threshold)
        alerts.append(
            Alert(
                name=f"TwilioConference{NAMES[threshold.key]}",
                expr=f"{share} > {scalar(ALERT_SHARE)} and on (job, stream) {count} >= {scalar(MIN_STREAMS)}",
                duration=settings.QUALITY_ALERT_FOR,
                severity="warning",
                summary=f"Many conference participants with {what(threshold)}",
                description=(
                    f"{{{{ $value | humanizePercentage }}}} of {{{{ $labels.stream }}}} media streams reported by {{{{ $labels.job }}}} "
                    f"had {what(threshold)} (Twilio's threshold) over the last {settings.QUALITY_WINDOW}; {GUARD_TEXT}.\n"
                    + data_age(f"the last {settings.QUALITY_WINDOW}", settings.QUALITY_WINDOW)
                ),
                probes=(share, count, scalar(ALERT_SHARE), scalar(MIN_STREAMS)),
                dashboard=dashboard_path(quality.UID, job=label("job")),
            )
        )
    return alerts


# --- per slice ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Slice:
    """The recording rules' names of one quality signal per value of one dimension."""

    dimension: str
    threshold: QualityThreshold

    @property
    def level(self) -> str:
        return f"job_{self.dimension}"

    @property
    def group(self) -> tuple[str, ...]:
        return ("job", self.dimension)

    def bad_rate(self) -> str:
        return f"{self.level}:{participant_subject.PREFIX}_{self.threshold.tag}:rate{BASE_WINDOW}"

    def total_rate(self) -> str:
        return f"{self.level}:{self.threshold.count_name}:rate{BASE_WINDOW}"

    def ratio(self, window: str) -> str:
        return f"{self.level}:{participant_subject.PREFIX}_{self.threshold.tag}:ratio_rate{window}"

    def count(self, window: str) -> str:
        return f"{self.level}:{self.threshold.count_name}:increase{window}"

    def burn(self, window: str) -> str:
        """The rate at which ``window`` spends the error budget (1: exactly over the SLO period)."""
        return f"{self.ratio(window)} / (1 - {scalar(OBJECTIVE, self.threshold)})"


class SliceNames(Protocol):
    """What the shared builders (:func:`recording_rules_of`, :func:`alerts_of`) need of one slice of
    one kind: :class:`Slice` here, ``CallSlice`` (dashboards/call_rules.py) for the calls."""

    @property
    def threshold(self) -> QualityThreshold: ...

    @property
    def group(self) -> tuple[str, ...]: ...

    def bad_rate(self) -> str: ...

    def total_rate(self) -> str: ...

    def ratio(self, window: str) -> str: ...

    def count(self, window: str) -> str: ...

    def burn(self, window: str) -> str: ...


BURNS = {"Fast": (settings.FAST_BURN, settings.FAST_BURN_FOR, "critical"), "Slow": (settings.SLOW_BURN, settings.SLOW_BURN_FOR, "warning")}
ALL_BURN_WINDOWS = [w for windows, _, _ in BURNS.values() for w in windows]
# Every window a slice alert reads: the slice's share over each, and its volume over the long ones.
RATIO_WINDOWS = sorted({settings.QUALITY_WINDOW, *(w.long for w in ALL_BURN_WINDOWS), *(w.short for w in ALL_BURN_WINDOWS)}, key=seconds)
COUNT_WINDOWS = sorted({settings.QUALITY_WINDOW, *(w.long for w in ALL_BURN_WINDOWS)}, key=seconds)
# The raw histograms are read once, over the shortest window; every longer window is computed from
# those recorded per-slice rates (sum_over_time of a few series instead of rate() over days of
# every raw series): the share is the ratio of two integrals, weighted by traffic like a rate()
# over the whole window, and cheap (docs/alerts.md).
BASE_WINDOW = RATIO_WINDOWS[0]


def slice_series(values: dict[str, int], jobs: int = 1) -> int:
    """The series the slice groups record, for ``values[d]`` distinct values of each dimension d
    (alerts add none until they fire). docs/alerts.md tabulates it; the e2e test checks it.

    >>> slice_series({"participant_region": 1, "conference_region": 1, "call_type": 1, "country_code": 1, "participant_label": 1, "task_queue": 1})
    336
    """
    per_value = len(QUALITY_THRESHOLDS) * (2 + len(RATIO_WINDOWS) + len(COUNT_WINDOWS))
    return jobs * per_value * sum(values[dimension] for dimension in settings.SLICE_DIMENSIONS)


def recording_rules_of(slices: Iterable[SliceNames]) -> list[dict[str, str]]:
    """The recording rules of some slices (each a signal and a dimension): the base rates read from the
    raw histograms, then every ratio and count window as an integral of them. Shared by every kind."""
    rules = []
    for one in slices:
        threshold = one.threshold
        rules.append({"record": one.bad_rate(), "expr": threshold.bad_rate(BASE_WINDOW, group=one.group)})
        rules.append({"record": one.total_rate(), "expr": threshold.total_rate(BASE_WINDOW, group=one.group)})
        for window in RATIO_WINDOWS:
            if window == BASE_WINDOW:
                expr = f"{one.bad_rate()} / {one.total_rate()}"
            else:
                expr = f"sum_over_time({one.bad_rate()}[{window}]) / sum_over_time({one.total_rate()}[{window}])"
            rules.append({"record": one.ratio(window), "expr": expr})
        for window in COUNT_WINDOWS:
            expr = f"sum_over_time({one.total_rate()}[{window}]) * {seconds(settings.SLICE_EVALUATION_INTERVAL)}"
            rules.append({"record": one.count(window), "expr": expr})
    return rules


def slice_recording_rules(dimension: str) -> list[dict[str, str]]:
    return recording_rules_of(Slice(dimension, threshold) for threshold in QUALITY_THRESHOLDS)


@dataclass(frozen=True, slots=True)
class SliceWording:
    """What one kind's slice alerts are named and say, and which threshold series they read; the rest
    of their construction (the share-and-guard alert, the burn-rate pairs) is :func:`alerts_of`'s."""

    name_prefix: str  # "TwilioConference"
    names: Mapping[str, str]  # threshold key -> "LowMOS"
    budget_names: Mapping[str, str]  # threshold key -> "low-MOS"
    what: Callable[[QualityThreshold], str]  # "MOS at or below 3.5"
    what_note: str  # said after what in the share alert's description
    many: str  # the summary's subject: "Many {many} with ..."
    streams: str  # "media streams"
    budget_of: str  # before the budget's name: "calls' "
    burn_note: str  # said after "as fast as the objective allows"
    alert_share: str
    min_volume: str
    objective: str
    guard_text: str


def alerts_of(slices: Iterable[SliceNames], wording: SliceWording, *, dimension: str, where: str, link: str) -> list[Alert]:
    """The alerts of some slices of one dimension: per signal, the share over the alert share (with the
    volume guard), then one alert per burn speed whose pairs of windows both burn too fast."""
    alerts = []
    w = wording
    for one in slices:
        threshold = one.threshold
        what = w.what(threshold)
        share, count = one.ratio(settings.QUALITY_WINDOW), one.count(settings.QUALITY_WINDOW)
        alerts.append(
            Alert(
                name=f"{w.name_prefix}{w.names[threshold.key]}InSlice",
                expr=f"{share} > {scalar(w.alert_share)} and {count} >= {scalar(w.min_volume)}",
                duration=settings.QUALITY_ALERT_FOR,
                severity="warning",
                summary=f"Many {w.many} with {what} in {where}",
                description=(
                    f"{{{{ $value | humanizePercentage }}}} of the {w.streams} of {where} reported by {{{{ $labels.job }}}} had "
                    f"{what}{w.what_note} over the last {settings.QUALITY_WINDOW}; {w.guard_text}.\n"
                    + data_age(f"the last {settings.QUALITY_WINDOW}", settings.QUALITY_WINDOW)
                ),
                probes=(share, count),
                labels={"dimension": dimension},
                dashboard=link,
            )
        )
        objective = shown(w.objective, threshold, percent=True)
        for speed, (windows, duration, severity) in BURNS.items():
            conditions = [
                f"({one.burn(b.long)} > {burn_factor(b):g} and {one.burn(b.short)} > {burn_factor(b):g} and {one.count(b.long)} >= {scalar(w.min_volume)})"
                for b in windows
            ]
            spelled = ", or ".join(f"above {burn_factor(b):g} over both {b.long} and {b.short}" for b in windows)
            first, *others = windows
            read = f"the last {first.long} and {first.short}" + "".join(f" (or {b.long} and {b.short})" for b in others)
            longest = max((b.long for b in windows), key=seconds)
            alerts.append(
                Alert(
                    name=f"{w.name_prefix}{w.names[threshold.key]}{speed}Burn",
                    expr=" or ".join(conditions),
                    duration=duration,
                    severity=severity,
                    summary=f"{speed} burn of the {w.budget_of}{w.budget_names[threshold.key]} error budget in {where}",
                    description=(
                        f"The {w.streams} of {where} reported by {{{{ $labels.job }}}} burn the error budget of the objective "
                        f'"{objective} of streams without {what} over {settings.SLO_PERIOD}" {{{{ $value | humanize }}}} times '
                        f"as fast as the objective allows{w.burn_note}: the alert fires at a burn rate "
                        f"{spelled}, with at least {shown(w.min_volume, percent=False)} streams in the long window.\n" + data_age(read, longest)
                    ),
                    probes=tuple(one.burn(b.long) for b in windows) + tuple(one.count(b.long) for b in windows),
                    labels={"dimension": dimension},
                    dashboard=link,
                )
            )
    return alerts


PARTICIPANT_WORDING = SliceWording(
    name_prefix="TwilioConference",
    names=NAMES,
    budget_names=BUDGET_NAME,
    what=what,
    what_note=" (Twilio's threshold)",
    many="conference participants",
    streams="media streams",
    budget_of="",
    burn_note=", over the long window of the pair that fired",
    alert_share=ALERT_SHARE,
    min_volume=MIN_STREAMS,
    objective=OBJECTIVE,
    guard_text=GUARD_TEXT,
)


def slice_alerts(dimension: str) -> list[Alert]:
    where = f"{dimension} {{{{ $labels.{dimension} }}}}"
    link = dashboard_path(quality.UID, job=label("job"), **{dimension: label(dimension)}, breakdown=dimension)
    slices = [Slice(dimension, threshold) for threshold in QUALITY_THRESHOLDS]
    return alerts_of(slices, PARTICIPANT_WORDING, dimension=dimension, where=where, link=link)


def exporter_alerts() -> list[Alert]:
    signature = f"{m.SIGNATURE_FAILURES}_total"
    requests = f"{m.WEBHOOK_REQUESTS}_total"
    invalid = f'{m.EVENTS}_total{{outcome="{Outcome.INVALID}"}}'
    events = f"{m.EVENTS}_total"
    w = settings.WEBHOOK_WINDOW
    target = ", ".join(TARGET)
    signature_share = f"sum by ({target}) (rate({signature}[{w}])) / sum by ({target}) (rate({requests}[{w}]))"
    signature_count = f"sum by ({target}) (increase({signature}[{w}]))"
    invalid_share = f"sum by ({target}) (rate({invalid}[{w}])) / sum by ({target}) (rate({events}[{w}]))"
    invalid_count = f"sum by ({target}) (increase({invalid}[{w}]))"
    overflow = f"sum by ({target}, subject, label) (increase({m.LABEL_OVERFLOW}_total[{settings.LABEL_OVERFLOW_WINDOW}]))"
    after = health_threshold("no_summaries_after_seconds")
    week_ago_min = health_threshold("no_summaries_week_ago_min")
    # Per subject (participant, call, conference), and only for the subjects the job recorded in
    # the last week: a user who never subscribed to call summaries has no call series, so nothing
    # fires for calls. The unlabelled gauge of an older version (subject="") is not one of them.
    last = f'{m.LAST_SUMMARY}{{subject!=""}}'
    seen = f"max_over_time({last}[{settings.NO_SUMMARIES_SEEN_WINDOW}])"
    # Per live target (its build info is scraped), the later of its process start and its last
    # summary of each subject its job recorded in that window: a restart or a rollout drops the
    # gauge's children, and "none since the exporter started" is what matters then. One term a
    # subject: PromQL has no product of the job's targets and the job's subjects otherwise.
    started = f"max by ({target}) (process_start_time_seconds and on ({target}) {m.BUILD}_info)"
    started_per_subject = "({})".format(
        " or ".join(
            f'label_replace({started}, "subject", "{subject}", "", "") and on (job) '
            f'max_over_time({m.LAST_SUMMARY}{{subject="{subject}"}}[{settings.NO_SUMMARIES_SEEN_WINDOW}])'
            for subject in SUBJECT_SUMMARIES
        )
    )
    latest = f"max by ({target}, subject) ({last})"
    since_last = f"time() - (({latest} > on ({target}, subject) {started_per_subject}) or {started_per_subject})"
    # The same time a week ago, per job and subject (a rollout renames every instance; the job
    # stays): fewer summaries of the subject than the minimum then means a quiet hour of the week.
    # `(A) < s` keeps only the quiet subjects (comparisons bind before unless).
    w1 = settings.NO_SUMMARIES_WEEK_AGO_WINDOW
    week_ago = " or ".join(
        f'label_replace(sum by (job) (increase({family}_total[{w1}] offset 1w)), "subject", "{subject}", "", "")'
        for subject, family in SUBJECT_SUMMARIES.items()
    )
    # A target whose job recorded nothing of any subject in the window (a new install, a sink
    # broken since the start): the silence since its start decides, compared with the week before
    # over every recorded event.
    recorded = f'{m.EVENTS}_total{{outcome="{Outcome.RECORDED}"}}'
    week_ago_any = f"sum by (job) (increase({recorded}[{w1}] offset 1w))"
    since_start = f"time() - {started}"
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
            expr=(
                f"({since_last} > {scalar(after)} unless on (job, subject) ({week_ago}) < {scalar(week_ago_min)}) "
                f"or ({since_start} > {scalar(after)} unless on (job) {seen} unless on (job) {week_ago_any} < {scalar(week_ago_min)})"
            ),
            duration="0m",
            severity="warning",
            summary="No Twilio {{ with $labels.subject }}{{ . }}{{ else }}Voice Insights{{ end }} summary received",
            description=(
                "{{ $labels.instance }} of job {{ $labels.job }} is up but has recorded no "
                "{{ with $labels.subject }}{{ . }} summary (a subject the job recorded in the last "
                f"{settings.NO_SUMMARIES_SEEN_WINDOW}){{{{ else }}}}summary of any subject{{{{ end }}}} for "
                f"{{{{ $value | humanizeDuration }}}} (the alert fires after {shown(after, percent=False, duration=True)}, unless the job "
                f"recorded fewer than {shown(week_ago_min, percent=False)} over the {w1} before this "
                "time a week ago). Check the Event Streams sink, its subscriptions and the public webhook URL."
            ),
            probes=(since_last, since_start),
        ),
        Alert(
            name="TwilioInsightsSignatureFailures",
            expr=(
                f"{signature_share} > {scalar(health_threshold('signature_failure_share'))} "
                f"and on ({target}) {signature_count} >= {scalar(health_threshold('signature_failure_min'))}"
            ),
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
            name="TwilioInsightsSignatureVerificationDisabled",
            expr=f"{m.SIGNATURE_VERIFICATION_ENABLED} == 0",
            duration="0m",
            severity="critical",
            summary="twilio-insights-exporter accepts unsigned webhook deliveries",
            description=(
                "{{ $labels.instance }} of job {{ $labels.job }} runs with --webhook.insecure-skip-signature-verification: "
                "anyone who can reach its webhook can post summaries that are counted. For local trials only."
            ),
            probes=(f"{m.SIGNATURE_VERIFICATION_ENABLED}",),
        ),
        Alert(
            name="TwilioInsightsInvalidEvents",
            expr=(
                f"{invalid_share} > {scalar(health_threshold('invalid_event_share'))} "
                f"and on ({target}) {invalid_count} >= {scalar(health_threshold('invalid_event_min'))}"
            ),
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
                "{{ $labels.instance }} folded {{ $value | humanize }} new values of the label {{ $labels.label }} of the "
                "{{ $labels.subject }} families into "
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
    failing_for = health_threshold("pull_failing_after_seconds")
    expired_min = health_threshold("pull_expired_min")
    expired = f"sum by ({target}) (increase({m.PULL_EXPIRED}_total[{settings.PULL_EXPIRED_WINDOW}]))"
    return [
        Alert(
            name="TwilioInsightsPullFailing",
            expr=f"{since_success} > {scalar(failing_for)}",
            duration="0m",
            severity="warning",
            summary="twilio-insights-exporter cannot poll the Voice Insights API",
            description=(
                "{{ $labels.instance }} of job {{ $labels.job }} polls the Voice Insights REST API but has completed no "
                f"successful poll for {{{{ $value | humanizeDuration }}}} (the alert fires after {shown(failing_for, percent=False, duration=True)}). "
                "Nothing is being pulled; the API keeps summaries for 30 days, so a fix within that time loses nothing."
            ),
            probes=(since_success,),
        ),
        Alert(
            name="TwilioInsightsPullSummariesExpired",
            expr=f"{expired} >= {scalar(expired_min)}",
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


def main_alerts() -> list[Alert]:
    """The alerts of the main rules file: exporter health first (new ones join here), then account-wide quality."""
    return health_alerts() + quality_alerts()


def health_alerts() -> list[Alert]:
    """The exporter's own health, whatever it receives: the webhook, pull mode, Kinesis mode."""
    return exporter_alerts() + pull_alerts() + kinesis_alerts()


def kinesis_alerts() -> list[Alert]:
    """Kinesis consumer mode's alerts; only targets that consume (they expose the checkpoints counter) can fire them."""
    target = ", ".join(TARGET)
    behind = f"max by ({target}) ({m.KINESIS_BEHIND})"
    # As for pull mode: the later of the last successful read and the process start.
    consuming = f"(process_start_time_seconds and on ({target}) {m.KINESIS_CHECKPOINTS}_total)"
    since_read = f"time() - (({m.KINESIS_LAST_READ} > on ({target}) {consuming}) or on ({target}) {consuming})"
    failing_for = health_threshold("kinesis_failing_after_seconds")
    lag = health_threshold("kinesis_lag_seconds")
    return [
        Alert(
            name="TwilioInsightsKinesisLagging",
            expr=f"{behind} > {scalar(lag)}",
            duration=settings.KINESIS_LAGGING_FOR,
            severity="warning",
            summary="twilio-insights-exporter is falling behind its Kinesis stream",
            description=(
                "{{ $labels.instance }} of job {{ $labels.job }} reads a shard {{ $value | humanizeDuration }} behind the tip of the "
                f"stream (the alert fires above {shown(lag, percent=False, duration=True)}). "
                "Records older than the stream's retention (24 h by default) are deleted unread."
            ),
            probes=(behind,),
        ),
        Alert(
            name="TwilioInsightsKinesisFailing",
            expr=f"{since_read} > {scalar(failing_for)}",
            duration="0m",
            severity="warning",
            summary="twilio-insights-exporter cannot read its Kinesis stream",
            description=(
                "{{ $labels.instance }} of job {{ $labels.job }} consumes a Kinesis stream but has read no shard successfully for "
                f"{{{{ $value | humanizeDuration }}}} (the alert fires after {shown(failing_for, percent=False, duration=True)}). Nothing is lost until the "
                "stream's retention (24 h by default) passes: reading resumes from the checkpoints."
            ),
            probes=(since_read,),
        ),
    ]


def alerts() -> list[Alert]:
    """Every alerting rule: those of the main rules file, then those per slice."""
    return main_alerts() + [alert for dimension in settings.SLICE_DIMENSIONS for alert in slice_alerts(dimension)]


def alert_names() -> list[str]:
    """Each alert name once, in rule order (a slice alert has one rule per dimension)."""
    return list(dict.fromkeys(alert.name for alert in alerts()))


HEALTH_GROUP = f"{PREFIX}.health"
QUALITY_GROUP = f"{PREFIX}.quality"


def alert_groups() -> dict[str, list[Alert]]:
    """The alerts of each rule group holding any, by group name, in file order (the main file, then
    the slices file); :mod:`dashboards.generate` lists each one's dashboard from here."""
    return {
        HEALTH_GROUP: health_alerts(),
        QUALITY_GROUP: quality_alerts(),
        **{f"{SLICE_GROUP_PREFIX}{dimension}": slice_alerts(dimension) for dimension in settings.SLICE_DIMENSIONS},
    }


def build() -> dict[str, Any]:
    """The main rules file as a YAML-ready dict: thresholds, account-wide recording rules, the
    exporter's health alerts and the account-wide quality alerts, each a group (so that each is one
    PrometheusRule of the Helm chart, named after it)."""
    return {
        "groups": [
            {"name": THRESHOLDS_GROUP, "rules": threshold_rules()},
            {"name": f"{PREFIX}.recording", "rules": recording_rules()},
            {"name": HEALTH_GROUP, "rules": [alert.rule() for alert in health_alerts()]},
            {"name": QUALITY_GROUP, "rules": [alert.rule() for alert in quality_alerts()]},
        ]
    }


def build_slices() -> dict[str, Any]:
    """The per-slice rules file as a YAML-ready dict: one group per slice dimension.

    Prometheus evaluates a group's rules in order, so a slice's alerts always read recording
    rules of the same evaluation, and dropping a dimension (the Helm chart's
    prometheusRule.sliceDimensions) is dropping a group. A file of its own, so that loading it is
    a choice, and so that the unit tests of the other alerts need not evaluate it.
    """
    groups = []
    for dimension in settings.SLICE_DIMENSIONS:
        rules = slice_recording_rules(dimension) + [alert.rule() for alert in slice_alerts(dimension)]
        groups.append({"name": f"{SLICE_GROUP_PREFIX}{dimension}", "interval": settings.SLICE_EVALUATION_INTERVAL, "rules": rules})
    return {"groups": groups}
