"""The dedup window: what it remembers, for how long, how many, and its hash table under collisions.

The window's hash table stores SipHash digests, so real keys collide in their low bits only by
chance. These tests choose the digests (``exporter.dedup._digest`` patched) to put keys in the
slots they mean to test: a cluster sharing one home slot, a cluster wrapping past the last slot.
"""

from __future__ import annotations

import random
from collections import OrderedDict

import pytest

from exporter import dedup
from exporter.dedup import Window
from tests.helpers import FakeClock

DAY = 86400.0
SLOTS = Window._MIN_SLOTS


@pytest.fixture
def digests(monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    """Keys' digests chosen by the test: ``digests[key] = digest``."""
    chosen: dict[str, int] = {}
    monkeypatch.setattr(dedup, "_digest", lambda key: chosen[key])
    return chosen


def at_home(home: int, n: int) -> int:
    """The ``n``-th distinct digest whose home slot (its low bits) is ``home``."""
    return (n + 1) * SLOTS + home


def test_a_key_is_remembered_for_the_window_and_forgotten_after_it() -> None:
    clock = FakeClock()
    w = Window(window=3600, max_entries=10, clock=clock)
    w.add("CPa")

    clock.now += 3599.999
    assert "CPa" in w
    clock.now += 0.001
    assert "CPa" not in w
    assert len(w) == 0


def test_past_max_entries_the_oldest_keys_are_forgotten_first() -> None:
    w = Window(window=DAY, max_entries=3, clock=FakeClock())
    for key in ("CP1", "CP2", "CP3", "CP4", "CP5"):
        w.add(key)

    assert len(w) == 3
    assert [key in w for key in ("CP1", "CP2", "CP3", "CP4", "CP5")] == [False, False, True, True, True]


def test_a_key_added_again_is_not_remembered_twice_nor_refreshed() -> None:
    clock = FakeClock()
    w = Window(window=100, max_entries=2, clock=clock)
    w.add("CP1")
    clock.now += 50
    w.add("CP1")
    w.add("CP2")

    assert len(w) == 2 and "CP1" in w
    clock.now += 50  # one window after the first add
    assert "CP1" not in w and "CP2" in w


def test_keys_sharing_a_home_slot_stay_remembered_when_the_first_of_them_is_forgotten(digests: dict[str, int]) -> None:
    # A, B and C share home slot 5 and sit at 5, 6, 7; D's home is 6, so it sits at 8.
    for n, key in enumerate("ABC"):
        digests[key] = at_home(5, n)
    digests["D"] = at_home(6, 0)
    w = Window(window=DAY, max_entries=3, clock=FakeClock())
    for key in "ABCD":
        w.add(key)  # D pushes A out: the hole at slot 5 must be filled by B, C and D moving back

    assert [key in w for key in "ABCD"] == [False, True, True, True]
    assert len(w) == 3


def test_a_key_in_its_own_home_slot_is_not_moved_into_a_hole_before_it(digests: dict[str, int]) -> None:
    # A at its home 5, B at its home 6: forgetting A leaves B where lookups for it start.
    digests.update(A=at_home(5, 0), B=at_home(6, 0))
    w = Window(window=DAY, max_entries=1, clock=FakeClock())
    w.add("A")
    w.add("B")

    assert "B" in w and "A" not in w


def test_a_cluster_wrapping_past_the_last_slot_survives_forgetting_its_head(digests: dict[str, int]) -> None:
    last = SLOTS - 1
    # A at the last slot, B (same home) wraps to slot 0, C (home 0) goes to slot 1, E (home 1) to 2.
    digests.update(A=at_home(last, 0), B=at_home(last, 1), C=at_home(0, 0), E=at_home(1, 0), F=at_home(last - 1, 0))
    w = Window(window=DAY, max_entries=4, clock=FakeClock())
    for key in "FABC":
        w.add(key)
    w.add("E")  # forgets F (at last - 1): A stays at its home
    assert [key in w for key in "FABCE"] == [False, True, True, True, True]

    digests["G"] = at_home(7, 0)
    w.add("G")  # forgets A: B, C and E must move back across the wrap
    assert [key in w for key in "ABCEG"] == [False, True, True, True, True]


def test_the_window_answers_as_a_plain_ordered_dict_would_under_heavy_collisions(digests: dict[str, int]) -> None:
    """Thousands of adds, expiries and evictions over keys crowded into eight home slots near the wrap
    (and past the first resize of the table), checked step by step against a reference model."""
    rng = random.Random(14)
    clock = FakeClock()
    window, max_entries = 2000.0, 700
    w = Window(window=window, max_entries=max_entries, clock=clock)
    model: OrderedDict[str, float] = OrderedDict()  # key -> expiry, oldest first
    homes = [SLOTS - 4, SLOTS - 3, SLOTS - 2, SLOTS - 1, 0, 1, 2, 3]
    for n in range(6000):
        digests[f"K{n}"] = at_home(homes[n % len(homes)], n)

    def expire() -> None:  # as the window does, on a lookup
        while model and next(iter(model.values())) <= clock.now:
            model.popitem(last=False)

    for _ in range(20_000):
        clock.now += rng.choice((0.0, 0.0, 0.5, 1.0, 3.0))
        key = f"K{rng.randrange(6000) if rng.random() < 0.3 else rng.randrange(1500)}"
        if rng.random() < 0.5:
            w.add(key)
            if key not in model:
                model[key] = clock.now + window
                while len(model) > max_entries:
                    model.popitem(last=False)
        else:
            expire()
            assert (key in w) == (key in model), key
        assert len(w) == len(model)
    expire()
    assert sorted(k for k in digests if k in w) == sorted(model)


def test_the_memory_of_forgotten_keys_is_given_back() -> None:
    w = Window(window=DAY, max_entries=10, clock=FakeClock())
    for n in range(50_000):
        w.add(f"CP{n}")

    assert len(w) == 10
    # The FIFO behind the window is compacted once a quarter of it is forgotten, not kept forever.
    assert len(w._digests) <= 4 * 4097 and len(w._expiries) == len(w._digests)


def test_a_window_grown_past_its_first_table_remembers_every_key() -> None:
    # Real digests (half of them at or above 2**63) through a resize of the table.
    w = Window(window=DAY, max_entries=5000, clock=FakeClock())
    keys = [f"CP{n:032d}" for n in range(3000)]
    for key in keys:
        w.add(key)

    assert len(w) == 3000
    assert all(key in w for key in keys)
    assert "CP-never-added" not in w
