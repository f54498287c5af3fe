"""A fake Voice Insights REST API for the pull-mode tests (aiohttp, loopback only).

It follows the documented shapes (twilio-facts.md, participant-summary-rest-resource.txt):

- HTTP Basic auth is required (Account SID + auth token, or API key SID + secret); anything else
  gets Twilio's 401 error body;
- ``GET /v1/Conferences`` filters on ``CreatedAfter`` and pages by ``PageSize``/``Page``/
  ``PageToken``; ``GET /v1/Conferences/{CF}/Participants`` pages the same way;
- lists answer ``{"meta": {page, page_size, first_page_url, previous_page_url, next_page_url, url,
  key}, "<key>": [...]}``, and ``next_page_url`` is absolute on ``https://insights.twilio.com``
  as the real API writes it (so a client that followed the host blindly would leave loopback);
- ``GET /v1/Voice/Summaries`` (call-and-conference-summary-facts.md) filters on ``StartTime``/
  ``EndTime`` (ISO 8601 or relative ``30m``/``4h``/``3d``; defaults ``4h`` and ``0m``) against the
  call's start, on ``ProcessingState`` (``completed``, ``partial``, ``started``, ``all``; default
  ``completed``), on the comma-separated ``CallType``, ``CallState`` and ``Direction`` and on
  ``Subaccount``, sorts by ``SortBy``, and pages under the key ``call_summaries``;
  ``GET /v1/Conferences/{CF}`` answers one conference (its Conference Summary) or 404;
- a 429 carries error 20429 and, when asked, ``Retry-After``.

Tests add conferences, participants and call summaries, change one between polls (``in_progress``
or ``partial`` then ``complete``), schedule faults (429, 5xx, a dropped connection) and can hold every request at a
gate to play a slow API.
"""

from __future__ import annotations

import asyncio
import base64
import copy
import json
import re
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

from aiohttp import web

ACCOUNT_SID = "AC" + "0" * 31 + "1"
AUTH_TOKEN = "fake-insights-auth-token"
API_KEY = "SK" + "0" * 31 + "2"
API_SECRET = "fake-insights-api-secret"
PUBLIC_BASE = "https://insights.twilio.com"

CONFERENCES = "conferences"
PARTICIPANTS = "participants"
CALL_SUMMARIES = "call_summaries"
CONFERENCE = "conference_summary"
BROKEN = 0  # a fault "status": bytes that are not HTTP, then the connection closes


def iso(unix_time: float) -> str:
    return datetime.fromtimestamp(unix_time, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class Fault:
    status: int
    endpoint: str | None
    path: str | None
    retry_after: str | None


# An item whose JSON text the fake writes as given (``{RAW: text, ...filter fields}``): what
# json.dumps cannot write, a lone surrogate escape, a NaN, a nesting 10,000 deep.
RAW = "@raw"


@dataclass
class Seen:
    """One request the fake answered: which list, its path and query, and the status given."""

    endpoint: str
    path: str
    query: dict[str, str]
    status: int


@dataclass
class FakeInsights:
    conferences: dict[str, dict[str, Any]] = field(default_factory=dict)
    participants: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)
    calls: dict[str, dict[str, Any]] = field(default_factory=dict)
    faults: list[Fault] = field(default_factory=list)
    seen: list[Seen] = field(default_factory=list)
    gate: asyncio.Event = field(default_factory=asyncio.Event)
    credentials: frozenset[tuple[str, str]] = frozenset({(ACCOUNT_SID, AUTH_TOKEN), (API_KEY, API_SECRET)})
    # "Now" for the relative StartTime/EndTime filters and their defaults.
    clock: Any = time.time
    # True: the Call Summaries list answers calls in every processing state whatever ProcessingState
    # asks (a client must not trust the filter alone).
    ignore_processing_state: bool = False

    def __post_init__(self) -> None:
        self.gate.set()

    # -- what the tests set up --------------------------------------------------------------

    def add_conference(self, sid: str, created: float, processing_state: str = "complete", **fields: Any) -> str:
        """A conference created at Unix time ``created``, shaped like the Insights Conference resource."""
        self.conferences[sid] = {
            "conference_sid": sid,
            "account_sid": ACCOUNT_SID,
            "friendly_name": None,
            "create_time": iso(created),
            "start_time": iso(created),
            "end_time": None if processing_state == "in_progress" else iso(created + 600),
            "duration_seconds": None if processing_state == "in_progress" else 600,
            "connect_duration_seconds": 590,
            "status": "in_progress" if processing_state == "in_progress" else "completed",
            "max_participants": 250,
            "max_concurrent_participants": 2,
            "unique_participants": 2,
            "end_reason": "last_participant_left",
            "ended_by": None,
            "mixer_region": "us1",
            "mixer_region_requested": None,
            "recording_enabled": False,
            "detected_issues": None,
            "tags": None,
            "tag_info": None,
            "processing_state": processing_state,
            "url": f"{PUBLIC_BASE}/v1/Conferences/{sid}",
            "links": {"conference_participants": f"{PUBLIC_BASE}/v1/Conferences/{sid}/Participants"},
            # An undocumented key, as real answers carry.
            "created_time_ms": int(created * 1000),
            **fields,
        }
        self.participants.setdefault(sid, {})
        return sid

    def add_participant(self, conference_sid: str, summary: dict[str, Any]) -> str:
        """``summary`` (a REST-shaped participant summary) listed under ``conference_sid``."""
        summary = copy.deepcopy(summary)
        summary["conference_sid"] = conference_sid
        sid = summary["participant_sid"]
        summary["url"] = f"{PUBLIC_BASE}/v1/Conferences/{conference_sid}/Participants/{sid}"
        self.participants[conference_sid][sid] = summary
        return sid

    def update_participant(self, conference_sid: str, participant_sid: str, /, **fields: Any) -> None:
        self.participants[conference_sid][participant_sid].update(fields)

    def add_call(self, summary: dict[str, Any], started: float, processing_state: str = "complete", **fields: Any) -> str:
        """A Call Summary (the facts file's shape) of a call that started at Unix time ``started``."""
        summary = copy.deepcopy(summary)
        sid = summary["call_sid"]
        summary.update(
            start_time=iso(started),
            end_time=iso(started + 140),
            processing_state=processing_state,
            url=f"{PUBLIC_BASE}/v1/Voice/{sid}/Summary",
            **fields,
        )
        summary.setdefault("account_sid", ACCOUNT_SID)
        self.calls[sid] = summary
        return sid

    @staticmethod
    def spoil(item: dict[str, Any], how: str) -> None:
        """Make ``item`` (a listed call, conference or participant) listed as JSON text the one-call parser refuses.

        ``surrogate``: a lone surrogate escape in its ``account_sid`` (read tolerantly, still a
        summary); ``deep``: a member nested 10,000 deep; ``nan``: a member that is NaN.
        """
        text = json.dumps(item)
        if how == "surrogate":
            item[RAW] = text.replace(json.dumps(item["account_sid"]), json.dumps(item["account_sid"])[:-1] + '\\ud83d"', 1)
        else:
            item[RAW] = text[:-1] + ', "x": ' + ("[" * 10_000 + "]" * 10_000 if how == "deep" else "NaN") + "}"

    def update_call(self, call_sid: str, /, **fields: Any) -> None:
        self.calls[call_sid].update(fields)

    def fail(self, status: int, times: int = 1, endpoint: str | None = None, path: str | None = None, retry_after: str | None = None) -> None:
        """The next ``times`` requests (to ``endpoint`` or ``path``, else any) answer ``status`` (``BROKEN``: not HTTP)."""
        self.faults += [Fault(status, endpoint, path, retry_after)] * times

    def requests(self, endpoint: str, status: int | None = 200) -> list[Seen]:
        return [s for s in self.seen if s.endpoint == endpoint and (status is None or s.status == status)]

    # -- the API ----------------------------------------------------------------------------

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/v1/Conferences", self._list_conferences)
        app.router.add_get("/v1/Conferences/{sid}/Participants", self._list_participants)
        app.router.add_get("/v1/Conferences/{sid}", self._get_conference)
        app.router.add_get("/v1/Voice/Summaries", self._list_calls)
        return app

    async def _get_conference(self, request: web.Request) -> web.StreamResponse:
        if (refusal := await self._refuse(request, CONFERENCE)) is not None:
            return refusal
        conference = self.conferences.get(request.match_info["sid"])
        if conference is None:
            return self._error(request, CONFERENCE, 404, 20404, "The requested resource was not found")
        self._record(request, CONFERENCE, 200)
        return web.json_response(copy.deepcopy(conference))

    async def _list_calls(self, request: web.Request) -> web.StreamResponse:
        if (refusal := await self._refuse(request, CALL_SUMMARIES)) is not None:
            return refusal
        q = request.query
        now = self.clock()
        try:
            start, end = self._when(q.get("StartTime", "4h"), now), self._when(q.get("EndTime", "0m"), now)
        except ValueError:
            return self._error(request, CALL_SUMMARIES, 400, 20001, "Invalid StartTime or EndTime")
        state = q.get("ProcessingState", "completed")
        wanted = {"completed": {"complete"}, "partial": {"partial"}, "started": {"partial", "complete"}, "all": None}.get(state, set())
        if self.ignore_processing_state:
            wanted = None
        items = [c for c in self.calls.values() if start <= c["start_time"] <= end and (wanted is None or c["processing_state"] in wanted)]
        for name, key in (("CallType", "call_type"), ("CallState", "call_state")):
            if name in q:
                items = [c for c in items if c.get(key) in q[name].split(",")]
        if "Direction" in q:
            items = [c for c in items if (c.get("properties") or {}).get("direction") in q["Direction"].split(",")]
        if "Subaccount" in q:
            items = [c for c in items if c.get("account_sid") == q["Subaccount"]]
        sort_by = q.get("SortBy", "start_time")
        items.sort(key=lambda c: c.get(sort_by) or "", reverse=True)  # newest first
        filters = {k: v for k, v in q.items() if k not in ("PageSize", "Page", "PageToken")}
        return self._page(request, CALL_SUMMARIES, "/v1/Voice/Summaries", items, filters)

    @staticmethod
    def _when(value: str, now: float) -> str:
        """A StartTime/EndTime filter as an ISO 8601 string, comparable with the summaries' own."""
        relative = re.fullmatch(r"(\d+)([mhd])", value)
        if relative:
            return iso(now - int(relative[1]) * {"m": 60, "h": 3600, "d": 86400}[relative[2]])
        return iso(datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp())

    async def _list_conferences(self, request: web.Request) -> web.StreamResponse:
        if (refusal := await self._refuse(request, CONFERENCES)) is not None:
            return refusal
        after = request.query.get("CreatedAfter")
        items = sorted(self.conferences.values(), key=lambda c: c["create_time"], reverse=True)  # newest first
        if after:
            items = [c for c in items if c["create_time"] > after]
        return self._page(request, CONFERENCES, "/v1/Conferences", items, {"CreatedAfter": after} if after else {})

    async def _list_participants(self, request: web.Request) -> web.StreamResponse:
        if (refusal := await self._refuse(request, PARTICIPANTS)) is not None:
            return refusal
        sid = request.match_info["sid"]
        if sid not in self.participants:
            return self._error(request, PARTICIPANTS, 404, 20404, f"The requested resource /Conferences/{sid}/Participants was not found")
        items = list(self.participants[sid].values())
        return self._page(request, PARTICIPANTS, f"/v1/Conferences/{sid}/Participants", items, {})

    async def _refuse(self, request: web.Request, endpoint: str) -> web.StreamResponse | None:
        await self.gate.wait()
        if not self._authorised(request):
            response = self._error(request, endpoint, 401, 20003, "Authenticate")
            response.headers["WWW-Authenticate"] = 'Basic realm="Twilio API"'
            return response
        for i, fault in enumerate(self.faults):
            if fault.endpoint in (None, endpoint) and fault.path in (None, request.path):
                del self.faults[i]
                if fault.status == BROKEN:
                    # Not a mere disconnect: aiohttp's client silently retries those once.
                    self._record(request, endpoint, BROKEN)
                    assert request.transport is not None
                    request.transport.write(b"NOT HTTP AT ALL\r\n\r\n")
                    request.transport.close()
                    return web.Response()
                code = 20429 if fault.status == 429 else 20500
                response = self._error(request, endpoint, fault.status, code, "Too Many Requests" if fault.status == 429 else "Internal Server Error")
                if fault.retry_after is not None:
                    response.headers["Retry-After"] = fault.retry_after
                return response
        return None

    def _authorised(self, request: web.Request) -> bool:
        scheme, _, value = request.headers.get("Authorization", "").partition(" ")
        if scheme != "Basic":
            return False
        user, _, password = base64.b64decode(value).decode().partition(":")
        return (user, password) in self.credentials

    def _page(self, request: web.Request, endpoint: str, path: str, items: list[dict[str, Any]], filters: dict[str, str]) -> web.Response:
        size = min(int(request.query.get("PageSize", "50")), 1000)
        page = int(request.query.get("Page", "0"))
        chunk = items[page * size : (page + 1) * size]

        def url(number: int) -> str:
            query = {**filters, "PageSize": size, "Page": number}
            if number:
                query["PageToken"] = f"PT{number * size}"
            return f"{PUBLIC_BASE}{path}?{urlencode(query)}"

        meta = {
            "page": page,
            "page_size": size,
            "first_page_url": url(0),
            "previous_page_url": url(page - 1) if page else None,
            "url": url(page),
            "next_page_url": url(page + 1) if (page + 1) * size < len(items) else None,
            "key": endpoint,
        }
        self._record(request, endpoint, 200)
        if not any(RAW in item for item in chunk):
            return web.json_response({"meta": meta, endpoint: copy.deepcopy(chunk)})
        texts = ",".join(item[RAW] if RAW in item else json.dumps(item) for item in chunk)
        return web.Response(text=f'{{"meta": {json.dumps(meta)}, "{endpoint}": [{texts}]}}', content_type="application/json")

    def _error(self, request: web.Request, endpoint: str, status: int, code: int, message: str) -> web.Response:
        self._record(request, endpoint, status)
        body = {"code": code, "message": message, "more_info": f"https://www.twilio.com/docs/errors/{code}", "status": status}
        return web.json_response(body, status=status)

    def _record(self, request: web.Request, endpoint: str, status: int) -> None:
        self.seen.append(Seen(endpoint, request.path, dict(request.query), status))
