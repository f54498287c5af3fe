"""The bench runs: its in-process parts with tiny counts, and the table it prints from them.

Timings are not asserted (performance is judged in ``make bench``, as ratios in one round); this
only keeps bench/ from rotting unnoticed when the exporter's objects change under it.
"""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import pytest

from bench import edge, httpbench, inprocess, join_memory, kinds, levers, overload, procs, workload
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


# --- the HTTP benches, in their smallest configuration, against real processes ----------------


def test_the_http_posts_bench_runs_every_variant_against_real_servers_and_every_post_is_answered(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(workload, "WARM_LABEL_SETS", 5)  # the warm exporters seeded with 100 summaries, not 6000

    figures = httpbench.posts(tmp_path, rounds=1, slices=1, duration=1, batch=1, log=lambda _: None)  # wrk takes whole seconds

    assert figures["variants"] == ["bare", "peer", "warm", "cold", "durable"]
    (figures_of,) = figures["rounds"]
    assert set(figures_of) == set(figures["variants"])
    for name, run in figures_of.items():
        assert run["requests"] > 0 and run["non_2xx"] == 0, name
    for name in ("warm", "cold", "durable"):
        assert figures_of[name]["duplicates"] == 0, name  # every delivery new: none sent twice across slices


def test_the_public_door_scenarios_run_against_a_real_exporter() -> None:
    with procs.exporter() as server:
        slow = asyncio.run(edge.slow_senders(server, senders=2, deliveries=1))
        forged = asyncio.run(edge.forged_bodies(server, senders=1, size=edge.MiB))
        large = asyncio.run(edge.large_deliveries(server, count=1, size=256 * 1024))

    assert (slow["ok"], slow["statuses"]) == (1, [200])
    # Refused from its head: answered 403, or cut while its body was still being written.
    assert forged["refused_403"] + forged["closed"] == 1 and forged["other"] == 0
    assert (large["ok"], large["counted_once"]) == (1, True)
    assert "slow senders: 1 real deliveries answered 200" in edge.report("smoke", {"slow": slow, "forged": forged, "large": large})


def test_the_overload_probes_and_counts_read_a_real_exporter() -> None:
    with procs.exporter() as server:
        assert server.metrics is not None
        probed = overload.probe(server.metrics, 0.3)
        counted = overload.counted(server.metrics)

    assert probed["failures"] == 0
    assert probed["/-/healthy"]["probes"] > 0 and probed["/-/ready"]["probes"] > 0
    assert counted["summaries"] == 0


def test_the_overload_flood_counts_every_acknowledged_summary_exactly_once(tmp_path: Path) -> None:
    assert shutil.which("wrk"), "bench.overload floods with wrk: apt-get install wrk (make test installs it)"
    pool = workload.label_pool(5, seed=1)
    seed = workload.write_requests(tmp_path / "seed.tsv", procs.PUBLIC_SINK_URL, 2, overload.BATCH, seed=40_000, pool=pool)
    requests = workload.write_requests(tmp_path / "flood.tsv", procs.PUBLIC_SINK_URL, 20, overload.BATCH, seed=77, pool=pool)

    result = overload.flood(requests, seed, 1)  # wrk takes whole seconds

    assert result["exactly_once"], result
