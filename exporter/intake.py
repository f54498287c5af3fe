"""Admission of webhook deliveries: the memory budget, the bound on work in flight, turns on the loop, the shutdown switch.

exporter/webhook.py asks the memory budget once a delivery is verified and before its body is
read, and enters the in-flight bound once the body is read: a delivery refused here costs next
to nothing, which is what keeps a flood answered rather than queued (docs/performance.md,
"Overload"), and a sender trickling its body holds no slot, only its socket and a timer.
"""

from __future__ import annotations

import asyncio
from collections import deque
from dataclasses import dataclass, field

from .config import PARSED_BYTES_PER_BYTE
from .logs import Throttle

# Deliveries whose work one loop iteration runs (Intake.turn). Eight beat one (refusals crowd out
# the work) and no limit (every queued batch in one iteration) under a flood of batches
# (bench/overload.py; the figures are in docs/performance.md, "Overload").
TURNS_PER_ITERATION = 8


@dataclass
class MemoryBudget:
    """Bytes that deliveries being read or recorded may hold: the body and what it becomes once parsed.

    Reserved from ``Content-Length`` before the body is read, so memory is bounded whatever
    arrives; a delivery that does not fit gets 503 (Twilio retries it) and costs nothing.

    >>> budget = MemoryBudget(200)
    >>> budget.cost(10), budget.reserve(110), budget.reserve(110), budget.reserved
    (110, True, False, 110)
    """

    capacity: int
    reserved: int = 0

    @staticmethod
    def cost(length: int) -> int:
        """What a body of ``length`` bytes holds until its delivery is answered."""
        return length * (1 + PARSED_BYTES_PER_BYTE)

    def reserve(self, cost: int) -> bool:
        if self.reserved + cost > self.capacity:
            return False
        self.reserved += cost
        return True

    def release(self, cost: int) -> None:
        self.reserved -= cost


@dataclass
class Intake:
    """Whether the webhook takes a delivery now: the bound on work in flight, the memory budget, the shutdown switch.

    A delivery past ``max_in_flight`` is answered 503 at once instead of waiting in the event
    loop's queue: queued work is what made a flood answer in seconds and starve the health probes
    (docs/performance.md). Twilio retries a 503 for 4 hours, so refusing loses nothing. The bound
    counts deliveries whose body is read (being recorded), never connections still reading: slow
    senders held every slot when it did (issue 18, 29 of 30 real deliveries refused).
    """

    max_in_flight: int
    budget: MemoryBudget = field(default_factory=lambda: MemoryBudget(2**62))
    in_flight: int = 0
    # Deliveries whose body is being read: not bounded here (the budget bounds their memory).
    reading: int = 0
    closing: bool = False
    # Refused requests are logged at most once per reason per interval, with the count of the rest.
    refusals: Throttle = field(default_factory=Throttle)
    _idle: asyncio.Event = field(default_factory=asyncio.Event)
    _turns: deque[asyncio.Future[None]] = field(default_factory=deque)
    _dispatching: bool = False

    def __post_init__(self) -> None:
        self._idle.set()

    def start_reading(self) -> str | None:
        """A verified delivery begins to send its body; ``shutting_down`` once shutdown began.

        Readers hold no slot of the bound, but the shutdown waits for them (:meth:`idle`): a
        delivery whose body was on its way when SIGTERM came is still recorded and answered.
        """
        if self.closing:
            return "shutting_down"
        self.reading += 1
        self._idle.clear()
        return None

    def stop_reading(self) -> None:
        self.reading -= 1
        self._settle()

    def enter(self) -> str | None:
        """Admit one delivery whose body is read into the bound, or ``overloaded``."""
        if self.in_flight >= self.max_in_flight:
            return "overloaded"
        self.in_flight += 1
        self._idle.clear()
        return None

    def leave(self) -> None:
        self.in_flight -= 1
        self._settle()

    def _settle(self) -> None:
        if self.in_flight == 0 and self.reading == 0:
            self._idle.set()

    async def turn(self) -> None:
        """Wait for this delivery's turn to do its work: TURNS_PER_ITERATION deliveries per loop iteration.

        A delivery's work (signature, parsing, every event of the batch) runs in one step of the
        event loop, and a loop iteration runs every step that is ready: with many batches ready
        together, one iteration ran all their work, and everything else (reading other requests,
        answering 503s) waited behind it. Handing out a few turns per iteration keeps iterations
        short, so refusals and the deliveries' own reads go on between them. Waiting here also lets every request that arrived at the
        same time reach :meth:`enter` first: a body already buffered is read without yielding.
        """
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[None] = loop.create_future()
        self._turns.append(waiter)
        if not self._dispatching:
            self._dispatching = True
            loop.call_soon(self._next_turn)
        await waiter

    def _next_turn(self) -> None:
        granted = 0
        while self._turns and granted < TURNS_PER_ITERATION:
            waiter = self._turns.popleft()
            if not waiter.done():  # a waiter cancelled meanwhile gives its turn away
                waiter.set_result(None)
                granted += 1
        if self._turns:
            # The next turns are handed out in the next iteration, after this one's work.
            asyncio.get_running_loop().call_soon(self._next_turn)
        else:
            self._dispatching = False

    def close(self) -> None:
        """From now on every delivery is answered 503 (shutdown)."""
        self.closing = True

    async def idle(self) -> None:
        """Return once no delivery is in flight or being read."""
        await self._idle.wait()
