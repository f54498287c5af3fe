"""One write path: every state write is an item of the writer's queue, so the loop never waits for SQLite.

The writer's transaction is held open by a hook (``StateStore.commit_hook``) until the test
lets it go: a long commit that ends when the test says, not after some sleep.
"""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

from exporter.state.store import Commit, key_rows
from exporter.subjects import PARTICIPANT
from tests.helpers import HeldCommit, until
from tests.pull_rig import P, RigFactory, conference_with, participant

# What the issue asks: a timer on the loop fires within this while the writer holds a long commit.
TIMER_BOUND_S = 0.05


class Ticker:
    """A timer re-armed on the loop every few milliseconds; records how late it fired at worst."""

    STEP = 0.005

    def __init__(self) -> None:
        self.worst = 0.0
        self.fired = 0
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            armed = loop.time()
            await asyncio.sleep(self.STEP)
            self.worst = max(self.worst, loop.time() - armed - self.STEP)
            self.fired += 1

    async def stop(self) -> None:
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)


async def test_a_timer_on_the_loop_fires_within_50_ms_while_the_writer_holds_a_long_commit_and_the_poller_records(
    make_rig: RigFactory,
    tmp_path: Path,
) -> None:
    path = tmp_path / "state.db"
    rig = await make_rig(state=path)
    now = rig.time.now
    conference_with(rig.fake, 1, now - 600, [participant(10), participant(11)])  # complete: recorded, then done
    conference_with(rig.fake, 2, now - 500, [participant(20, processing_state="in_progress", metrics=None)])  # pending
    held = HeldCommit()
    rig.store.commit_hook = held
    try:
        # A delivery's commit, and the writer stays inside its transaction (the SQLite write lock held).
        delivery = rig.store.commit(Commit([key_rows([(PARTICIPANT, "CP-held", now)])]))
        assert delivery is not None
        assert await asyncio.to_thread(held.holding.wait, 10)

        ticker = Ticker()
        poll = asyncio.create_task(rig.poll())
        # The poller reads both conferences, records conference 1's summaries and queues its
        # bookkeeping (conference 1 done, conference 2 pending) behind the held commit.
        await until(lambda: rig.value(P + "summaries_total") == 2 and "CF" + f"{2:032d}" in rig.store.pending_conferences())
        fired = ticker.fired
        await until(lambda: ticker.fired >= fired + 5)  # and the loop keeps turning while it waits
        await ticker.stop()

        assert ticker.worst < TIMER_BOUND_S, f"a timer fired {ticker.worst * 1000:.0f} ms late"
        assert not poll.done()  # its writes wait in the queue, not on the loop
    finally:
        held.release()
    assert await poll is True
    await delivery

    with sqlite3.connect(path) as db:  # and they are on disk, in the writer's transactions
        assert dict(db.execute("SELECT conference_sid, first_seen FROM pending_conferences")) == {"CF" + f"{2:032d}": now}
        assert sorted(db.execute("SELECT kind, key FROM dedup_keys WHERE kind = 'conference_sid'")) == [("conference_sid", "CF" + f"{1:032d}")]
        assert db.execute("SELECT value FROM meta WHERE name = 'pull_watermark'").fetchone() == (now,)
    db.close()
