"""verify -> parse -> dedup -> record, shared by the webhook (push) and the REST poller (pull).

Every event ends in exactly one outcome, counted in ``twilio_insights_exporter_events_total``:
``recorded``, ``duplicate``, ``invalid`` (with a reason), ``ignored`` (a type we do not export)
or ``test`` (the Event Streams sink test). Nothing is remembered as seen until it has been
recorded, so a failure between the two makes Twilio retry and the retry records it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from pydantic import ValidationError

from . import metrics as names
from .dedup import Window
from .metrics import ExporterMetrics
from .models import SUMMARY_TYPES, TEST_EVENT_TYPE, CloudEvent, ParticipantSummary
from .recorder import Recorder

log = logging.getLogger(__name__)

# The `type` label: three values, whatever arrives.
SUMMARY = "summary"
TEST = "test"
OTHER = "other"


class Pipeline:
    """Takes events or summaries from either path and records each participant once."""

    def __init__(
        self,
        recorder: Recorder,
        exporter_metrics: ExporterMetrics,
        event_ids: Window,
        participants: Window,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.recorder = recorder
        self.metrics = exporter_metrics
        self.event_ids = event_ids
        self.participants = participants
        self._clock = clock
        exporter_metrics.dedup_entries.labels("event_id").set_function(lambda: len(event_ids))
        exporter_metrics.dedup_entries.labels("participant_sid").set_function(lambda: len(participants))
        # Pre-create the children dashboards and alerts divide by, so they exist at 0.
        for source in ("webhook", "pull"):
            for kind, outcomes in (
                (SUMMARY, (names.RECORDED, names.DUPLICATE, names.INVALID)),
                (TEST, (names.TEST,)),
                (OTHER, (names.IGNORED, names.INVALID)),
            ):
                for outcome in outcomes:
                    exporter_metrics.events.labels(source, kind, outcome)

    def accept_event(self, raw: Any, source: str) -> str:
        """One CloudEvent (a decoded JSON value) in; its outcome out."""
        try:
            event = CloudEvent.model_validate(raw)
        except ValidationError as exc:
            return self._invalid(source, OTHER, _envelope_reason(exc), exc)
        if event.type == TEST_EVENT_TYPE:
            return self._count(source, TEST, names.TEST)
        if event.type not in SUMMARY_TYPES:
            return self._count(source, OTHER, names.IGNORED)
        if event.id in self.event_ids:
            return self._count(source, SUMMARY, names.DUPLICATE)
        try:
            summary = ParticipantSummary.model_validate(event.data)
        except ValidationError as exc:
            return self._invalid(source, SUMMARY, _summary_reason(exc), exc)
        return self.accept_summary(summary, source, event_id=event.id)

    def accept_summary(self, summary: ParticipantSummary, source: str, event_id: str | None = None) -> str:
        """A validated summary in; recorded unless its delivery or its participant was seen."""
        if summary.participant_sid in self.participants:
            if event_id is not None:  # so the next retry of this delivery stops at the id check
                self.event_ids.add(event_id)
            return self._count(source, SUMMARY, names.DUPLICATE)
        self.recorder.record(summary)
        self.participants.add(summary.participant_sid)
        if event_id is not None:
            self.event_ids.add(event_id)
        self.metrics.last_summary.set(self._clock())
        return self._count(source, SUMMARY, names.RECORDED)

    def reject_summary(self, exc: ValidationError, source: str) -> str:
        """A summary that failed validation without an envelope around it (the REST poller's): counted, not recorded."""
        return self._invalid(source, SUMMARY, _summary_reason(exc), exc)

    def _count(self, source: str, kind: str, outcome: str) -> str:
        self.metrics.events.labels(source, kind, outcome).inc()
        return outcome

    def _invalid(self, source: str, kind: str, reason: str, exc: ValidationError) -> str:
        self.metrics.invalid_events.labels(source, reason).inc()
        first = exc.errors(include_url=False, include_input=False)[0]
        # The location and message only: field values may hold phone numbers.
        log.warning("invalid event", extra={"source": source, "reason": reason, "field": ".".join(map(str, first["loc"])), "error": first["msg"]})
        return self._count(source, kind, names.INVALID)


def _envelope_reason(exc: ValidationError) -> str:
    errors = exc.errors(include_url=False, include_input=False)
    if errors[0]["type"] == "model_type":
        return "not_an_object"
    for error in errors:
        if error["loc"][:1] == ("data",):
            return "data_not_json"
    for error in errors:
        if error["loc"][:1] in (("id",), ("type",)):
            return f"missing_{error['loc'][0]}" if error["type"] == "missing" else f"bad_{error['loc'][0]}"
    return "bad_envelope"


def _summary_reason(exc: ValidationError) -> str:
    errors = exc.errors(include_url=False, include_input=False)
    if errors[0]["type"] == "model_type":
        return "data_not_an_object"
    if any(error["loc"] == ("participant_sid",) for error in errors):
        return "missing_participant_sid"
    return "bad_field"
