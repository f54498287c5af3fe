"""parse -> dedup -> record -> commit, shared by every door (webhook, REST poller, Kinesis).

Every event ends in exactly one outcome, counted in ``twilio_insights_exporter_events_total``:
``recorded``, ``duplicate``, ``invalid`` (with a reason), ``ignored`` (a type we do not export)
or ``test`` (the Event Streams sink test).

A summary is deduplicated by its participant SID: one participant has one summary, whichever
door it came through and however often. Recording it is all or nothing
(:meth:`~exporter.recorder.Recorder.plan` then :meth:`~exporter.recorder.Recorder.apply`), and
its SID is remembered only once it is recorded, so a failure anywhere makes the door answer 5xx
and the retry records it exactly once. With a durable store, :meth:`Pipeline.deliver` returns
only after what it recorded, the SIDs and the door's checkpoint are committed together
(exporter/state.py): the door may then acknowledge.

Why one module: the path of a delivery (parse, dedup, record, commit) and the durable state's
load and snapshots must see the same recorder, window and uncommitted keys.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol

from pydantic import ValidationError

from .dedup import Window
from .logs import Throttle
from .metrics import ExporterMetrics
from .models import SUMMARY_TYPES, TEST_EVENT_TYPE, CloudEvent, ParticipantSummary
from .recorder import Change, Recorder
from .state import PARTICIPANT_SID, Commit, JournaledChange, StateStore

log = logging.getLogger(__name__)


class Outcome(StrEnum):
    """What became of one event (the ``outcome`` label)."""

    RECORDED = "recorded"
    DUPLICATE = "duplicate"
    INVALID = "invalid"
    IGNORED = "ignored"
    TEST = "test"


class Kind(StrEnum):
    """The ``type`` label: three values, whatever arrives."""

    SUMMARY = "summary"
    TEST = "test"
    OTHER = "other"


SOURCES = ("webhook", "pull", "kinesis")

# Events handled between two yields to the loop: a batch of thousands never holds the loop for
# long, and each chunk is queued for commit as it is done.
CHUNK = 64


@dataclass
class _Batch:
    """What a delivery recorded since its last commit."""

    changes: list[JournaledChange] = field(default_factory=list)
    keys: list[tuple[str, str, float]] = field(default_factory=list)
    waits: list[asyncio.Future[None]] = field(default_factory=list)


class Pipeline:
    """Takes events or summaries from any door and records each participant once."""

    def __init__(
        self,
        recorder: Recorder,
        exporter_metrics: ExporterMetrics,
        participants: Window,
        store: StateStore,
        clock: Callable[[], float] = time.time,
        snapshot_interval: float = 60.0,
        snapshot_changes: int = 200_000,
    ) -> None:
        self.recorder = recorder
        self.metrics = exporter_metrics
        self.participants = participants
        self.store = store
        self._clock = clock
        # Participant SIDs recorded but not yet committed: a duplicate of one is answered only
        # once the original is on disk, or its 2xx could promise what a crash then loses.
        self._uncommitted: dict[str, asyncio.Future[None]] = {}
        self._snapshots: asyncio.Task[None] | None = None
        self._log = Throttle()
        self._snapshot_interval = snapshot_interval
        self._snapshot_changes = snapshot_changes
        exporter_metrics.dedup_entries.labels(PARTICIPANT_SID).set_function(lambda: len(participants))
        # Pre-create the children dashboards and alerts divide by, so they exist at 0.
        for source in SOURCES:
            for kind, outcomes in (
                (Kind.SUMMARY, (Outcome.RECORDED, Outcome.DUPLICATE, Outcome.INVALID)),
                (Kind.TEST, (Outcome.TEST,)),
                (Kind.OTHER, (Outcome.IGNORED, Outcome.INVALID)),
            ):
                for outcome in outcomes:
                    exporter_metrics.events.labels(source, kind, outcome)

    # -- the doors' entry points --------------------------------------------------------------

    async def deliver(self, events: Sequence[Any], source: str, checkpoint: tuple[str, str] | None = None) -> dict[str, int]:
        """Decoded CloudEvents in; ``{outcome: count}`` out once everything recorded is committed.

        ``checkpoint`` (``(name, value)``, e.g. a Kinesis shard's sequence number) is committed
        with what these events recorded. Raises if recording or committing failed; whatever
        was recorded before the failure is committed first, so the retry finds it a duplicate.
        """
        return await self._run(events, source, checkpoint, self._accept_event)

    async def deliver_summaries(self, summaries: Sequence[ParticipantSummary | ValidationError], source: str) -> dict[str, int]:
        """Summaries validated by the door (the REST poller's), or their validation errors."""
        return await self._run(summaries, source, None, self._accept_summary_or_error)

    def checkpoint(self, name: str) -> str | None:
        """The last committed value of a door's checkpoint."""
        return self.store.checkpoints.get(name)

    # -- one delivery ---------------------------------------------------------------------------

    async def _run(self, items: Sequence[Any], source: str, checkpoint: tuple[str, str] | None, accept: Callable[..., Outcome]) -> dict[str, int]:
        outcomes: dict[str, int] = {}
        batch = _Batch()
        commits: list[asyncio.Future[None]] = []
        try:
            for start in range(0, len(items), CHUNK):
                if start:
                    await asyncio.sleep(0)
                for item in items[start : start + CHUNK]:
                    outcome = accept(item, source, batch)
                    outcomes[outcome] = outcomes.get(outcome, 0) + 1
                if start + CHUNK < len(items):
                    self._commit(batch, None, commits)
                    batch = _Batch(waits=batch.waits)
        except BaseException:
            # What was recorded before the failure reaches the disk before the 5xx is answered,
            # so the retry finds it a duplicate; the checkpoint does not move.
            self._commit(batch, None, commits)
            if commits:
                await asyncio.gather(*commits, return_exceptions=True)
            raise
        self._commit(batch, checkpoint, commits)
        waits = commits + batch.waits
        if waits:
            await asyncio.gather(*waits)
        return outcomes

    # -- durable state: load at start, snapshots while running ------------------------------

    async def open(self) -> None:
        """Open and load the state, start its writer, and snapshot it while running.

        A snapshot is taken every ``snapshot_interval`` seconds, or sooner once
        ``snapshot_changes`` summaries were journaled since the last one, and once more at
        :meth:`close` (so a clean restart replays nothing).
        """
        self.store.open()
        replayed = self.restore()
        if replayed:
            log.info("state replayed", extra={"summaries": replayed})
        self.store.start()
        if self.store.persistent:
            self._snapshots = asyncio.get_running_loop().create_task(self._snapshot_every(self._snapshot_interval, self._snapshot_changes))

    async def close(self) -> None:
        """Stop snapshotting, take the last snapshot, wait for every write and close the store."""
        task, self._snapshots = self._snapshots, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        final = self.snapshot()
        if final is not None:
            with contextlib.suppress(Exception):  # a failed store reported itself already
                await final
        await self.store.close()

    async def _snapshot_every(self, interval: float, max_changes: int) -> None:
        store = self.store
        last = time.monotonic()
        while True:
            # A check a second is cheap; the snapshot itself is one synchronous copy of the changed series.
            await asyncio.sleep(min(1.0, interval))
            if store.journaled >= max_changes or (store.journaled and time.monotonic() - last >= interval):
                last = time.monotonic()
                future = self.snapshot()
                if future is not None:
                    with contextlib.suppress(Exception):
                        await future

    def restore(self) -> int:
        """Load the durable state: participant SIDs, then saved series and the journal after them.

        Returns how many journaled summaries were replayed.
        """
        store = self.store
        store.load_window(PARTICIPANT_SID, self.participants)
        if not store.persistent:
            return 0
        loaded = store.load()
        self.recorder.dirty = set()
        self.recorder.restore(loaded.series)
        replayed = 0
        for entry in loaded.journal:
            change = self.recorder.unjournal(entry)
            if change is not None:
                self.recorder.apply(change)
                replayed += 1
        return replayed

    def snapshot(self) -> asyncio.Future[None] | None:
        """Queue the values of every series changed since the last snapshot (one synchronous copy)."""
        recorder = self.recorder
        if recorder.dirty is None or not self.store.persistent:
            return None
        dirty, recorder.dirty = recorder.dirty, set()
        rows = [(*recorder.key_of(series), recorder.saved_values(series)) for series in dirty]
        return self.store.snapshot(rows)

    def _commit(self, batch: _Batch, checkpoint: tuple[str, str] | None, commits: list[asyncio.Future[None]]) -> None:
        if not (batch.changes or batch.keys or checkpoint):
            return
        future = self.store.commit(Commit(batch.changes, batch.keys, checkpoint))
        if future is None:
            return
        commits.append(future)
        sids = [key for _, key, _ in batch.keys]
        for sid in sids:
            self._uncommitted[sid] = future

        def committed(_: asyncio.Future[None]) -> None:
            for sid in sids:
                if self._uncommitted.get(sid) is future:
                    del self._uncommitted[sid]

        future.add_done_callback(committed)

    def _accept_event(self, raw: Any, source: str, batch: _Batch) -> Outcome:
        try:
            event = CloudEvent.model_validate(raw)
        except ValidationError as exc:
            return self._invalid(source, Kind.OTHER, _envelope_reason(exc), exc)
        if event.type == TEST_EVENT_TYPE:
            return self._count(source, Kind.TEST, Outcome.TEST)
        if event.type not in SUMMARY_TYPES:
            return self._count(source, Kind.OTHER, Outcome.IGNORED)
        try:
            summary = ParticipantSummary.model_validate(event.data)
        except ValidationError as exc:
            return self._invalid(source, Kind.SUMMARY, _summary_reason(exc), exc)
        return self._accept_summary(summary, source, batch)

    def _accept_summary_or_error(self, item: ParticipantSummary | ValidationError, source: str, batch: _Batch) -> Outcome:
        if isinstance(item, ValidationError):
            return self._invalid(source, Kind.SUMMARY, _summary_reason(item), item)
        return self._accept_summary(item, source, batch)

    def _accept_summary(self, summary: ParticipantSummary, source: str, batch: _Batch) -> Outcome:
        sid = summary.participant_sid
        if sid in self.participants:
            pending = self._uncommitted.get(sid)
            if pending is not None:
                batch.waits.append(pending)
            return self._count(source, Kind.SUMMARY, Outcome.DUPLICATE)
        change = self.recorder.plan(summary)  # changes nothing
        self.recorder.apply(change)  # all or nothing
        now = self._clock()
        self.participants.add(sid, at=now)
        if self.store.persistent:
            batch.changes.append(journaled(change))
            batch.keys.append((PARTICIPANT_SID, sid, now))
        for label in change.overflow:
            self.metrics.label_overflow.labels(label).inc()
        self.metrics.last_summary.set(now)
        return self._count(source, Kind.SUMMARY, Outcome.RECORDED)

    def _count(self, source: str, kind: Kind, outcome: Outcome) -> Outcome:
        self.metrics.events.labels(source, kind, outcome).inc()
        return outcome

    def _invalid(self, source: str, kind: Kind, reason: str, exc: ValidationError) -> Outcome:
        self.metrics.invalid_events.labels(source, reason).inc()
        first = exc.errors(include_url=False, include_input=False)[0]
        # The location and message only: field values may hold phone numbers. At most a line per
        # source and reason a minute: a sender of invalid events must not be able to fill the disk.
        self._log.warning(
            log, f"{source}:{reason}", "invalid event", source=source, reason=reason, field=".".join(map(str, first["loc"])), error=first["msg"]
        )
        return self._count(source, kind, Outcome.INVALID)


class Door(Protocol):
    """A door that reads by itself (the REST poller, the Kinesis consumer): started, run, stopped."""

    async def start(self) -> None: ...

    async def run(self) -> None: ...

    async def stop(self) -> None: ...


def background_context(door: Door, name: str) -> Callable[[Any], AsyncIterator[None]]:
    """A ``cleanup_ctx`` running ``door`` as a background task while the application runs.

    Added after the state's context, so the state is loaded before the door's first read and the
    door's last delivery is committed before the state closes. Startup does not wait for a read:
    a slow or failing source never delays readiness.
    """

    async def context(_: Any) -> AsyncIterator[None]:
        await door.start()
        task = asyncio.create_task(door.run(), name=name)
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            await door.stop()

    return context


def state_context(pipeline: Pipeline) -> Callable[[Any], AsyncIterator[None]]:
    """A ``cleanup_ctx`` that opens the pipeline's state before the first delivery and closes it after the last."""

    async def context(_: Any) -> AsyncIterator[None]:
        await pipeline.open()
        try:
            yield
        finally:
            await pipeline.close()

    return context


def journaled(change: Change) -> JournaledChange:
    """A change as the journal keeps it: names and label values, no objects, no exemplar."""
    return (change.common, [(family.name, others, value) for family, others, value in change.observations])


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
