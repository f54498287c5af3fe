"""What the call and the conference recorders share, each test run for both subjects: all or nothing,
histogram edges an operator chooses, and implausible numbers that make a summary invalid.

What each subject records, value for value, is in tests/test_call_recording.py and
tests/test_conference_recording.py; the harness is tests/recording.py.
"""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from exporter.subjects.call import CALL_DEFAULT_BUCKETS
from exporter.subjects.conference import CONFERENCE_DEFAULT_BUCKETS
from tests.recording import CALL, CONFERENCE, Boom, Recording, Subject, failing_at


def warm(subject: Subject) -> Recording:
    """A recorder that has already recorded the realistic summary: a failure must then put values
    back, not merely drop new series."""
    recording = Recording(subject)
    recording.record(subject.realistic())
    return recording


@pytest.mark.parametrize(
    ("subject", "at_least"),
    [pytest.param(CALL, 30, id="call"), pytest.param(CONFERENCE, 10, id="conference")],
)
def test_a_failure_at_any_step_of_recording_restores_every_sample_and_label(subject: Subject, at_least: int, monkeypatch: pytest.MonkeyPatch) -> None:
    clean = warm(subject)
    clean.record(subject.another())
    counting = warm(subject)
    with failing_at(0, monkeypatch) as taken:
        counting.record(subject.another())
    steps = taken[0]
    assert steps > at_least

    for step in range(1, steps + 1):
        recording = warm(subject)
        before, labels_before = recording.snapshot(), recording.policy_state()
        change = recording.plan(subject.another())
        with failing_at(step, monkeypatch), pytest.raises(Boom):
            recording.recorder.apply(change)

        assert recording.snapshot() == before, step
        assert recording.policy_state() == labels_before, step
        recording.recorder.apply(change)  # the retry
        assert recording.value(subject.prefix + "summaries_total") == 2, step
        assert recording.snapshot() == clean.snapshot(), step


@pytest.mark.parametrize(
    ("subject", "buckets", "histogram", "edges", "expected", "untouched", "default_edges"),
    [
        pytest.param(
            CALL,
            {"mos": (2.0, 4.0)},
            "mos",
            {"2.0", "4.0", "+Inf"},
            # MOS 4.43 and 4.33: past 4.0.
            {("mos_bucket", "4.0"): 0, ("mos_bucket", "+Inf"): 2},
            "rtt_seconds",
            CALL_DEFAULT_BUCKETS["rtt"],
            id="call",
        ),
        pytest.param(
            CONFERENCE,
            {"duration": (10.0,)},
            "duration_seconds",
            {"10.0", "+Inf"},
            # 32 s.
            {("duration_seconds_bucket", "10.0"): 0, ("duration_seconds_sum", None): 32},
            "concurrent_participants",
            CONFERENCE_DEFAULT_BUCKETS["concurrent_participants"],
            id="conference",
        ),
    ],
)
def test_custom_buckets_are_the_edges_the_histograms_count_in(
    subject: Subject,
    buckets: dict[str, tuple[float, ...]],
    histogram: str,
    edges: set[str],
    expected: dict[tuple[str, str | None], float],
    untouched: str,
    default_edges: tuple[float, ...],
) -> None:
    recording = Recording(subject, buckets)
    recording.record(subject.realistic())

    def les(family: str) -> set[str]:
        return {s.labels["le"] for f in recording.registry.collect() for s in f.samples if s.name == subject.prefix + family + "_bucket"}

    assert les(histogram) == edges
    for (name, le), value in expected.items():
        assert recording.value(subject.prefix + name, **({"le": le} if le else {})) == value, (name, le)
    # The other histograms keep their default edges.
    assert len(les(untouched)) == len(default_edges) + 1


@pytest.mark.parametrize(
    ("subject", "where", "value"),
    [
        pytest.param(CALL, where, value, id=f"call-{'.'.join(where)}={value!r}")
        for where, value in [
            (("sdk_edge", "metrics", "inbound", "mos", "avg"), "4.43"),
            (("sdk_edge", "metrics", "inbound", "mos", "min"), True),
            (("sdk_edge", "metrics", "inbound", "mos", "avg"), 5.5),
            (("sdk_edge", "metrics", "inbound", "packets_loss_percentage"), 100.5),
            (("carrier_edge", "metrics", "outbound", "jitter", "max"), -1.0),
            (("sdk_edge", "metrics", "inbound", "rtt", "avg"), "fast"),
            (("sdk_edge", "metrics", "inbound", "packets_lost"), -1),
            (("sdk_edge", "metrics", "inbound", "packets_received"), 1.5),
            (("properties", "pdd_ms"), -1),
            (("properties", "queue_time"), "30"),
            (("connect_duration",), -5),
            (("carrier_edge", "metrics"), "broken"),
            (("call_sid",), ""),
        ]
    ]
    + [
        pytest.param(CONFERENCE, (field,), value, id=f"conference-{field}={value!r}")
        for field, value in [
            ("duration_seconds", -1),
            ("duration_seconds", "32"),
            ("max_concurrent_participants", 2.5),
            ("max_concurrent_participants", 10**6),
            ("detected_issues", {"call_quality": "three"}),
            ("detected_issues", {"call_quality": -1}),
            ("conference_sid", None),
        ]
    ],
)
def test_a_measured_value_that_is_not_a_plausible_number_makes_the_summary_invalid(subject: Subject, where: tuple[str, ...], value: Any) -> None:
    data = subject.realistic()
    target = data
    for key in where[:-1]:
        target = target[key]
    target[where[-1]] = value

    with pytest.raises(ValidationError):
        subject.model.model_validate(data)
