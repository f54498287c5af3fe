"""Pull mode: participant summaries read from the Voice Insights REST API, each recorded once.

For users who cannot expose a webhook, and to recover what Twilio stopped retrying (4 hours)
while the REST API still holds it (30 days). One poll:

1. lists the conferences created since the watermark minus ``--pull.overlap``
   (``GET /v1/Conferences?CreatedAfter=...``, following ``meta.next_page_url``);
2. lists the participants of each conference not finished with yet, plus the conferences still
   pending from earlier polls (``GET /v1/Conferences/{CF}/Participants``);
3. hands every summary whose ``processing_state`` is ``complete`` or ``timeout``, as the API
   answered it, to the same :class:`~exporter.pipeline.Pipeline` as the webhook (the participant
   subject's REST items), which parses and records it unless either path already did;
4. remembers a conference as *pending* while any of its summaries is ``in_progress`` (re-read on
   later polls, given up after ``--pull.pending-max-age``), else as *done* (not re-read);
5. moves the watermark to the poll's start once the conference list was read to the end.

Watermark, pending and done conferences, and the pipeline's dedup keys live in the
:class:`~exporter.state.StateStore` (written by its writer thread, like a delivery), so a restart on the same state file neither counts twice nor
skips what arrived while the exporter was down.

Nothing the API does stops the service: every request is retried by the transport
(:class:`~exporter.insights_api.InsightsApi`: 429 after its ``Retry-After``, 5xx and network
errors with exponential backoff), a poll that still fails is counted and logged, and the next
poll starts over from the unchanged watermark. Readiness never looks at the API.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from aiohttp import web

from .config import Config, PullSettings
from .dedup import Window
from .doors import background_context
from .insights_api import ApiError, Clock, InsightsApi, Sleep
from .metrics import PROCESSING_STATES, PullMetrics, Source
from .pipeline import Pipeline
from .state import CONFERENCE_SID, StateStore
from .subjects import PARTICIPANT

log = logging.getLogger(__name__)

# Summaries in these states are final: ``timeout`` is recorded with what it has (Twilio gave up
# after 24 h). Anything else, ``in_progress`` or a state Twilio adds later, waits.
FINAL_STATES = frozenset({"complete", "timeout"})


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
        await self._commit(watermark=started)
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
            await self._commit(pending=[(sid, now if first_seen is None else first_seen)])
            return False
        offered = self._offered.setdefault(sid, set())
        waiting = 0
        final: list[dict[str, Any]] = []
        for raw in participants:
            state = raw.get("processing_state") if isinstance(raw, dict) else None
            self.metrics.participants_seen.labels(state if state in PROCESSING_STATES else "other").inc()
            if state not in FINAL_STATES:
                waiting += 1
                continue
            participant_sid = raw.get("participant_sid")
            if isinstance(participant_sid, str) and participant_sid in offered:
                continue
            final.append(raw)
        # Parsed, recorded (and, with --state.path, committed) by the pipeline before the
        # conference is marked offered or done.
        await self.pipeline.deliver(final, Source.PULL, subject=PARTICIPANT)
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
                await self._commit(pending=[(sid, first_seen)])
                self._waiting[sid] = waiting
                return True
            log.warning("in_progress summaries given up", extra={"conference_sid": sid, "summaries": waiting})
            self.metrics.expired.inc(waiting)
        await self._commit(done=[(sid, now)], resolved=[sid])
        self.done.add(sid, at=now)
        self._offered.pop(sid, None)
        self._waiting.pop(sid, None)
        return True

    async def _commit(
        self,
        *,
        done: list[tuple[str, float]] | None = None,
        pending: list[tuple[str, float]] | None = None,
        resolved: list[str] | None = None,
        watermark: float | None = None,
    ) -> None:
        """The poll's bookkeeping, one item of the state writer's queue (never SQLite on the loop)."""
        future = self.store.commit_poll(done=done or (), pending=pending or (), resolved=resolved or (), watermark=watermark)
        if future is not None:
            await future


def pull_context(poller: Poller) -> Callable[[web.Application], AsyncIterator[None]]:
    """A ``cleanup_ctx`` running ``poller`` in the background: a slow or failing API never delays readiness."""
    return background_context(poller, "insights-poller")
