"""The participant families expose exactly what prometheus_client's own classes would."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry, Counter, Histogram, disable_created_metrics, generate_latest
from prometheus_client.openmetrics.exposition import generate_latest as generate_openmetrics

from exporter.record.families import CounterFamily, rendered_separately
from tests.family_pairs import LABELS, VALUES, fill, ours


@pytest.fixture(autouse=True)
def _no_created_series():
    disable_created_metrics()  # as the exporter's app factory does


def test_collected_samples_are_those_of_prometheus_client_counter_and_histogram():
    theirs, mine = CollectorRegistry(), CollectorRegistry()
    fill(theirs, Counter, Histogram)
    fill(mine, ours, ours)
    strip = lambda registry: [  # noqa: E731 - exemplar timestamps differ by construction
        (s.name, s.labels, s.value, s.exemplar and (s.exemplar.labels, s.exemplar.value)) for metric in registry.collect() for s in metric.samples
    ]
    assert strip(mine) == strip(theirs)
    assert mine.get_sample_value("mos_bucket", {**dict(zip(LABELS, VALUES[1], strict=False)), "le": "0.5"}) == 3.0


@pytest.mark.parametrize("openmetrics", [False, True])
def test_render_writes_the_bytes_of_prometheus_clients_exposition(openmetrics):
    registry = CollectorRegistry()
    families = fill(registry, ours, ours)
    encode = generate_openmetrics if openmetrics else generate_latest
    expected = encode(registry).decode()
    rendered = "".join(chunk for family in families for chunk in family.render(openmetrics))
    assert rendered + ("# EOF\n" if openmetrics else "") == expected


def test_a_family_rendered_separately_is_left_out_of_collect():
    registry = CollectorRegistry()
    families = fill(registry, ours, ours)
    token = rendered_separately.set(frozenset(families))
    try:
        assert list(registry.collect()) == []
    finally:
        rendered_separately.reset(token)


@pytest.mark.parametrize(("name", "labels"), [("calls.total", ["zone"]), ("calls", ["call.type"]), ("calls", ["1zone"])])
def test_a_name_outside_the_legacy_character_set_is_refused(name, labels):
    # The cached series text is written as it is under every escaping /metrics negotiates.
    with pytest.raises(ValueError, match="legacy character set"):
        CounterFamily(name, "Calls.", labels, CollectorRegistry())
