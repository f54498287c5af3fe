"""Recording all or nothing: a failure forced at any one step of a recording (exporter/record/families.py)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from exporter.record import families


class Boom(Exception):
    """The failure :func:`failing_at` forces."""


@contextmanager
def failing_at(step: int, monkeypatch: pytest.MonkeyPatch) -> Iterator[list[int]]:
    """Make the ``step``-th recording step (create a series, observe, inc) raise :class:`Boom`; yields
    the count of steps taken (``step`` 0 fails none: it counts them)."""
    taken = [0]

    def wrap(original: Any) -> Any:
        def step_or_fail(*args: Any, **kwargs: Any) -> Any:
            taken[0] += 1
            if taken[0] == step:
                raise Boom(f"forced failure at step {step}")
            return original(*args, **kwargs)

        return step_or_fail

    with monkeypatch.context() as m:
        m.setattr(families.HistogramSeries, "observe", wrap(families.HistogramSeries.observe))
        m.setattr(families.CounterSeries, "inc", wrap(families.CounterSeries.inc))
        m.setattr(families._Family, "labels", wrap(families._Family.labels))
        yield taken
