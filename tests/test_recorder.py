"""The recorder alone, through its public steps: plan, apply, restore (saved series) and unjournal
(the journal's replay), with exact values read back from the registry.

These are the fast tests that `make mutants` runs against recorder.py: the durable state's own
tests (tests/test_durable.py) restart real exporters and are too slow to run once per mutant.
"""

from __future__ import annotations

from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from exporter.models import ParticipantSummary
from exporter.record import families
from exporter.record.labels import OTHER
from exporter.subjects.participant import COMMON_LABELS, DEFAULT_BUCKETS, ParticipantRecorder
from exporter.subjects.participant import label_policy as participant_label_policy
from tests.conftest import fixture, sample_sum, snapshot

P = "twilio_conference_participant_"
# The common labels of tests/fixtures/reference_event.json.
COMMON = ("sip", "inbound", "us1", "us1", "US", "advisor")
REFERENCE = dict(zip(COMMON_LABELS, COMMON, strict=True))
OTHER_COMMON = ("carrier", "outbound", "ie1", "us1", "GB", "customer")


def recorder(buckets: dict[str, tuple[float, ...]] | None = None, **max_values: int) -> tuple[ParticipantRecorder, CollectorRegistry]:
    registry = CollectorRegistry()
    return ParticipantRecorder(registry, participant_label_policy(COMMON_LABELS, max_values=max_values), buckets), registry


def summary(**changes: Any) -> ParticipantSummary:
    """The reference summary, with ``changes`` to its data."""
    return ParticipantSummary.model_validate({**fixture("reference_event.json")["data"], **changes})


def stream_changes(**changes: Any) -> dict[str, Any]:
    """``changes`` to the inbound stream of the reference summary's metrics."""
    data = fixture("reference_event.json")["data"]
    data["metrics"]["inbound"].update(changes)
    return {"metrics": data["metrics"]}


def value(registry: CollectorRegistry, name: str, **labels: str) -> float:
    return sample_sum(registry, P + name, **labels)


# --- plan and apply -------------------------------------------------------------------------


def test_custom_buckets_are_the_edges_the_histogram_counts_in() -> None:
    rec, registry = recorder(buckets={"mos": (2.0, 4.0)})
    rec.apply(rec.plan(summary()))

    edges = sorted({s.labels["le"] for f in registry.collect() for s in f.samples if s.name == P + "mos_bucket"})
    assert edges == ["+Inf", "2.0", "4.0"]
    assert value(registry, "mos_bucket", stream="inbound", le="2.0") == 1  # the reference MOS is 1.0
    # The other histograms keep their default edges.
    jitter = {s.labels["le"] for f in registry.collect() for s in f.samples if s.name == P + "jitter_seconds_bucket"}
    assert len(jitter) == len(DEFAULT_BUCKETS["jitter"]) + 1


def test_packet_loss_is_recorded_as_a_ratio_of_one() -> None:
    rec, registry = recorder()
    rec.apply(rec.plan(summary(**stream_changes(packet_loss_percentage=2.5))))

    assert value(registry, "packet_loss_ratio_sum", stream="inbound") == 0.025
    assert value(registry, "packet_loss_ratio_sum", stream="outbound") == 0.0


def test_a_stream_without_jitter_still_records_its_latency() -> None:
    data = fixture("reference_event.json")["data"]
    del data["metrics"]["inbound"]["jitter"]
    rec, registry = recorder()
    rec.apply(rec.plan(ParticipantSummary.model_validate(data)))

    assert value(registry, "jitter_seconds_count", stream="inbound") == 0
    assert value(registry, "latency_seconds_count", stream="inbound", stat="avg") == 1
    assert value(registry, "latency_seconds_sum", stream="inbound", stat="max") == 0.010


def test_two_new_tags_of_one_summary_cannot_both_take_the_last_free_place_and_the_overflow_is_reported() -> None:
    rec, registry = recorder(tag=1)
    change = rec.plan(summary(**stream_changes(tags=["silent", "high_jitter"])))

    assert change.overflow == ("tag",)
    rec.apply(change)
    assert value(registry, "tags_total", stream="inbound", tag="silent") == 1
    assert value(registry, "tags_total", stream="inbound", tag=OTHER) == 1
    assert value(registry, "tags_total", stream="inbound", tag="high_jitter") == 0


class Boom(Exception):
    pass


def test_a_failed_apply_leaves_no_series_behind_and_nothing_to_save(monkeypatch: pytest.MonkeyPatch) -> None:
    rec, registry = recorder()
    rec.apply(rec.plan(summary()))
    before = snapshot(registry)
    rec.dirty = set()  # as the durable state does: what changed since its last save
    change = rec.plan(summary(**REST_LABELS))  # a new label set: every series of it is new
    calls = [0]
    original = families.CounterSeries.inc

    def inc_then_fail(self: Any, amount: float = 1) -> None:
        calls[0] += 1
        if calls[0] == 3:
            raise Boom
        original(self, amount)

    with monkeypatch.context() as m:
        m.setattr(families.CounterSeries, "inc", inc_then_fail)
        with pytest.raises(Boom):
            rec.apply(change)

    assert snapshot(registry) == before  # no zero-valued series of the failed label set
    assert rec.dirty == set()
    # The label set can be recorded afterwards, once.
    rec.apply(change)
    assert value(registry, "summaries_total", call_type="carrier") == 1
    assert value(registry, "summaries_total") == 2


def test_failed_applies_on_an_existing_label_set_keep_the_series_earlier_summaries_made(monkeypatch: pytest.MonkeyPatch) -> None:
    rec, registry = recorder()
    rec.apply(rec.plan(summary()))
    before = snapshot(registry)
    change = rec.plan(summary(participant_sid="CP2"))
    calls = [0]
    original = families.CounterSeries.inc

    def fail_at_the_second_counter(self: Any, amount: float = 1) -> None:
        calls[0] += 1
        if calls[0] % 2 == 0:
            raise Boom
        original(self, amount)

    with monkeypatch.context() as m:
        m.setattr(families.CounterSeries, "inc", fail_at_the_second_counter)
        for _ in range(2):  # the second undo must not take the first summary's series for its own
            with pytest.raises(Boom):
                rec.apply(change)
    assert snapshot(registry) == before

    rec.dirty = set()
    rec.apply(change)
    assert value(registry, "summaries_total", **REFERENCE) == 2
    assert value(registry, "mos_count", stream="inbound") == 2
    # Every series the second summary touched is one the first made: saved under its own key.
    assert {rec.key_of(series)[0] for series in rec.dirty} >= {P + "summaries", P + "mos"}


REST_LABELS = {"call_type": "carrier", "call_direction": "outbound", "participant_region": "ie1", "country_code": "GB", "label": "customer"}


# --- restore: saved series back ---------------------------------------------------------------


def saved_rows(rec: ParticipantRecorder) -> list[tuple[str, tuple[str, ...], list[float]]]:
    """Every series of ``rec`` as the durable state saves it."""
    dirty = rec.dirty or set()
    return sorted((*rec.key_of(series), rec.saved_values(series)) for series in dirty)


def recorded_rows(*summaries: ParticipantSummary) -> tuple[list[tuple[str, tuple[str, ...], list[float]]], dict[Any, float]]:
    rec, registry = recorder()
    rec.dirty = set()
    for s in summaries:
        rec.apply(rec.plan(s))
    return saved_rows(rec), snapshot(registry)


def test_restored_series_give_back_every_sample_and_count_each_row() -> None:
    rows, expected = recorded_rows(summary(), summary(participant_sid="CP2", **REST_LABELS))
    rec, registry = recorder()

    assert rec.restore(rows) == len(rows)
    assert snapshot(registry) == expected
    assert value(registry, "mos_sum", **REFERENCE, stream="inbound") == 1.0
    assert value(registry, "jitter_seconds_sum", stream="inbound", stat="avg") == pytest.approx(2 * 0.0055)


def test_two_label_sets_with_the_same_other_labels_are_restored_each_to_its_own_series() -> None:
    rows = [
        (P + "summaries", (*COMMON, "complete", "completed"), [3.0]),
        (P + "summaries", (*OTHER_COMMON, "complete", "completed"), [5.0]),
    ]
    rec, registry = recorder()

    assert rec.restore(rows) == 2
    assert value(registry, "summaries_total", call_type="sip") == 3
    assert value(registry, "summaries_total", call_type="carrier") == 5


def test_rows_this_version_cannot_take_are_skipped_and_not_counted_and_the_rows_after_them_are_restored() -> None:
    n_mos = len(DEFAULT_BUCKETS["mos"]) + 1  # +Inf
    good_mos = [4.0, *([0] * (n_mos - 1)), 1]
    rows = [
        (P + "no_such_family", (*COMMON, "x"), [1.0]),
        (P + "summaries", (*COMMON, "complete"), [1.0]),  # one label short
        (P + "mos", (*COMMON, "outbound"), [4.0, *([0] * (n_mos - 2))]),  # one bucket fewer
        (P + "mos", (*COMMON, "outbound"), [4.0, *([0] * (n_mos - 3))]),  # two buckets fewer
        (P + "mos", (*COMMON, "outbound"), [4.0, *([0] * n_mos), 1]),  # one bucket more
        (P + "mos", (*COMMON, "inbound"), good_mos),
        (P + "summaries", (*COMMON, "complete", "completed"), [2.0]),
    ]
    rec, registry = recorder()

    assert rec.restore(rows) == 2
    assert value(registry, "mos_count", stream="inbound") == 1
    assert value(registry, "mos_sum", stream="inbound") == 4.0
    assert value(registry, "mos_bucket", stream="inbound", le="+Inf") == 1
    assert value(registry, "mos_count", stream="outbound") == 0
    assert value(registry, "summaries_total") == 2


def test_restored_label_values_take_their_places_again() -> None:
    rec, registry = recorder(tag=1)
    rec.restore([(P + "tags", (*COMMON, "inbound", "silent"), [1.0])])

    rec.apply(rec.plan(summary(**stream_changes(tags=["high_jitter"]))))

    assert value(registry, "tags_total", stream="inbound", tag="silent") == 1
    assert value(registry, "tags_total", stream="inbound", tag=OTHER) == 1


# --- unjournal: the journal's replay ----------------------------------------------------------


def test_a_journaled_change_replays_to_the_same_counters_bucketed_by_todays_buckets() -> None:
    rec, registry = recorder(buckets={"mos": (2.0, 4.0)})
    entry = (
        list(COMMON),
        [
            [P + "summaries", ["complete", "completed"], 1],
            [P + "mos", ["inbound"], 3.5],
            [P + "jitter_seconds", ["inbound", "avg"], 0.0055],
            [P + "tags", ["inbound", "silent"], 1],
        ],
    )

    change = rec.unjournal(entry)

    assert change is not None
    assert (change.common, change.overflow, change.exemplar) == (COMMON, (), None)
    assert [(family.name, others, amount) for family, others, amount in change.observations] == [
        (P + "summaries", ("complete", "completed"), 1),
        (P + "mos", ("inbound",), 3.5),
        (P + "jitter_seconds", ("inbound", "avg"), 0.0055),
        (P + "tags", ("inbound", "silent"), 1),
    ]
    assert change.details == (("processing_state", "complete"), ("call_status", "completed"), ("tag", "silent"))
    rec.apply(change)
    assert value(registry, "summaries_total", **REFERENCE, processing_state="complete", call_status="completed") == 1
    assert value(registry, "mos_bucket", stream="inbound", le="2.0") == 0
    assert value(registry, "mos_bucket", stream="inbound", le="4.0") == 1
    assert value(registry, "mos_sum", stream="inbound") == 3.5
    assert value(registry, "jitter_seconds_sum", stream="inbound", stat="avg") == 0.0055
    assert value(registry, "tags_total", stream="inbound", tag="silent") == 1


def test_a_replayed_change_keeps_its_label_values_so_a_new_one_past_the_cap_is_other() -> None:
    rec, registry = recorder(tag=1)
    change = rec.unjournal((list(COMMON), [[P + "tags", ["inbound", "silent"], 1]]))
    assert change is not None
    rec.apply(change)

    rec.apply(rec.plan(summary(**stream_changes(tags=["high_jitter"]))))

    assert value(registry, "tags_total", stream="inbound", tag="silent") == 1
    assert value(registry, "tags_total", stream="inbound", tag=OTHER) == 1


def test_observations_of_a_family_or_label_layout_this_version_does_not_have_are_left_out() -> None:
    rec, _ = recorder()
    entry = (
        list(COMMON),
        [
            [P + "no_such_family", ["inbound"], 1],
            [P + "mos", ["inbound", "avg"], 4.0],  # one label too many
            [P + "mos", [], 4.0],  # one label short
            [P + "mos", ["outbound"], 4.0],
        ],
    )

    change = rec.unjournal(entry)

    assert change is not None
    assert [(family.name, others, amount) for family, others, amount in change.observations] == [(P + "mos", ("outbound",), 4.0)]
    assert change.details == ()


def test_a_change_journaled_with_other_common_labels_is_not_replayed() -> None:
    rec, _ = recorder()

    assert rec.unjournal((list(COMMON[:-1]), [[P + "summaries", ["complete", "completed"], 1]])) is None
    assert rec.unjournal(([*COMMON, "AC1"], [[P + "summaries", ["complete", "completed"], 1]])) is None
