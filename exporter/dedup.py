"""Remembering what was already recorded, so at-least-once delivery counts exactly once.

Twilio redelivers an event (same CloudEvent ``id``) after a timeout or a 5xx for up to 4 hours,
and the same participant can arrive through more than one door (push, pull, Kinesis). A :class:`Window` remembers keys
for a configurable time, bounded in count; the oldest go first.

A window holds a million keys (participant SIDs), so it stores each
key as a 64-bit digest in flat arrays: about 32 bytes a key instead of about 150 for a dict of
strings to floats (docs/performance.md). The digest is Python's ``hash`` of the key, keyed
SipHash, so a sender cannot make two keys collide on purpose; by chance, two of a million keys
share a digest with a probability of about 3e-8, and the later one would count as a duplicate.
"""

from __future__ import annotations

import time
from array import array
from collections.abc import Callable, Iterable


class Window:
    """Keys remembered for ``window`` seconds, at most ``max_entries`` of them.

    Keys expire in the order they were added (one window for all), so a FIFO of
    ``(digest, expiry)`` pairs says what to forget next: O(1) per key, no heap, no timer. A hash
    table of digests (open addressing, linear probing, kept at most half full) answers ``in``.

    >>> clock = iter([0, 0, 10, 20]).__next__
    >>> w = Window(window=15, max_entries=10, clock=clock)
    >>> w.add("a"); "a" in w, "a" in w
    (True, True)
    >>> "a" in w
    False
    """

    _MIN_SLOTS = 1024

    def __init__(
        self,
        window: float,
        max_entries: int,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.window = window
        self.max_entries = max_entries
        self._clock = clock
        self._count = 0
        self._slots = array("Q", bytes(8 * self._MIN_SLOTS))  # 0 marks an empty slot
        self._mask = self._MIN_SLOTS - 1
        # The FIFO: entries before _head are forgotten, compacted away now and then.
        self._digests = array("Q")
        self._expiries = array("d")
        self._head = 0

    def __contains__(self, key: str) -> bool:
        self._expire(self._clock())
        return self._find(_digest(key)) >= 0

    def add(self, key: str, at: float | None = None) -> None:
        """Remember ``key`` from ``at`` (default now) for the window; calls must come in time order."""
        now = self._clock() if at is None else at
        digest = _digest(key)
        if self._find(digest) >= 0:
            return
        self._insert(digest)
        self._digests.append(digest)
        self._expiries.append(now + self.window)
        while self._count > self.max_entries:
            self._forget_oldest()

    def load(self, entries: Iterable[tuple[str, float]]) -> None:
        """Restore keys remembered earlier, as ``(key, time added)`` in time order."""
        for key, added in entries:
            self.add(key, at=added)
        self._expire(self._clock())

    def __len__(self) -> int:
        return self._count

    def _expire(self, now: float) -> None:
        expiries = self._expiries
        while self._count and expiries[self._head] <= now:
            self._forget_oldest()

    def _forget_oldest(self) -> None:
        self._remove(self._digests[self._head])
        self._head += 1
        # Compact once a quarter of the FIFO is forgotten: amortised O(1), bounded slack.
        if self._head > 4096 and self._head * 4 > len(self._digests):
            del self._digests[: self._head]
            del self._expiries[: self._head]
            self._head = 0

    def _find(self, digest: int) -> int:
        """The slot holding ``digest``, or -1."""
        slots, mask = self._slots, self._mask
        i = digest & mask
        while True:
            found = slots[i]
            if found == digest:
                return i
            if not found:
                return -1
            i = (i + 1) & mask

    def _insert(self, digest: int) -> None:
        if 2 * (self._count + 1) > len(self._slots):
            self._resize(2 * len(self._slots))
        slots, mask = self._slots, self._mask
        i = digest & mask
        while slots[i]:
            i = (i + 1) & mask
        slots[i] = digest
        self._count += 1

    def _remove(self, digest: int) -> None:
        # Backward-shift deletion (Knuth 6.4, algorithm R): no tombstones, probes stay short.
        i = self._find(digest)
        slots, mask = self._slots, self._mask
        j = i
        while True:
            j = (j + 1) & mask
            moving = slots[j]
            if not moving:
                break
            home = moving & mask
            # ``moving`` may fill the hole at i unless its home lies cyclically in (i, j].
            if (i < j and not i < home <= j) or (j < i and j < home <= i):
                slots[i] = moving
                i = j
        slots[i] = 0
        self._count -= 1

    def _resize(self, size: int) -> None:
        # The table only grows: at most 2 slots per key of max_entries, 16 MB for a million.
        self._slots = array("Q", bytes(8 * size))
        self._mask = size - 1
        self._count = 0
        for digest in self._digests[self._head :]:
            self._insert(digest)


def _digest(key: str) -> int:
    """A non-zero 64-bit digest of ``key``."""
    return (hash(key) & 0xFFFF_FFFF_FFFF_FFFF) or 1
