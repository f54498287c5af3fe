"""Pull mode: participant summaries read from the Voice Insights REST API, each recorded once.

For users who cannot expose a webhook, and to recover what Twilio stopped retrying (4 hours)
while the REST API still holds it (30 days). One poll:

1. lists the conferences created since the watermark minus ``--pull.overlap``
   (``GET /v1/Conferences?CreatedAfter=...``, following ``meta.next_page_url``);
2. lists the participants of each conference not finished with yet, plus the conferences still
   pending from earlier polls (``GET /v1/Conferences/{CF}/Participants``);
3. hands every summary whose ``processing_state`` is ``complete`` or ``timeout`` to the same
   :class:`~exporter.pipeline.Pipeline` as the webhook, which records it unless either path
   already did;
4. remembers a conference as *pending* while any of its summaries is ``in_progress`` (re-read on
   later polls, given up after ``--pull.pending-max-age``), else as *done* (not re-read);
5. moves the watermark to the poll's start once the conference list was read to the end.

Watermark, pending and done conferences, and the pipeline's dedup keys live in the
:class:`~exporter.state.StateStore`, so a restart on the same state file neither counts twice nor
skips what arrived while the exporter was down.

Nothing the API does stops the service: every request is retried (429 after its ``Retry-After``,
5xx and network errors with exponential backoff), a poll that still fails is counted and logged,
and the next poll starts over from the unchanged watermark. Readiness never looks at the API.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from aiohttp import web
from pydantic import ValidationError
from twilio.auth_strategy.auth_strategy import AuthStrategy
from twilio.auth_strategy.auth_type import AuthType
from twilio.credential.credential_provider import CredentialProvider
from twilio.http.async_http_client import AsyncTwilioHttpClient
from twilio.http.response import Response
from twilio.rest import Client

from . import metrics as names
from .config import Config, PullSettings
from .dedup import Window
from .metrics import PullMetrics
from .models import ParticipantSummary, loads
from .pipeline import Pipeline
from .state import CONFERENCE_SID, StateStore

log = logging.getLogger(__name__)

# The twilio SDK logs every request, with its headers, at INFO: one line per header per request
# would drown the exporter's own logs. Its warnings still come through.
_SDK_LOG = logging.getLogger(__name__ + ".twilio_http")
_SDK_LOG.setLevel(logging.WARNING)

SOURCE = "pull"
CONFERENCES = "conferences"
PARTICIPANTS = "participants"
# Summaries in these states are final: ``timeout`` is recorded with what it has (Twilio gave up
# after 24 h). Anything else, ``in_progress`` or a state Twilio adds later, waits.
FINAL_STATES = frozenset({"complete", "timeout"})

Sleep = Callable[[float], Awaitable[None]]
Clock = Callable[[], float]


class ApiError(Exception):
    """A request that failed for good (after its retries, or at once for a non-retryable 4xx)."""

    def __init__(self, endpoint: str, code: str, message: str) -> None:
        super().__init__(f"{endpoint}: {code}: {message}")
        self.endpoint = endpoint
        self.code = code


class InsightsApi:
    """The two list endpoints of the Voice Insights API, with retries, through the twilio SDK.

    Transport and authentication are the SDK's: a :class:`twilio.rest.Client` over its aiohttp
    based :class:`~twilio.http.async_http_client.AsyncTwilioHttpClient`, called with
    ``request_async``. The SDK's typed resources (``client.insights.v1.conferences(cf)
    .conference_participants.list_async()``) are not used, for three reasons:

    - they copy a fixed set of fields and drop the rest, so ``call_state`` and
      ``quality_issues`` would be lost before :class:`~exporter.models.ParticipantSummary`, the
      one place tolerant parsing lives, could read them;
    - their errors (``TwilioRestException``) carry no headers, so a 429's ``Retry-After`` could
      not be honoured;
    - their base URL is fixed at ``https://insights.twilio.com``, and ``--pull.api-url`` must be
      able to point elsewhere (a proxy, or the tests' fake API).
    """

    def __init__(
        self,
        settings: PullSettings,
        credentials: tuple[str, str],
        pull_metrics: PullMetrics,
        sleep: Sleep = asyncio.sleep,
        clock: Clock = time.time,
    ) -> None:
        self.base_url = settings.api_url
        self._credentials = credentials
        self._page_size = settings.page_size
        self._timeout = settings.timeout.total_seconds()
        self._retries = settings.retries
        self._backoff = settings.backoff.total_seconds()
        self._max_backoff = settings.max_backoff.total_seconds()
        self._metrics = pull_metrics
        self._sleep = sleep
        self._clock = clock
        self._semaphore = asyncio.Semaphore(settings.concurrency)
        self._client: Client | None = None
        self._http: AsyncTwilioHttpClient | None = None

    async def open(self) -> None:
        """Create the HTTP session; inside the running loop, as aiohttp requires."""
        self._http = AsyncTwilioHttpClient(logger=_SDK_LOG)
        # An explicit environment: the SDK would otherwise read TWILIO_EDGE/TWILIO_REGION from
        # os.environ and silently rewrite the host of --pull.api-url.
        self._client = Client(
            http_client=self._http,
            environment={"TWILIO_EDGE": "", "TWILIO_REGION": ""},
            credential_provider=_BasicCredentials(*self._credentials),
        )

    async def close(self) -> None:
        if self._http is not None:
            await self._http.close()
            self._http = None
            self._client = None

    def conferences(self, created_after: float) -> AsyncIterator[list[Any]]:
        """Pages of conferences created after the Unix time ``created_after``."""
        params = {"CreatedAfter": _iso8601(created_after), "PageSize": self._page_size}
        return self._pages(CONFERENCES, "/v1/Conferences", params)

    def participants(self, conference_sid: str) -> AsyncIterator[list[Any]]:
        """Pages of the participant summaries of one conference."""
        return self._pages(PARTICIPANTS, f"/v1/Conferences/{conference_sid}/Participants", {"PageSize": self._page_size})

    async def _pages(self, endpoint: str, path: str, params: dict[str, Any] | None) -> AsyncIterator[list[Any]]:
        url: str | None = self.base_url + path
        while url is not None:
            body = await self._get(endpoint, url, params)
            meta = found if isinstance(found := body.get("meta"), dict) else {}
            items = body.get(meta.get("key") or endpoint)
            if not isinstance(items, list):
                raise ApiError(endpoint, "200", f"the answer has no {endpoint} list")
            yield items
            next_page = meta.get("next_page_url")
            # next_page_url already carries every query parameter, PageToken included.
            url, params = (self._rebase(next_page), None) if isinstance(next_page, str) and next_page else (None, None)

    def _rebase(self, url: str) -> str:
        """``url``'s path and query on ``--pull.api-url``'s host.

        Credentials go only to the configured host, whatever host an answer names; behind a proxy
        the API's own absolute URLs would bypass it.

        >>> api = InsightsApi.__new__(InsightsApi); api.base_url = "http://127.0.0.1:8080"
        >>> api._rebase("https://insights.twilio.com/v1/Conferences?PageSize=50&Page=1&PageToken=PAx")
        'http://127.0.0.1:8080/v1/Conferences?PageSize=50&Page=1&PageToken=PAx'
        """
        parts = urlsplit(url)
        return self.base_url + parts.path + (f"?{parts.query}" if parts.query else "")

    async def _get(self, endpoint: str, url: str, params: dict[str, Any] | None) -> dict[str, Any]:
        assert self._client is not None, "InsightsApi.open() first"
        attempt = 0
        while True:
            response: Response | None = None
            async with self._semaphore:
                try:
                    # The timeout is passed per request: the SDK does not apply its client-wide one.
                    response = await self._client.request_async("GET", url, params=params, timeout=self._timeout)
                    code = str(response.status_code)
                except (aiohttp.ClientError, TimeoutError, OSError, ValueError) as exc:
                    code, problem = names.PULL_NETWORK_ERROR, f"{type(exc).__name__}: {exc}"
            self._metrics.api_requests.labels(endpoint, code).inc()
            if response is not None:
                if response.status_code == 200:
                    try:
                        body = loads(response.text)
                    except (ValueError, RecursionError):
                        body = None
                    if isinstance(body, dict):
                        return body
                    problem = "the answer is not a JSON object"
                else:
                    problem = _error_message(response)
            retryable = response is None or response.status_code in (200, 429) or response.status_code >= 500
            if not retryable or attempt >= self._retries:
                raise ApiError(endpoint, code, problem)
            wait = self._wait(attempt, response)
            log.warning(
                "API request failed, retrying",
                extra={"endpoint": endpoint, "code": code, "error": problem, "attempt": attempt + 1, "retry_in_seconds": wait},
            )
            await self._sleep(wait)
            attempt += 1

    def _wait(self, attempt: int, response: Response | None) -> float:
        """Seconds before retry number ``attempt + 1``: a 429's Retry-After if it has one, else exponential."""
        retry_after = _retry_after(response, self._clock()) if response is not None and response.status_code == 429 else None
        wait = retry_after if retry_after is not None else self._backoff * 2**attempt
        return min(wait, self._max_backoff)


class _BasicCredentials(CredentialProvider):  # type: ignore[misc]  # twilio ships no types: its classes are Any
    """HTTP Basic credentials handed to the SDK as a ready ``Authorization`` header.

    Given as username and password, the SDK's async client wraps them in ``aiohttp.BasicAuth``,
    which aiohttp 3.14 deprecates (and 4.0 removes); a credential provider is the SDK's own way
    to set the header instead.
    """

    def __init__(self, username: str, password: str) -> None:
        super().__init__(AuthType.BASIC)
        self._strategy = _HeaderStrategy("Basic " + base64.b64encode(f"{username}:{password}".encode()).decode())

    def to_auth_strategy(self) -> AuthStrategy:
        return self._strategy


class _HeaderStrategy(AuthStrategy):  # type: ignore[misc]  # as above
    def __init__(self, header: str) -> None:
        super().__init__(AuthType.BASIC)
        self._header = header

    def get_auth_string(self) -> str:
        return self._header

    def requires_authentication(self) -> bool:
        return True

    def __repr__(self) -> str:  # never the credentials
        return "_HeaderStrategy(Basic ***)"


class Poller:
    """Polls the REST API every ``--pull.interval`` and feeds complete summaries to the pipeline.

    ``clock`` (Unix time) and ``sleep`` are injectable so that tests drive polls with
    :meth:`poll_once` and never wait.
    """

    def __init__(
        self,
        settings: PullSettings,
        api: InsightsApi,
        pipeline: Pipeline,
        store: StateStore,
        pull_metrics: PullMetrics,
        done: Window,
        clock: Clock = time.time,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        self.settings = settings
        self.api = api
        self.pipeline = pipeline
        self.store = store
        self.metrics = pull_metrics
        # Conferences finished with (nothing pending): not re-read while the overlap lists them.
        self.done = done
        self._clock = clock
        self._sleep = sleep
        self._lock = asyncio.Lock()
        # Per pending conference: participant SIDs already handed to the pipeline (so a re-read
        # does not count them as duplicates again) and how many summaries are still in progress.
        self._offered: dict[str, set[str]] = {}
        self._waiting: dict[str, int] = {}
        pull_metrics.pending.set_function(lambda: sum(self._waiting.values()))

    @classmethod
    def build(
        cls, config: Config, pipeline: Pipeline, store: StateStore, pull_metrics: PullMetrics, clock: Clock = time.time, sleep: Sleep = asyncio.sleep
    ) -> Poller:
        """A poller from the configuration (which guarantees credentials when pull is enabled)."""
        settings = config.settings
        credentials = config.secrets.api_credentials()
        if credentials is None:
            raise ValueError("pull mode needs TWILIO_ACCOUNT_SID with TWILIO_AUTH_TOKEN, or TWILIO_API_KEY with TWILIO_API_SECRET")
        api = InsightsApi(settings.pull, credentials, pull_metrics, sleep=sleep, clock=clock)
        done = Window(settings.dedup.window.total_seconds(), settings.dedup.max_entries, clock=clock)
        return cls(settings.pull, api, pipeline, store, pull_metrics, done, clock=clock, sleep=sleep)

    async def start(self) -> None:
        """Load what the state store remembers and open the HTTP session."""
        self.store.load_window(CONFERENCE_SID, self.done)
        watermark = self.store.watermark()
        if watermark is not None:
            self.metrics.watermark.set(watermark)
        if not self.store.persistent:
            log.warning(
                "pull mode without --state.path: after a restart the first poll reads --pull.lookback again "
                "and counts what it finds a second time, and misses what is older"
            )
        await self.api.open()

    async def stop(self) -> None:
        await self.api.close()

    async def run(self) -> None:
        """Poll now, then every interval, until cancelled."""
        interval = self.settings.interval.total_seconds()
        while True:
            started = self._clock()
            await self.poll_once()
            await self._sleep(max(0.0, started + interval - self._clock()))

    async def poll_once(self) -> bool:
        """One whole poll; True when everything was read. Never raises (except on cancellation)."""
        async with self._lock:  # a poll triggered by hand never overlaps the scheduled one
            started = self._clock()
            began = time.perf_counter()
            try:
                ok = await self._poll(started)
            except ApiError as exc:
                log.error("poll failed", extra={"endpoint": exc.endpoint, "code": exc.code, "error": str(exc)})
                ok = False
            except Exception:
                log.exception("poll failed")
                ok = False
            self.metrics.duration.observe(time.perf_counter() - began)
            self.metrics.polls.labels("success" if ok else "failure").inc()
            if ok:
                self.metrics.last_success.set(self._clock())
            return ok

    async def _poll(self, started: float) -> bool:
        watermark = self.store.watermark()
        since = started - self.settings.lookback.total_seconds() if watermark is None else watermark - self.settings.overlap.total_seconds()
        pending = self.store.pending_conferences()
        handled: set[str] = set()
        results: list[bool] = []
        async for page in self.api.conferences(created_after=since):
            batch: list[Awaitable[bool]] = []
            for conference in page:
                sid = conference.get("conference_sid") if isinstance(conference, dict) else None
                if not isinstance(sid, str) or not sid:
                    log.warning("conference without a conference_sid skipped")
                    continue
                self.metrics.conferences_seen.inc()
                if sid in handled or (sid in self.done and sid not in pending):
                    continue
                handled.add(sid)
                batch.append(self._read_conference(sid, conference, pending.get(sid), started))
            results += await asyncio.gather(*batch)
        # The conference list was read to its end: whatever was created before this poll began
        # has been seen, or is pending and will be re-read.
        self.store.set_watermark(started)
        self.metrics.watermark.set(started)
        # Pending conferences the list no longer covers (older than the overlap).
        results += await asyncio.gather(
            *(self._read_conference(sid, None, first_seen, started) for sid, first_seen in pending.items() if sid not in handled)
        )
        return all(results)

    async def _read_conference(self, sid: str, conference: dict[str, Any] | None, first_seen: float | None, now: float) -> bool:
        """Record the final summaries of one conference; remember it as pending or done. False if unreadable."""
        try:
            participants = [item async for page in self.api.participants(sid) for item in page]
        except ApiError as exc:
            log.warning("conference unreadable, retried next poll", extra={"conference_sid": sid, "code": exc.code, "error": str(exc)})
            self.store.add_pending(sid, now if first_seen is None else first_seen)
            return False
        offered = self._offered.setdefault(sid, set())
        waiting = 0
        final: list[ParticipantSummary | ValidationError] = []
        for raw in participants:
            state = raw.get("processing_state") if isinstance(raw, dict) else None
            self.metrics.participants_seen.labels(state if state in names.PROCESSING_STATES else "other").inc()
            if state not in FINAL_STATES:
                waiting += 1
                continue
            participant_sid = raw.get("participant_sid")
            if isinstance(participant_sid, str) and participant_sid in offered:
                continue
            try:
                final.append(ParticipantSummary.model_validate(raw))
            except ValidationError as exc:
                final.append(exc)
        # Recorded (and, with --state.path, committed) before the conference is marked offered or done.
        await self.pipeline.deliver_summaries(final, SOURCE)
        for raw in participants:
            participant_sid = raw.get("participant_sid") if isinstance(raw, dict) else None
            if isinstance(participant_sid, str) and raw.get("processing_state") in FINAL_STATES:
                offered.add(participant_sid)
        if conference is not None:
            still_open = conference.get("processing_state") == "in_progress"
        else:
            # Re-read without its conference record: an empty list means nothing is known yet.
            still_open = not participants
        if waiting or still_open:
            first_seen = now if first_seen is None else first_seen
            if now - first_seen < self.settings.pending_max_age.total_seconds():
                self.store.add_pending(sid, first_seen)
                self._waiting[sid] = waiting
                return True
            log.warning("in_progress summaries given up", extra={"conference_sid": sid, "summaries": waiting})
            self.metrics.expired.inc(waiting)
        self.done.add(sid, at=now)
        self.store.add_key(CONFERENCE_SID, sid, now)
        self.store.remove_pending(sid)
        self._offered.pop(sid, None)
        self._waiting.pop(sid, None)
        return True


def pull_context(poller: Poller) -> Callable[[web.Application], AsyncIterator[None]]:
    """A ``cleanup_ctx`` running ``poller`` as a background task while the application runs.

    Startup does not wait for a poll: a slow or failing API never delays readiness.
    """

    async def context(_: web.Application) -> AsyncIterator[None]:
        await poller.start()
        task = asyncio.create_task(poller.run(), name="insights-poller")
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            await poller.stop()

    return context


def _iso8601(unix_time: float) -> str:
    """The API's date-time filter format, whole seconds rounded down (the overlap absorbs that).

    >>> _iso8601(1636007397.844)
    '2021-11-04T06:29:57Z'
    """
    return datetime.fromtimestamp(int(unix_time), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _retry_after(response: Response, now: float) -> float | None:
    """Seconds a ``Retry-After`` header asks for (delta-seconds or an HTTP date), None if absent or unreadable.

    >>> _retry_after(Response(429, "", {"Retry-After": "7"}), 0)
    7.0
    >>> _retry_after(Response(429, "", {"Retry-After": "Thu, 01 Jan 1970 00:00:30 GMT"}), 10)
    20.0
    >>> _retry_after(Response(429, "", {}), 0) is None
    True
    """
    value = (response.headers or {}).get("Retry-After")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - now)
    except (TypeError, ValueError, IndexError):
        return None


def _error_message(response: Response) -> str:
    """Twilio's error ``code`` and ``message`` when the body has them (never the body itself)."""
    try:
        body = loads(response.text)
    except (ValueError, RecursionError):
        body = None
    if isinstance(body, dict) and ("code" in body or "message" in body):
        return f"HTTP {response.status_code}, Twilio error {body.get('code')}: {body.get('message')}"
    return f"HTTP {response.status_code}"
