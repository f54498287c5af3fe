"""Summary subjects: what the exporter records, one entry per kind of summary Twilio sends.

A subject bundles everything the pipeline needs to record one kind of summary: its model, the
field it is deduplicated by and its own dedup window, its recorder (with its label policy and
budget, and its families), and which CloudEvent types carry it, final (recorded) or not
(acknowledged, not recorded: the final one follows). The pipeline dispatches each event by its
type through :class:`Subjects`; the doors never do. A new kind of summary is a new entry of
:func:`exporter.subjects.build.build_subjects`, nothing else: the poller hands the REST items of a named subject to the
same ``Pipeline.deliver``.

"Subject", because "kind" already names the ``type`` label, the state's key kinds and the Kinesis
error kinds. A subject's name is what the state file writes on each of its rows (exporter/state/store.py).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from pydantic import BaseModel

from exporter.dedup import Window
from exporter.record.labels import LabelPolicy
from exporter.record.recorder import Change, Family, Series
from exporter.state.store import JournaledChange
from exporter.subjects import call, conference, participant

# The one list of subjects: every other list (the join's kinds, --pull.summaries, the
# no-summaries alert, the bench's kinds, the docs' tables) is derived from it.
MODULES = (participant, call, conference)
NAMES: tuple[str, ...] = tuple(module.NAME for module in MODULES)
# Each subject's name and the family counting its recorded summaries.
SUMMARIES: dict[str, str] = {module.NAME: module.SUMMARIES for module in MODULES}
PARTICIPANT, CALL, CONFERENCE = participant.NAME, call.NAME, conference.NAME


def _always_final(_: Any) -> bool:
    return True


class SummaryRecorder(Protocol):
    """What the pipeline and the durable state use of a subject's recorder (exporter/record/recorder.py)."""

    labels: LabelPolicy
    dirty: set[Series] | None

    def families(self) -> list[Family]: ...

    def plan(self, summary: Any, joined: Mapping[str, str | None] | None = None) -> Change: ...

    def apply(self, change: Change) -> None: ...

    def key_of(self, series: Series) -> tuple[str, tuple[str, ...]]: ...

    def saved_values(self, series: Series) -> list[float]: ...

    def restore(self, rows: Iterable[tuple[str, tuple[str, ...], list[float]]]) -> int: ...

    def unjournal(self, entry: Any) -> Change | None: ...


@dataclass(frozen=True, eq=False)
class Subject:
    """One kind of summary and everything recording it takes."""

    name: str
    model: type[BaseModel]
    # The field a summary is deduplicated by: its value is the key remembered in ``window``, a
    # summary without it is invalid (``missing_<key_field>``), and it names the dedup_entries gauge.
    key_field: str
    window: Window
    recorder: SummaryRecorder
    # CloudEvent types carrying this subject: final ones are recorded, the others acknowledged only.
    final_types: frozenset[str]
    not_final_types: frozenset[str] = frozenset()
    # Whether a summary of a final type is final itself: a conference's ``.complete`` event may
    # still say ``in_progress`` (acknowledged, not recorded: the final one or the REST pull follows).
    is_final: Callable[[Any], bool] = _always_final

    def key(self, summary: BaseModel) -> str:
        """The summary's dedup key (validated present and non-empty by the model)."""
        value: str = getattr(summary, self.key_field)
        return value

    def journaled(self, change: Change) -> tuple[str, JournaledChange]:
        """A change as the journal keeps it: the subject, then names and label values (no objects, no exemplar)."""
        return self.name, (change.common, [(family.name, others, value) for family, others, value in change.observations])


class Subjects:
    """Every subject, by name and by the CloudEvent types that carry it."""

    def __init__(self, subjects: Iterable[Subject]) -> None:
        self._by_name: dict[str, Subject] = {}
        self._by_type: dict[str, tuple[Subject, bool]] = {}
        for subject in subjects:
            if subject.name in self._by_name:
                raise ValueError(f"two subjects are called {subject.name!r}")
            self._by_name[subject.name] = subject
            for type_, final in [*((t, True) for t in subject.final_types), *((t, False) for t in subject.not_final_types)]:
                if type_ in self._by_type:
                    raise ValueError(f"event type {type_!r} carries two subjects")
                self._by_type[type_] = (subject, final)

    def __iter__(self) -> Iterator[Subject]:
        return iter(self._by_name.values())

    def __getitem__(self, name: str) -> Subject:
        return self._by_name[name]

    def get(self, name: str) -> Subject | None:
        return self._by_name.get(name)

    def carried_by(self, event_type: str) -> tuple[Subject, bool] | None:
        """The subject an event type carries and whether the event is final; None for a type no subject has."""
        return self._by_type.get(event_type)

    def families(self) -> list[Family]:
        """Every subject's families, in exposition order (for the /metrics handler)."""
        return [family for subject in self for family in subject.recorder.families()]
