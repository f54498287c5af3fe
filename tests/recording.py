"""The recording tests' harness: a recorder of the call or the conference subject on a fresh registry
(:class:`Recording`), the realistic summaries of the facts files, and a failure forced at any one
step of a recording (:func:`failing_at`, exporter/record/families.py)."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from exporter.models import CallSummary, CloudEvent, ConferenceSummary
from exporter.record import families
from exporter.record.labels import LabelPolicy
from exporter.record.recorder import Change
from exporter.subjects.call import CallRecorder, call_label_policy
from exporter.subjects.conference import ConferenceRecorder, conference_label_policy
from tests.conftest import JOINLESS, fixture, sample_sum, snapshot


class Boom(Exception):
    """The failure :func:`failing_at` forces."""


@contextmanager
def failing_at(step: int, monkeypatch: pytest.MonkeyPatch) -> Iterator[list[int]]:
    """Make the ``step``-th recording step (create a series, observe, inc) raise :class:`Boom`; yields
    the count of steps taken (``step`` 0 fails none: it counts them)."""
    taken = [0]

    def wrap(original: Any) -> Any:
        def step_or_fail(*args: Any, **kwargs: Any) -> Any:
            taken[0] += 1
            if taken[0] == step:
                raise Boom(f"forced failure at step {step}")
            return original(*args, **kwargs)

        return step_or_fail

    with monkeypatch.context() as m:
        m.setattr(families.HistogramSeries, "observe", wrap(families.HistogramSeries.observe))
        m.setattr(families.CounterSeries, "inc", wrap(families.CounterSeries.inc))
        m.setattr(families._Family, "labels", wrap(families._Family.labels))
        yield taken


# --- one harness for the call and the conference recorders ------------------------------------


@dataclass(frozen=True)
class Subject:
    """What a recording test needs of one kind of summary: how to build its recorder, the facts
    file's realistic summary and the common labels it is recorded with, and another summary on new
    label values (so that a failure while recording it has series and values to undo)."""

    name: str
    prefix: str
    model: type[CallSummary] | type[ConferenceSummary]
    recorder: type[CallRecorder] | type[ConferenceRecorder]
    label_policy: Callable[..., LabelPolicy]
    common: dict[str, str]
    realistic: Callable[[], dict[str, Any]]
    another: Callable[[], dict[str, Any]]


class Recording:
    """A recorder of ``subject`` on a fresh registry, with exact-value readers that fail on unknown names."""

    def __init__(self, subject: Subject, buckets: Mapping[str, tuple[float, ...]] | None = None, **policy: Any) -> None:
        self.subject = subject
        self.registry = CollectorRegistry()
        self.recorder = subject.recorder(self.registry, subject.label_policy(**policy), buckets)

    def plan(self, data: dict[str, Any]) -> Change:
        return self.recorder.plan(self.subject.model.model_validate(data))  # type: ignore[arg-type]  # the model matches its recorder

    def record(self, data: dict[str, Any]) -> Change:
        change = self.plan(data)
        self.recorder.apply(change)
        return change

    def value(self, name: str, **labels: str) -> float:
        return sample_sum(self.registry, name, **labels)

    def exact(self, name: str, **labels: str) -> float:
        """The one sample of ``name`` with exactly the realistic summary's common labels and ``labels``."""
        value = self.registry.get_sample_value(name, {**self.subject.common, **labels})
        assert value is not None, (name, labels)
        return value

    def snapshot(self) -> dict[tuple[str, tuple[Any, ...]], float]:
        return snapshot(self.registry, self.subject.prefix)

    def policy_state(self) -> tuple[Any, ...]:
        """The label policy's bookkeeping: the label sets it knows and the values each label kept."""
        policy = self.recorder.labels
        return (frozenset(policy.label_sets), {name: frozenset(label.kept) for name, label in policy.labels.items()})


# The common labels of the realistic call (tests/fixtures/call_summary_complete.json): an outbound
# API call, so the far end is the callee; the media region comes from the carrier edge (the
# top-level properties name none) and no edge names its location.
REALISTIC_CALL = {
    **JOINLESS,
    "call_type": "carrier",
    "call_status": "completed",
    "direction": "outbound_api",
    "media_region": "us1",
    "edge_location": "unknown",
    "country_code": "US",
    "carrier": "T-Mobile USA, Inc.",
    "connection": "mobile",
}
# The common labels of the realistic conference (tests/fixtures/conference_summary_complete.json).
REALISTIC_CONFERENCE = {**JOINLESS, "mixer_region": "us1", "status": "completed", "end_reason": "participant_with_end_conference_on_exit_left"}


def realistic_call() -> dict[str, Any]:
    data: dict[str, Any] = fixture("call_summary_complete.json")["data"]
    return data


def tagged_inbound_call() -> dict[str, Any]:
    """Another call, on new label values and a new edge, so a failure has series and values to undo."""
    data = {**realistic_call(), "call_sid": "CA9", "tags": ["high_jitter"], "answered_by": "human"}
    data["properties"] = {**data["properties"], "direction": "inbound", "queue_time": 1500}
    data["from"] = {"carrier": "Vodafone", "connection": "mobile", "country_code": "GB"}
    data["client_edge"] = {"metrics": {"inbound": {"codec_name": "PCMU", "packets_received": 50, "jitter": {"avg": 1.0}}}}
    return data


def realistic_conference() -> dict[str, Any]:
    result: dict[str, Any] = CloudEvent.model_validate(fixture("conference_summary_complete.json")).data
    return result


def timed_out_conference() -> dict[str, Any]:
    """Another conference, on a new region and tag, timed out."""
    return {
        **realistic_conference(),
        "conference_sid": "CF2",
        "mixer_region": "ie1",
        "tags": ["no_concurrent_participants"],
        "processing_state": "timeout",
    }


CALL = Subject("call", "twilio_call_", CallSummary, CallRecorder, call_label_policy, REALISTIC_CALL, realistic_call, tagged_inbound_call)
CONFERENCE = Subject(
    "conference",
    "twilio_conference_",
    ConferenceSummary,
    ConferenceRecorder,
    conference_label_policy,
    REALISTIC_CONFERENCE,
    realistic_conference,
    timed_out_conference,
)
