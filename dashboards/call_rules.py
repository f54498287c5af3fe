"""Prometheus rules of the Call Summaries: per-slice alerts and SLO burn rates of the call signals.

The participant rules (:mod:`dashboards.rules`) group by job and stream and name their groups by
dimension only. A call is measured at up to four edges (``carrier_edge``, ``sip_edge``,
``sdk_edge``, ``client_edge``), and a share that mixes the carrier's jitter with the Voice SDK's
means nothing, so every call rule groups by job, **edge** and the slice's dimension, and every
name carries the kind: record names start with ``job_edge_<dimension>:twilio_call_``, groups are
``twilio-insights-exporter.call.slice.<dimension>``, thresholds ``twilio_call:*:threshold``.

The same machinery otherwise (:mod:`dashboards.rules`): the raw histograms are read once per
signal over the shortest window, every longer window is an integral of those recorded rates,
an alert fires only above the alert share with at least the volume guard of observations, and
the burn-rate pairs are the SRE workbook's. The rules file is
``rules/twilio-insights-exporter-calls.rules.yml``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from exporter.subjects import call as call_subject
from exporter.subjects import thresholds

from . import settings
from .promql import QualityThreshold, burn_factor
from .rules import BASE_WINDOW, BURNS, PREFIX, Alert, SliceWording, alerts_of, dashboard_path, label, recording_rules_of, scalar, shown

UID = "twilio-call-quality"
FILE = "twilio-insights-exporter-calls.rules.yml"
THRESHOLDS_GROUP = f"{PREFIX}.call.thresholds"
SLICE_GROUP_PREFIX = f"{PREFIX}.call.slice."
ALERT_SHARE = f"{call_subject.PREFIX}:alert_share:threshold"
MIN_OBSERVATIONS = f"{call_subject.PREFIX}:alert_min_streams:threshold"
OBJECTIVE = f"{call_subject.PREFIX}:slo_objective:ratio"

# The call signals: Twilio's thresholds where Voice Insights documents one (MOS, jitter, loss, as
# for participants), the Voice SDK's high-rtt warning for the round trip. Each is a bucket edge.
MOS = QualityThreshold(
    "mos", "low_mos", call_subject.CALL_MOS, thresholds.MOS_THRESHOLD, True, f"MOS ≤ {thresholds.MOS_THRESHOLD:g}", ('stat="avg"',)
)
JITTER = QualityThreshold(
    "jitter",
    "high_jitter",
    call_subject.CALL_JITTER,
    thresholds.JITTER_AVG_THRESHOLD_SECONDS,
    False,
    f"Average jitter ≥ {thresholds.JITTER_AVG_THRESHOLD_SECONDS * 1000:g} ms",
    ('stat="avg"',),
)
PACKET_LOSS = QualityThreshold(
    "packet_loss",
    "high_packet_loss",
    call_subject.CALL_PACKET_LOSS,
    thresholds.PACKET_LOSS_THRESHOLD_RATIO,
    False,
    f"Packet loss ≥ {thresholds.PACKET_LOSS_THRESHOLD_RATIO * 100:g} %",
)
RTT = QualityThreshold(
    "rtt",
    "high_rtt",
    call_subject.CALL_RTT,
    thresholds.RTT_THRESHOLD_SECONDS,
    False,
    f"Average round trip ≥ {thresholds.RTT_THRESHOLD_SECONDS * 1000:g} ms",
    ('stat="avg"',),
)
SIGNALS = (MOS, JITTER, PACKET_LOSS, RTT)

NAMES = {"mos": "LowMOS", "jitter": "HighJitter", "packet_loss": "HighPacketLoss", "rtt": "HighRTT"}
WHAT = {
    "mos": f"MOS at or below {thresholds.MOS_THRESHOLD:g}",
    "jitter": f"average jitter above {thresholds.JITTER_AVG_THRESHOLD_SECONDS * 1000:g} ms",
    "packet_loss": f"packet loss above {thresholds.PACKET_LOSS_THRESHOLD_RATIO * 100:g} %",
    "rtt": f"average round-trip time above {thresholds.RTT_THRESHOLD_SECONDS * 1000:g} ms",
}
BUDGET_NAME = {"mos": "low-MOS", "jitter": "high-jitter", "packet_loss": "packet-loss", "rtt": "high-RTT"}
GROUP_BY_EDGE = ("job", "edge")


@dataclass(frozen=True, slots=True)
class CallSlice:
    """The recording rules' names of one call signal per edge and value of one dimension."""

    dimension: str
    threshold: QualityThreshold

    @property
    def level(self) -> str:
        return f"job_edge_{self.dimension}"

    @property
    def group(self) -> tuple[str, ...]:
        return (*GROUP_BY_EDGE, self.dimension)

    def bad_rate(self) -> str:
        return f"{self.level}:{call_subject.PREFIX}_{self.threshold.tag}:rate{BASE_WINDOW}"

    def total_rate(self) -> str:
        return f"{self.level}:{self.threshold.count_name}:rate{BASE_WINDOW}"

    def ratio(self, window: str) -> str:
        return f"{self.level}:{call_subject.PREFIX}_{self.threshold.tag}:ratio_rate{window}"

    def count(self, window: str) -> str:
        return f"{self.level}:{self.threshold.count_name}:increase{window}"

    def burn(self, window: str) -> str:
        return f"{self.ratio(window)} / (1 - {scalar(OBJECTIVE, self.threshold)})"


def threshold_rules() -> list[dict[str, Any]]:
    rules: list[dict[str, Any]] = [
        {"record": ALERT_SHARE, "expr": f"vector({settings.QUALITY_ALERT_SHARE:g})"},
        {"record": MIN_OBSERVATIONS, "expr": f"vector({settings.QUALITY_MIN_STREAMS:g})"},
    ]
    for threshold in SIGNALS:
        rules.append({"record": OBJECTIVE, "expr": f"vector({settings.CALL_SLO_OBJECTIVES[threshold.tag]:g})", "labels": {"signal": threshold.tag}})
    return rules


def slice_recording_rules(dimension: str) -> list[dict[str, str]]:
    return recording_rules_of(CallSlice(dimension, threshold) for threshold in SIGNALS)


GUARD_TEXT = f"the alert fires above {shown(ALERT_SHARE, percent=True)} with at least {shown(MIN_OBSERVATIONS, percent=False)} streams"


WORDING = SliceWording(
    name_prefix="TwilioCall",
    names=NAMES,
    budget_names=BUDGET_NAME,
    what=lambda threshold: WHAT[threshold.key],
    what_note="",
    many="calls",
    streams="call media streams",
    budget_of="calls' ",
    burn_note="",
    alert_share=ALERT_SHARE,
    min_volume=MIN_OBSERVATIONS,
    objective=OBJECTIVE,
    guard_text=GUARD_TEXT,
)


def slice_alerts(dimension: str) -> list[Alert]:
    where = f"{dimension} {{{{ $labels.{dimension} }}}} at the {{{{ $labels.edge }}}}"
    link = dashboard_path(UID, job=label("job"), edge=label("edge"), **{dimension: label(dimension)})
    slices = [CallSlice(dimension, threshold) for threshold in SIGNALS]
    return alerts_of(slices, WORDING, dimension=dimension, where=where, link=link)


def alerts() -> list[Alert]:
    """Every call alerting rule, in rule order."""
    return [alert for dimension in settings.CALL_SLICE_DIMENSIONS for alert in slice_alerts(dimension)]


def alert_names() -> list[str]:
    """Each call alert name once (a slice alert has one rule per dimension)."""
    return list(dict.fromkeys(alert.name for alert in alerts()))


def alert_groups() -> dict[str, list[Alert]]:
    """The alerts of each call rule group, by group name (as :func:`dashboards.rules.alert_groups`)."""
    return {f"{SLICE_GROUP_PREFIX}{dimension}": slice_alerts(dimension) for dimension in settings.CALL_SLICE_DIMENSIONS}


def build() -> dict[str, Any]:
    """The call rules file as a YAML-ready dict: its thresholds, then one group per dimension."""
    groups: list[dict[str, Any]] = [{"name": THRESHOLDS_GROUP, "rules": threshold_rules()}]
    for dimension in settings.CALL_SLICE_DIMENSIONS:
        rules = slice_recording_rules(dimension) + [alert.rule() for alert in slice_alerts(dimension)]
        groups.append({"name": f"{SLICE_GROUP_PREFIX}{dimension}", "interval": settings.SLICE_EVALUATION_INTERVAL, "rules": rules})
    return {"groups": groups}


def runbook_pages() -> dict[str, str]:
    """``{file name: Markdown}``: one runbook page per call alert (docs/runbooks/)."""
    pages = {}
    for threshold in SIGNALS:
        name, what = NAMES[threshold.key], WHAT[threshold.key]
        dims = ", ".join(f"`{d}`" for d in settings.CALL_SLICE_DIMENSIONS)
        diagnose = (
            f"**Diagnose.** Open the calls dashboard filtered to the job, edge and slice (the alert's `dashboard_url` when Grafana's URL is set). "
            f"The `edge` label says where Twilio measured: `carrier_edge` (between Twilio and the carrier), `sip_edge` "
            f"(between Twilio and a SIP endpoint or trunk), `sdk_edge` (the caller's Voice SDK app: browser or mobile "
            f"network), `client_edge` (between Twilio and the SDK app). A carrier or country alone points at the far "
            f"end's network; an `edge_location` alone at the Twilio edge the media used. Check whether the other "
            f"dimensions ({dims}) of the same edge fire too, and Twilio's status page for the edge or carrier."
        )
        pages[f"TwilioCall{name}InSlice.md"] = (
            f"<!-- Generated by `python -m dashboards.generate` from dashboards/call_rules.py. Do not edit. -->\n"
            f"# TwilioCall{name}InSlice\n\n"
            f"**Meaning.** More than the alert share of the call media streams of one slice (a value of one of {dims}) "
            f"at one edge had {what} over the last {settings.QUALITY_WINDOW}, with at least the volume guard of streams. "
            f"The account-wide share may be fine: the slice is where it is worse.\n\n{diagnose}\n\n"
            f"**Tune.** The share and the guard are the series `{ALERT_SHARE}` and `{MIN_OBSERVATIONS}` of the group "
            f"`{THRESHOLDS_GROUP}`.\n"
        )
        for speed, (windows, duration, severity) in BURNS.items():
            pairs = ", or ".join(f"over both {w.long} and {w.short} at more than {burn_factor(w):g} times the sustainable rate" for w in windows)
            pages[f"TwilioCall{name}{speed}Burn.md"] = (
                f"<!-- Generated by `python -m dashboards.generate` from dashboards/call_rules.py. Do not edit. -->\n"
                f"# TwilioCall{name}{speed}Burn ({severity})\n\n"
                f"**Meaning.** The call media streams of one slice at one edge spend the error budget of the objective "
                f'"{settings.CALL_SLO_OBJECTIVES[threshold.tag]:.0%} of streams without {what} over {settings.SLO_PERIOD}" '
                f"{pairs} (for {duration}).\n\n{diagnose}\n\n"
                f'**Tune.** The objective is the series `{OBJECTIVE}{{signal="{threshold.tag}"}}` of the group `{THRESHOLDS_GROUP}`.\n'
            )
    return pages
