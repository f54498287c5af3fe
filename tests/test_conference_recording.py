"""What a Conference Summary becomes: exact values, which summaries are final, bounds and all-or-nothing."""

from __future__ import annotations

from typing import Any

import pytest
from prometheus_client import CollectorRegistry
from pydantic import ValidationError

from exporter.metrics import CONFERENCE_DEFAULT_BUCKETS
from exporter.models import CONFERENCE_SUMMARY_COMPLETE, CONFERENCE_SUMMARY_PARTIAL, CloudEvent, ConferenceSummary
from exporter.record.labels import CONFERENCE_COMMON_LABELS, OTHER, conference_label_policy
from exporter.record.recorder import Change, ConferenceRecorder
from tests.conftest import JOINLESS, fixture, sample_sum, snapshot
from tests.recording import Boom, failing_at

F = "twilio_conference_"
COMMON = {**JOINLESS, "mixer_region": "us1", "status": "completed", "end_reason": "participant_with_end_conference_on_exit_left"}


def data() -> dict[str, Any]:
    event = fixture("conference_summary_complete.json")
    result: dict[str, Any] = CloudEvent.model_validate(event).data
    return result


class Conferences:
    def __init__(self, **policy: Any) -> None:
        self.registry = CollectorRegistry()
        self.recorder = ConferenceRecorder(self.registry, conference_label_policy(**policy))

    def record(self, summary: dict[str, Any]) -> Change:
        change = self.recorder.plan(ConferenceSummary.model_validate(summary))
        self.recorder.apply(change)
        return change

    def exact(self, name: str, **labels: str) -> float:
        value = self.registry.get_sample_value(name, {**COMMON, **labels})
        assert value is not None, (name, labels)
        return value


def test_a_complete_conference_summary_is_recorded_with_its_length_size_tags_and_issues() -> None:
    conferences = Conferences()

    change = conferences.record(data())

    assert conferences.exact(F + "summaries_total", processing_state="complete") == 1
    assert conferences.exact(F + "duration_seconds_sum") == 32
    assert conferences.exact(F + "duration_seconds_bucket", le="30.0") == 0
    assert conferences.exact(F + "duration_seconds_bucket", le="60.0") == 1
    assert conferences.exact(F + "concurrent_participants_sum") == 3
    assert conferences.exact(F + "concurrent_participants_bucket", le="3.0") == 1
    assert conferences.exact(F + "concurrent_participants_bucket", le="2.0") == 0
    for tag in ("high_packet_loss", "low_mos", "participant_behavior_issues", "quality_warnings", "high_jitter", "detected_silence"):
        assert conferences.exact(F + "tags_total", tag=tag) == 1
    assert conferences.exact(F + "detected_issues_total", category="call_quality") == 3
    assert conferences.exact(F + "detected_issues_total", category="participant_behavior") == 1
    # Zero issues of a category is measured: the series exists at 0.
    assert conferences.exact(F + "detected_issues_total", category="region_configuration") == 0
    assert change.exemplar == {"conference_sid": "CF" + "0" * 31 + "3"}


def test_only_a_complete_event_whose_processing_state_is_complete_or_timeout_is_final() -> None:
    summary = ConferenceSummary.model_validate(data())
    in_progress = ConferenceSummary.model_validate({**data(), "processing_state": "in_progress"})
    timeout = ConferenceSummary.model_validate({**data(), "processing_state": "timeout"})

    assert summary.final(CONFERENCE_SUMMARY_COMPLETE) and timeout.final(CONFERENCE_SUMMARY_COMPLETE)
    assert not in_progress.final(CONFERENCE_SUMMARY_COMPLETE)
    assert not summary.final(CONFERENCE_SUMMARY_PARTIAL)
    assert summary.final() and not in_progress.final()  # REST: no event type
    # Its own kind of dedup key: the poller's conference_sid keys mean "participants done".
    assert (ConferenceSummary.KEY, summary.key) == ("conference_summary", "CF" + "0" * 31 + "3")


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("duration_seconds", -1),
        ("duration_seconds", "32"),
        ("max_concurrent_participants", 2.5),
        ("max_concurrent_participants", 10**6),
        ("detected_issues", {"call_quality": "three"}),
        ("detected_issues", {"call_quality": -1}),
        ("conference_sid", None),
    ],
)
def test_a_measured_value_that_is_not_a_plausible_number_makes_the_summary_invalid(field: str, value: Any) -> None:
    with pytest.raises(ValidationError):
        ConferenceSummary.model_validate({**data(), field: value})


def test_odd_values_in_fields_no_metric_is_made_of_never_drop_the_summary_and_labels_stay_bounded() -> None:
    conferences = Conferences(max_values={"mixer_region": 1})
    conferences.record(data())
    odd = {
        **data(),
        "conference_sid": "CF2",
        "friendly_name": {"x": 1},
        "tag_info": "none",
        "ended_by": 7,
        "recording_enabled": "yes",
        "unique_participants": "three",
        "mixer_region": "mars1",
        "end_reason": "meteor",
        "status": ["completed"],
    }

    change = conferences.record(odd)

    assert dict(zip(CONFERENCE_COMMON_LABELS, change.common, strict=True)) == {
        **JOINLESS,
        "mixer_region": OTHER,
        "status": "unknown",
        "end_reason": OTHER,
    }
    assert sorted(change.overflow) == ["end_reason", "mixer_region"]
    assert sample_sum(conferences.registry, F + "summaries_total") == 2


def test_a_failure_at_any_step_of_recording_a_conference_restores_every_sample(monkeypatch: pytest.MonkeyPatch) -> None:
    second = {**data(), "conference_sid": "CF2", "mixer_region": "ie1", "tags": ["no_concurrent_participants"], "processing_state": "timeout"}

    def warm() -> Conferences:
        conferences = Conferences()
        conferences.record(data())
        return conferences

    expected = warm()
    expected.record(second)
    counting = warm()
    with failing_at(0, monkeypatch) as taken:
        counting.record(second)
    assert taken[0] > 10

    for step in range(1, taken[0] + 1):
        conferences = warm()
        before = snapshot(conferences.registry, F)
        policy = conferences.recorder.labels
        kept_before = {name: set(label.kept) for name, label in policy.labels.items()}
        change = conferences.recorder.plan(ConferenceSummary.model_validate(second))
        with failing_at(step, monkeypatch), pytest.raises(Boom):
            conferences.recorder.apply(change)

        assert snapshot(conferences.registry, F) == before, step
        assert {name: label.kept for name, label in policy.labels.items()} == kept_before, step
        conferences.recorder.apply(change)
        assert snapshot(conferences.registry, F) == snapshot(expected.registry, F), step


def test_the_conference_families_are_not_the_participant_families() -> None:
    names = {family.name for family in Conferences().recorder.families()}

    assert names == {F + n for n in ("summaries", "duration_seconds", "concurrent_participants", "tags", "detected_issues")}


def test_custom_buckets_are_the_edges_the_conference_histograms_count_in() -> None:
    registry = CollectorRegistry()
    recorder = ConferenceRecorder(registry, conference_label_policy(), {"duration": (10.0,)})
    recorder.apply(recorder.plan(ConferenceSummary.model_validate(data())))

    assert {s.labels["le"] for f in registry.collect() for s in f.samples if s.name == F + "duration_seconds_bucket"} == {"10.0", "+Inf"}
    assert sample_sum(registry, F + "duration_seconds_bucket", le="10.0") == 0  # 32 s
    assert sample_sum(registry, F + "duration_seconds_sum") == 32
    participants = {s.labels["le"] for f in registry.collect() for s in f.samples if s.name == F + "concurrent_participants_bucket"}
    assert len(participants) == len(CONFERENCE_DEFAULT_BUCKETS["concurrent_participants"]) + 1
