"""One parser for every road in: a webhook body, a Kinesis record, a CloudEvent, a summary.

Whatever door an item came through, it meets these functions and their reasons, and no others:

- :func:`batch`: a webhook body into its CloudEvents (or :class:`NotABatch`, which no retry
  fixes: the webhook answers 400);
- :func:`event`: one CloudEvent, decoded (a webhook batch's element) or as bytes (a Kinesis
  record's ``Data``), into its envelope;
- :func:`summary`: a summary (an envelope's ``data``, or a REST item) into its subject's model;
- :func:`taskrouter`: a TaskRouter event's ``data`` into its payload (its ``task_attributes``
  and ``worker_attributes`` JSON texts read by the same strict reader).

:func:`event` and :func:`summary` raise :class:`InvalidEvent`, which carries the reason counted
in ``twilio_insights_exporter_invalid_events_total`` and what may be logged of it (a location and
a message, never a value: values may hold phone numbers). The pipeline alone counts them.

The models and their tolerance live in exporter/models.py; this module turns their errors into
reasons.
"""

from __future__ import annotations

from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from .models import CloudEvent, TaskRouterData, TaskRouterPayload, loads

M = TypeVar("M", bound=BaseModel)


class NotABatch(ValueError):
    """A webhook body that is not a delivery: not JSON, or not CloudEvents."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


class InvalidEvent(ValueError):
    """One event that cannot be read: counted as invalid with ``reason``, passed over."""

    def __init__(self, reason: str, field: str, error: str) -> None:
        super().__init__(f"{reason}: {field}: {error}")
        self.reason = reason
        self.field = field
        self.error = error


def batch(body: bytes) -> list[dict[str, Any]]:
    """A delivery body (a JSON array of CloudEvent objects, or one) as its list of objects.

    >>> batch(b'{"id": "EZ1"}')
    [{'id': 'EZ1'}]
    >>> batch(b'[1]')
    Traceback (most recent call last):
    ...
    exporter.parse.NotABatch: body is neither a CloudEvent object nor an array of them
    """
    try:
        document = loads(body)
    except (ValueError, RecursionError):
        raise NotABatch("invalid_json", "body is not valid JSON") from None
    if isinstance(document, dict):
        return [document]
    if isinstance(document, list) and all(isinstance(item, dict) for item in document):
        return document
    raise NotABatch("not_cloudevents", "body is neither a CloudEvent object nor an array of them")


def event(raw: Any) -> CloudEvent:
    """One CloudEvent: a decoded JSON value, or its JSON text (a Kinesis record's ``Data``)."""
    if isinstance(raw, bytes | str):
        try:
            raw = loads(raw)
        except (ValueError, RecursionError) as exc:
            raise InvalidEvent("not_json", "", str(exc) if isinstance(exc, ValueError) else "nested too deep") from None
    try:
        return CloudEvent.model_validate(raw)
    except ValidationError as exc:
        raise _invalid(_envelope_reason(exc), exc) from None


def summary(model: type[M], key_field: str, data: Any) -> M:
    """``data`` as a summary of ``model``; a summary without its ``key_field`` is ``missing_<key_field>``."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise _invalid(_summary_reason(exc, key_field), exc) from None


def taskrouter(data: Any) -> TaskRouterPayload:
    """A TaskRouter event's ``data`` as its payload; attributes that are not a JSON object are ``bad_task_attributes``."""
    try:
        return TaskRouterData.model_validate(data).payload
    except ValidationError as exc:
        raise _invalid(_taskrouter_reason(exc), exc) from None


def _taskrouter_reason(exc: ValidationError) -> str:
    errors = exc.errors(include_url=False, include_input=False)
    if errors[0]["type"] == "model_type" and errors[0]["loc"] == ():
        return "data_not_an_object"
    for error in errors:
        loc = error["loc"]
        if loc == ("payload", "task_sid") or (loc == ("payload",) and error["type"] == "missing"):
            return "missing_task_sid"
        if loc[:2] in (("payload", "task_attributes"), ("payload", "worker_attributes")):
            return f"bad_{loc[1]}"
    return "bad_field"


def _invalid(reason: str, exc: ValidationError) -> InvalidEvent:
    first = exc.errors(include_url=False, include_input=False)[0]
    return InvalidEvent(reason, ".".join(map(str, first["loc"])), first["msg"])


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


def _summary_reason(exc: ValidationError, key_field: str) -> str:
    errors = exc.errors(include_url=False, include_input=False)
    if errors[0]["type"] == "model_type":
        return "data_not_an_object"
    if any(error["loc"] == (key_field,) for error in errors):
        return f"missing_{key_field}"
    return "bad_field"
