"""parse -> dispatch -> dedup -> record -> commit, shared by every door (webhook, REST poller, Kinesis).

Every door hands raw items to :meth:`Pipeline.deliver`: CloudEvents (the webhook's decoded
objects, Kinesis records' bytes) or the REST items of a named summary subject. Each is parsed by
exporter/parse.py, dispatched by its CloudEvent type to its summary subject (exporter/subjects/__init__.py)
and ends in exactly one outcome, counted here and nowhere else in
``twilio_insights_exporter_events_total`` (the vocabulary is in exporter/metrics.py):
``recorded``, ``duplicate``, ``invalid`` (with a reason), ``not_final`` (a subject's summary that
is acknowledged, not recorded), ``ignored`` (a type no subject has) or ``test`` (the Event
Streams sink test).

TaskRouter events (``com.twilio.taskrouter.*``) are no subject's: they are merged into the join
map (exporter/join.py), counted as ``type="taskrouter"`` (``recorded`` when taken, ``ignored``
for a non-voice task or a type the join does not use, ``invalid`` with a reason), and their
rows committed like a delivery's changes. Every summary recorded is given its call's
``task_queue``, ``workflow`` and ``team`` from the map, ``unknown`` when the map does not know
it yet (counted as a miss): nothing is held back.

A summary is deduplicated by its subject's key (a participant's SID): one participant has one
summary, whichever door it came through and however often. Recording it is all or nothing
(:meth:`~exporter.record.recorder.SummaryRecorder.plan` then :meth:`~exporter.record.recorder.SummaryRecorder.apply`), and
its key is remembered only once it is recorded, so a failure anywhere makes the door answer 5xx
and the retry records it exactly once. With a durable store, :meth:`Pipeline.deliver` returns
only after what it recorded, the keys and the door's checkpoint are committed together
(exporter/state/store.py): the door may then acknowledge. A duplicate of a key recorded but not yet
committed waits for that commit. The state's load and snapshots are in exporter/state/durable.py.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import Counter

from exporter import parse
from exporter.join import JoinMap, JoinRow
from exporter.logs import Throttle
from exporter.metrics import EventType, ExporterMetrics, Outcome, Source
from exporter.models import TEST_EVENT_TYPE
from exporter.state.store import Commit, JournaledChange, StateStore, join_rows, journal_rows, key_rows
from exporter.subjects import Subject, Subjects

log = logging.getLogger(__name__)

# Events handled between two yields to the loop: a batch of thousands never holds the loop for
# long, and each chunk is queued for commit as it is done.
CHUNK = 64


@functools.lru_cache(maxsize=1024)
def counter_child(counter: Counter, *labels: str) -> Counter:
    """``counter.labels(*labels)`` resolved once: the fast path's self-metrics at half the cost
    (bench/levers.py reply; docs/performance.md). Valid because these children are never removed."""
    return counter.labels(*labels)


@dataclass
class _Batch:
    """What a delivery recorded since its last commit."""

    changes: list[tuple[str, JournaledChange]] = field(default_factory=list)
    keys: list[tuple[str, str, float]] = field(default_factory=list)
    waits: list[asyncio.Future[None]] = field(default_factory=list)
    joins: list[JoinRow] = field(default_factory=list)
    unjoined: list[str] = field(default_factory=list)


class Pipeline:
    """Takes raw items from any door and records each summary once, in its subject."""

    def __init__(
        self,
        subjects: Subjects,
        exporter_metrics: ExporterMetrics,
        store: StateStore,
        clock: Callable[[], float] = time.time,
        join: JoinMap | None = None,
    ) -> None:
        self.subjects = subjects
        self.join = join
        self.metrics = exporter_metrics
        self.store = store
        self._clock = clock
        # (subject, key) recorded but not yet committed: a duplicate of one is answered only
        # once the original is on disk, or its 2xx could promise what a crash then loses.
        self._uncommitted: dict[tuple[str, str], asyncio.Future[None]] = {}
        self._log = Throttle()
        for subject in subjects:
            exporter_metrics.dedup_entries.labels(subject.key_field).set_function(subject.window.__len__)

    # -- the doors' entry point ---------------------------------------------------------------

    async def deliver(
        self, items: Sequence[Any], source: Source, checkpoint: tuple[str, str] | None = None, *, subject: str | None = None
    ) -> dict[str, int]:
        """Raw items in; ``{outcome: count}`` out once everything recorded is committed.

        Without ``subject`` the items are CloudEvents, decoded or as JSON bytes; with it, summaries
        of that subject (the REST API's items). ``checkpoint`` (``(name, value)``, e.g. a Kinesis
        shard's sequence number) is committed with what these items recorded. Raises if recording
        or committing failed; whatever was recorded before the failure is committed first, so the
        retry finds it a duplicate.
        """
        named = None if subject is None else self.subjects[subject]
        outcomes: dict[str, int] = {}
        batch = _Batch()
        commits: list[asyncio.Future[None]] = []
        try:
            for start in range(0, len(items), CHUNK):
                if start:
                    await asyncio.sleep(0)
                for item in items[start : start + CHUNK]:
                    outcome = self._accept(item, source, named, batch)
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

    def checkpoint(self, name: str) -> str | None:
        """The last committed value of a door's checkpoint."""
        return self.store.checkpoints.get(name)

    # -- one item -------------------------------------------------------------------------------

    def _accept(self, raw: Any, source: Source, subject: Subject | None, batch: _Batch) -> Outcome:
        if subject is None:
            try:
                event = parse.event(raw)
            except parse.InvalidEvent as invalid:
                return self._invalid(source, EventType.OTHER, invalid)
            if event.type == TEST_EVENT_TYPE:
                return self._count(source, EventType.TEST, Outcome.TEST)
            carried = self.subjects.carried_by(event.type)
            if carried is None:
                if self.join is not None and self.join.takes(event.type):
                    return self._taskrouter(self.join, event.type, event.data, source, batch)
                return self._count(source, EventType.OTHER, Outcome.IGNORED)
            subject, final = carried
            if not final:
                return self._count(source, EventType.SUMMARY, Outcome.NOT_FINAL)
            raw = event.data
        try:
            summary = parse.summary(subject.model, subject.key_field, raw)
        except parse.InvalidEvent as invalid:
            return self._invalid(source, EventType.SUMMARY, invalid)
        if not subject.is_final(summary):
            return self._count(source, EventType.SUMMARY, Outcome.NOT_FINAL)
        return self._record(subject, summary, source, batch)

    def _record(self, subject: Subject, summary: Any, source: Source, batch: _Batch) -> Outcome:
        key = subject.key(summary)
        if key in subject.window:
            pending = self._uncommitted.get((subject.name, key))
            if pending is not None:
                batch.waits.append(pending)
            return self._count(source, EventType.SUMMARY, Outcome.DUPLICATE)
        recorder = subject.recorder
        joined = None if self.join is None else self.join.labels_for(subject.name, summary)
        change = recorder.plan(summary, joined)  # changes nothing
        recorder.apply(change)  # all or nothing
        if self.join is not None:
            self.join.count(subject.name, joined is not None)
        now = self._clock()
        subject.window.add(key, at=now)
        if self.store.persistent:
            batch.changes.append(subject.journaled(change))
            batch.keys.append((subject.name, key, now))
        for label in change.overflow:
            self.metrics.label_overflow.labels(subject.name, label).inc()
        self.metrics.last_summary.labels(subject.name).set(now)
        return self._count(source, EventType.SUMMARY, Outcome.RECORDED)

    def _taskrouter(self, join: JoinMap, event_type: str, data: Any, source: Source, batch: _Batch) -> Outcome:
        try:
            payload = parse.taskrouter(data)
        except parse.InvalidEvent as invalid:
            return self._invalid(source, EventType.TASKROUTER, invalid)
        offered = join.offered(event_type, payload)
        if offered is None:
            return self._count(source, EventType.TASKROUTER, Outcome.IGNORED)
        upsert = join.upsert(payload, offered)
        if self.store.persistent:
            batch.joins.extend(upsert.rows)
            batch.unjoined.extend(upsert.evicted)
        return self._count(source, EventType.TASKROUTER, Outcome.RECORDED)

    def _count(self, source: Source, event_type: EventType, outcome: Outcome) -> Outcome:
        counter_child(self.metrics.events, source, event_type, outcome).inc()
        return outcome

    def _invalid(self, source: Source, event_type: EventType, invalid: parse.InvalidEvent) -> Outcome:
        reason = invalid.reason
        self.metrics.invalid_events.labels(source, reason).inc()
        # The location and message only: field values may hold phone numbers. At most a line per
        # source and reason a minute: a sender of invalid events must not be able to fill the disk.
        self._log.warning(log, f"{source}:{reason}", "invalid event", source=source, reason=reason, field=invalid.field, error=invalid.error)
        return self._count(source, event_type, Outcome.INVALID)

    # -- commits --------------------------------------------------------------------------------

    def _commit(self, batch: _Batch, checkpoint: tuple[str, str] | None, commits: list[asyncio.Future[None]]) -> None:
        if not (batch.changes or batch.keys or checkpoint or batch.joins or batch.unjoined):
            return
        rows = [journal_rows(batch.changes), key_rows(batch.keys), *join_rows(batch.joins, batch.unjoined)]
        future = self.store.commit(Commit(rows, checkpoint, changes=len(batch.changes)))
        if future is None:
            return
        commits.append(future)
        keys = [(kind, key) for kind, key, _ in batch.keys]
        for key in keys:
            self._uncommitted[key] = future

        def committed(_: asyncio.Future[None]) -> None:
            for key in keys:
                if self._uncommitted.get(key) is future:
                    del self._uncommitted[key]

        future.add_done_callback(committed)
