"""The bench runs: its in-process parts with tiny counts, and the table it prints from them.

Timings are not asserted (performance is judged in ``make bench``, as ratios in one round); this
only keeps bench/ from rotting unnoticed when the exporter's objects change under it.
"""

from __future__ import annotations

import pytest

from bench import inprocess, join_memory, kinds, levers
from bench.__main__ import table


def test_every_kind_is_delivered_in_memory_and_durable_single_and_batched() -> None:
    figures = kinds.kind_costs(count=3, repeats=1)
    assert set(figures) == {"participant", "call", "conference"}
    for rows in figures.values():
        assert set(rows) == {"single, in memory", "single, durable", "batch of 50, in memory", "batch of 50, durable"}
        assert all(value > 0 for value in rows.values())
    assert "call summaries, batch of 50, in process" in table({"kinds": figures})


def test_the_in_process_stages_and_the_levers_run_against_the_real_objects() -> None:
    assert inprocess.stage_costs(20, 1, "warm")
    # The record lever checks its prototype's registry against the recorder's, series by series.
    assert levers.record_lever(1)
    assert levers.reply_lever(1)


def test_the_join_memory_bench_fills_a_real_exporter_kills_it_and_reads_the_restarted_one(capsys: pytest.CaptureFixture[str]) -> None:
    join_memory.main(["--tasks", "60", "--name-length", "100"])

    out = capsys.readouterr().out
    assert "live: 60 tasks" in out
    assert "restarted on the state file, before any delivery: 60 tasks" in out
