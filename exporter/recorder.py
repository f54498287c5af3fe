"""One summary in, observations out: the only place that turns a summary into metric values.

Units become base units here (milliseconds to seconds, percent to ratio). ``record`` is pure
with respect to its input: it reads the validated summary and touches only the registry.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import fields
from typing import Any

from prometheus_client import CollectorRegistry

from .config import Settings
from .labels import LabelPolicy
from .metrics import ParticipantMetrics, build_participant_metrics
from .models import ParticipantSummary, StreamMetrics

# OpenMetrics allows 128 characters of exemplar labels; two SIDs of 34 fit, anything odd is left out.
_MAX_EXEMPLAR_VALUE = 48


class Recorder:
    """Records validated summaries into the ``twilio_conference_participant_*`` families."""

    def __init__(
        self,
        settings: Settings,
        registry: CollectorRegistry,
        on_label_overflow: Callable[[str], None],
    ) -> None:
        self.labels = LabelPolicy(settings.labels, on_label_overflow)
        self.metrics: ParticipantMetrics = build_participant_metrics(registry, self.labels.common_names, settings.buckets.resolved())
        # Bounded like the registry itself: one entry per common label set.
        self._series_of: dict[tuple[str, ...], _SeriesOf] = {}

    def families(self) -> list[Any]:
        """The participant families, in exposition order (for the /metrics handler)."""
        return [getattr(self.metrics, f.name) for f in fields(self.metrics)]

    def record(self, summary: ParticipantSummary) -> None:
        """Turn one summary into observations. Call once per summary: deduplication is the caller's."""
        m = self.metrics
        lp = self.labels
        common = lp.common(
            {
                "call_type": summary.call_type,
                "call_direction": summary.call_direction,
                "participant_region": summary.participant_region,
                "conference_region": summary.conference_region,
                "country_code": summary.country_code,
                "participant_label": summary.label,
                "account_sid": summary.account_sid,
                "jitter_buffer_size": summary.jitter_buffer_size,
            }
        )
        series = self._series_of.get(common)
        if series is None:
            series = self._series_of[common] = _SeriesOf(common)
        exemplar = _exemplar(summary)

        m.summaries.labels(*common, lp["processing_state"](summary.processing_state), lp["call_status"](summary.status)).inc()
        for stream, sm in summary.streams():
            self._record_stream(series, stream, sm, exemplar)
        if summary.quality_issues is not None:
            series[m.quality_issues,].observe(summary.quality_issues)
        if summary.duration_seconds is not None:
            series[m.duration,].observe(summary.duration_seconds)
        if summary.outbound_time_in_queue is not None:
            series[m.queue_time,].observe(summary.outbound_time_in_queue)
        if summary.events is not None:
            for action, count in summary.events.counts().items():
                m.actions.labels(*common, lp["action"](action)).inc(count)
        if summary.participant_region and summary.conference_region and summary.participant_region != summary.conference_region:
            series[m.region_mismatch,].inc()

    def _record_stream(self, series: _SeriesOf, stream: str, sm: StreamMetrics, exemplar: dict[str, str] | None) -> None:
        m = self.metrics
        lp = self.labels
        if sm.mos is not None:
            series[m.mos, stream].observe(sm.mos, exemplar)
        for histogram, stat in ((m.jitter, sm.jitter), (m.latency, sm.latency)):
            if stat is None:
                continue
            if stat.avg is not None:
                series[histogram, stream, "avg"].observe(stat.avg / 1000, exemplar)
            if stat.max is not None:
                series[histogram, stream, "max"].observe(stat.max / 1000, exemplar)
        if sm.packet_loss_percentage is not None:
            series[m.packet_loss, stream].observe(sm.packet_loss_percentage / 100, exemplar)
        if sm.total_packets_received is not None:
            series[m.packets_received, stream].inc(sm.total_packets_received)
        if sm.total_packets_lost is not None:
            series[m.packets_lost, stream].inc(sm.total_packets_lost)
        if not (sm.tags or sm.tags_info is not None or sm.occurrences is not None):
            return  # a clean stream, as most are
        labels = (*series.common, stream)
        # A tag says "this stream had that condition": once per stream, however often listed.
        for tag in dict.fromkeys(sm.tags or ()):
            m.tags.labels(*labels, lp["tag"](tag)).inc()
        if sm.tags_info is not None:
            for issue, severity in sm.tags_info.severities().items():
                m.tag_severity.labels(*labels, lp["issue"](issue), lp["severity"](severity)).inc()
        if sm.occurrences is not None:
            for metric, count in sm.occurrences.counts().items():
                m.degradations.labels(*labels, lp["metric"](metric)).inc(count)


class _SeriesOf(dict):
    """The series of one common label set whose other labels come from a fixed vocabulary
    (stream, stat), keyed ``(family, *other labels)`` and created on first use.

    Most of a summary's ~20 observations land in these: one lookup with a short key here
    replaces a ``.labels()`` call that builds, hashes and compares the whole label tuple (record
    of a warm summary ~31 -> ~23 µs, docs/performance.md). Series are still
    created lazily, so a series that never had an observation is never exposed.
    """

    __slots__ = ("common",)

    def __init__(self, common: tuple[str, ...]) -> None:
        super().__init__()
        self.common = common

    def __missing__(self, key: tuple[Any, ...]) -> Any:
        family, *others = key
        series = self[key] = family.labels(*self.common, *others)
        return series


def _exemplar(summary: ParticipantSummary) -> dict[str, str] | None:
    exemplar = {
        name: value
        for name, value in (("call_sid", summary.call_sid), ("conference_sid", summary.conference_sid))
        if value and len(value) <= _MAX_EXEMPLAR_VALUE
    }
    return exemplar or None
