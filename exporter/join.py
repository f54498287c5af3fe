"""The TaskRouter join: which task queue, workflow and team handled a call, for the summaries to come.

Twilio Flex routes every call through TaskRouter; its events (``com.twilio.taskrouter.*``,
taken by the pipeline like every event: exporter/pipeline.py) carry the task's queue and
workflow, the worker's attributes, and in the task's attributes the conference SID and the
call SIDs of the customer's and the agent's legs (taskrouter-join-facts.md §3). The summaries
come up to 30 minutes after the call and know none of it: this map holds it until they do.

**Order-independent upserts.** Event Streams redelivers and reorders (facts §4), so no event
overwrites another. Facts are kept per record, one per (task, reservation) and one for the
task's own events (reservation ``""``); each field of a record keeps, of every value any event
offered, the least ``(rank, timestamp, value)``, where the rank is the event's place in a
reservation's life (accepted, then the task's updates and transfers, then wrapup, then
completed or canceled). A minimum is the same whatever the order and however often an event
comes, so a redelivered or reordered event never changes the result; the timestamp only breaks
ties between events of one rank. The earliest rank wins because it is what the reservation saw
when the agent took the call: after a transfer the task's attributes (and its queue) may already
name the next agent's (facts §3.3, uncertain).

**Attribution** (computed at lookup, from the facts):

- an agent's leg (a call SID some reservation names as ``conference.participants.worker``) takes
  the queue, workflow and team of that reservation: after a transfer each agent's leg has its own;
- the customer's leg, any other leg of the conference (a supervisor) and the conference take the
  queue, workflow and team of the task's first reservation (least first timestamp, then SID):
  the queue the call entered and the team that answered it; a task seen without reservations
  gives its own queue and workflow, and ``unknown`` team.

**Bounds, in bytes.** An entry (a task) lives ``--taskrouter.join-ttl`` after its last TaskRouter
event (default 5 h: the summaries' 30 minutes plus Event Streams' 4 hours of redelivery). Every
value is cut and cleaned where it enters, by the rules of a label (exporter/reader.py
``clean_value``: at most 64 characters), the task and reservation SIDs too, and a task keeps at
most :data:`MAX_RESERVATIONS` reservations (a 17th is not kept: its legs take the task's
first reservation's labels), so one task holds at most a known number of bytes. The map keeps its
estimated size (:meth:`Task.size`, what tracemalloc measures of it, within the margin the tests
hold) under ``--taskrouter.max-join-memory`` and at most ``--taskrouter.max-joins`` tasks, the
oldest evicted first (counted). Every update is also a row of the state file
(exporter/state/store.py, table ``taskrouter_joins``), committed with the delivery it came in, so a
restart loses no join; a restart reads the rows one by one and cuts them the same way, so it
holds no more than the live map did.

Only what becomes a label is kept: SIDs (as keys), queue and workflow names and SIDs, the team
(from ``--taskrouter.team-attributes``, never the worker's name or SID), channel and direction.

Why one module: the merge rule, the attribution at lookup and the bounds are one data structure's
invariants (a record evicted or expired must leave no index entry behind), read together.
"""

from __future__ import annotations

import json
import math
import sys
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge

from exporter.config import Config
from exporter.metrics import EXPORTER
from exporter.models import TASKROUTER_PREFIX, TaskRouterPayload
from exporter.reader import clean_value
from exporter.subjects import NAMES

# The event types taken, by rank (their place in a reservation's life; see the module's docstring).
RANKS: dict[str, int] = {
    "reservation.accepted": 0,
    "task.updated": 1,
    "task.transfer-initiated": 1,
    "task.transfer-completed": 1,
    "task.transfer-failed": 1,
    "task.transfer-canceled": 1,
    "task.transfer-attempt-failed": 1,
    "reservation.wrapup": 2,
    "task.wrapup": 2,
    "reservation.completed": 3,
    "task.completed": 3,
    "task.canceled": 3,
}
TAKEN_TYPES = frozenset(TASKROUTER_PREFIX + name for name in RANKS)
VOICE = "voice"

# The values a record keeps (each the least (rank, timestamp, value) offered).
FIELDS = ("queue_name", "queue_sid", "workflow_name", "workflow_sid", "team", "worker_call", "customer_call", "conference", "direction", "channel")

# The labels the join gives a summary (exporter/subjects/common.py JOIN_LABELS).
TASK_QUEUE, WORKFLOW, TEAM = "task_queue", "workflow", "team"

Candidate = tuple[int, float, str]

# A task's reservations kept: one per agent who accepted it, transfers included; a task offered to
# more agents than this is not a contact centre's call but a flood, and its further reservations
# would make every lookup of its legs slower.
MAX_RESERVATIONS = 16
# The estimated bytes of the map's parts besides the text of its values (sys.getsizeof of each):
# a record (its object, its dict of ten candidates, their tuples and timestamps, its reservation
# key and the task's entry for it), a task (its object, its records' dict, its SID and its entry
# in the map), an entry of the call and conference indexes (its set). Measured with tracemalloc
# (tests/test_taskrouter_join.py holds the estimate above the measure and within 1.5 x of it).
RECORD_BYTES = 700
TASK_BYTES = 450
INDEX_BYTES = 150


@dataclass(slots=True)
class Record:
    """The facts of one reservation of a task (or, reservation ``""``, of the task's own events)."""

    values: dict[str, Candidate] = field(default_factory=dict)
    first: float = math.inf  # least event timestamp seen

    def merge(self, offered: Mapping[str, Candidate], timestamp: float) -> bool:
        changed = False
        for name, candidate in offered.items():
            kept = self.values.get(name)
            if kept is None or candidate < kept:
                self.values[name] = candidate
                changed = True
        if timestamp < self.first:
            self.first = timestamp
            changed = True
        return changed

    def get(self, name: str) -> str | None:
        kept = self.values.get(name)
        return None if kept is None else kept[2]

    def dumps(self) -> str:
        return json.dumps({"first": None if math.isinf(self.first) else self.first, "values": self.values}, separators=(",", ":"))

    @classmethod
    def loads(cls, text: str) -> Record:
        data = json.loads(text)
        first = data.get("first")
        return cls(
            {name: (int(c[0]), float(c[1]), clean_value(str(c[2]))) for name, c in data["values"].items() if name in FIELDS},
            math.inf if first is None else float(first),
        )


@dataclass(slots=True)
class Task:
    records: dict[str, Record] = field(default_factory=dict)  # by reservation SID ("" for the task's own events)
    seen_at: float = 0.0  # the exporter's clock at its last TaskRouter event
    size: int = 0  # the estimated bytes it holds, as last counted into the map's total

    def estimate(self) -> int:
        """The bytes this task holds in the map, its index entries included (see RECORD_BYTES)."""
        total = TASK_BYTES
        indexed: set[str] = set()
        for record in self.records.values():
            total += RECORD_BYTES + sum(sys.getsizeof(candidate[2]) for candidate in record.values.values())
            indexed.update(record.get(name) or "" for name in ("worker_call", "customer_call", "conference"))
        return total + INDEX_BYTES * len(indexed - {""})


# A row of the state file: (task SID, reservation SID or "", the record as JSON, seen_at).
JoinRow = tuple[str, str, str, float]


@dataclass(slots=True)
class Upsert:
    """What one TaskRouter event changed: the rows to write, the tasks evicted to make room."""

    rows: list[JoinRow] = field(default_factory=list)
    evicted: list[str] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class JoinMetrics:
    joins: Counter
    entries: Gauge
    evictions: Counter
    memory: Gauge


JOIN_TOTAL = f"{EXPORTER}_taskrouter_join"
JOIN_ENTRIES = f"{EXPORTER}_taskrouter_joins"
JOIN_EVICTIONS = f"{EXPORTER}_taskrouter_join_evictions"
JOIN_MEMORY = f"{EXPORTER}_taskrouter_join_memory_bytes"
JOIN_KINDS = NAMES  # every subject takes the join labels
JOIN_RESULTS = ("hit", "miss")


def build_join_metrics(registry: CollectorRegistry) -> JoinMetrics:
    """The join's own health, every kind and result pre-created at 0 (an alert divides by them)."""
    m = JoinMetrics(
        joins=Counter(
            JOIN_TOTAL,
            "Summaries recorded, by kind and whether the TaskRouter join knew their call (hit) or not (miss).",
            ["kind", "result"],
            registry=registry,
        ),
        entries=Gauge(JOIN_ENTRIES, "Tasks the TaskRouter join map holds now.", registry=registry),
        evictions=Counter(
            JOIN_EVICTIONS,
            "Tasks evicted from the TaskRouter join map to stay within --taskrouter.max-joins and --taskrouter.max-join-memory.",
            registry=registry,
        ),
        memory=Gauge(JOIN_MEMORY, "Estimated bytes the TaskRouter join map holds (bounded by --taskrouter.max-join-memory).", registry=registry),
    )
    for kind in JOIN_KINDS:
        for result in JOIN_RESULTS:
            m.joins.labels(kind, result)
    return m


class JoinMap:
    """Conference and call SIDs -> task queue, workflow and team, from TaskRouter events (see the module)."""

    def __init__(
        self,
        metrics: JoinMetrics,
        ttl: float = 5 * 3600.0,
        max_tasks: int = 50_000,
        max_bytes: int = 192 * 1024**2,
        team_attributes: Sequence[str] = ("team_name",),
        label_values: str = "name",
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.metrics = metrics
        self.ttl = ttl
        self.max_tasks = max_tasks
        self.max_bytes = max_bytes
        self.bytes = 0  # the estimated bytes of every task kept (Task.size)
        self.team_attributes = tuple(team_attributes)
        self.by_sid = label_values == "sid"
        self._clock = clock
        self._tasks: OrderedDict[str, Task] = OrderedDict()  # oldest seen_at first
        self._by_call: dict[str, set[str]] = {}
        self._by_conference: dict[str, set[str]] = {}
        metrics.entries.set_function(self._tasks.__len__)
        metrics.memory.set_function(lambda: self.bytes)

    def __len__(self) -> int:
        return len(self._tasks)

    # -- updates ------------------------------------------------------------------------------

    @staticmethod
    def takes(event_type: str) -> bool:
        """Whether an event of this CloudEvent type is a TaskRouter event (taken or ignored by :meth:`upsert`)."""
        return event_type.startswith(TASKROUTER_PREFIX)

    def offered(self, event_type: str, payload: TaskRouterPayload) -> dict[str, Candidate] | None:
        """The values a taken event offers its record, or None for an event the join does not use."""
        rank = RANKS.get(event_type.removeprefix(TASKROUTER_PREFIX))
        if rank is None or payload.task_channel_unique_name != VOICE:
            return None
        ts = payload.timestamp if payload.timestamp is not None else math.inf
        raw: dict[str, str | None] = {
            "queue_name": payload.task_queue_name,
            "queue_sid": payload.task_queue_sid,
            "workflow_name": payload.workflow_name,
            "workflow_sid": payload.workflow_sid,
            "channel": payload.task_channel_unique_name,
            "team": self._team(payload.worker_attributes) if payload.reservation_sid else None,
        }
        attributes = payload.task_attributes
        if attributes is not None:
            raw["direction"] = attributes.direction
            raw["customer_call"] = attributes.call_sid
            conference = attributes.conference
            if conference is not None:
                raw["conference"] = conference.sid
                if conference.participants is not None:
                    raw["customer_call"] = conference.participants.customer or attributes.call_sid
                    raw["worker_call"] = conference.participants.worker
        # Cut and cleaned as they enter, by a label's rules: what the map holds is bounded in bytes.
        return {name: (rank, ts, kept) for name, value in raw.items() if value and (kept := clean_value(value))}

    def _team(self, attributes: Mapping[str, Any] | None) -> str | None:
        if not attributes:
            return None
        for key in self.team_attributes:
            value = attributes.get(key)
            if isinstance(value, str) and value:
                return value
        return None

    def upsert(self, payload: TaskRouterPayload, offered: Mapping[str, Candidate]) -> Upsert:
        """Merge one event's values into its task's record; what to write to the state file."""
        now = self._clock()
        out = Upsert()
        self._expire(now)
        task_sid = clean_value(payload.task_sid)
        reservation = clean_value(payload.reservation_sid or "")
        task = self._tasks.get(task_sid)
        if task is not None and reservation not in task.records and len(task.records) > MAX_RESERVATIONS:
            return out  # past MAX_RESERVATIONS (plus the task's own record): not kept
        if task is None:
            while len(self._tasks) >= self.max_tasks:
                out.evicted.append(self._evict())
            task = self._tasks[task_sid] = Task()
        else:
            self._tasks.move_to_end(task_sid)
        record = task.records.setdefault(reservation, Record())
        record.merge(offered, payload.timestamp if payload.timestamp is not None else math.inf)
        task.seen_at = now
        self._index(task_sid, record)
        self._resize(task)
        while self.bytes > self.max_bytes and next(iter(self._tasks)) != task_sid:
            out.evicted.append(self._evict())
        # seen_at moved: the row is written even when the facts did not change (its TTL restarts).
        out.rows.append((task_sid, reservation, record.dumps(), now))
        return out

    def _resize(self, task: Task) -> None:
        size = task.estimate()
        self.bytes += size - task.size
        task.size = size

    def _index(self, task_sid: str, record: Record) -> None:
        for name in ("worker_call", "customer_call"):
            sid = record.get(name)
            if sid:
                self._by_call.setdefault(sid, set()).add(task_sid)
        conference = record.get("conference")
        if conference:
            self._by_conference.setdefault(conference, set()).add(task_sid)

    def _evict(self) -> str:
        task_sid = next(iter(self._tasks))
        self._remove(task_sid)
        self.metrics.evictions.inc()
        return task_sid

    def _drop(self, index: dict[str, set[str]], key: str, task_sid: str) -> None:
        tasks = index.get(key)
        if tasks is not None:
            tasks.discard(task_sid)
            if not tasks:
                del index[key]

    def _expire(self, now: float) -> None:
        deadline = now - self.ttl
        while self._tasks:
            task_sid, task = next(iter(self._tasks.items()))
            if task.seen_at > deadline:
                return
            self._remove(task_sid)

    def _remove(self, task_sid: str) -> None:
        task = self._tasks.pop(task_sid)
        self.bytes -= task.size
        for record in task.records.values():
            for name in ("worker_call", "customer_call"):
                sid = record.get(name)
                if sid:
                    self._drop(self._by_call, sid, task_sid)
            conference = record.get("conference")
            if conference:
                self._drop(self._by_conference, conference, task_sid)

    def restore(self, rows: Iterable[JoinRow]) -> int:
        """Load the state file's rows (any order, read one by one); those past the TTL are left out. Returns how many tasks.

        Values are cut and cleaned as in :meth:`upsert` (a file written before that rule holds
        them uncut), and the same bounds apply, so a restart holds no more than the live map.
        """
        deadline = self._clock() - self.ttl
        tasks: dict[str, Task] = {}
        for task_sid, reservation, data, seen_at in rows:
            if seen_at <= deadline:
                continue
            task = tasks.setdefault(clean_value(task_sid), Task())
            reservation = clean_value(reservation)
            if reservation in task.records or len(task.records) <= MAX_RESERVATIONS:
                task.records[reservation] = Record.loads(data)
            task.seen_at = max(task.seen_at, seen_at)
        for task_sid, task in sorted(tasks.items(), key=lambda item: item[1].seen_at):
            while len(self._tasks) >= self.max_tasks:
                self._evict()
            self._tasks[task_sid] = task
            for record in task.records.values():
                self._index(task_sid, record)
            self._resize(task)
            while self.bytes > self.max_bytes and len(self._tasks) > 1:
                self._evict()
        return len(tasks)

    # -- lookups ------------------------------------------------------------------------------

    def labels_for(self, kind: str, summary: Any) -> dict[str, str | None] | None:
        """``{task_queue, workflow, team}`` of a summary (by its call or conference SID), or None for a miss."""
        call_sid = getattr(summary, "call_sid", None) if kind != "conference" else None
        conference_sid = getattr(summary, "conference_sid", None) if kind != "call" else None
        if call_sid:
            for task_sid in sorted(self._by_call.get(call_sid, ())):
                worker = self._worker_record(self._tasks[task_sid], call_sid)
                if worker is not None:
                    return self._labels(worker, worker)
                return self._customer(self._tasks[task_sid])
        if conference_sid:
            for task_sid in sorted(self._by_conference.get(conference_sid, ())):
                return self._customer(self._tasks[task_sid])
        # The conference TaskRouter creates is named after the task (facts §3.1).
        friendly = getattr(summary, "friendly_name", None)
        if isinstance(friendly, str) and friendly in self._tasks:
            return self._customer(self._tasks[friendly])
        return None

    @staticmethod
    def _worker_record(task: Task, call_sid: str) -> Record | None:
        claims = [
            (record.values["worker_call"], sid, record) for sid, record in task.records.items() if sid and record.get("worker_call") == call_sid
        ]
        if not claims:
            return None
        return min(claims, key=lambda claim: (claim[0], claim[1]))[2]

    def _customer(self, task: Task) -> dict[str, str | None]:
        reservations = [(record.first, sid, record) for sid, record in task.records.items() if sid]
        own = task.records.get("")
        if reservations:
            first = min(reservations, key=lambda r: (r[0], r[1]))[2]
            return self._labels(first, first, fallback=own)
        assert own is not None  # a task has at least one record
        return self._labels(own, None)

    def _labels(self, source: Record, team: Record | None, fallback: Record | None = None) -> dict[str, str | None]:
        def pick(name: str) -> str | None:
            value = source.get(name)
            if value is None and fallback is not None:
                value = fallback.get(name)
            return value

        queue = pick("queue_sid") if self.by_sid else (pick("queue_name") or pick("queue_sid"))
        workflow = pick("workflow_sid") if self.by_sid else (pick("workflow_name") or pick("workflow_sid"))
        return {TASK_QUEUE: queue, WORKFLOW: workflow, TEAM: team.get("team") if team is not None else None}

    def count(self, kind: str, hit: bool) -> None:
        """Count one recorded summary's join."""
        self.metrics.joins.labels(kind, "hit" if hit else "miss").inc()


def build_join(config: Config, registry: CollectorRegistry, clock: Callable[[], float] = time.time) -> JoinMap:
    """The join map of ``--taskrouter.*``, its metrics on ``registry``."""
    tr = config.settings.taskrouter
    return JoinMap(
        build_join_metrics(registry),
        ttl=tr.join_ttl.total_seconds(),
        max_tasks=tr.max_joins,
        max_bytes=tr.max_join_memory,
        team_attributes=tr.team_attributes,
        label_values=tr.label_values,
        clock=clock,
    )
