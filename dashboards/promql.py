"""PromQL shared by the dashboards and the rules: selectors and "share past threshold".

A Prometheus histogram bucket counts observations *less than or equal* to its edge, and each of
Twilio's thresholds is a bucket edge (:data:`exporter.metrics.REQUIRED_EDGES`), so the share of
streams past a threshold is an exact ratio of two counters, never an interpolated quantile.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from prometheus_client.utils import floatToGoString

from exporter.subjects import participant as participant_subject
from exporter.subjects import thresholds
from exporter.subjects.common import JOIN_LABELS
from exporter.subjects.participant import COMMON_LABELS

from . import settings

# The alert thresholds as series, recorded by the rules (one place to change them without
# regenerating; the quality dashboard's error-budget row reads the objectives from there too).
ALERT_SHARE = f"{participant_subject.PREFIX}:alert_share:threshold"
MIN_STREAMS = f"{participant_subject.PREFIX}:alert_min_streams:threshold"
OBJECTIVE = f"{participant_subject.PREFIX}:slo_objective:ratio"

# Template variables of the quality dashboard: scrape target first, then the TaskRouter join's
# queue and team, then each common label.
TARGET_VARIABLES = ("job", "instance")
# The quality dashboard is the one a Flex centre opens first, and its first question is which
# queue, which team: those two filter every query. The join's workflow is a breakdown only, for
# the ConfigMap's size: each filter is one more matcher in every query (about 5.8 KB each),
# and the ConfigMap must stay under 75 % of the 256 KiB last-applied annotation
# (tests/test_helm_chart.py measures it).
FLEX_FILTERS = ("task_queue", "team")
assert set(FLEX_FILTERS) <= set(JOIN_LABELS)
LABEL_VARIABLES = FLEX_FILTERS + COMMON_LABELS
BREAKDOWN_LABELS = COMMON_LABELS + JOIN_LABELS
# Said by every panel of the quality dashboards: what a point shows arrived up to this late.
PANEL_DATA_AGE = (
    f"Data age: Twilio sends a summary up to {settings.SUMMARY_DELAY} after its call ends, so the last {settings.SUMMARY_DELAY} fill in late."
)


def le(edge: float) -> str:
    """The ``le`` label value prometheus_client writes for a bucket edge.

    >>> le(0.15), le(3.5), le(0.0)
    ('0.15', '3.5', '0.0')
    """
    return str(floatToGoString(edge))  # prometheus_client leaves it unannotated


def selector(*matchers: str) -> str:
    """``{a, b}`` from matchers, or the empty string when there are none.

    >>> selector('job=~"$job"', 'le="3.5"')
    '{job=~"$job", le="3.5"}'
    """
    present = [matcher for matcher in matchers if matcher]
    return "{" + ", ".join(present) + "}" if present else ""


def variable_matchers(names: tuple[str, ...]) -> tuple[str, ...]:
    """``name=~"$name"`` for each dashboard variable (multi-value variables expand to a regex)."""
    return tuple(f'{name}=~"${name}"' for name in names)


def seconds(window: str) -> int:
    """A Prometheus duration of one unit in seconds.

    >>> seconds("5m"), seconds("6h"), seconds("3d")
    (300, 21600, 259200)
    """
    match = re.fullmatch(r"(\d+)([smhdw])", window)
    assert match, window
    return int(match.group(1)) * {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}[match.group(2)]


def burn_factor(windows: settings.BurnWindows) -> float:
    """The burn rate that spends ``budget_spent`` of the budget within the long window.

    >>> [round(burn_factor(w), 6) for w in settings.FAST_BURN + settings.SLOW_BURN]
    [14.4, 6.0, 3.0, 1.0]
    """
    return windows.budget_spent * seconds(settings.SLO_PERIOD) / seconds(windows.long)


def by(labels: tuple[str, ...]) -> str:
    """The ``by (...)`` clause of an aggregation, or nothing for a grand total."""
    return f" by ({', '.join(labels)}) " if labels else ""


@dataclass(frozen=True, slots=True)
class QualityThreshold:
    """One of Twilio's detected-issue thresholds, as a share of media streams past it."""

    key: str
    # Voice Insights' own tag for the issue; also names the recording rule of the share.
    tag: str
    metric: str
    edge: float
    # True when the bad side is at or below the edge (MOS); False when it is above (jitter, ...).
    bad_is_below: bool
    title: str
    # Extra matchers, e.g. stat="avg": Twilio's jitter and latency thresholds are on the average.
    matchers: tuple[str, ...] = field(default=())

    def share(self, window: str, matchers: tuple[str, ...] = (), group: tuple[str, ...] = ()) -> str:
        """Share of observations on the bad side of the edge over ``window``, per ``group``."""
        base = (*matchers, *self.matchers)
        edge = f'le="{le(self.edge)}"'
        bucket = f"sum{by(group)}(rate({self.metric}_bucket{selector(*base, edge)}[{window}]))"
        count = f"sum{by(group)}(rate({self.metric}_count{selector(*base)}[{window}]))"
        if self.bad_is_below:
            return f"{bucket} / {count}"
        return f"({count} - {bucket}) / {count}"

    def bad_rate(self, window: str, matchers: tuple[str, ...] = (), group: tuple[str, ...] = ()) -> str:
        """Per-second rate of observations on the bad side of the edge, per ``group``."""
        edge = f'le="{le(self.edge)}"'
        bucket = f"sum{by(group)}(rate({self.metric}_bucket{selector(*matchers, *self.matchers, edge)}[{window}]))"
        if self.bad_is_below:
            return bucket
        return f"{self.total_rate(window, matchers, group)} - {bucket}"

    def total_rate(self, window: str, matchers: tuple[str, ...] = (), group: tuple[str, ...] = ()) -> str:
        """Per-second rate of all observations the share is computed from, per ``group``."""
        return f"sum{by(group)}(rate({self.metric}_count{selector(*matchers, *self.matchers)}[{window}]))"

    @property
    def count_name(self) -> str:
        """The name of the series counting the observations, ``_avg`` when only the average counts."""
        return f"{self.metric}{'_avg' if self.matchers else ''}_count"

    def count(self, window: str, matchers: tuple[str, ...] = (), group: tuple[str, ...] = ()) -> str:
        """How many observations the share is computed from, over ``window``."""
        return f"sum{by(group)}(increase({self.metric}_count{selector(*matchers, *self.matchers)}[{window}]))"


MOS = QualityThreshold("mos", "low_mos", participant_subject.MOS, thresholds.MOS_THRESHOLD, True, f"MOS ≤ {thresholds.MOS_THRESHOLD:g}")
JITTER = QualityThreshold(
    "jitter",
    "high_jitter",
    participant_subject.JITTER,
    thresholds.JITTER_AVG_THRESHOLD_SECONDS,
    False,
    f"Average jitter ≥ {thresholds.JITTER_AVG_THRESHOLD_SECONDS * 1000:g} ms",
    ('stat="avg"',),
)
LATENCY = QualityThreshold(
    "latency",
    "high_latency",
    participant_subject.LATENCY,
    thresholds.LATENCY_AVG_THRESHOLD_SECONDS,
    False,
    f"Average latency ≥ {thresholds.LATENCY_AVG_THRESHOLD_SECONDS * 1000:g} ms",
    ('stat="avg"',),
)
PACKET_LOSS = QualityThreshold(
    "packet_loss",
    "high_packet_loss",
    participant_subject.PACKET_LOSS,
    thresholds.PACKET_LOSS_THRESHOLD_RATIO,
    False,
    f"Packet loss ≥ {thresholds.PACKET_LOSS_THRESHOLD_RATIO * 100:g} %",
)
QUALITY_THRESHOLDS = (MOS, JITTER, LATENCY, PACKET_LOSS)
