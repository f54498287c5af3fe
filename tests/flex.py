"""TaskRouter events and summaries of Flex voice calls, shaped like taskrouter-join-facts.md §2.4 (tests only)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from tests.conftest import fixture

TASK = "WT" + "1" * 32
CONFERENCE = "CF" + "f" * 32
CUSTOMER_CALL = "CA" + "c" * 32
AGENT_CALL = "CA" + "a" * 32
SECOND_AGENT_CALL = "CA" + "b" * 32


@dataclass(frozen=True)
class Reservation:
    sid: str
    queue: str
    queue_sid: str
    team: str
    worker_call: str


SUPPORT = Reservation("WR" + "1" * 32, "Support", "WQ" + "1" * 32, "Billing", AGENT_CALL)
SALES = Reservation("WR" + "2" * 32, "Sales", "WQ" + "2" * 32, "Retention", SECOND_AGENT_CALL)


def attributes(worker_call: str | None) -> str:
    conference: dict[str, Any] = {"sid": CONFERENCE, "participants": {"customer": CUSTOMER_CALL}}
    if worker_call is not None:
        conference["participants"]["worker"] = worker_call
    return json.dumps({"call_sid": CUSTOMER_CALL, "direction": "inbound", "from": "+16505550100", "to": "+16505550199", "conference": conference})


def taskrouter_event(
    eventtype: str,
    reservation: Reservation | None,
    *,
    at: str,
    worker_call: str | None = None,
    queue: Reservation | None = None,
    channel: str = "voice",
    event_id: str | None = None,
    task_attributes: str | None = None,
) -> dict[str, Any]:
    """One CloudEvent of ``com.twilio.taskrouter.<eventtype>``; ``queue``: the task's queue now (default the reservation's)."""
    where = queue or reservation or SUPPORT
    payload: dict[str, Any] = {
        "eventtype": eventtype,
        "timestamp": at,
        "workspace_sid": "WS" + "0" * 32,
        "task_sid": TASK,
        "task_channel_unique_name": channel,
        "task_queue_sid": where.queue_sid,
        "task_queue_name": where.queue,
        "workflow_sid": "WW" + "0" * 32,
        "workflow_name": "Inbound",
        "task_attributes": task_attributes if task_attributes is not None else attributes(worker_call),
        "task_assignment_status": "assigned",
    }
    if reservation is not None:
        payload |= {
            "reservation_sid": reservation.sid,
            "worker_sid": "WK" + reservation.sid[2:],
            "worker_name": "alice",
            "worker_attributes": json.dumps({"team_name": reservation.team, "full_name": "Alice Example", "contact_uri": "client:alice"}),
        }
    return {
        "specversion": "1.0",
        "type": f"com.twilio.taskrouter.{eventtype}",
        "source": "/v1/Workspaces/WS/Tasks/" + TASK,
        "id": event_id or f"EZ-{eventtype}-{reservation.sid if reservation else 'task'}",
        "dataschema": "https://events-schemas.twilio.com/TaskRouter.WDSEvent/4",
        "datacontenttype": "application/json",
        "time": at,
        "data": {"sid": "EV" + "0" * 32, "group": "task", "product_name": "TaskRouter", "payload_type": "application/json", "payload": payload},
    }


def inbound_call_events() -> list[dict[str, Any]]:
    """accepted, wrapup, completed of a Flex inbound call answered from the Support queue."""
    return [
        taskrouter_event("reservation.accepted", SUPPORT, at="2026-11-01T10:00:10Z", worker_call=AGENT_CALL),
        taskrouter_event("reservation.wrapup", SUPPORT, at="2026-11-01T10:07:12Z", worker_call=AGENT_CALL),
        taskrouter_event("task.completed", None, at="2026-11-01T10:08:00Z", worker_call=AGENT_CALL, queue=SUPPORT),
    ]


def participant(call_sid: str, participant_sid: str) -> dict[str, Any]:
    event = fixture("reference_event.json")
    event["id"] = "EZ-" + participant_sid
    event["data"] |= {"call_sid": call_sid, "conference_sid": CONFERENCE, "participant_sid": participant_sid}
    return event


def call(call_sid: str) -> dict[str, Any]:
    event = fixture("call_summary_complete.json")
    event["id"] = "EZ-call-" + call_sid
    event["data"]["call_sid"] = call_sid
    return event


def conference() -> dict[str, Any]:
    event = fixture("conference_summary_complete.json")
    event["data"]["conference_sid"] = CONFERENCE
    return event


def summaries(*agent_calls: str) -> list[dict[str, Any]]:
    """The participant and call summaries of the customer's and each agent's leg, and the conference summary."""
    legs = [CUSTOMER_CALL, *agent_calls]
    return [
        *(participant(sid, "CP" + sid[2:]) for sid in legs),
        *(call(sid) for sid in legs),
        conference(),
    ]
