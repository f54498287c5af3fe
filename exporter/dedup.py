"""Remembering what was already recorded, so at-least-once delivery counts exactly once.

Twilio redelivers an event (same CloudEvent ``id``) after a timeout or a 5xx for up to 4 hours,
and the same participant can arrive both pushed and pulled. A :class:`Window` remembers keys
for a configurable time, bounded in count; the oldest go first.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable


class Window:
    """Keys remembered for ``window`` seconds, at most ``max_entries`` of them.

    Keys are kept in a dict in insertion order, which is also expiry order (one window for all),
    so expiring is popping from the front: O(1) per key, no heap, no timer.

    >>> clock = iter([0, 0, 10, 20]).__next__
    >>> w = Window(window=15, max_entries=10, clock=clock)
    >>> w.add("a"); "a" in w, "a" in w
    (True, True)
    >>> "a" in w
    False
    """

    def __init__(
        self,
        window: float,
        max_entries: int,
        clock: Callable[[], float] = time.time,
        on_add: Callable[[str, float], None] | None = None,
    ) -> None:
        self.window = window
        self.max_entries = max_entries
        self._clock = clock
        # Called with (key, time added) for every new key: how a state store persists the window.
        self.on_add = on_add
        self._expiry: dict[str, float] = {}

    def __contains__(self, key: str) -> bool:
        self._expire(self._clock())
        return key in self._expiry

    def add(self, key: str, at: float | None = None) -> None:
        """Remember ``key`` from ``at`` (default now) for the window; calls must come in time order."""
        now = self._clock() if at is None else at
        if key in self._expiry:
            return
        self._expiry[key] = now + self.window
        while len(self._expiry) > self.max_entries:
            del self._expiry[next(iter(self._expiry))]
        if self.on_add is not None:
            self.on_add(key, now)

    def load(self, entries: Iterable[tuple[str, float]]) -> None:
        """Restore keys remembered earlier, as ``(key, time added)`` in time order, without ``on_add``."""
        on_add, self.on_add = self.on_add, None
        try:
            for key, added in entries:
                self.add(key, at=added)
        finally:
            self.on_add = on_add
        self._expire(self._clock())

    def __len__(self) -> int:
        return len(self._expiry)

    def _expire(self, now: float) -> None:
        expiry = self._expiry
        while expiry:
            key = next(iter(expiry))
            if expiry[key] > now:
                return
            del expiry[key]
