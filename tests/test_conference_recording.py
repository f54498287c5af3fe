"""What a Conference Summary becomes: exact values, which summaries are final, bounds.

All or nothing, custom buckets and implausible numbers: tests/test_summary_recording.py, for calls too.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry

from exporter.config import load_config
from exporter.models import CONFERENCE_SUMMARY_COMPLETE, CONFERENCE_SUMMARY_PARTIAL, ConferenceSummary
from exporter.record.labels import OTHER
from exporter.subjects.build import build_subjects
from exporter.subjects.conference import CONFERENCE_COMMON_LABELS
from tests.conftest import JOINLESS, sample_sum
from tests.recording import CONFERENCE, Recording, realistic_conference

F = "twilio_conference_"


def test_a_complete_conference_summary_is_recorded_with_its_length_size_tags_and_issues() -> None:
    conferences = Recording(CONFERENCE)

    change = conferences.record(realistic_conference())

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
    summary = ConferenceSummary.model_validate(realistic_conference())
    in_progress = ConferenceSummary.model_validate({**realistic_conference(), "processing_state": "in_progress"})
    timeout = ConferenceSummary.model_validate({**realistic_conference(), "processing_state": "timeout"})

    subjects = build_subjects(load_config([]), CollectorRegistry())
    conference, complete_is_final = subjects.carried_by(CONFERENCE_SUMMARY_COMPLETE) or (None, False)
    assert conference is not None and complete_is_final
    assert conference.is_final(summary) and conference.is_final(timeout)
    assert not conference.is_final(in_progress)
    assert subjects.carried_by(CONFERENCE_SUMMARY_PARTIAL) == (conference, False)
    assert summary.final() and not in_progress.final()  # REST: no event type
    assert (conference.key_field, conference.key(summary)) == ("conference_sid", "CF" + "0" * 31 + "3")


def test_odd_values_in_fields_no_metric_is_made_of_never_drop_the_summary_and_labels_stay_bounded() -> None:
    conferences = Recording(CONFERENCE, max_values={"mixer_region": 1})
    conferences.record(realistic_conference())
    odd = {
        **realistic_conference(),
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


def test_the_conference_families_are_not_the_participant_families() -> None:
    names = {family.name for family in Recording(CONFERENCE).recorder.families()}

    assert names == {F + n for n in ("summaries", "duration_seconds", "concurrent_participants", "tags", "detected_issues")}
