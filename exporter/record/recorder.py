"""One summary in, observations out: the only place that turns a summary into metric values.

Recording is split in two so that a summary is counted all or nothing:

- :meth:`Recorder.plan` reads a validated summary and returns a :class:`Change`: the label values
  and every observation it would make, in base units (milliseconds to seconds, percent to ratio).
  It changes nothing, so whatever it raises, nothing of the summary was counted.
- :meth:`Recorder.apply` makes the observations of a change. It keeps what it overwrote; if any
  step raises, everything it did is put back exactly (values, buckets, sums, exemplars, new
  series, admitted label values) before the error goes on.

A change is also what the durable state journals (``exporter/state/store.py``): applying the journaled
changes again after a restart gives back the same counters, bucket by bucket.

Each kind of summary (a "subject": participant, call, conference) has its own recorder, its own
families and its own :class:`~exporter.record.labels.LabelPolicy`; they share everything but the
planning. :class:`SummaryRecorder` is that shared machinery (apply, undo, the durable state's
view); :class:`Recorder` (participants), :class:`CallRecorder` and :class:`ConferenceRecorder`
each add only their :meth:`plan`.

Why one module: every subject's planning produces the :class:`Change` the shared apply, undo and
journal replay consume, so a change to that shape is made for all subjects at once, in one place.
"""

from __future__ import annotations

import re
import time
from bisect import bisect_left
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, fields
from typing import Any, Generic, TypeVar

from prometheus_client import CollectorRegistry

from exporter.metrics import (
    CallMetrics,
    ConferenceMetrics,
    ParticipantMetrics,
    build_call_metrics,
    build_conference_metrics,
    build_participant_metrics,
)
from exporter.models import CallSummary, ConferenceSummary, EdgeStream, ParticipantSummary, StreamMetrics
from exporter.record.families import CounterFamily, CounterSeries, HistogramFamily, HistogramSeries
from exporter.record.labels import OTHER, LabelPolicy

# OpenMetrics allows 128 characters of exemplar labels; two SIDs of 34 fit. A SID is letters and
# digits (CA + 32 hex): anything else is left out, so no exemplar ever needs escaping.
_SID = re.compile(r"[A-Za-z0-9]{1,48}")

Family = CounterFamily | HistogramFamily
Series = CounterSeries | HistogramSeries
# (family, label values after the common ones, amount or observed value)
Observation = tuple[Family, tuple[str, ...], float]


@dataclass(frozen=True, slots=True)
class Change:
    """What recording one summary adds: the common labels, the observations, the labels to keep."""

    common: tuple[str, ...]
    observations: tuple[Observation, ...]
    details: tuple[tuple[str, str], ...]  # (label, value) of the detail labels used
    overflow: tuple[str, ...]  # labels folded into 'other' (counted once applied)
    exemplar: dict[str, str] | None


M = TypeVar("M")


class SummaryRecorder(Generic[M]):
    """What every subject's recorder shares: apply all or nothing, undo, and the durable state's view.

    ``metrics`` is the subject's dataclass of families (exporter/metrics.py); a subclass adds
    only ``plan(summary) -> Change``.
    """

    def __init__(self, labels: LabelPolicy, metrics: M) -> None:
        self.labels = labels
        self.metrics: M = metrics
        self.by_name: dict[str, Family] = {f.name: f for f in self.families()}
        # One entry per common label set (bounded by the label budget): the series of that set,
        # keyed (family, *other labels), so most observations are one short-key lookup.
        self._series_of: dict[tuple[str, ...], dict[tuple[Any, ...], Series]] = {}
        # Series changed since the durable state last saved them (state.py); None when nothing saves.
        self.dirty: set[Series] | None = None
        self._key_of: dict[Series, tuple[Family, tuple[str, ...]]] = {}

    def families(self) -> list[Family]:
        """The subject's families, in exposition order (for the /metrics handler)."""
        metrics: Any = self.metrics  # a dataclass of families, whichever subject's
        return [getattr(metrics, f.name) for f in fields(metrics)]

    def plan(self, summary: Any, joined: Mapping[str, str | None] | None = None) -> Change:
        """What recording ``summary`` would add. Changes nothing.

        ``joined``: common label values from outside the summary (the TaskRouter join's
        task_queue, workflow and team, exporter/join.py); absent ones are ``unknown``.
        """
        raise NotImplementedError

    # -- apply: all or nothing ---------------------------------------------------------------

    def apply(self, change: Change) -> None:
        """Make the observations of ``change``; on any error, undo all of them and re-raise."""
        admitted = self.labels.admit(change.common, change.details)
        common = change.common
        series_of = self._series_of.get(common)
        new_set = series_of is None
        if series_of is None:
            series_of = self._series_of[common] = {}
        exemplar = change.exemplar
        now = time.time() if exemplar else 0.0  # one timestamp for all of a summary's exemplars
        # The undo log holds only what each observation overwrote: (series, bucket index, its old
        # count, old sum, old exemplar), or (series, -1, 0, old value, None) for a counter; not a
        # copy of every histogram's buckets (issue 21: plan + apply 47.7 -> ~40 µs a summary).
        # An entry is written before its step, so a step that raised is undone too (a no-op).
        undo: list[tuple[Any, int, int, float, Any]] = []
        created: list[tuple[dict[tuple[Any, ...], Series], tuple[Any, ...]]] = []
        dirty = self.dirty
        try:
            for family, others, value in change.observations:
                key = (family, *others)
                series = series_of.get(key)
                if series is None:
                    series = self._new_series(family, common + others)
                    series_of[key] = series
                    created.append((series_of, key))
                if type(series) is HistogramSeries:
                    i = bisect_left(series._upper, value)
                    undo.append((series, i, series.counts[i], series.sum, series.exemplars[i]))
                    series.observe(value, exemplar, now)
                else:
                    undo.append((series, -1, 0, series.value, None))
                    series.inc(value)
                if dirty is not None:
                    dirty.add(series)
        except BaseException:
            for series, i, count, old, old_exemplar in reversed(undo):
                if i < 0:
                    series.value = old
                else:
                    series.counts[i] = count
                    series.sum = old
                    series.exemplars[i] = old_exemplar
            for owner, key in reversed(created):
                series = owner.pop(key)
                family, values = self._key_of.pop(series)
                family._series.pop(values, None)
                if dirty is not None:
                    dirty.discard(series)
            if new_set:
                self._series_of.pop(common, None)
            self.labels.forget(admitted)
            raise

    def _new_series(self, family: Family, values: tuple[str, ...]) -> Series:
        series: Series = family.labels(*values)
        self._key_of[series] = (family, values)
        return series

    # -- the durable state's view ------------------------------------------------------------

    def key_of(self, series: Series) -> tuple[str, tuple[str, ...]]:
        """``(family name, label values)`` of one of the subject's series."""
        family, values = self._key_of[series]
        return family.name, values

    def restore(self, rows: Iterable[tuple[str, tuple[str, ...], list[float]]]) -> int:
        """Set series to saved values, ``(family name, label values, [value] or [sum, *bucket counts])``.

        Label values and label sets are kept again as they were admitted. Returns how many series
        were restored; rows of a family or bucket layout this version does not have are skipped.
        """
        n_common = len(self.labels.common_names)
        restored = 0
        for name, values, data in rows:
            family = self.by_name.get(name)
            if family is None or len(values) != len(family.labelnames):
                continue
            if isinstance(family, HistogramFamily) and len(data) != len(family.upper) + 1:
                continue  # buckets changed since: the old counts no longer fit
            common, others = values[:n_common], values[n_common:]
            series_of = self._series_of.setdefault(common, {})
            key = (family, *others)
            series = series_of.get(key)
            if series is None:
                series = series_of[key] = self._new_series(family, values)
            if isinstance(series, HistogramSeries):
                series.sum = data[0]
                series.counts[:] = [int(c) for c in data[1:]]
            else:
                series.value = data[0]
            bounded = self.labels.labels
            self.labels.admit(common, [(n, v) for n, v in zip(family.labelnames[n_common:], others, strict=True) if n in bounded])
            restored += 1
        return restored

    def unjournal(self, entry: Any) -> Change | None:
        """A journaled change (exporter/state/store.py) back as a :class:`Change`, or None if it no longer fits.

        Observations of a family this version does not have, or with other labels, are left out;
        histogram values are bucketed by today's buckets.
        """
        common, observations = entry
        n_common = len(self.labels.common_names)
        if len(common) != n_common:
            return None  # the common labels were reconfigured: the old label sets no longer exist
        bounded = self.labels.labels
        obs: list[Observation] = []
        details: list[tuple[str, str]] = []
        for name, others, value in observations:
            family = self.by_name.get(name)
            if family is None or len(others) + n_common != len(family.labelnames):
                continue
            obs.append((family, tuple(others), value))
            details.extend((n, v) for n, v in zip(family.labelnames[n_common:], others, strict=True) if n in bounded)
        return Change(tuple(common), tuple(obs), tuple(details), (), None)

    def saved_values(self, series: Series) -> list[float]:
        """What :meth:`restore` takes back for ``series``."""
        if isinstance(series, HistogramSeries):
            return [series.sum, *series.counts]
        return [series.value]


class Recorder(SummaryRecorder[ParticipantMetrics]):
    """Records validated participant summaries into the ``twilio_conference_participant_*`` families."""

    def __init__(
        self,
        registry: CollectorRegistry,
        labels: LabelPolicy,
        buckets: Mapping[str, tuple[float, ...]] | None = None,
    ) -> None:
        super().__init__(labels, build_participant_metrics(registry, labels.common_names, dict(buckets or {})))

    # -- plan: read only ---------------------------------------------------------------------

    def plan(self, summary: ParticipantSummary, joined: Mapping[str, str | None] | None = None) -> Change:
        """What recording ``summary`` would add. Changes nothing."""
        m = self.metrics
        lp = self.labels
        pending: dict[str, set[str]] = {}
        overflow: list[str] = []
        details: list[tuple[str, str]] = []

        def detail(name: str, raw: str | None) -> str:
            value = lp.detail(name, raw, pending, overflow)
            details.append((name, value))
            return value

        common = lp.common(
            {
                **(joined or {}),
                "call_type": summary.call_type,
                "call_direction": summary.call_direction,
                "participant_region": summary.participant_region,
                "conference_region": summary.conference_region,
                "country_code": summary.country_code,
                "participant_label": summary.label,
                "account_sid": summary.account_sid,
                "jitter_buffer_size": summary.jitter_buffer_size,
            },
            pending,
            overflow,
        )
        obs: list[Observation] = [(m.summaries, (detail("processing_state", summary.processing_state), detail("call_status", summary.status)), 1)]
        for stream, sm in summary.streams():
            self._plan_stream(obs, detail, stream, sm)
        if summary.quality_issues is not None:
            obs.append((m.quality_issues, (), summary.quality_issues))
        if summary.duration_seconds is not None:
            obs.append((m.duration, (), summary.duration_seconds))
        if summary.outbound_time_in_queue is not None:
            obs.append((m.queue_time, (), summary.outbound_time_in_queue))
        if summary.events is not None:
            for action, count in _folded(detail, "action", summary.events.counts()).items():
                obs.append((m.actions, (action,), count))
        if summary.participant_region and summary.conference_region and summary.participant_region != summary.conference_region:
            obs.append((m.region_mismatch, (), 1))
        return Change(common, tuple(obs), tuple(details), tuple(overflow), _exemplar(summary))

    def _plan_stream(self, obs: list[Observation], detail: Any, stream: str, sm: StreamMetrics) -> None:
        m = self.metrics
        if sm.mos is not None:
            obs.append((m.mos, (stream,), sm.mos))
        for histogram, stat in ((m.jitter, sm.jitter), (m.latency, sm.latency)):
            if stat is None:
                continue
            if stat.avg is not None:
                obs.append((histogram, (stream, "avg"), stat.avg / 1000))
            if stat.max is not None:
                obs.append((histogram, (stream, "max"), stat.max / 1000))
        if sm.packet_loss_percentage is not None:
            obs.append((m.packet_loss, (stream,), sm.packet_loss_percentage / 100))
        if sm.total_packets_received is not None:
            obs.append((m.packets_received, (stream,), sm.total_packets_received))
        if sm.total_packets_lost is not None:
            obs.append((m.packets_lost, (stream,), sm.total_packets_lost))
        # A tag says "this stream had that condition": once per stream, however often listed.
        for tag in _distinct(detail, "tag", sm.tags):
            obs.append((m.tags, (stream, tag), 1))
        if sm.tags_info is not None:
            severities = list(sm.tags_info.severities().items())
            for issue, severity in severities[:MAX_DETAILS]:
                obs.append((m.tag_severity, (stream, detail("issue", issue), detail("severity", severity)), 1))
            if len(severities) > MAX_DETAILS:
                obs.append((m.tag_severity, (stream, OTHER, OTHER), 1))
        if sm.occurrences is not None:
            for metric, count in _folded(detail, "metric", sm.occurrences.counts()).items():
                obs.append((m.degradations, (stream, metric), count))


ParticipantRecorder = Recorder


# At most this many distinct values of one detail list count per summary: Voice Insights documents
# about a dozen tags, four tag issues, a handful of actions and degradation metrics. Past it, the
# rest count once as ``other``: one summary adds at most MAX_DETAILS + 1 to a detail counter,
# whatever it lists, and cannot fill a detail label's cap by itself.
MAX_DETAILS = 16


def _distinct(detail: Any, name: str, values: Iterable[str] | None) -> list[str]:
    """The label values of a list that is a set (tags): each distinct value once, at most MAX_DETAILS + 1.

    >>> _distinct(lambda name, raw: raw if raw.startswith("k") else "other", "tag", ["k1", "k1", "x", "y", "k2"])
    ['k1', 'other', 'k2']
    """
    seen: dict[str, None] = {}
    kept: dict[str, None] = {}
    for raw in values or ():
        if raw in seen:
            continue
        if len(seen) == MAX_DETAILS:
            kept[OTHER] = None
            break
        seen[raw] = None
        kept[detail(name, raw)] = None
    return list(kept)


def _folded(detail: Any, name: str, counts: Mapping[str, float]) -> dict[str, float]:
    """Counts by label value (actions, degradations): the first MAX_DETAILS keys each their own, the rest summed as ``other``.

    >>> _folded(lambda name, raw: raw, "action", {"mute": 2, "hold": 1})
    {'mute': 2, 'hold': 1}
    """
    out: dict[str, float] = {}
    for i, (raw, count) in enumerate(counts.items()):
        value = detail(name, raw) if i < MAX_DETAILS else OTHER
        out[value] = out.get(value, 0) + count
    return out


class _Draft:
    """The label bookkeeping of one summary being planned (what :meth:`Recorder.plan` keeps in locals)."""

    __slots__ = ("details", "labels", "overflow", "pending")

    def __init__(self, labels: LabelPolicy) -> None:
        self.labels = labels
        self.pending: dict[str, set[str]] = {}
        self.overflow: list[str] = []
        self.details: list[tuple[str, str]] = []

    def common(self, values: Mapping[str, str | None]) -> tuple[str, ...]:
        return self.labels.common(values, self.pending, self.overflow)

    def detail(self, name: str, raw: str | None) -> str:
        value = self.labels.detail(name, raw, self.pending, self.overflow)
        self.details.append((name, value))
        return value

    def change(self, common: tuple[str, ...], obs: list[Observation], exemplar: dict[str, str] | None) -> Change:
        return Change(common, tuple(obs), tuple(self.details), tuple(self.overflow), exemplar)


def _sid_exemplar(name: str, sid: str) -> dict[str, str] | None:
    return {name: sid} if _SID.fullmatch(sid) else None


class CallRecorder(SummaryRecorder[CallMetrics]):
    """Records final Call Summaries into the ``twilio_call_*`` families (labels: :func:`exporter.record.labels.call_label_policy`).

    Twilio's milliseconds become seconds and its percentages ratios. What an edge did not
    measure is not recorded: an absent edge, an edge without metrics, one direction only leave
    no sample rather than a zero. The SIP edge's ``latency`` is left out: its unit is not
    documented (call-and-conference-summary-facts.md).
    """

    def __init__(self, registry: CollectorRegistry, labels: LabelPolicy, buckets: Mapping[str, tuple[float, ...]] | None = None) -> None:
        super().__init__(labels, build_call_metrics(registry, labels.common_names, dict(buckets or {})))

    def plan(self, summary: CallSummary, joined: Mapping[str, str | None] | None = None) -> Change:
        """What recording ``summary`` would add. Changes nothing."""
        m = self.metrics
        draft = _Draft(self.labels)
        far = summary.far_end()
        props = summary.properties
        common = draft.common(
            {
                **(joined or {}),
                "call_type": summary.call_type,
                "call_status": summary.call_state,
                "direction": props.direction if props is not None else None,
                "media_region": summary.edge_property("media_region"),
                "edge_location": summary.edge_property("edge_location"),
                "country_code": far.country_code if far is not None else None,
                "carrier": far.carrier if far is not None else None,
                "connection": far.connection if far is not None else None,
            }
        )
        obs: list[Observation] = [(m.summaries, (), 1)]
        for edge_name, edge in summary.edges():
            if edge.metrics is None:
                continue
            for stream, es in (("inbound", edge.metrics.inbound), ("outbound", edge.metrics.outbound)):
                if es is not None:
                    self._plan_edge_stream(obs, draft, (edge_name, stream), es)
        if summary.connect_duration is not None:
            obs.append((m.duration, (), summary.connect_duration))
        if props is not None:
            if props.pdd_ms is not None:
                obs.append((m.post_dial_delay, (), props.pdd_ms / 1000))
            if props.queue_time is not None:
                obs.append((m.queue_time, (), props.queue_time / 1000))
            if props.last_sip_response_num is not None:
                obs.append((m.sip_responses, (draft.detail("sip_response_class", f"{props.last_sip_response_num // 100}xx"),), 1))
            if props.disconnected_by is not None:
                obs.append((m.disconnects, (draft.detail("disconnected_by", props.disconnected_by),), 1))
        if summary.answered_by is not None:
            obs.append((m.answered_by, (draft.detail("answered_by", summary.answered_by),), 1))
        # A tag says "this call had that condition": once, however often listed.
        for tag in _distinct(draft.detail, "tag", summary.tags):
            obs.append((m.tags, (tag,), 1))
        return draft.change(common, obs, _sid_exemplar("call_sid", summary.call_sid))

    def _plan_edge_stream(self, obs: list[Observation], draft: _Draft, where: tuple[str, str], es: EdgeStream) -> None:
        m = self.metrics
        if es.jitter is not None:
            if es.jitter.avg is not None:
                obs.append((m.jitter, (*where, "avg"), es.jitter.avg / 1000))
            if es.jitter.max is not None:
                obs.append((m.jitter, (*where, "max"), es.jitter.max / 1000))
        if es.packets_loss_percentage is not None:
            obs.append((m.packet_loss, where, es.packets_loss_percentage / 100))
        # Packets received on the way in, sent on the way out: the count the loss is out of.
        packets = es.packets_received if where[1] == "inbound" else es.packets_sent
        if packets is not None:
            obs.append((m.packets, where, packets))
        if es.packets_lost is not None:
            obs.append((m.packets_lost, where, es.packets_lost))
        if es.mos is not None:
            if es.mos.avg is not None:
                obs.append((m.mos, (*where, "avg"), es.mos.avg))
            if es.mos.min is not None:
                obs.append((m.mos, (*where, "min"), es.mos.min))
        if es.rtt is not None:
            if es.rtt.avg is not None:
                obs.append((m.rtt, (*where, "avg"), es.rtt.avg / 1000))
            if es.rtt.max is not None:
                obs.append((m.rtt, (*where, "max"), es.rtt.max / 1000))
        if es.codec_name is not None:
            obs.append((m.codecs, (*where, draft.detail("codec", es.codec_name.lower())), 1))


class ConferenceRecorder(SummaryRecorder[ConferenceMetrics]):
    """Records final Conference Summaries into the ``twilio_conference_*`` families (labels: :func:`exporter.record.labels.conference_label_policy`)."""

    def __init__(self, registry: CollectorRegistry, labels: LabelPolicy, buckets: Mapping[str, tuple[float, ...]] | None = None) -> None:
        super().__init__(labels, build_conference_metrics(registry, labels.common_names, dict(buckets or {})))

    def plan(self, summary: ConferenceSummary, joined: Mapping[str, str | None] | None = None) -> Change:
        """What recording ``summary`` would add. Changes nothing."""
        m = self.metrics
        draft = _Draft(self.labels)
        common = draft.common({**(joined or {}), "mixer_region": summary.mixer_region, "status": summary.status, "end_reason": summary.end_reason})
        obs: list[Observation] = [(m.summaries, (draft.detail("processing_state", summary.processing_state),), 1)]
        if summary.duration_seconds is not None:
            obs.append((m.duration, (), summary.duration_seconds))
        if summary.max_concurrent_participants is not None:
            obs.append((m.concurrent_participants, (), summary.max_concurrent_participants))
        for tag in _distinct(draft.detail, "tag", summary.tags):
            obs.append((m.tags, (tag,), 1))
        # A zero is measured ("no issue of this category"), so it is recorded: the series exists at 0.
        for category, count in summary.issue_counts():
            obs.append((m.detected_issues, (draft.detail("category", category),), count))
        return draft.change(common, obs, _sid_exemplar("conference_sid", summary.conference_sid))


def _exemplar(summary: ParticipantSummary) -> dict[str, str] | None:
    exemplar = {
        name: value for name, value in (("call_sid", summary.call_sid), ("conference_sid", summary.conference_sid)) if value and _SID.fullmatch(value)
    }
    return exemplar or None
