"""Admission of webhook deliveries: copies of one signed request, the memory budget, the bound on work in flight, turns on the loop, the shutdown switch.

exporter/doors/webhook/handler.py claims a delivery's signature and asks the memory budget once its URL is
verified and before its body is read, charges the budget as the body's bytes arrive, and enters
the in-flight bound once the body is read: a delivery refused here costs next to nothing, which
is what keeps a flood answered rather than queued (docs/performance.md, "Overload"), and a sender
trickling its body holds no slot, only its socket, a timer and the bytes it has sent.
"""

from __future__ import annotations

import asyncio
from collections import deque
from dataclasses import dataclass, field

from exporter.config import PARSED_BYTES_PER_BYTE
from exporter.logs import Throttle

# Deliveries whose work one loop iteration runs (Intake.turn). Eight beat one (refusals crowd out
# the work) and no limit (every queued batch in one iteration) under a flood of batches
# (bench/overload.py; the figures are in docs/performance.md, "Overload").
TURNS_PER_ITERATION = 8


# Body bytes a delivery is charged for before its first byte is read (or its whole length, when
# smaller). Charging only what has arrived would let a sender announce a large body and hold
# nothing; charging the announced length let a sender trickling a captured large delivery hold
# 11 times its length for the whole read timeout. With this share a sender holds at most this
# much more than it has sent, and a delivery of this size or less (a batch of a few summaries,
# a few KiB each) is charged once, before reading, as before.
FIRST_SHARE = 64 * 1024


@dataclass
class MemoryBudget:
    """Bytes that deliveries being read or recorded may hold: the body and what it becomes once parsed.

    A delivery is charged as its body arrives (:class:`BodyCharge`), never past what the budget
    holds, so memory is bounded whatever arrives; one that does not fit gets 503 (Twilio retries
    it), before its body is read when its announced length does not fit now.

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

    def admit(self, announced: int) -> BodyCharge | None:
        """A charge for a body of ``announced`` bytes, its first share paid; ``None`` when it cannot be taken now.

        Refused when the whole body would not fit the budget as it stands, so a delivery that
        cannot be taken now is answered before a byte of it is read. Only the first share is
        paid: deliveries admitted together may then leave one another no room while their bodies
        arrive, and the one that finds none is refused midway (:meth:`BodyCharge.cover`, 503,
        retried), its bytes dropped: the price of a trickling sender holding only what it sent
        (docs/performance.md, "The public door").

        >>> budget = MemoryBudget(1000)
        >>> budget.admit(91) is None, budget.admit(90).charged, budget.reserved
        (True, 90, 990)
        """
        if self.reserved + self.cost(announced) > self.capacity:
            return None
        charge = BodyCharge(self)
        return charge if charge.cover(min(announced, FIRST_SHARE)) else None


@dataclass
class BodyCharge:
    """One delivery's share of the memory budget: the body bytes paid for so far, released once it is answered.

    >>> budget = MemoryBudget(1000)
    >>> charge = BodyCharge(budget)
    >>> charge.cover(20), charge.cover(10), charge.cover(90), charge.cover(91), budget.reserved
    (True, True, True, False, 990)
    >>> charge.release(), budget.reserved
    (None, 0)
    """

    budget: MemoryBudget
    charged: int = 0

    def cover(self, length: int) -> bool:
        """Pay for the body's first ``length`` bytes (what is paid stays paid); False when the budget cannot."""
        if length <= self.charged:
            return True
        if not self.budget.reserve(self.budget.cost(length - self.charged)):
            return False
        self.charged = length
        return True

    def release(self) -> None:
        self.budget.release(self.budget.cost(self.charged))
        self.charged = 0


@dataclass
class Hold:
    """What one delivery holds of the intake until it is answered: its signature's place, its share of the budget, its slot."""

    intake: Intake
    claim: tuple[str, str] | None = None
    charge: BodyCharge | None = None
    entered: bool = False

    def release(self) -> None:
        """Free all it holds (once recorded, or refused): each at most once."""
        if self.entered:
            self.intake.leave()
            self.entered = False
        if self.charge is not None:
            self.charge.release()
            self.charge = None
        if self.claim is not None:
            self.intake.unclaim(*self.claim)
            self.claim = None


@dataclass
class Intake:
    """Whether the webhook takes a delivery now: copies of a signed request, the bound on work in flight, the memory budget, the shutdown switch.

    A delivery past ``max_in_flight`` is answered 503 at once instead of waiting in the event
    loop's queue: queued work is what made a flood answer in seconds and starve the health probes
    (docs/performance.md). Twilio retries a 503 for 4 hours, so refusing loses nothing. The bound
    counts deliveries whose body is read (being recorded), never connections still reading: slow
    senders held every slot when it did (docs/performance.md, "The public door").
    """

    max_in_flight: int
    budget: MemoryBudget = field(default_factory=lambda: MemoryBudget(2**62))
    in_flight: int = 0
    # Deliveries whose body is being read: not bounded here (the budget bounds their memory).
    reading: int = 0
    closing: bool = False
    # (URL, signature) of each signed delivery being read or handled (:meth:`claim`).
    signed: set[tuple[str, str]] = field(default_factory=set)
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

    def claim(self, url: str, signature: str) -> str | None:
        """Hold this signed request's place until :meth:`unclaim`, or ``replayed`` when a copy of it holds it.

        Twilio never sends one delivery twice at once: it retries after an answer, or after its
        own timeout (then the first copy, still handled here, records it and the retry is
        counted a duplicate). A second copy of the same signed request (same URL, same
        signature) while the first is read or handled is a replay of a captured request,
        refused before its body is read: copies of one delivery hold one share of the budget,
        not one each. Bounded by construction: an entry lives only while its request is being
        read or handled, one per open connection, and refers to that request's own URL and
        header, so it adds a set slot to what the connection holds anyway.
        """
        key = (url, signature)
        if key in self.signed:
            return "replayed"
        self.signed.add(key)
        return None

    def unclaim(self, url: str, signature: str) -> None:
        self.signed.discard((url, signature))

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
