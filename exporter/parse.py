"""One parser for every road in: a webhook body, a Kinesis record, a CloudEvent, a summary.

Whatever door an item came through, it meets these functions and their reasons, and no others:

- :func:`batch`: a webhook body into its CloudEvents (or :class:`NotABatch`, which no retry
  fixes: the webhook answers 400);
- :func:`page`: a REST page into its object, each summary of its lists decoded on its own;
- :func:`event`: one CloudEvent, decoded (a webhook batch's element) or as bytes (a Kinesis
  record's ``Data``, or a batch element that could not be decoded with its neighbours), into its envelope;
- :func:`summary`: a summary (an envelope's ``data``, or a REST item, decoded or as bytes) into its subject's model;
- :func:`taskrouter`: a TaskRouter event's ``data`` into its payload (its ``task_attributes``
  and ``worker_attributes`` JSON texts read by the same strict reader).

:func:`event` and :func:`summary` raise :class:`InvalidEvent`, which carries the reason counted
in ``twilio_insights_exporter_invalid_events_total`` and what may be logged of it (a location and
a message, never a value: values may hold phone numbers). The pipeline alone counts them.

**One event's bytes cost only that event.** A body, a record or a page is read in one call when it
can be (the fast path). When it cannot, its members are cut apart undecoded
(exporter/reader.py) and each is read on its own where the pipeline takes it, so a lone surrogate
(decoded tolerantly, as U+FFFD), a nesting deeper than 200 (``nested_too_deep``) or a syntax error
(``not_json``) in one event makes that event invalid and its neighbours are recorded. Undecoded
members travel as ``bytes``: no decoded JSON value is ever ``bytes``, so they cannot be mistaken
for one.

The models and their tolerance live in exporter/models.py, the JSON reader in
exporter/reader.py; this module turns their errors into reasons.
"""

from __future__ import annotations

from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from exporter.models import CloudEvent, TaskRouterData, TaskRouterPayload
from exporter.reader import TooDeep, loads, split_array, split_object

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


def batch(body: bytes) -> list[Any]:
    """A delivery body (a JSON array of CloudEvent objects, or one) as its list of events.

    Each event is an object, or the undecoded ``bytes`` of one that could not be read with the
    rest (:func:`event` reads it alone, and counts it invalid if it cannot).

    >>> batch(b'{"id": "EZ1"}')
    [{'id': 'EZ1'}]
    >>> batch(b'[{"id": "EZ1"}, {"id": NaN}]')
    [b'{"id": "EZ1"}', b'{"id": NaN}']
    >>> batch(b'[1]')
    Traceback (most recent call last):
    ...
    exporter.parse.NotABatch: body is neither a CloudEvent object nor an array of them
    """
    try:
        document = loads(body)
    except ValueError:
        return _split(body)
    if isinstance(document, dict):
        return [document]
    if isinstance(document, list) and all(isinstance(item, dict) for item in document):
        return document
    raise _NOT_CLOUDEVENTS


def _split(body: bytes) -> list[Any]:
    # The body as a whole could not be read: cut it into its events, each read on its own later.
    members = split_array(body)
    if members is None:
        raise NotABatch("invalid_json", "body is not valid JSON")
    if not all(member.startswith(b"{") for member in members):
        raise _NOT_CLOUDEVENTS
    return list(members)


_NOT_CLOUDEVENTS = NotABatch("not_cloudevents", "body is neither a CloudEvent object nor an array of them")


def page(text: str | bytes) -> Any:
    """A REST page (a JSON object whose lists hold summaries) decoded; ``ValueError`` if it is not one.

    An element of a list that cannot be read is left as its ``bytes``: :func:`summary` counts it
    invalid, and the page's other summaries are recorded.

    >>> page(b'{"meta": {"next_page_url": null}, "participants": [{"participant_sid": "CP1"}, [[1]] ]}')
    {'meta': {'next_page_url': None}, 'participants': [{'participant_sid': 'CP1'}, [[1]]]}
    >>> page(b'{"meta": {}, "participants": [{"participant_sid": "CP1"}, {"x": NaN}]}')
    {'meta': {}, 'participants': [{'participant_sid': 'CP1'}, b'{"x": NaN}']}
    """
    try:
        return loads(text)
    except ValueError as refused:
        data = text if isinstance(text, bytes) else text.encode("utf-8", "surrogatepass")
        members = split_object(data)
        if members is None:
            raise refused from None
        document: dict[str, Any] = {}
        for key, value in members:
            elements = split_array(value)
            document[loads(key)] = [_loads_or_bytes(element) for element in elements] if elements is not None else loads(value)
        return document


def _loads_or_bytes(text: bytes) -> Any:
    try:
        return loads(text)
    except ValueError:
        return text


def _decode(raw: bytes | str) -> Any:
    try:
        return loads(raw)
    except TooDeep:
        raise InvalidEvent("nested_too_deep", "", "nested deeper than 200") from None
    except ValueError as exc:
        raise InvalidEvent("not_json", "", str(exc)) from None


def event(raw: Any) -> CloudEvent:
    """One CloudEvent: a decoded JSON value, or its JSON text (a Kinesis record's ``Data``)."""
    if isinstance(raw, bytes | str):
        raw = _decode(raw)
    try:
        return CloudEvent.model_validate(raw)
    except ValidationError as exc:
        raise _invalid(_envelope_reason(exc), exc) from None


def summary(model: type[M], key_field: str, data: Any) -> M:
    """``data`` as a summary of ``model``; a summary without its ``key_field`` is ``missing_<key_field>``.

    ``data`` as ``bytes`` is a page's element that could not be read with the page: read alone here.
    """
    if isinstance(data, bytes):
        data = _decode(data)
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
