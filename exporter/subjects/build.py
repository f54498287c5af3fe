"""The subjects the exporter records, built from the configuration: each subject's model, key, window, event types, label policy and recorder.

Beside the list (exporter/subjects/__init__.py) rather than in it, because the configuration
reads the list (``--pull.summaries`` takes the subjects' names) and this reads the configuration.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from prometheus_client import CollectorRegistry

from exporter.config import Config
from exporter.dedup import Window
from exporter.models import (
    CALL_SUMMARY_COMPLETE,
    CALL_SUMMARY_PARTIAL,
    CALL_SUMMARY_PREDICTED,
    CONFERENCE_SUMMARY_COMPLETE,
    CONFERENCE_SUMMARY_PARTIAL,
    SUMMARY_TYPES,
    CallSummary,
    ConferenceSummary,
    ParticipantSummary,
)
from exporter.subjects import Subject, Subjects, call, conference, participant
from exporter.subjects.call import call_label_policy
from exporter.subjects.conference import conference_label_policy


def build_subjects(config: Config, registry: CollectorRegistry, clock: Callable[[], float] = time.time) -> Subjects:
    """The subjects the exporter records, built from the configuration against ``registry``."""
    settings = config.settings
    dedup = settings.dedup
    policy = participant.label_policy(
        settings.labels.common_labels(), settings.labels.caps(), settings.labels.allowlists(), settings.labels.max_label_sets
    )
    participants = Subject(
        name=participant.NAME,
        model=ParticipantSummary,
        key_field="participant_sid",
        window=Window(dedup.window.total_seconds(), dedup.max_entries, clock=clock),
        recorder=participant.ParticipantRecorder(registry, policy, settings.buckets.resolved()),
        final_types=SUMMARY_TYPES,
    )
    # Calls and conferences: their own windows (a key of each subject's own in the state file, so
    # the poller's conference_sid keys, "participants done", are another thing), label policies
    # with their own caps and label-set budgets and families (exporter/subjects/call.py, conference.py).
    calls = Subject(
        name=call.NAME,
        model=CallSummary,
        key_field="call_sid",
        window=Window(dedup.window.total_seconds(), dedup.max_entries, clock=clock),
        recorder=call.CallRecorder(
            registry, call_label_policy(settings.call_labels.caps(), settings.call_labels.allowlists(), settings.call_labels.max_label_sets)
        ),
        final_types=frozenset({CALL_SUMMARY_COMPLETE}),
        not_final_types=frozenset({CALL_SUMMARY_PARTIAL, CALL_SUMMARY_PREDICTED}),
    )
    conferences = Subject(
        name=conference.NAME,
        model=ConferenceSummary,
        key_field="conference_sid",
        window=Window(dedup.window.total_seconds(), dedup.max_entries, clock=clock),
        recorder=conference.ConferenceRecorder(
            registry,
            conference_label_policy(
                settings.conference_labels.caps(), settings.conference_labels.allowlists(), settings.conference_labels.max_label_sets
            ),
        ),
        final_types=frozenset({CONFERENCE_SUMMARY_COMPLETE}),
        not_final_types=frozenset({CONFERENCE_SUMMARY_PARTIAL}),
        is_final=lambda summary: summary.final(),
    )
    return Subjects([participants, calls, conferences])
