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

    def families(self) -> list[Any]:
        """The participant families, in exposition order (for the /metrics handler)."""
        return [getattr(self.metrics, f.name) for f in fields(self.metrics)]

    @staticmethod
    def _child(metric: Any, values: tuple[str, ...]) -> Any:
        # A dict lookup per label tuple: the families index their series by it (families.py).
        return metric.labels(*values)

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
        exemplar = _exemplar(summary)

        self._child(m.summaries, (*common, lp["processing_state"](summary.processing_state), lp["call_status"](summary.status))).inc()
        for stream, sm in summary.streams():
            self._record_stream(common + (stream,), sm, exemplar)
        if summary.quality_issues is not None:
            self._child(m.quality_issues, common).observe(summary.quality_issues)
        if summary.duration_seconds is not None:
            self._child(m.duration, common).observe(summary.duration_seconds)
        if summary.outbound_time_in_queue is not None:
            self._child(m.queue_time, common).observe(summary.outbound_time_in_queue)
        if summary.events is not None:
            for action, count in summary.events.counts().items():
                self._child(m.actions, (*common, lp["action"](action))).inc(count)
        if summary.participant_region and summary.conference_region and summary.participant_region != summary.conference_region:
            self._child(m.region_mismatch, common).inc()

    def _record_stream(self, labels: tuple[str, ...], sm: StreamMetrics, exemplar: dict[str, str] | None) -> None:
        m = self.metrics
        lp = self.labels
        if sm.mos is not None:
            self._child(m.mos, labels).observe(sm.mos, exemplar)
        for histogram, stat in ((m.jitter, sm.jitter), (m.latency, sm.latency)):
            if stat is None:
                continue
            if stat.avg is not None:
                self._child(histogram, (*labels, "avg")).observe(stat.avg / 1000, exemplar)
            if stat.max is not None:
                self._child(histogram, (*labels, "max")).observe(stat.max / 1000, exemplar)
        if sm.packet_loss_percentage is not None:
            self._child(m.packet_loss, labels).observe(sm.packet_loss_percentage / 100, exemplar)
        if sm.total_packets_received is not None:
            self._child(m.packets_received, labels).inc(sm.total_packets_received)
        if sm.total_packets_lost is not None:
            self._child(m.packets_lost, labels).inc(sm.total_packets_lost)
        # A tag says "this stream had that condition": once per stream, however often listed.
        for tag in dict.fromkeys(sm.tags or ()):
            self._child(m.tags, (*labels, lp["tag"](tag))).inc()
        if sm.tags_info is not None:
            for issue, severity in sm.tags_info.severities().items():
                self._child(m.tag_severity, (*labels, lp["issue"](issue), lp["severity"](severity))).inc()
        if sm.occurrences is not None:
            for metric, count in sm.occurrences.counts().items():
                self._child(m.degradations, (*labels, lp["metric"](metric))).inc(count)


def _exemplar(summary: ParticipantSummary) -> dict[str, str] | None:
    exemplar = {
        name: value
        for name, value in (("call_sid", summary.call_sid), ("conference_sid", summary.conference_sid))
        if value and len(value) <= _MAX_EXEMPLAR_VALUE
    }
    return exemplar or None
