"""The Voice Insights REST API, as the poller reads it: its lists and resources, retried, through the twilio SDK.

The transport of pull mode (exporter/doors/pull/poller.py is the poller): pages of conferences (each item a
Conference Summary), of participant summaries and of Call Summaries, and one conference's
summary, each request retried (429 after its ``Retry-After``, 5xx and network
errors with exponential backoff) and counted in ``twilio_insights_exporter_pull_api_requests_total``;
a request that still fails raises :class:`ApiError`. The same shape as the Kinesis door's
``KinesisApi`` beside its consumer.

Why one module: every lister goes through the one retried and counted transport below, so none
can bypass the 429 backoff, the credential rebasing or the request counter.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import quote, urlsplit

import aiohttp
from twilio.auth_strategy.auth_strategy import AuthStrategy
from twilio.auth_strategy.auth_type import AuthType
from twilio.credential.credential_provider import CredentialProvider
from twilio.http.async_http_client import AsyncTwilioHttpClient
from twilio.http.response import Response
from twilio.rest import Client

from exporter import parse
from exporter.config import PullSettings
from exporter.metrics import PULL_NETWORK_ERROR, PullMetrics
from exporter.reader import loads

log = logging.getLogger(__name__)

# The twilio SDK logs every request, with its headers, at INFO: one line per header per request
# would drown the exporter's own logs. Its warnings still come through.
_SDK_LOG = logging.getLogger(__name__ + ".twilio_http")
_SDK_LOG.setLevel(logging.WARNING)

CONFERENCES = "conferences"
PARTICIPANTS = "participants"
CALL_SUMMARIES = "call_summaries"
CONFERENCE_SUMMARY = "conference_summary"

# The Call Summaries list's ProcessingState filter: the request says "completed" where each
# answered summary says "complete" (call-and-conference-summary-facts.md). The poller still skips
# any item that is not complete (CallSummary.final).
COMPLETED = "completed"

Sleep = Callable[[float], Awaitable[None]]
Clock = Callable[[], float]


class ApiError(Exception):
    """A request that failed for good (after its retries, or at once for a non-retryable 4xx)."""

    def __init__(self, endpoint: str, code: str, message: str) -> None:
        super().__init__(f"{endpoint}: {code}: {message}")
        self.endpoint = endpoint
        self.code = code


class InsightsApi:
    """The Voice Insights API's lists and the conference resource, with retries, through the twilio SDK.

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

    def call_summaries(
        self,
        start_after: float,
        start_before: float | None = None,
        *,
        subaccount: str | None = None,
        call_types: Sequence[str] = (),
        call_states: Sequence[str] = (),
        directions: Sequence[str] = (),
        filters: Mapping[str, str] | None = None,
    ) -> AsyncIterator[list[Any]]:
        """Pages of the completed Call Summaries of calls that started between two Unix times.

        ``GET /v1/Voice/Summaries`` with ``ProcessingState=completed``, ``StartTime``/``EndTime``
        (the API's window is on the call's start; without ``start_before`` it ends now), sorted by
        start time. ``subaccount`` asks for a subaccount's calls; the lists are Twilio's
        comma-separated ``CallType``, ``CallState`` and ``Direction`` filters; ``filters`` passes
        any other documented one as named (``HasTag``, ``FromCountryCode``, ``ToCarrier``,
        ``AbnormalSession``, ``AnsweredBy``, ...).
        """
        params: dict[str, Any] = {
            **(filters or {}),
            "ProcessingState": COMPLETED,
            "StartTime": _iso8601(start_after),
            "SortBy": "start_time",
            "PageSize": self._page_size,
        }
        if start_before is not None:
            params["EndTime"] = _iso8601(start_before)
        if subaccount:
            params["Subaccount"] = subaccount
        for name, values in (("CallType", call_types), ("CallState", call_states), ("Direction", directions)):
            if values:
                params[name] = ",".join(values)
        return self._pages(CALL_SUMMARIES, "/v1/Voice/Summaries", params)

    async def conference_summary(self, conference_sid: str) -> dict[str, Any]:
        """The Conference Summary of one conference (``GET /v1/Conferences/{CF}``).

        The items of :meth:`conferences` are the same resource; this reads one again, e.g. a
        conference listed while still ``in_progress``.
        """
        return await self._get(CONFERENCE_SUMMARY, f"{self.base_url}/v1/Conferences/{quote(conference_sid, safe='')}", None)

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
                    code, problem = PULL_NETWORK_ERROR, f"{type(exc).__name__}: {exc}"
            self._metrics.api_requests.labels(endpoint, code).inc()
            if response is not None:
                if response.status_code == 200:
                    try:
                        # Each summary of the page read on its own when the page as a whole cannot be.
                        body = parse.page(response.text)
                    except ValueError:
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
    except ValueError:
        body = None
    if isinstance(body, dict) and ("code" in body or "message" in body):
        return f"HTTP {response.status_code}, Twilio error {body.get('code')}: {body.get('message')}"
    return f"HTTP {response.status_code}"
