"""The TaskRouter join through the real app: queue, workflow and team on every summary of a Flex call."""

from __future__ import annotations

import itertools
import json
import random
import sqlite3
import tracemalloc
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from exporter.join import MAX_RESERVATIONS, JoinMap, build_join_metrics
from exporter.parse import taskrouter
from tests.conftest import Harness, HarnessFactory, snapshot
from tests.flex import (
    AGENT_CALL,
    CONFERENCE,
    CUSTOMER_CALL,
    SALES,
    SECOND_AGENT_CALL,
    SUPPORT,
    TASK,
    call,
    conference,
    inbound_call_events,
    participant,
    summaries,
    taskrouter_event,
)
from tests.helpers import FakeClock

P = "twilio_conference_participant_"
C = "twilio_call_"
CF = "twilio_conference_"
E = "twilio_insights_exporter_"
FAMILIES = (P, C, CF)


async def deliver(harness: Harness, events: list[dict[str, Any]]) -> dict[str, int]:
    response = await harness.post(events)
    assert response.status == 200, await response.text()
    result: dict[str, int] = await response.json()
    return result


def join_labels(registry: CollectorRegistry) -> set[tuple[str, str, str, str]]:
    """(family prefix, task_queue, workflow, team) of every sample of the summary families."""
    found = set()
    for metric in registry.collect():
        prefix = next((p for p in FAMILIES if metric.name.startswith(p)), None)
        if prefix is None or (prefix == CF and metric.name.startswith(P)):
            continue
        for sample in metric.samples:
            found.add((P if metric.name.startswith(P) else prefix, sample.labels["task_queue"], sample.labels["workflow"], sample.labels["team"]))
    return found


ORDERS = list(itertools.permutations(range(3)))


@pytest.mark.parametrize("order", ORDERS, ids=["".join(map(str, o)) for o in ORDERS])
async def test_every_family_of_a_flex_inbound_call_carries_its_queue_whatever_the_order_of_its_taskrouter_events(
    make_harness: HarnessFactory, order: tuple[int, ...]
) -> None:
    harness = await make_harness()
    events = inbound_call_events()
    # In this order, each redelivered once more after the others.
    shuffled = [events[i] for i in order] + [events[order[0]], events[order[2]]]
    for event in shuffled:
        assert await deliver(harness, [event]) == {"recorded": 1}

    assert await deliver(harness, summaries(AGENT_CALL)) == {"recorded": 5}

    assert join_labels(harness.registry) == {
        (P, "Support", "Inbound", "Billing"),
        (C, "Support", "Inbound", "Billing"),
        (CF, "Support", "Inbound", "Billing"),
    }
    assert harness.value(P + "summaries_total", task_queue="Support", workflow="Inbound", team="Billing") == 2
    assert harness.value(C + "summaries_total", task_queue="Support", workflow="Inbound", team="Billing") == 2
    assert harness.value(CF + "summaries_total", task_queue="Support", workflow="Inbound", team="Billing") == 1
    for kind, hits in (("participant", 2), ("call", 2), ("conference", 1)):
        assert harness.value(E + "taskrouter_join_total", kind=kind, result="hit") == hits
        assert harness.value(E + "taskrouter_join_total", kind=kind, result="miss") == 0
    assert harness.value(E + "events_total", type="taskrouter", outcome="recorded") == 5
    assert harness.value(E + "taskrouter_joins") == 1


async def test_a_summary_before_any_taskrouter_event_of_its_call_is_recorded_unknown_and_counted_a_miss(harness: Harness) -> None:
    assert await deliver(harness, [participant(CUSTOMER_CALL, "CP1"), call(CUSTOMER_CALL), conference()]) == {"recorded": 3}

    assert join_labels(harness.registry) == {
        (P, "unknown", "unknown", "unknown"),
        (C, "unknown", "unknown", "unknown"),
        (CF, "unknown", "unknown", "unknown"),
    }
    for kind in ("participant", "call", "conference"):
        assert harness.value(E + "taskrouter_join_total", kind=kind, result="miss") == 1
        assert harness.value(E + "taskrouter_join_total", kind=kind, result="hit") == 0

    # What comes later joins the summaries still to come, and never the ones recorded.
    assert await deliver(harness, inbound_call_events()) == {"recorded": 3}
    assert await deliver(harness, [participant(AGENT_CALL, "CP2")]) == {"recorded": 1}
    assert harness.value(P + "summaries_total", task_queue="unknown") == 1
    assert harness.value(P + "summaries_total", task_queue="Support", team="Billing") == 1


async def test_a_restart_between_the_taskrouter_events_and_the_summaries_loses_no_join(make_harness: HarnessFactory, tmp_path: Path) -> None:
    flag = f"--state.path={tmp_path / 'state.db'}"
    first = await make_harness(flag)
    assert await deliver(first, inbound_call_events()) == {"recorded": 3}
    assert first.value(E + "events_total", source="webhook", type="taskrouter", outcome="recorded") == 3

    second = await make_harness(flag)  # after the first was killed: only what each 2xx waited for is on disk

    assert second.value(E + "taskrouter_joins") == 1
    assert await deliver(second, summaries(AGENT_CALL)) == {"recorded": 5}
    assert join_labels(second.registry) == {
        (P, "Support", "Inbound", "Billing"),
        (C, "Support", "Inbound", "Billing"),
        (CF, "Support", "Inbound", "Billing"),
    }
    assert second.value(E + "taskrouter_join_total", result="miss") == 0


async def test_a_task_evicted_past_max_joins_is_gone_from_the_state_file_too(make_harness: HarnessFactory, tmp_path: Path) -> None:
    flags = (f"--state.path={tmp_path / 'state.db'}", "--taskrouter.max-joins=1")
    first = await make_harness(*flags)
    assert await deliver(first, inbound_call_events()) == {"recorded": 3}
    other = taskrouter_event("reservation.accepted", SUPPORT, at="2026-11-01T11:00:00Z")
    other["data"]["payload"]["task_sid"] = "WT" + "2" * 32
    other["data"]["payload"]["task_attributes"] = json.dumps({"conference": {"sid": "CF2", "participants": {"worker": "CA2"}}})
    assert await deliver(first, [other]) == {"recorded": 1}
    assert first.value(E + "taskrouter_join_evictions_total") == 1
    # The evicted task's rows were deleted with the commit that evicted it: the file holds at most
    # max-joins tasks, not every task of the TTL.
    with sqlite3.connect(tmp_path / "state.db") as db:
        assert {sid for (sid,) in db.execute("SELECT task_sid FROM taskrouter_joins")} == {"WT" + "2" * 32}

    second = await make_harness(*flags)

    assert second.value(E + "taskrouter_joins") == 1
    assert await deliver(second, [participant(AGENT_CALL, "CP1"), participant("CA2", "CP2")]) == {"recorded": 2}
    assert second.value(E + "taskrouter_join_total", kind="participant", result="miss") == 1
    assert second.value(E + "taskrouter_join_total", kind="participant", result="hit") == 1


WARM_TRANSFER = [
    taskrouter_event("reservation.accepted", SUPPORT, at="2026-11-01T10:00:10Z", worker_call=AGENT_CALL),
    taskrouter_event("task.transfer-initiated", None, at="2026-11-01T10:03:00Z", worker_call=AGENT_CALL, queue=SUPPORT),
    # The second agent answers from the Sales queue; the task's attributes now name that agent's leg,
    # and the task has moved to Sales: the first agent's later events say so too.
    taskrouter_event("reservation.accepted", SALES, at="2026-11-01T10:03:30Z", worker_call=SECOND_AGENT_CALL),
    taskrouter_event("task.transfer-completed", None, at="2026-11-01T10:03:31Z", worker_call=SECOND_AGENT_CALL, queue=SALES),
    taskrouter_event("reservation.wrapup", SUPPORT, at="2026-11-01T10:04:00Z", worker_call=SECOND_AGENT_CALL, queue=SALES),
    taskrouter_event("reservation.wrapup", SALES, at="2026-11-01T10:09:00Z", worker_call=SECOND_AGENT_CALL),
    taskrouter_event("task.completed", None, at="2026-11-01T10:09:30Z", worker_call=SECOND_AGENT_CALL, queue=SALES),
]


def transfer_order(seed: int) -> list[dict[str, Any]]:
    """The transfer's events in order (0), reversed (1), or shuffled by ``seed``."""
    if seed == 0:
        return list(WARM_TRANSFER)
    if seed == 1:
        return list(reversed(WARM_TRANSFER))
    events = list(WARM_TRANSFER)
    random.Random(seed).shuffle(events)
    return events


@pytest.mark.parametrize("seed", range(6), ids=["in_order", "reversed", *(f"shuffled{n}" for n in range(2, 6))])
async def test_a_warm_transfer_between_two_queues_attributes_each_agents_leg_to_its_own_queue(harness: Harness, seed: int) -> None:
    events = transfer_order(seed)
    assert await deliver(harness, [*events, *events[:2]]) == {"recorded": len(events) + 2}

    assert await deliver(harness, [participant(AGENT_CALL, "CP1"), participant(SECOND_AGENT_CALL, "CP2"), participant(CUSTOMER_CALL, "CP3")]) == {
        "recorded": 3
    }
    assert await deliver(harness, [call(AGENT_CALL), call(SECOND_AGENT_CALL), call(CUSTOMER_CALL), conference()]) == {"recorded": 4}

    for family in (P, C):
        assert harness.value(family + "summaries_total", task_queue="Support", team="Billing") == 2  # the first agent's leg and the customer's
        assert harness.value(family + "summaries_total", task_queue="Sales", team="Retention") == 1  # the second agent's leg
    # The conference: the queue the call entered and the team that answered it first.
    assert harness.value(CF + "summaries_total", task_queue="Support", team="Billing") == 1
    assert harness.value(E + "taskrouter_join_total", result="miss") == 0


async def test_tasks_of_other_channels_are_ignored_and_counted(harness: Harness) -> None:
    chat = taskrouter_event("reservation.accepted", SUPPORT, at="2026-11-01T10:00:10Z", worker_call=AGENT_CALL, channel="chat")
    created = taskrouter_event("worker.activity.update", SUPPORT, at="2026-11-01T10:00:10Z")

    assert await deliver(harness, [chat, created]) == {"ignored": 2}
    assert harness.value(E + "events_total", source="webhook", type="taskrouter", outcome="ignored") == 2
    assert harness.value(E + "taskrouter_joins") == 0
    assert await deliver(harness, [participant(AGENT_CALL, "CP1")]) == {"recorded": 1}
    assert harness.value(P + "summaries_total", task_queue="unknown") == 1


@pytest.mark.parametrize("attributes", ["{not json", "[1, 2]", '"text"'])
async def test_task_attributes_that_are_not_a_json_object_are_a_counted_invalid_event_answered_200(harness: Harness, attributes: str) -> None:
    broken = taskrouter_event("reservation.accepted", SUPPORT, at="2026-11-01T10:00:10Z", task_attributes=attributes)

    assert await deliver(harness, [broken]) == {"invalid": 1}
    assert harness.value(E + "invalid_events_total", source="webhook", reason="bad_task_attributes") == 1
    assert harness.value(E + "events_total", source="webhook", type="taskrouter", outcome="invalid") == 1
    assert harness.value(E + "taskrouter_joins") == 0


async def test_queue_and_workflow_sids_replace_their_names_when_asked(make_harness: HarnessFactory) -> None:
    harness = await make_harness("--taskrouter.label-values=sid")
    assert await deliver(harness, [*inbound_call_events(), participant(AGENT_CALL, "CP1")]) == {"recorded": 4}

    assert harness.value(P + "summaries_total", task_queue=SUPPORT.queue_sid, workflow="WW" + "0" * 32, team="Billing") == 1


async def test_the_team_comes_only_from_the_allowlisted_worker_attributes(make_harness: HarnessFactory) -> None:
    harness = await make_harness("--taskrouter.team-attributes=department_name")
    assert await deliver(harness, [*inbound_call_events(), participant(AGENT_CALL, "CP1")]) == {"recorded": 4}

    # team_name is not on the list: the team is unknown, and no worker name ever becomes a value.
    assert harness.value(P + "summaries_total", task_queue="Support", team="unknown") == 1


# -- the join map on its own: TTL and size ------------------------------------------------------


def join_map(clock: FakeClock, **options: Any) -> JoinMap:
    return JoinMap(build_join_metrics(CollectorRegistry()), clock=clock, **options)


def upsert(join: JoinMap, event: dict[str, Any]) -> None:
    payload = taskrouter(event["data"])
    offered = join.offered(event["type"], payload)
    assert offered is not None
    join.upsert(payload, offered)


class Leg:
    def __init__(self, call_sid: str | None = None, conference_sid: str | None = None) -> None:
        self.call_sid = call_sid
        self.conference_sid = conference_sid


def test_a_join_lives_its_ttl_after_its_last_taskrouter_event() -> None:
    clock = FakeClock()
    join = join_map(clock, ttl=3600.0)
    upsert(join, inbound_call_events()[0])
    clock.now += 3000
    upsert(join, inbound_call_events()[1])  # the task's last event: its TTL starts again
    clock.now += 3000
    assert join.labels_for("participant", Leg(AGENT_CALL)) is not None

    clock.now += 601
    upsert(
        join,
        {
            **taskrouter_event("reservation.accepted", SUPPORT, at="2026-11-01T11:00:00Z"),
            "data": {"payload": {"task_sid": "WT2", "task_channel_unique_name": "voice"}},
        },
    )
    assert join.labels_for("participant", Leg(AGENT_CALL)) is None
    assert len(join) == 1


def test_past_max_joins_the_oldest_task_is_evicted_and_counted() -> None:
    clock = FakeClock()
    join = join_map(clock, max_tasks=1)
    upsert(join, inbound_call_events()[0])
    clock.now += 1
    other = taskrouter_event("reservation.accepted", SUPPORT, at="2026-11-01T11:00:00Z")
    other["data"]["payload"]["task_sid"] = "WT" + "2" * 32
    other["data"]["payload"]["task_attributes"] = json.dumps({"conference": {"sid": "CF2", "participants": {"worker": "CA2"}}})
    upsert(join, other)

    assert join.labels_for("participant", Leg(AGENT_CALL, CONFERENCE)) is None
    assert join.labels_for("participant", Leg("CA2")) == {"task_queue": "Support", "workflow": "Inbound", "team": "Billing"}
    assert join.metrics.evictions._value.get() == 1


def test_a_conference_summary_joins_by_its_friendly_name_the_task_sid() -> None:
    join = join_map(FakeClock())
    upsert(join, taskrouter_event("reservation.accepted", SUPPORT, at="2026-11-01T10:00:10Z", task_attributes="{}"))

    class Conference:
        conference_sid = "CF-unknown"
        friendly_name = TASK

    assert join.labels_for("conference", Conference()) == {"task_queue": "Support", "workflow": "Inbound", "team": "Billing"}


# -- the state file: schema 3 -> 4 --------------------------------------------------------------


async def test_a_state_file_of_schema_3_is_upgraded_in_place_its_series_gaining_the_join_labels_as_unknown(
    make_harness: HarnessFactory, tmp_path: Path
) -> None:
    path = tmp_path / "state.db"
    first = await make_harness(f"--state.path={path}")
    assert await deliver(first, [participant(CUSTOMER_CALL, "CP1"), call(CUSTOMER_CALL)]) == {"recorded": 2}
    snapshotted = first.runtime.durable.snapshot()
    assert snapshotted is not None
    await snapshotted
    assert await deliver(first, [conference()]) == {"recorded": 1}  # journaled after the snapshot
    expected = snapshot(first.registry)
    await first.runtime.state.close()

    # Written back as schema 3 wrote it: no join labels, no join table.
    with sqlite3.connect(path) as db:
        for subject, family, labels in db.execute("SELECT subject, family, labels FROM series").fetchall():
            values = json.loads(labels)
            assert values[:3] == ["unknown"] * 3
            db.execute(
                "UPDATE series SET labels = ? WHERE subject = ? AND family = ? AND labels = ?", (json.dumps(values[3:]), subject, family, labels)
            )
        for row_id, changes in db.execute("SELECT id, changes FROM journal").fetchall():
            db.execute("UPDATE journal SET changes = ? WHERE id = ?", (json.dumps([[c[3:], o] for c, o in json.loads(changes)]), row_id))
        db.execute("DROP TABLE taskrouter_joins")
        db.execute("PRAGMA user_version=3")
    db.close()

    upgraded = await make_harness(f"--state.path={path}")

    assert snapshot(upgraded.registry) == expected
    assert upgraded.runtime.state.db.execute("PRAGMA user_version").fetchone()[0] == 4
    # Its label sets kept their places: a new combination still fits in the budget.
    assert await deliver(upgraded, [*inbound_call_events(), participant(AGENT_CALL, "CP2")]) == {"recorded": 4}
    assert upgraded.value(P + "summaries_total", task_queue="Support") == 1
    assert upgraded.value(E + "label_overflow_total") == 0


# -- memory bounded in bytes ------------------------------------------------------------------------


def task_event(n: int, name_length: int = 0, reservation: int = 1) -> dict[str, Any]:
    """A reservation.accepted of task ``n`` (its own conference and legs); names ``name_length`` long if given."""
    event = taskrouter_event("reservation.accepted", SUPPORT, at="2026-11-01T10:00:10Z", event_id=f"EZ{n}-{reservation}")
    payload = event["data"]["payload"]
    payload["task_sid"] = f"WT{n:032d}"
    payload["reservation_sid"] = f"WR{n:026d}{reservation:06d}"
    conference = {"sid": f"CF{n:032d}", "participants": {"customer": f"CA{n:031d}1", "worker": f"CA{n:026d}{reservation:06d}"}}
    payload["task_attributes"] = json.dumps({"call_sid": f"CA{n:031d}1", "direction": "inbound", "conference": conference})
    if name_length:
        payload["task_queue_name"] = "q" * name_length
        payload["workflow_name"] = "w" * name_length
        payload["worker_attributes"] = json.dumps({"team_name": "t" * name_length})
    return event


def test_values_are_cut_to_a_labels_64_characters_as_they_enter_the_map() -> None:
    join = join_map(FakeClock())
    upsert(join, task_event(1, name_length=10_000))

    assert join.labels_for("participant", Leg(f"CA{1:026d}{1:06d}")) == {"task_queue": "q" * 64, "workflow": "w" * 64, "team": "t" * 64}
    record = join._tasks[f"WT{1:032d}"].records[f"WR{1:026d}{1:06d}"]
    assert max(len(candidate[2]) for candidate in record.values.values()) == 64


def test_a_task_keeps_at_most_max_reservations_and_its_legs_still_join() -> None:
    join = join_map(FakeClock())
    for reservation in range(1, 5001):
        upsert(join, task_event(7, reservation=reservation))

    task = join._tasks[f"WT{7:032d}"]
    assert len(task.records) == MAX_RESERVATIONS + 1  # its own record and the first reservations
    assert join.labels_for("participant", Leg(f"CA{7:026d}{16:06d}")) == {"task_queue": "Support", "workflow": "Inbound", "team": "Billing"}
    # A leg of a reservation not kept takes the task's first reservation's labels, as the customer's does.
    assert join.labels_for("participant", Leg(f"CA{7:026d}{4999:06d}")) is None
    assert join.labels_for("participant", Leg(f"CA{7:031d}1")) == {"task_queue": "Support", "workflow": "Inbound", "team": "Billing"}


def task_updated(n: int) -> dict[str, Any]:
    """A task.updated of task ``n``: the task's own record (no reservation)."""
    event = task_event(n)
    event["type"] = "com.twilio.taskrouter.task.updated"
    for key in ("reservation_sid", "worker_sid", "worker_name", "worker_attributes"):
        del event["data"]["payload"][key]
    return event


@pytest.mark.parametrize(("name_length", "with_task_record"), [(0, False), (10_000, False), (0, True)])
def test_the_estimated_bytes_are_above_what_tracemalloc_measures_and_within_one_and_a_half_times_it(name_length: int, with_task_record: bool) -> None:
    events = [task_event(n, name_length) for n in range(2000)] + ([task_updated(n) for n in range(2000)] if with_task_record else [])
    payloads = [(event["type"], taskrouter(event["data"])) for event in events]
    join = join_map(FakeClock(), max_tasks=10**6, max_bytes=10**12)
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    for event_type, payload in payloads:
        offered = join.offered(event_type, payload)
        assert offered is not None
        join.upsert(payload, offered)
    measured = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()

    assert measured <= join.bytes <= 1.5 * measured, (measured, join.bytes)
    assert next(iter(join.metrics.memory.collect())).samples[0].value == join.bytes


def test_past_max_join_memory_the_oldest_tasks_are_evicted_and_the_estimate_stays_under_it() -> None:
    clock = FakeClock()
    join = join_map(clock, max_bytes=200_000)
    for n in range(100):
        clock.now += 1
        upsert(join, task_event(n, name_length=10_000))
        assert join.bytes <= 200_000

    kept = len(join)
    assert 0 < kept < 100
    assert join.metrics.evictions._value.get() == 100 - kept
    assert join.labels_for("participant", Leg(f"CA{99:026d}{1:06d}")) is not None  # the newest is kept
    assert join.labels_for("participant", Leg(f"CA{0:026d}{1:06d}")) is None  # the oldest went


def test_a_state_file_of_uncut_values_is_restored_cut_and_within_the_bound() -> None:
    clock = FakeClock()
    rows = []
    for n in range(100):
        values = {name: [0, 1.8e9, name[0] * 10_000] for name in ("queue_name", "workflow_name", "team")}
        values["worker_call"] = [0, 1.8e9, f"CA{n:032d}"]
        rows.append((f"WT{n:032d}", f"WR{n:032d}", json.dumps({"first": 1.8e9, "values": values}), clock.now - 10 + n / 100))
    join = join_map(clock, max_bytes=50_000)

    join.restore(iter(rows))

    assert 0 < len(join) < 100 and join.bytes <= 50_000
    assert join.labels_for("participant", Leg(f"CA{99:032d}")) == {"task_queue": "q" * 64, "workflow": "w" * 64, "team": "t" * 64}
