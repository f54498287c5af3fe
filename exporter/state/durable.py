"""The durable state's lifecycle: loaded at start, snapshotted while running, flushed at the end.

At start every subject's dedup keys are loaded into its window and, with ``--state.path``, its
saved series and the journal after them are replayed into its recorder (exporter/state/store.py
describes the file), and the TaskRouter join map gets back its tasks (exporter/join.py). While running, the values of the series changed since the last snapshot
are copied on the loop in one synchronous step and queued behind every commit before them, every
``--state.snapshot-interval`` or sooner after ``--state.snapshot-changes`` journaled summaries;
once more at the end, so a clean restart replays nothing.

Deliveries themselves are committed by the pipeline (exporter/pipeline.py); this room sees only
the subjects' windows and recorders and the store.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

from exporter.join import JoinMap
from exporter.state.store import SeriesRow, StateStore
from exporter.subjects import Subjects

log = logging.getLogger(__name__)


class DurableState:
    """Opens, restores, snapshots and closes the state of every subject."""

    def __init__(self, store: StateStore, subjects: Subjects, snapshot_interval: float, snapshot_changes: int, join: JoinMap | None = None) -> None:
        self.store = store
        self.join = join
        self.subjects = subjects
        self._snapshot_interval = snapshot_interval
        self._snapshot_changes = snapshot_changes
        self._snapshots: asyncio.Task[None] | None = None

    async def open(self) -> None:
        """Open and load the state, start its writer, and snapshot it while running."""
        self.store.open()
        replayed = self.restore()
        if replayed:
            log.info("state replayed", extra={"summaries": replayed})
        self.store.start()
        if self.store.persistent:
            self._snapshots = asyncio.get_running_loop().create_task(self._snapshot_every(self._snapshot_interval, self._snapshot_changes))

    async def close(self) -> None:
        """Stop snapshotting, take the last snapshot, wait for every write and close the store."""
        task, self._snapshots = self._snapshots, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        final = self.snapshot()
        if final is not None:
            with contextlib.suppress(Exception):  # a failed store reported itself already
                await final
        await self.store.close()

    async def _snapshot_every(self, interval: float, max_changes: int) -> None:
        store = self.store
        last = time.monotonic()
        while True:
            # A check a second is cheap; the snapshot itself is one synchronous copy of the changed series.
            await asyncio.sleep(min(1.0, interval))
            if store.journaled >= max_changes or (store.journaled and time.monotonic() - last >= interval):
                last = time.monotonic()
                future = self.snapshot()
                if future is not None:
                    with contextlib.suppress(Exception):
                        await future

    def restore(self) -> int:
        """Load every subject's keys, then its saved series and the journal after them.

        Rows of a subject this version does not have are skipped. Returns how many journaled
        summaries were replayed.
        """
        store = self.store
        for subject in self.subjects:
            store.load_window(subject.name, subject.window)
        if not store.persistent:
            return 0
        if self.join is not None:
            self.join.restore(store.load_joins())
        loaded = store.load()
        series: dict[str, list[tuple[str, tuple[str, ...], list[float]]]] = {}
        for name, family, labels, data in loaded.series:
            series.setdefault(name, []).append((family, labels, data))
        for subject in self.subjects:
            subject.recorder.dirty = set()
            subject.recorder.restore(series.get(subject.name, ()))
        replayed = 0
        for name, entry in loaded.journal:
            found = self.subjects.get(name)
            change = None if found is None else found.recorder.unjournal(entry)
            if found is not None and change is not None:
                found.recorder.apply(change)
                replayed += 1
        return replayed

    def snapshot(self) -> asyncio.Future[None] | None:
        """Queue the values of every series changed since the last snapshot, every subject's in one (one synchronous copy)."""
        if not self.store.persistent:
            return None
        rows: list[SeriesRow] = []
        saving = False
        for subject in self.subjects:
            recorder = subject.recorder
            if recorder.dirty is None:
                continue
            saving = True
            dirty, recorder.dirty = recorder.dirty, set()
            rows.extend((subject.name, *recorder.key_of(series), recorder.saved_values(series)) for series in dirty)
        return self.store.snapshot(rows) if saving else None


def state_context(state: DurableState) -> Callable[[Any], AsyncIterator[None]]:
    """A ``cleanup_ctx`` that opens the state before the first delivery and closes it after the last."""

    async def context(_: Any) -> AsyncIterator[None]:
        await state.open()
        try:
            yield
        finally:
            await state.close()

    return context
