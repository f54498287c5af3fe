"""A fake Event Streams API (``events.twilio.com/v1``) for the subscribe tests (aiohttp, loopback only).

It follows the documented shapes (the Sink, Sink Test, Subscription and SubscribedEvent resources
of Twilio's Events v1 API, as the ``twilio`` SDK reads them):

- HTTP Basic auth is required (Account SID + auth token, or API key SID + secret); anything else
  gets Twilio's 401 error body (code 20003);
- ``GET /v1/Sinks`` and ``GET /v1/Subscriptions`` (filtered on ``SinkSid``) page by ``PageSize``
  (default 50) and ``Page``, under the keys ``sinks`` and ``subscriptions``; ``next_page_url`` is
  absolute on ``https://events.twilio.com`` as the real API writes it (a client that followed the
  host blindly would leave loopback);
- ``POST /v1/Sinks`` takes ``Description``, ``SinkType`` and ``SinkConfiguration`` (JSON text);
  sinks are ``active`` at once (Twilio no longer asks for a validation);
- ``POST /v1/Sinks/{DG}/Test`` answers ``{"result": "submitted"}`` and records the test;
- ``POST /v1/Subscriptions`` takes ``Description``, ``SinkSid`` and one ``Types`` field per type
  (JSON text ``{"type": ..., "schema_version": ...}``); the sink must exist and be active, and each
  type must be in the catalogue at that schema version, else 400;
- ``GET``/``POST /v1/Subscriptions/{DF}/SubscribedEvents`` list (key ``types``) and add one type.

The catalogue (:data:`CATALOGUE`) is what Twilio publishes, from the reference pages
(/work/shared/reference: the participant summary under its Event Streams name only, Call
Summaries 1 to 7, Conference Summaries 1 and 2, TaskRouter's WDSEvent 1 to 4 for the types its
pages list, the live call-metrics and call-event types): written here independently of the
exporter, so a type the exporter would subscribe by a wrong name is refused as Twilio would.

Tests read what was created and every request made (:attr:`FakeEvents.seen`).
"""

from __future__ import annotations

import base64
import json
import re
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

from aiohttp import web

ACCOUNT_SID = "AC" + "0" * 31 + "7"
AUTH_TOKEN = "fake-events-auth-token"
API_KEY = "SK" + "0" * 31 + "8"
API_SECRET = "fake-events-api-secret"
PUBLIC_BASE = "https://events.twilio.com"
DEFAULT_PAGE_SIZE = 50

_TASKROUTER = [
    *(f"task.{n}" for n in ("created", "updated", "canceled", "completed", "deleted", "system-deleted", "wrapup")),
    *(f"task.transfer-{n}" for n in ("initiated", "completed", "failed", "canceled", "attempt-failed")),
    *(f"reservation.{n}" for n in ("created", "accepted", "rejected", "timeout", "canceled", "rescinded", "completed", "failed", "wrapup")),
]
CATALOGUE: dict[str, frozenset[int]] = {
    "com.twilio.voice.insights.conference-participant-summary.complete": frozenset({1, 2}),
    **{f"com.twilio.voice.insights.call-summary.{n}": frozenset(range(1, 8)) for n in ("partial", "predicted-complete", "complete")},
    **{f"com.twilio.voice.insights.conference-summary.{n}": frozenset({1, 2}) for n in ("partial", "complete")},
    **{f"com.twilio.taskrouter.{n}": frozenset(range(1, 5)) for n in _TASKROUTER},
    **{f"com.twilio.voice.insights.call-metrics.{n}": frozenset({1, 2}) for n in ("gateway", "sdk")},
    **{f"com.twilio.voice.insights.call-event.{n}": frozenset({1, 2, 3}) for n in ("gateway", "sdk")},
}


@dataclass
class Seen:
    """One request the fake answered: method, path (no query) and the status given."""

    method: str
    path: str
    status: int


@dataclass
class FakeEvents:
    sinks: dict[str, dict[str, Any]] = field(default_factory=dict)
    subscriptions: dict[str, dict[str, Any]] = field(default_factory=dict)
    # Subscription SID -> event type -> schema version.
    subscribed: dict[str, dict[str, int]] = field(default_factory=dict)
    tests: list[str] = field(default_factory=list)  # sink SIDs, one per sink test
    seen: list[Seen] = field(default_factory=list)
    _next: int = 0

    def _sid(self, prefix: str) -> str:
        self._next += 1
        return f"{prefix}{self._next:032x}"

    def add_sink(self, destination: str, description: str = "someone else's", sink_type: str = "webhook", status: str = "active") -> str:
        sid = self._sid("DG")
        config = {"destination": destination, "method": "POST"} if sink_type == "webhook" else {"arn": destination}
        self.sinks[sid] = {"sid": sid, "description": description, "sink_type": sink_type, "sink_configuration": config, "status": status}
        return sid

    def add_subscription(self, sink_sid: str, types: dict[str, int], description: str = "someone else's") -> str:
        sid = self._sid("DF")
        self.subscriptions[sid] = {"sid": sid, "sink_sid": sink_sid, "description": description}
        self.subscribed[sid] = dict(types)
        return sid

    def types_of(self, sink_sid: str) -> dict[str, int]:
        """Every type some subscription of the sink has, with its schema version."""
        found: dict[str, int] = {}
        for sid, subscription in self.subscriptions.items():
            if subscription["sink_sid"] == sink_sid:
                found.update(self.subscribed[sid])
        return found

    def writes(self) -> list[tuple[str, str]]:
        """Every POST answered 2xx, as (method, path)."""
        return [(s.method, s.path) for s in self.seen if s.method == "POST" and s.status < 300]

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._record, self._authenticate])
        app.router.add_get("/v1/Sinks", self._list_sinks)
        app.router.add_post("/v1/Sinks", self._create_sink)
        app.router.add_get("/v1/Sinks/{sid}", self._get_sink)
        app.router.add_post("/v1/Sinks/{sid}/Test", self._test_sink)
        app.router.add_get("/v1/Subscriptions", self._list_subscriptions)
        app.router.add_post("/v1/Subscriptions", self._create_subscription)
        app.router.add_get("/v1/Subscriptions/{sid}/SubscribedEvents", self._list_subscribed)
        app.router.add_post("/v1/Subscriptions/{sid}/SubscribedEvents", self._add_subscribed)
        return app

    @web.middleware
    async def _record(self, request: web.Request, handler: Any) -> web.StreamResponse:
        try:
            response: web.StreamResponse = await handler(request)
        except web.HTTPException as exc:
            self.seen.append(Seen(request.method, request.path, exc.status))
            raise
        self.seen.append(Seen(request.method, request.path, response.status))
        return response

    @web.middleware
    async def _authenticate(self, request: web.Request, handler: Any) -> web.StreamResponse:
        allowed = {f"{ACCOUNT_SID}:{AUTH_TOKEN}", f"{API_KEY}:{API_SECRET}"}
        header = request.headers.get("Authorization", "")
        given = base64.b64decode(header.removeprefix("Basic ")).decode(errors="replace") if header.startswith("Basic ") else ""
        if given not in allowed:
            return _error(401, 20003, "Authenticate")
        response: web.StreamResponse = await handler(request)
        return response

    # --- sinks -------------------------------------------------------------------------------
    def _sink(self, sid: str) -> dict[str, Any]:
        sink = self.sinks[sid]
        return {
            **sink,
            "date_created": "2026-01-01T00:00:00Z",
            "date_updated": "2026-01-01T00:00:00Z",
            "url": f"{PUBLIC_BASE}/v1/Sinks/{sid}",
            "links": {"sink_test": f"{PUBLIC_BASE}/v1/Sinks/{sid}/Test", "sink_validate": f"{PUBLIC_BASE}/v1/Sinks/{sid}/Validate"},
        }

    async def _list_sinks(self, request: web.Request) -> web.StreamResponse:
        return _page(request, "sinks", [self._sink(sid) for sid in self.sinks])

    async def _get_sink(self, request: web.Request) -> web.StreamResponse:
        sid = request.match_info["sid"]
        if sid not in self.sinks:
            return _error(404, 20404, f"The requested resource /Sinks/{sid} was not found")
        return web.json_response(self._sink(sid))

    async def _create_sink(self, request: web.Request) -> web.StreamResponse:
        form = await request.post()
        description, sink_type, config_text = (str(form.get(name, "")) for name in ("Description", "SinkType", "SinkConfiguration"))
        if not description or sink_type not in ("webhook", "kinesis", "segment"):
            return _error(400, 20001, "Missing or invalid Description or SinkType")
        try:
            config = json.loads(config_text)
        except ValueError:
            return _error(400, 20001, "SinkConfiguration is not JSON")
        if sink_type == "webhook" and (not isinstance(config, dict) or config.get("method") not in ("POST", "GET") or not config.get("destination")):
            return _error(400, 20001, "A webhook sink needs a destination and a method")
        sid = self._sid("DG")
        self.sinks[sid] = {"sid": sid, "description": description, "sink_type": sink_type, "sink_configuration": config, "status": "active"}
        return web.json_response(self._sink(sid), status=201)

    async def _test_sink(self, request: web.Request) -> web.StreamResponse:
        sid = request.match_info["sid"]
        if sid not in self.sinks:
            return _error(404, 20404, f"The requested resource /Sinks/{sid}/Test was not found")
        self.tests.append(sid)
        return web.json_response({"result": "submitted"}, status=201)

    # --- subscriptions -----------------------------------------------------------------------
    def _subscription(self, sid: str) -> dict[str, Any]:
        return {
            **self.subscriptions[sid],
            "account_sid": ACCOUNT_SID,
            "date_created": "2026-01-01T00:00:00Z",
            "date_updated": "2026-01-01T00:00:00Z",
            "url": f"{PUBLIC_BASE}/v1/Subscriptions/{sid}",
            "links": {"subscribed_events": f"{PUBLIC_BASE}/v1/Subscriptions/{sid}/SubscribedEvents"},
        }

    def _subscribed_event(self, sid: str, type_: str) -> dict[str, Any]:
        return {
            "account_sid": ACCOUNT_SID,
            "type": type_,
            "schema_version": self.subscribed[sid][type_],
            "subscription_sid": sid,
            "url": f"{PUBLIC_BASE}/v1/Subscriptions/{sid}/SubscribedEvents/{type_}",
        }

    async def _list_subscriptions(self, request: web.Request) -> web.StreamResponse:
        sink_sid = request.query.get("SinkSid")
        sids = [sid for sid, s in self.subscriptions.items() if sink_sid is None or s["sink_sid"] == sink_sid]
        return _page(request, "subscriptions", [self._subscription(sid) for sid in sids])

    async def _create_subscription(self, request: web.Request) -> web.StreamResponse:
        form = await request.post()
        description, sink_sid = str(form.get("Description", "")), str(form.get("SinkSid", ""))
        if not description or not re.fullmatch(r"DG[0-9a-f]{32}", sink_sid):
            return _error(400, 20001, "Missing or invalid Description or SinkSid")
        if sink_sid not in self.sinks or self.sinks[sink_sid]["status"] != "active":
            return _error(400, 20001, "Sink must be active for the subscription to be created")
        types: dict[str, int] = {}
        for text in form.getall("Types", []):
            try:
                item = json.loads(str(text))
                type_, version = item["type"], item["schema_version"]
            except (ValueError, KeyError, TypeError):
                return _error(400, 20001, "Types must be JSON objects with type and schema_version")
            if (problem := _uncatalogued(type_, version)) is not None:
                return problem
            if type_ in types:
                return _error(400, 20001, f"{type_} is given twice")
            types[type_] = version
        if not types:
            return _error(400, 20001, "Types is required")
        sid = self.add_subscription(sink_sid, types, description)
        return web.json_response(self._subscription(sid), status=201)

    async def _list_subscribed(self, request: web.Request) -> web.StreamResponse:
        sid = request.match_info["sid"]
        if sid not in self.subscriptions:
            return _error(404, 20404, f"The requested resource /Subscriptions/{sid}/SubscribedEvents was not found")
        return _page(request, "types", [self._subscribed_event(sid, t) for t in self.subscribed[sid]])

    async def _add_subscribed(self, request: web.Request) -> web.StreamResponse:
        sid = request.match_info["sid"]
        if sid not in self.subscriptions:
            return _error(404, 20404, f"The requested resource /Subscriptions/{sid}/SubscribedEvents was not found")
        form = await request.post()
        type_ = str(form.get("Type", ""))
        try:
            version = int(str(form.get("SchemaVersion", "")))
        except ValueError:
            return _error(400, 20001, "SchemaVersion must be an integer")
        if (problem := _uncatalogued(type_, version)) is not None:
            return problem
        if type_ in self.subscribed[sid]:
            return _error(409, 20409, f"{type_} is already subscribed")
        self.subscribed[sid][type_] = version
        return web.json_response(self._subscribed_event(sid, type_), status=201)


def _uncatalogued(type_: Any, version: Any) -> web.Response | None:
    if not isinstance(type_, str) or type_ not in CATALOGUE:
        return _error(400, 20001, f"Event type {type_} does not exist")
    if not isinstance(version, int) or version not in CATALOGUE[type_]:
        return _error(400, 20001, f"Schema version {version} does not exist for {type_}")
    return None


def _page(request: web.Request, key: str, items: list[dict[str, Any]]) -> web.Response:
    size = int(request.query.get("PageSize", DEFAULT_PAGE_SIZE))
    page = int(request.query.get("Page", 0))
    query = {k: v for k, v in request.query.items() if k not in ("Page", "PageSize", "PageToken")}

    def url(n: int) -> str:
        return f"{PUBLIC_BASE}{request.path}?{urlencode({**query, 'PageSize': size, 'Page': n})}"

    more = (page + 1) * size < len(items)
    meta = {
        "page": page,
        "page_size": size,
        "first_page_url": url(0),
        "previous_page_url": url(page - 1) if page > 0 else None,
        "url": url(page),
        "next_page_url": url(page + 1) if more else None,
        "key": key,
    }
    return web.json_response({key: items[page * size : (page + 1) * size], "meta": meta})


def _error(status: int, code: int, message: str) -> web.Response:
    return web.json_response(
        {"code": code, "message": message, "more_info": f"https://www.twilio.com/docs/errors/{code}", "status": status}, status=status
    )
