"""Consumer mode: the events a Twilio Event Streams Kinesis sink writes, read from the stream, each recorded once.

Twilio writes one CloudEvent JSON object per Kinesis record (``data`` an object or a JSON string).
The consumer follows every shard of ``--kinesis.stream-name`` and hands each record's event to the
same pipeline as the webhook and the poller, counted with ``source="kinesis"``:

1. lists the stream's shards (``ListShards``, every page) now, every ``--kinesis.shard-sync-interval``
   and whenever a shard ends;
2. reads a shard only once its parents (a split's one, a merge's two) are drained to their end, so
   a participant's events are read in the order Twilio wrote them, as AWS asks of a consumer;
3. starts a shard after its checkpoint (``AFTER_SEQUENCE_NUMBER``), or with no checkpoint at
   ``TRIM_HORIZON`` (the child of a drained parent always, any shard with the default
   ``--kinesis.start-position``) or at ``LATEST``;
4. per ``GetRecords`` page: delivers the records' bytes with the shard's checkpoint, the last
   record's sequence number (the pipeline parses them: a record that is not JSON is an invalid
   event, counted and passed over, never retried), and moves on only once the delivery returned (the pipeline
   commits the checkpoint with what the events recorded). At a shard's end the checkpoint is
   ``SHARD_END``, and its children become readable;
5. on ``ExpiredIteratorException`` asks a new iterator from the checkpoint; on throttling
   (``ProvisionedThroughputExceededException``, ``LimitExceededException``) and any other failure
   waits with exponential backoff and full jitter, and tries again. Nothing stops the consumer.

What is read again (a restart between a delivery and its checkpoint, Twilio's own at-least-once
writes) meets the pipeline's deduplication by participant SID, as a webhook retry does.

Sequence numbers are text throughout: AWS's are up to 56 decimal digits.

Why one module: the consumer's state (the readers, the shards done and drained) belongs to one
object, and the order it keeps between parents and children spans listing and reading; the
transport is apart, in exporter/doors/kinesis/api.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from aiohttp import web

from exporter.config import KinesisSettings
from exporter.doors import background_context
from exporter.doors.kinesis.api import EXPIRED_ITERATOR, KinesisApi, KinesisError, Shard
from exporter.metrics import KinesisMetrics, Source

log = logging.getLogger(__name__)

# The checkpoint of a shard read to its end (KCL's word): its children may be read.
SHARD_END = "SHARD_END"
# AWS allows 5 GetRecords per second per shard: after a full page the next read waits at least this.
MIN_READ_SPACING_SECONDS = 0.2
# The errors counter's kind for a failure of ours (the transport's kinds are in exporter/doors/kinesis/api.py).
INTERNAL = "internal"

Sleep = Callable[[float], Awaitable[None]]
Clock = Callable[[], float]


class Sink(Protocol):
    """What the consumer needs of the pipeline (:class:`~exporter.pipeline.Pipeline` has them): exactly these two methods.

    ``deliver`` records ``events`` and, in the same durable transaction, stores ``checkpoint``
    (a name and a sequence number as text); it returns only after the commit. ``checkpoint``
    reads one back (None when never written).
    """

    async def deliver(self, events: list[Any], source: Source, checkpoint: tuple[str, str] | None = None) -> object: ...

    def checkpoint(self, name: str) -> str | None: ...


@dataclass
class _Reader:
    """Where the consumer is in one shard."""

    shard: Shard
    # Begin at TRIM_HORIZON without a checkpoint: the shard's parents were drained by this consumer.
    after_parent: bool
    iterator: str | None = None
    # Unix time the first LATEST iterator was asked for: renewed as AT_TIMESTAMP while no checkpoint exists.
    latest_since: float | None = None
    caught_up: bool = False
    failures: int = 0
    task: asyncio.Task[None] | None = field(default=None, repr=False)


class KinesisConsumer:
    """Follows every shard of one stream and delivers its records to a :class:`Sink`.

    ``run`` is the service (one task per shard being read, a shard listing in between);
    ``catch_up`` reads until every shard is at the tip of the stream or ended, step by step
    in one task, for tests and benchmarks. ``clock``, ``sleep`` and ``jitter`` are injectable.
    """

    def __init__(
        self,
        settings: KinesisSettings,
        api: KinesisApi,
        sink: Sink,
        kinesis_metrics: KinesisMetrics,
        clock: Clock = time.time,
        sleep: Sleep = asyncio.sleep,
        jitter: Callable[[], float] = random.random,
    ) -> None:
        self.settings = settings
        self.api = api
        self.sink = sink
        self.metrics = kinesis_metrics
        self._clock = clock
        self._sleep = sleep
        self._jitter = jitter
        self._readers: dict[str, _Reader] = {}
        # Shards this consumer need not read: drained (checkpoint SHARD_END) or, under
        # start_position=latest, closed before it ever checkpointed them.
        self._done: set[str] = set()
        self._drained: set[str] = set()
        self._resync = asyncio.Event()
        kinesis_metrics.shards.set_function(lambda: len(self._readers))

    def checkpoint_name(self, shard_id: str) -> str:
        return f"kinesis/{self.api.stream}/{shard_id}"

    async def start(self) -> None:
        await self.api.open()

    async def stop(self) -> None:
        for reader in list(self._readers.values()):
            if reader.task is not None:
                reader.task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await reader.task
        await self.api.close()

    # -- the service ---------------------------------------------------------------------------

    async def run(self) -> None:
        """List shards, read each eligible one in its own task, list again on schedule or when a shard ends."""
        failures = 0
        interval = self.settings.shard_sync_interval.total_seconds()
        while True:
            self._resync.clear()
            if await self._sync_counted():
                failures = 0
                for reader in self._readers.values():
                    if reader.task is None:
                        reader.task = asyncio.create_task(self._follow(reader), name=f"kinesis-{reader.shard.id}")
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._resync.wait(), interval)
            else:
                await self._sleep(self._backoff(failures))
                failures += 1

    async def _follow(self, reader: _Reader) -> None:
        poll = self.settings.poll_interval.total_seconds()
        while reader.shard.id in self._readers:
            outcome = await self.step(reader)
            if outcome == "error":
                await self._sleep(self._backoff(reader.failures - 1))
            elif outcome == "full":
                await self._sleep(min(poll, MIN_READ_SPACING_SECONDS))
            elif outcome in ("records", "idle"):
                await self._sleep(poll)
            # "renew" (an expired iterator) and "ended" go on at once

    # -- for tests and benchmarks --------------------------------------------------------------

    async def catch_up(self, max_steps: int = 100_000) -> int:
        """Read until every shard is at the tip or ended (backoffs included); the number of reads made."""
        steps = 0
        for reader in self._readers.values():
            reader.caught_up = False
        while steps < max_steps:
            if not await self._sync_counted():
                await self._sleep(self._backoff(0))
                continue
            pending = [r for r in self._readers.values() if not r.caught_up]
            if not pending:
                return steps
            for reader in pending:
                steps += 1
                if await self.step(reader) == "error":
                    await self._sleep(self._backoff(reader.failures - 1))
        raise RuntimeError(f"not caught up after {max_steps} reads")

    # -- one shard listing, one read -----------------------------------------------------------

    async def _sync_counted(self) -> bool:
        try:
            await self.sync_shards()
        except KinesisError as exc:
            self.metrics.errors.labels(exc.kind).inc()
            log.warning("listing the shards failed", extra={"stream": self.api.stream, "kind": exc.kind, "error": str(exc)})
            return False
        return True

    async def sync_shards(self) -> None:
        """Add a reader for every shard whose parents are done; the listing is the one source of which shards exist."""
        self._add_shards(await self.api.shards(), complete=True)

    def _add_shards(self, shards: list[Shard], complete: bool) -> None:
        """Readers for ``shards`` whose parents are done; ``complete`` when ``shards`` is the whole listing.

        Only the whole listing tells that a parent is gone (past retention); a shard's
        ``ChildShards`` do not list a merge's other parent, which must be drained too.
        """
        listed = {shard.id: shard for shard in shards} if complete else {}
        latest = self.settings.start_position == "latest"
        for shard in shards:
            if shard.id in self._readers or shard.id in self._done:
                continue
            checkpoint = self.sink.checkpoint(self.checkpoint_name(shard.id))
            if checkpoint == SHARD_END:
                self._done.add(shard.id)
                self._drained.add(shard.id)
            elif latest and checkpoint is None and shard.closed:
                self._done.add(shard.id)  # LATEST on a closed shard reads nothing: no need to ask
        for shard in shards:
            if shard.id in self._readers or shard.id in self._done:
                continue
            # A parent the stream no longer keeps (past retention) has nothing left to read.
            if all(parent in self._done or (complete and parent not in listed) for parent in shard.parents):
                after_parent = any(parent in self._drained for parent in shard.parents)
                self._readers[shard.id] = _Reader(shard, after_parent)

    async def step(self, reader: _Reader) -> str:
        """One GetRecords on ``reader``'s shard, its records delivered with their checkpoint.

        Returns ``full`` (a full page: more to read), ``records``, ``idle`` (at the tip), ``ended``,
        ``renew`` (the iterator expired) or ``error`` (counted; back off before the next step).
        """
        shard_id = reader.shard.id
        try:
            if reader.iterator is None:
                reader.iterator = await self._start_iterator(reader)
            page = await self.api.records(reader.iterator, self.settings.batch_size)
        except KinesisError as exc:
            self.metrics.errors.labels(exc.kind).inc()
            reader.iterator = None if exc.kind == EXPIRED_ITERATOR else reader.iterator
            if exc.kind == EXPIRED_ITERATOR:
                log.info("shard iterator expired, renewed from the checkpoint", extra={"shard": shard_id})
                return "renew"
            reader.failures += 1
            log.warning("reading a shard failed", extra={"shard": shard_id, "kind": exc.kind, "error": str(exc), "attempt": reader.failures})
            return "error"
        self.metrics.records.inc(len(page.records))
        self.metrics.last_read.set(self._clock())
        ended = page.next_iterator is None
        try:
            await self._deliver(reader, page.records, ended)
        except Exception:
            # Nothing of this page was checkpointed: read it again from the checkpoint.
            self.metrics.errors.labels(INTERNAL).inc()
            reader.iterator = None
            reader.failures += 1
            log.exception("delivering records failed; they are read again", extra={"shard": shard_id})
            return "error"
        reader.failures = 0
        reader.iterator = page.next_iterator
        if ended:
            log.info("shard read to its end", extra={"shard": shard_id})
            del self._readers[shard_id]
            self._done.add(shard_id)
            self._drained.add(shard_id)
            with contextlib.suppress(KeyError):
                self.metrics.behind.remove(shard_id)
            self._add_shards(page.children, complete=False)  # read at once; the next listing would find them too
            self._resync.set()
            return "ended"
        if page.behind_seconds is not None:
            self.metrics.behind.labels(shard_id).set(page.behind_seconds)
        if len(page.records) >= self.settings.batch_size:
            return "full"
        # An empty page is not the tip by itself: AWS may answer empty pages while behind.
        reader.caught_up = not page.records and page.behind_seconds == 0
        return "idle" if reader.caught_up else "records"

    async def _start_iterator(self, reader: _Reader) -> str:
        shard_id = reader.shard.id
        checkpoint = self.sink.checkpoint(self.checkpoint_name(shard_id))
        if checkpoint is not None and checkpoint != SHARD_END:
            return await self.api.iterator(shard_id, "AFTER_SEQUENCE_NUMBER", sequence=checkpoint)
        if reader.after_parent or self.settings.start_position == "trim_horizon":
            return await self.api.iterator(shard_id, "TRIM_HORIZON")
        if reader.latest_since is not None:
            # Nothing delivered since the first LATEST iterator: go back to when it was asked for.
            return await self.api.iterator(shard_id, "AT_TIMESTAMP", timestamp=reader.latest_since)
        since = self._clock()
        iterator = await self.api.iterator(shard_id, "LATEST")
        reader.latest_since = since
        return iterator

    async def _deliver(self, reader: _Reader, records: list[dict[str, Any]], ended: bool) -> None:
        if not records and not ended:
            return
        # Each record's bytes as they are: the pipeline parses them (a poison record is an invalid
        # event like any other, passed over by the checkpoint).
        events = [record["Data"] for record in records]
        sequence = SHARD_END if ended else str(records[-1]["SequenceNumber"])
        await self.sink.deliver(events, Source.KINESIS, (self.checkpoint_name(reader.shard.id), sequence))
        self.metrics.checkpoints.inc()

    def _backoff(self, failures: int) -> float:
        """Exponential backoff with full jitter (AWS's advice for throttled clients)."""
        # Annotated: typeshed types int ** int as Any (a negative exponent would make a float).
        ceiling: float = min(self.settings.max_backoff.total_seconds(), self.settings.backoff.total_seconds() * 2 ** max(0, failures))
        return ceiling * self._jitter()


def kinesis_context(consumer: KinesisConsumer, durable: bool) -> Callable[[web.Application], AsyncIterator[None]]:
    """A ``cleanup_ctx`` running ``consumer`` as a background task while the application runs.

    Added after the state's context, so the checkpoints are loaded before the first read and the
    last delivery is committed before the state closes. Startup does not wait for a read: a slow
    or unreachable Kinesis never delays readiness.
    """

    if not durable:
        log.warning(
            "Kinesis mode without --state.path: checkpoints are kept in memory, so after a restart every shard is read "
            "again from --kinesis.start-position and what was recorded before is counted again"
        )
    return background_context(consumer, "kinesis-consumer")
