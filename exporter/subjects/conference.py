"""The conference subject: Conference Summaries, ``twilio_conference_*`` (not ``_participant_``): its families and buckets, and its plan."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from prometheus_client import CollectorRegistry

from exporter.models import ConferenceSummary
from exporter.record.families import CounterFamily, HistogramFamily
from exporter.record.labels import LabelPolicy
from exporter.record.recorder import Change, Draft, Observation, SummaryRecorder, distinct, sid_exemplar
from exporter.subjects.common import JOIN_LABEL_SETS, JOIN_LABELS, JOIN_MAX_VALUES
from exporter.subjects.thresholds import CALL_DURATION_BUCKETS, CONCURRENT_PARTICIPANTS_BUCKETS

NAME = "conference"
PREFIX = "twilio_conference"

CONFERENCE_SUMMARIES = f"{PREFIX}_summaries"
SUMMARIES = CONFERENCE_SUMMARIES  # the family that counts this subject's summaries
CONFERENCE_DURATION = f"{PREFIX}_duration_seconds"
CONFERENCE_CONCURRENT = f"{PREFIX}_concurrent_participants"
CONFERENCE_TAGS = f"{PREFIX}_tags"
CONFERENCE_ISSUES = f"{PREFIX}_detected_issues"


CONFERENCE_DEFAULT_BUCKETS = {
    "duration": CALL_DURATION_BUCKETS,
    "concurrent_participants": CONCURRENT_PARTICIPANTS_BUCKETS,
}


# ---------------------------------------------------------------------------------------------
# Conference Summaries (twilio_conference_* without participant_). The common labels say where
# the conference mixed, how it ended and why: all three are documented vocabularies.
# ---------------------------------------------------------------------------------------------
CONFERENCE_COMMON_LABELS = (*JOIN_LABELS, "mixer_region", "status", "end_reason")

CONFERENCE_ALLOWLISTS = {
    "status": frozenset({"in_progress", "not_started", "completed", "summary_timeout"}),
    "end_reason": frozenset(
        {
            "last_participant_left",
            "conference_ended_via_api",
            "participant_with_end_conference_on_exit_left",
            "last_participant_kicked",
            "participant_with_end_conference_on_exit_kicked",
        }
    ),
    "processing_state": frozenset({"complete", "in_progress", "timeout"}),
    "category": frozenset({"call_quality", "region_configuration", "participant_behavior"}),
}

# mixer_region: nine documented regions, a cap rather than a list so a new region shows by name;
# tag: the documented twelve plus headroom (the list is open).
CONFERENCE_MAX_VALUES = {
    **{name: len(values) for name, values in CONFERENCE_ALLOWLISTS.items()},
    "mixer_region": 20,
    "tag": 30,
    **JOIN_MAX_VALUES,
}

# Without the join, at most (20 + 2) x (4 + 2) x (5 + 2) = 924 combinations exist; 300 sets bound
# them (docs/taskrouter.md); with it, one more set per (queue, team) pair of a 50 x 20 centre.
CONFERENCE_MAX_LABEL_SETS = 300 + JOIN_LABEL_SETS


def conference_label_policy(
    max_values: Mapping[str, int] | None = None,
    allowlists: Mapping[str, frozenset[str]] | None = None,
    max_label_sets: int = CONFERENCE_MAX_LABEL_SETS,
) -> LabelPolicy:
    """The bounded labels of the ``twilio_conference_*`` conference-summary families."""
    return LabelPolicy(
        CONFERENCE_COMMON_LABELS,
        max_values,
        allowlists,
        max_label_sets=max_label_sets,
        defaults=CONFERENCE_MAX_VALUES,
        default_allowlists=CONFERENCE_ALLOWLISTS,
    )


@dataclass(frozen=True, slots=True)
class ConferenceMetrics:
    """What Twilio summarised about a whole conference."""

    summaries: CounterFamily
    duration: HistogramFamily
    concurrent_participants: HistogramFamily
    tags: CounterFamily
    detected_issues: CounterFamily


def build_conference_metrics(
    registry: CollectorRegistry, common_labels: tuple[str, ...], buckets: dict[str, tuple[float, ...]] | None = None
) -> ConferenceMetrics:
    """Create the twilio_conference_* conference-summary families with ``common_labels`` first."""
    b = {**CONFERENCE_DEFAULT_BUCKETS, **(buckets or {})}
    common = list(common_labels)
    return ConferenceMetrics(
        summaries=CounterFamily(
            CONFERENCE_SUMMARIES, "Conference summaries recorded, each conference exactly once.", [*common, "processing_state"], registry
        ),
        duration=HistogramFamily(CONFERENCE_DURATION, "How long a conference lasted.", common, registry, buckets=b["duration"]),
        concurrent_participants=HistogramFamily(
            CONFERENCE_CONCURRENT, "Most participants a conference had at once.", common, registry, buckets=b["concurrent_participants"]
        ),
        tags=CounterFamily(CONFERENCE_TAGS, "Voice Insights tags of conferences.", [*common, "tag"], registry),
        detected_issues=CounterFamily(
            CONFERENCE_ISSUES, "Issues Voice Insights detected in conferences, by category.", [*common, "category"], registry
        ),
    )


class ConferenceRecorder(SummaryRecorder[ConferenceMetrics]):
    """Records final Conference Summaries into the ``twilio_conference_*`` families (labels: :func:`conference_label_policy`)."""

    def __init__(self, registry: CollectorRegistry, labels: LabelPolicy, buckets: Mapping[str, tuple[float, ...]] | None = None) -> None:
        super().__init__(labels, build_conference_metrics(registry, labels.common_names, dict(buckets or {})))

    def plan(self, summary: ConferenceSummary, joined: Mapping[str, str | None] | None = None) -> Change:
        """What recording ``summary`` would add. Changes nothing."""
        m = self.metrics
        draft = Draft(self.labels)
        common = draft.common({**(joined or {}), "mixer_region": summary.mixer_region, "status": summary.status, "end_reason": summary.end_reason})
        obs: list[Observation] = [(m.summaries, (draft.detail("processing_state", summary.processing_state),), 1)]
        if summary.duration_seconds is not None:
            obs.append((m.duration, (), summary.duration_seconds))
        if summary.max_concurrent_participants is not None:
            obs.append((m.concurrent_participants, (), summary.max_concurrent_participants))
        for tag in distinct(draft.detail, "tag", summary.tags):
            obs.append((m.tags, (tag,), 1))
        # A zero is measured ("no issue of this category"), so it is recorded: the series exists at 0.
        for category, count in summary.issue_counts():
            obs.append((m.detected_issues, (draft.detail("category", category),), count))
        return draft.change(common, obs, sid_exemplar("conference_sid", summary.conference_sid))
