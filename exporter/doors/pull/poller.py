"""Pull mode: summaries read from the Voice Insights REST API, each recorded once.

For users who cannot expose a webhook, and to recover what Twilio stopped retrying (4 hours)
while the REST API still holds it (30 days). ``--pull.summaries`` chooses what one poll reads,
all three by default:

- **participant** and **conference**, from the conference list:

  1. lists the conferences created since the watermark minus ``--pull.overlap``
     (``GET /v1/Conferences?CreatedAfter=...``, following ``meta.next_page_url``); each item is
     that conference's Conference Summary;
  2. hands the Conference Summary of each listed conference not recorded yet to the pipeline
     (the conference subject) once it is final (``processing_state`` ``complete`` or ``timeout``);
  3. lists the participants of each conference not finished with yet, plus the conferences still
     pending from earlier polls (``GET /v1/Conferences/{CF}/Participants``), and hands every
     summary whose ``processing_state`` is ``complete`` or ``timeout`` to the pipeline (the
     participant subject), which records it unless any door already did;
  4. remembers a conference as *pending* while any of its participant summaries, or its own
     summary, is not final (re-read on later polls, its summary by ``GET /v1/Conferences/{CF}``
     once the list no longer covers it; given up after ``--pull.pending-max-age``); its
     participants, once all are final, as *done* (the ``conference_sid`` keys: not re-read);
  5. moves the watermark to the poll's start once the conference list was read to the end.

- **call**, from the Call Summaries list: lists the calls started since the call watermark minus
  ``--pull.call-overlap`` (``GET /v1/Voice/Summaries?ProcessingState=completed``, paged), hands
  each item whose ``processing_state`` is ``complete`` and whose call is not recorded yet to the
  pipeline (the call subject), then moves the call watermark to the poll's start. The overlap is
  on the call's start: a call is listed complete only once it ended plus up to 30 minutes, so the
  overlap must cover the longest call plus that delay (docs/pull.md).

A summary recorded (by any door) is in its subject's dedup window, durable with ``--state.path``:
the poller does not hand it to the pipeline again, so a re-read of the overlap counts nothing,
not even a duplicate. Watermarks, pending and done conferences, and the pipeline's dedup keys
live in the :class:`~exporter.state.store.StateStore` (written by its writer thread, like a delivery),
so a restart on the same state file neither counts twice nor skips what arrived while the
exporter was down.

Why one module: a conference's participants and its own summary come from one list item and
share one pending row, so they are settled together, and one poll (one lock, one outcome of
``..._pull_polls_total``, one readiness-free background task) reads both lists.

Nothing the API does stops the service: every request is retried by the transport
(:class:`~exporter.doors.pull.api.InsightsApi`: 429 after its ``Retry-After``, 5xx and network
errors with exponential backoff), a poll that still fails is counted and logged, and the next
poll starts over from the unchanged watermark. Readiness never looks at the API.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from aiohttp import web

from exporter.config import Config, PullSettings
from exporter.dedup import Window
from exporter.doors import background_context
from exporter.doors.pull.api import ApiError, Clock, InsightsApi, Sleep
from exporter.metrics import PROCESSING_STATES, PullMetrics, Source
from exporter.pipeline import Pipeline
from exporter.state.store import CONFERENCE_SID, StateStore
from exporter.subjects import CALL, CONFERENCE, PARTICIPANT

log = logging.getLogger(__name__)

# Participant and conference summaries in these states are final: ``timeout`` is recorded with
# what it has (Twilio gave up). Anything else, ``in_progress`` or a state Twilio adds later, waits.
FINAL_STATES = frozenset({"complete", "timeout"})
# A Call Summary is final when ``complete`` (the list is asked for completed ones; anything else it
# answers anyway, ``partial`` or a state Twilio adds later, is skipped and read again later).
CALL_FINAL_STATE = "complete"


class Poller:
    """Polls the REST API every ``--pull.interval`` and feeds final summaries to the pipeline.

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
        kinds = frozenset(settings.summaries)
        self._participants = PARTICIPANT in kinds
        self._conferences = CONFERENCE in kinds
        self._calls = CALL in kinds
        # Conferences whose participants are finished with (none pending): not re-read while the
        # overlap lists them. Not "its summary recorded": that is the conference subject's key.
        self.done = done
        # What a subject's summary already recorded (by any door) is in its window: never handed
        # over again. What was handed over and not recorded (invalid) is remembered here, in
        # memory, so that a re-read of the overlap does not count it invalid on every poll.
        self._recorded = {name: pipeline.subjects[name].window for name in (CALL, CONFERENCE)}
        self._offered = {name: Window(done.window, done.max_entries, clock=clock) for name in (CALL, CONFERENCE)}
        self._clock = clock
        self._sleep = sleep
        self._lock = asyncio.Lock()
        # Per pending conference: participant SIDs already handed to the pipeline (so a re-read
        # does not count them as duplicates again) and how many summaries are still in progress.
        self._offered_participants: dict[str, set[str]] = {}
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
            parts: list[Callable[[float], Awaitable[bool]]] = []
            if self._participants or self._conferences:
                parts.append(self._poll_conferences)
            if self._calls:
                parts.append(self._poll_calls)
            ok = True
            # One after the other: a failing list does not keep the other from being read.
            for part in parts:
                ok = await self._part(part, started) and ok
            self.metrics.duration.observe(time.perf_counter() - began)
            self.metrics.polls.labels("success" if ok else "failure").inc()
            if ok:
                self.metrics.last_success.set(self._clock())
            return ok

    async def _part(self, part: Callable[[float], Awaitable[bool]], started: float) -> bool:
        try:
            return await part(started)
        except ApiError as exc:
            log.error("poll failed", extra={"endpoint": exc.endpoint, "code": exc.code, "error": str(exc)})
        except Exception:
            log.exception("poll failed")
        return False

    # -- the conference list: participants and conference summaries ----------------------------

    async def _poll_conferences(self, started: float) -> bool:
        watermark = self.store.watermark()
        since = started - self.settings.lookback.total_seconds() if watermark is None else watermark - self.settings.overlap.total_seconds()
        pending = self.store.pending_conferences()
        handled: set[str] = set()
        results: list[bool] = []
        async for page in self.api.conferences(created_after=since):
            batch: list[Awaitable[bool]] = []
            unreadable = [item for item in page if self._first_unreadable(CONFERENCE, item)]
            if unreadable:
                await self.pipeline.deliver(unreadable, Source.PULL, subject=CONFERENCE)  # counted invalid, once
            for conference in page:
                sid = conference.get("conference_sid") if isinstance(conference, dict) else None
                if isinstance(conference, bytes):
                    continue
                if not isinstance(sid, str) or not sid:
                    log.warning("conference without a conference_sid skipped")
                    continue
                self.metrics.conferences_seen.inc()
                if sid in handled or (sid not in pending and not self._participants_wanted(sid) and not self._summary_wanted(sid)):
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

    def _first_unreadable(self, subject: str, item: Any) -> bool:
        """Whether ``item`` is an element its page could not decode (bytes) not handed over before; it is remembered now.

        The pipeline counts it invalid (it has no SID to record it by); remembered by its digest
        so that the lists' overlap does not count it again on every poll.
        """
        if not isinstance(item, bytes):
            return False
        key = unreadable_key(item)
        if key in self._offered[subject]:
            return False
        self._offered[subject].add(key)
        return True

    def _participants_wanted(self, sid: str) -> bool:
        return self._participants and sid not in self.done

    def _summary_wanted(self, sid: str) -> bool:
        return self._conferences and sid not in self._recorded[CONFERENCE] and sid not in self._offered[CONFERENCE]

    async def _read_conference(self, sid: str, conference: dict[str, Any] | None, first_seen: float | None, now: float) -> bool:
        """Record what is final of one conference (its summary, its participants); remember it as pending or done.

        False if something of it was unreadable (it stays pending, re-read on the next poll).
        ``conference`` is its item of the list, None for a pending conference the list no longer covers.
        """
        readable = True
        summary_open = False
        if self._summary_wanted(sid):
            if conference is None:
                try:
                    conference = await self.api.conference_summary(sid)
                except ApiError as exc:
                    log.warning(
                        "conference summary unreadable, retried next poll", extra={"conference_sid": sid, "code": exc.code, "error": str(exc)}
                    )
                    readable = False
            if conference is not None:
                summary_open = not await self._offer_conference_summary(sid, conference)
        participants_open, finished, waiting = False, False, 0
        if self._participants_wanted(sid):
            read = await self._read_participants(sid, conference)
            if read is None:
                readable = False
            else:
                waiting, participants_open = read
                finished = not participants_open
        if not readable:
            await self._commit(pending=[(sid, now if first_seen is None else first_seen)], done=[(sid, now)] if finished else None)
            if finished:
                self._finish_participants(sid, now)
            return False
        if participants_open or summary_open:
            first_seen = now if first_seen is None else first_seen
            if now - first_seen < self.settings.pending_max_age.total_seconds():
                await self._commit(pending=[(sid, first_seen)], done=[(sid, now)] if finished else None)
                if finished:
                    self._finish_participants(sid, now)
                else:
                    self._waiting[sid] = waiting
                return True
            if participants_open:
                log.warning("in_progress summaries given up", extra={"conference_sid": sid, "summaries": waiting})
                self.metrics.expired.inc(waiting)
            if summary_open:
                log.warning("conference summary still not final, given up", extra={"conference_sid": sid})
                self._offered[CONFERENCE].add(sid)  # not taken up again should the list still cover it
            finished = participants_open or finished
        await self._commit(done=[(sid, now)] if finished else None, resolved=[sid])
        if finished:
            self._finish_participants(sid, now)
        return True

    def _finish_participants(self, sid: str, now: float) -> None:
        self.done.add(sid, at=now)
        self._offered_participants.pop(sid, None)
        self._waiting.pop(sid, None)

    async def _offer_conference_summary(self, sid: str, conference: dict[str, Any]) -> bool:
        """Hand a final Conference Summary to the pipeline; False (nothing handed over) while it is not final."""
        if conference.get("processing_state") not in FINAL_STATES:
            return False
        # Parsed, recorded (and, with --state.path, committed) by the pipeline before the
        # conference can be resolved.
        await self.pipeline.deliver([conference], Source.PULL, subject=CONFERENCE)
        self._offered[CONFERENCE].add(sid)
        return True

    async def _read_participants(self, sid: str, conference: dict[str, Any] | None) -> tuple[int, bool] | None:
        """Record the final participant summaries of one conference: ``(still in progress, conference still open)``, None if unreadable."""
        try:
            participants = [item async for page in self.api.participants(sid) for item in page]
        except ApiError as exc:
            log.warning("conference unreadable, retried next poll", extra={"conference_sid": sid, "code": exc.code, "error": str(exc)})
            return None
        offered = self._offered_participants.setdefault(sid, set())
        waiting = 0
        final: list[Any] = []
        for raw in participants:
            if isinstance(raw, bytes):
                if unreadable_key(raw) not in offered:
                    final.append(raw)  # counted invalid by the pipeline, once
                continue
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
            if isinstance(raw, bytes):
                offered.add(unreadable_key(raw))
                continue
            participant_sid = raw.get("participant_sid") if isinstance(raw, dict) else None
            if isinstance(participant_sid, str) and raw.get("processing_state") in FINAL_STATES:
                offered.add(participant_sid)
        if conference is not None:
            still_open = conference.get("processing_state") == "in_progress"
        else:
            # Re-read without its conference record: an empty list means nothing is known yet.
            still_open = not participants
        return waiting, bool(waiting or still_open)

    # -- the Call Summaries list ------------------------------------------------------------------

    async def _poll_calls(self, started: float) -> bool:
        """List the completed calls started since the call watermark minus the call overlap; record each once."""
        watermark = self.store.call_watermark()
        since = started - self.settings.lookback.total_seconds() if watermark is None else watermark - self.settings.call_overlap.total_seconds()
        recorded, offered = self._recorded[CALL], self._offered[CALL]
        async for page in self.api.call_summaries(since):
            fresh: list[dict[str, Any]] = []
            sids: list[str] = []
            unreadable = [item for item in page if self._first_unreadable(CALL, item)]
            for item in page:
                if isinstance(item, bytes):
                    continue
                sid = item.get("call_sid") if isinstance(item, dict) else None
                if not isinstance(sid, str) or not sid:
                    log.warning("call summary without a call_sid skipped")
                    continue
                # Asked for completed ones; whatever else the list answers is read again later.
                if item.get("processing_state") != CALL_FINAL_STATE or sid in recorded or sid in offered:
                    continue
                fresh.append(item)
                sids.append(sid)
            # Recorded and committed by the pipeline before the watermark may pass them.
            await self.pipeline.deliver(unreadable + fresh, Source.PULL, subject=CALL)
            for sid in sids:
                offered.add(sid)
        # The list was read to its end: every call started before this poll began and complete by
        # now is recorded; one completing later starts within the next polls' overlap.
        await self._commit(call_watermark=started)
        return True

    async def _commit(
        self,
        *,
        done: list[tuple[str, float]] | None = None,
        pending: list[tuple[str, float]] | None = None,
        resolved: list[str] | None = None,
        watermark: float | None = None,
        call_watermark: float | None = None,
    ) -> None:
        """The poll's bookkeeping, one item of the state writer's queue (never SQLite on the loop)."""
        future = self.store.commit_poll(
            done=done or (), pending=pending or (), resolved=resolved or (), watermark=watermark, call_watermark=call_watermark
        )
        if future is not None:
            await future


def unreadable_key(item: bytes) -> str:
    """The name a list element that could not be decoded is remembered by: it has no SID."""
    return "unreadable:" + hashlib.sha256(item).hexdigest()


def pull_context(poller: Poller) -> Callable[[web.Application], AsyncIterator[None]]:
    """A ``cleanup_ctx`` running ``poller`` in the background: a slow or failing API never delays readiness."""
    return background_context(poller, "insights-poller")
