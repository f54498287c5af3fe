"""The subjects' metric families (what Twilio measured): plain numbers per series, rendered from cached label text.

Why not ``prometheus_client.Counter`` and ``Histogram`` for these: they hold every label set a
contact centre produces, about 200 samples per combination of the common labels, so 100k
samples is an ordinary registry. On it the library's scrape costs seconds, because
``collect()`` builds a label dict per sample and ``generate_latest`` then validates and escapes
every label name of every sample, and creating a labeled histogram child (a lock per bucket)
dominated the webhook's profile (figures in docs/performance.md, "What was done, measured
before and after"). The label text of a series never changes, so it is escaped once, when the
series is created; a histogram keeps its buckets as a list of ints. Everything else (the
exporter's own metrics, process, GC) stays ``prometheus_client``.

Both families are ordinary collectors on the injected registry, so ``collect()``,
``registry.get_sample_value`` and ``generate_latest`` see exactly the samples prometheus_client's
own classes would give (without ``_created``, which the exporter disables: ``app.create_apps``
says why). :func:`render` writes the same bytes as ``generate_latest`` and the OpenMetrics
``generate_latest`` would, in chunks, so the ``/metrics`` handler can let webhook requests run
between them.

Series are observed on the event loop only; a reader in another thread may see a histogram's
sum one observation behind its count, never a count behind its buckets (the count is the sum
of the buckets).
"""

from __future__ import annotations

import re
import time
from bisect import bisect_left
from collections.abc import Iterable, Iterator, Sequence
from contextvars import ContextVar
from functools import lru_cache
from typing import Any, final

from prometheus_client import CollectorRegistry
from prometheus_client.metrics_core import Metric
from prometheus_client.samples import Exemplar
from prometheus_client.utils import INF, floatToGoString

# Families the current render writes itself (exposition.py), so the generic collect() of the
# same scrape must leave them out rather than render them twice.
rendered_separately: ContextVar[frozenset[Any]] = ContextVar("rendered_separately", default=frozenset())

# About this many lines between two chunks of a render: a few milliseconds of work.
CHUNK_LINES = 4096


_METRIC_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
_LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")


def _escape(value: str) -> str:
    """Label value escaping of both text formats (backslash, newline, double quote)."""
    return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")


@lru_cache(maxsize=8192)
def _pair(name: str, value: str) -> str:
    # Cached: a summary's common label values recur in every family it touches, and label
    # values are bounded (labels.py), so most new series are made of pairs already escaped.
    return f'{name}="{_escape(value)}"'


def _pairs(pairs: Iterable[tuple[str, str]]) -> str:
    return ",".join([_pair(name, value) for name, value in pairs])


class _Family:
    type = ""

    def __init__(self, name: str, documentation: str, labelnames: Sequence[str], registry: CollectorRegistry) -> None:
        # Names in the legacy character set are written as they are under every name escaping the
        # exposition negotiates (exposition.py): the cached series text stays right for all of them.
        if not _METRIC_NAME.fullmatch(name) or not all(_LABEL_NAME.fullmatch(label) for label in labelnames):
            raise ValueError(f"{name}: metric and label names must be in the legacy character set [a-zA-Z_:][a-zA-Z0-9_:]*")
        self.name = name
        self.documentation = documentation
        self.labelnames = tuple(labelnames)
        # Exposition formats list labels sorted by name: the permutation is computed once.
        self._order = sorted(range(len(self.labelnames)), key=self.labelnames.__getitem__)
        self._series: dict[tuple[str, ...], Any] = {}
        registry.register(self)

    def labels(self, *values: str) -> Any:
        """The series of these label values (created on first use), like ``Counter.labels``."""
        series = self._series.get(values)
        if series is None:
            if len(values) != len(self.labelnames):
                raise ValueError(f"{self.name}: expected {len(self.labelnames)} label values, got {len(values)}")
            series = self._series[values] = self._new_series(tuple(str(v) for v in values))
        return series

    def _sorted_pairs(self, values: tuple[str, ...]) -> list[tuple[str, str]]:
        return [(self.labelnames[i], values[i]) for i in self._order]

    def _new_series(self, values: tuple[str, ...]) -> Any:
        raise NotImplementedError

    def describe(self) -> list[Metric]:
        return [Metric(self.name, self.documentation, self.type)]

    def collect(self) -> list[Metric]:
        if self in rendered_separately.get():
            return []
        metric = Metric(self.name, self.documentation, self.type)
        for values, series in list(self._series.items()):
            series.add_samples(metric, dict(zip(self.labelnames, values, strict=False)))
        return [metric]

    def render(self, openmetrics: bool, names: frozenset[str] | None = None) -> Iterator[str]:
        """This family in the text format (0.0.4) or OpenMetrics, in chunks of lines; with
        ``names`` (a ``name[]`` scrape) only the samples of those names, as
        ``CollectorRegistry.restricted_registry`` keeps them (nothing at all when none is asked)."""
        raise NotImplementedError


# final: the recorder tells the two kinds of series apart with `type(series) is HistogramSeries` (the
# fastest test on its hot path), which is exact only because neither is ever subclassed.
@final
class CounterSeries:
    __slots__ = ("_line", "value")

    def __init__(self, line: str) -> None:
        self.value = 0.0
        self._line = line

    def inc(self, amount: float = 1) -> None:
        if amount < 0:
            raise ValueError("counters only go up")
        self.value += amount

    def add_samples(self, metric: Metric, labels: dict[str, str]) -> None:
        metric.add_sample(metric.name + "_total", labels, self.value)


class CounterFamily(_Family):
    """A labeled counter, exposed as ``<name>_total``."""

    type = "counter"

    def _new_series(self, values: tuple[str, ...]) -> CounterSeries:
        return CounterSeries(f"{self.name}_total{{{_pairs(self._sorted_pairs(values))}}} ")

    def render(self, openmetrics: bool, names: frozenset[str] | None = None) -> Iterator[str]:
        if names is not None and f"{self.name}_total" not in names:
            return
        if openmetrics:
            head = f"# HELP {self.name} {_escape(self.documentation)}\n# TYPE {self.name} counter\n"
        else:
            doc = self.documentation.replace("\\", r"\\").replace("\n", r"\n")
            head = f"# HELP {self.name}_total {doc}\n# TYPE {self.name}_total counter\n"
        lines = [head]
        for series in list(self._series.values()):
            lines.append(f"{series._line}{floatToGoString(series.value)}\n")
            if len(lines) >= CHUNK_LINES:
                yield "".join(lines)
                lines = []
        yield "".join(lines)


@final
class HistogramSeries:
    __slots__ = ("_bucket_close", "_bucket_open", "_plain", "_upper", "counts", "exemplars", "sum")

    def __init__(self, upper: tuple[float, ...], bucket_open: str, bucket_close: str, plain: str) -> None:
        self.counts = [0] * len(upper)
        self.sum = 0.0
        # (labels, value, timestamp) per bucket, made an Exemplar only when collected: the
        # NamedTuple's constructor is Python code, run on each of a summary's observations
        # otherwise (docs/performance.md, the recorder and families row).
        self.exemplars: list[tuple[dict[str, str], float, float] | None] = [None] * len(upper)
        self._upper = upper
        self._bucket_open = bucket_open
        self._bucket_close = bucket_close
        self._plain = plain

    def observe(self, value: float, exemplar: dict[str, str] | None = None, at: float | None = None) -> None:
        """Count ``value`` in its bucket (the first upper bound >= value), like ``Histogram.observe``;
        an exemplar is stamped ``at`` (now when None)."""
        i = bisect_left(self._upper, value)
        self.counts[i] += 1
        self.sum += value
        if exemplar:
            self.exemplars[i] = (exemplar, value, time.time() if at is None else at)

    def add_samples(self, metric: Metric, labels: dict[str, str]) -> None:
        total = 0
        for bound, count, exemplar in zip(self._upper, self.counts, self.exemplars, strict=True):
            total += count
            metric.add_sample(metric.name + "_bucket", {**labels, "le": floatToGoString(bound)}, float(total), None, exemplar and Exemplar(*exemplar))
        metric.add_sample(metric.name + "_count", labels, float(total))
        metric.add_sample(metric.name + "_sum", labels, self.sum)


class HistogramFamily(_Family):
    """A labeled histogram with fixed buckets (``+Inf`` added), exposed like ``Histogram``."""

    type = "histogram"

    def __init__(self, name: str, documentation: str, labelnames: Sequence[str], registry: CollectorRegistry, buckets: Sequence[float]) -> None:
        upper = tuple(float(b) for b in buckets)
        if upper[-1] != INF:
            upper += (INF,)
        self.upper = upper
        self._le = tuple(floatToGoString(b) for b in upper)
        super().__init__(name, documentation, labelnames, registry)

    def _new_series(self, values: tuple[str, ...]) -> HistogramSeries:
        pairs = self._sorted_pairs(values)
        before = _pairs(p for p in pairs if p[0] < "le")
        after = _pairs(p for p in pairs if p[0] > "le")
        return HistogramSeries(
            self.upper,
            f'{self.name}_bucket{{{before}{"," if before else ""}le="',
            f'"{"," if after else ""}{after}}} ',
            f"{{{_pairs(pairs)}}} ",
        )

    def render(self, openmetrics: bool, names: frozenset[str] | None = None) -> Iterator[str]:
        name = self.name
        buckets, count, total_sum = (
            (True, True, True) if names is None else (f"{name}_bucket" in names, f"{name}_count" in names, f"{name}_sum" in names)
        )
        if not (buckets or count or total_sum):
            return
        if openmetrics:
            doc = _escape(self.documentation)
        else:
            doc = self.documentation.replace("\\", r"\\").replace("\n", r"\n")
        lines = [f"# HELP {name} {doc}\n# TYPE {name} histogram\n"]
        le = self._le
        for series in list(self._series.values()):
            total = 0
            bucket_open, bucket_close = series._bucket_open, series._bucket_close
            if buckets:
                for i, n in enumerate(series.counts):
                    total += n
                    exemplar = series.exemplars[i] if openmetrics else None
                    suffix = _exemplar_text(exemplar) if exemplar is not None else ""
                    # Counts are whole numbers; f"{n}.0" is what floatToGoString(float(n)) writes.
                    lines.append(f"{bucket_open}{le[i]}{bucket_close}{total}.0{suffix}\n")
            else:
                total = sum(series.counts)
            if count:
                lines.append(f"{name}_count{series._plain}{total}.0\n")
            if total_sum:
                lines.append(f"{name}_sum{series._plain}{floatToGoString(series.sum)}\n")
            if len(lines) >= CHUNK_LINES:
                yield "".join(lines)
                lines = []
        yield "".join(lines)


def _exemplar_text(exemplar: tuple[dict[str, str], float, float]) -> str:
    """An OpenMetrics exemplar, as ``prometheus_client.openmetrics.exposition`` writes it."""
    labels, value, timestamp = exemplar
    pairs = ",".join(f'{k}="{_escape(v)}"' for k, v in sorted(labels.items()))
    return f" # {{{pairs}}} {floatToGoString(value)} {timestamp}"
