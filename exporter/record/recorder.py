"""One summary in, observations out: the only place that turns a summary into metric values.

Recording is split in two so that a summary is counted all or nothing:

- :meth:`SummaryRecorder.plan` reads a validated summary and returns a :class:`Change`: the label values
  and every observation it would make, in base units (milliseconds to seconds, percent to ratio).
  It changes nothing, so whatever it raises, nothing of the summary was counted.
- :meth:`SummaryRecorder.apply` makes the observations of a change. It keeps what it overwrote; if any
  step raises, everything it did is put back exactly (values, buckets, sums, exemplars, new
  series, admitted label values) before the error goes on.

A change is also what the durable state journals (``exporter/state/store.py``): applying the journaled
changes again after a restart gives back the same counters, bucket by bucket.

Each kind of summary (a "subject": participant, call, conference) has its own recorder, its own
families and its own :class:`~exporter.record.labels.LabelPolicy`; they share everything but the
planning. :class:`SummaryRecorder` is that shared machinery (apply, undo, the durable state's
view); each subject's module under exporter/subjects/ adds only its :meth:`plan` (the
``ParticipantRecorder``, ``CallRecorder`` and ``ConferenceRecorder``), built with :class:`Draft`.

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

from exporter.record.families import CounterFamily, CounterSeries, HistogramFamily, HistogramSeries
from exporter.record.labels import OTHER, LabelPolicy

# OpenMetrics allows 128 characters of exemplar labels; two SIDs of 34 fit. A SID is letters and
# digits (CA + 32 hex): anything else is left out, so no exemplar ever needs escaping.
SID = re.compile(r"[A-Za-z0-9]{1,48}")

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
        # copy of every histogram's buckets (cheaper per summary: docs/performance.md).
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


# At most this many distinct values of one detail list count per summary: Voice Insights documents
# about a dozen tags, four tag issues, a handful of actions and degradation metrics. Past it, the
# rest count once as ``other``: one summary adds at most MAX_DETAILS + 1 to a detail counter,
# whatever it lists, and cannot fill a detail label's cap by itself.
MAX_DETAILS = 16


def distinct(detail: Any, name: str, values: Iterable[str] | None) -> list[str]:
    """The label values of a list that is a set (tags): each distinct value once, at most MAX_DETAILS + 1.

    >>> distinct(lambda name, raw: raw if raw.startswith("k") else "other", "tag", ["k1", "k1", "x", "y", "k2"])
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


def folded(detail: Any, name: str, counts: Mapping[str, float]) -> dict[str, float]:
    """Counts by label value (actions, degradations): the first MAX_DETAILS keys each their own, the rest summed as ``other``.

    >>> folded(lambda name, raw: raw, "action", {"mute": 2, "hold": 1})
    {'mute': 2, 'hold': 1}
    """
    out: dict[str, float] = {}
    for i, (raw, count) in enumerate(counts.items()):
        value = detail(name, raw) if i < MAX_DETAILS else OTHER
        out[value] = out.get(value, 0) + count
    return out


class Draft:
    """The label bookkeeping of one summary being planned (what :meth:`SummaryRecorder.plan` keeps in locals)."""

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


def sid_exemplar(name: str, sid: str) -> dict[str, str] | None:
    return {name: sid} if SID.fullmatch(sid) else None
