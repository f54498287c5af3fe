"""A counter and a histogram filled the same way through prometheus_client's classes or the
exporter's own families (exporter/record/families.py), so a test compares what each exposes."""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry

from exporter.record.families import CounterFamily, HistogramFamily

LABELS = ["zone", "call_type", "stream", "quote"]
VALUES = [("us1", "sip", "inbound", 'a "quoted"\\ value\n'), ("ie1", "carrier", "outbound", "plain")]
BUCKETS = (0.0, 0.5, 1.0, 3.5)
OBSERVATIONS = [0.0, 0.2, 0.5, 3.5, 3.6, 100.0]


def fill(registry: CollectorRegistry, counter_cls: Any, histogram_cls: Any) -> list[Any]:
    """A counter and a histogram of the classes given, filled with :data:`VALUES` and :data:`OBSERVATIONS`."""
    counter = counter_cls("calls", "Calls, with a \\ and a\nnewline.", LABELS, registry=registry)
    histogram = histogram_cls("mos", "MOS.", LABELS, registry=registry, buckets=BUCKETS)
    for values in VALUES:
        counter.labels(*values).inc()
        counter.labels(*values).inc(41)
        for value in OBSERVATIONS:
            histogram.labels(*values).observe(value, {"call_sid": "CA" + "1" * 32})
    return [counter, histogram]


def ours(name: str, doc: str, labels: list[str], registry: CollectorRegistry, buckets: tuple[float, ...] | None = None) -> Any:
    """The exporter's family in place of prometheus_client's ``Counter`` or ``Histogram`` (same arguments)."""
    return HistogramFamily(name, doc, labels, registry, buckets) if buckets else CounterFamily(name, doc, labels, registry)
