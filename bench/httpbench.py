"""Benchmarks over HTTP: server pinned to one core, load generator to the other."""

from __future__ import annotations

import contextlib
import json
import shutil
import statistics
import subprocess
import sys
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from . import procs, workload
from .procs import CLIENT_CPU, ROOT, Server

LUA = Path(__file__).with_name("post.lua")
CONNECTIONS = 16


def have_wrk() -> bool:
    return shutil.which("wrk") is not None


def _result(output: str) -> dict[str, Any]:
    for line in output.splitlines():
        if line.startswith("RESULT "):
            result: dict[str, Any] = json.loads(line[len("RESULT ") :])
            return result
    raise RuntimeError(f"load generator printed no result:\n{output[-2000:]}")


def load(server: Server, requests: Path, duration: float, connections: int = CONNECTIONS, start: int = 0, wrap: bool = False) -> dict[str, Any]:
    """Closed-loop POSTs of ``requests`` from line ``start`` for ``duration`` seconds; wrk if installed.

    The result carries ``cpu_us`` (server CPU per answered request, /proc schedstat) and, with
    wrk, ``sent_until``: where the next run against the same server must start so that no
    delivery is sent twice.
    """
    if have_wrk():
        argv = ["wrk", "-t1", f"-c{connections}", f"-d{duration:g}s", "--timeout", "10s", "-s", str(LUA), server.base, "--", str(requests), str(start), "wrap" if wrap else "once"]  # fmt: skip
    else:
        argv = [sys.executable, "-m", "bench.client", "post", server.base, str(requests), f"--connections={connections}", f"--duration={duration}", f"--start={start}"]  # fmt: skip
        if wrap:
            argv.append("--wrap")
    cpu_before = server.cpu_ns()
    out = subprocess.run(procs.pinned(CLIENT_CPU, argv), cwd=ROOT, capture_output=True, text=True, timeout=duration + 60)
    cpu_ns = server.cpu_ns() - cpu_before
    result = _result(out.stdout)
    result["rate"] = result["requests"] / (result["duration_us"] / 1e6)
    result["cpu_us"] = cpu_ns / 1000 / max(result["requests"], 1)
    result["exhausted"] = not wrap and result["sent_until"] > result["file_size"]
    return result


def scrape_metrics(server: Server) -> str:
    assert server.metrics is not None, "only an exporter has a metrics listener"
    with urllib.request.urlopen(server.metrics + "/metrics", timeout=60) as response:
        text: str = response.read().decode()
    return text


def outcomes(text: str) -> dict[str, float]:
    """``{outcome: count}`` of webhook summary events, read from an exposition."""
    found: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        if family.name == "twilio_insights_exporter_events":
            for sample in family.samples:
                if sample.name.endswith("_total") and sample.labels.get("source") == "webhook" and sample.labels.get("type") == "summary":
                    found[sample.labels["outcome"]] = sample.value
    return found


def sample_count(text: str) -> int:
    return sum(1 for line in text.splitlines() if line and not line.startswith("#"))


REGIMES = ("warm", "cold")
# The references measured in every round beside the exporters: the framework's ceiling
# (bench/bare.py) and the naive peer (bench/peer.py).
REFERENCES = ("bare", "peer")
# Summaries per label set posted before a warm measurement: enough that the rarer detail
# labels (tags, severities, degradations, actions) of each set exist too.
SEED_PER_LABEL_SET = 20
# The rate a request file is sized for (deliveries per second of measurement): ~2 x the fastest
# exporter measured, so no file runs out. If one does, its requests go to /exhausted (404) and
# the run is flagged, never replayed (post.lua).
FILE_RATE = {1: {"warm": 10_000, "cold": 5_000}, 50: {"warm": 700, "cold": 250}}


def variants(baseline: Path | None) -> list[str]:
    """What a round measures. ``peer``: the naive peer (bench/peer.py), warm; ``durable``: warm,
    with ``--state.path`` on a temporary file; ``today``: warm, the exporter of ``--baseline``
    (another commit) in the same round."""
    return ["bare", "peer", "warm", "cold", "durable", *(["today"] if baseline else [])]


def posts(
    tmp: Path, rounds: int, slices: int, duration: float, batch: int, baseline: Path | None = None, log: Callable[[str], None] = print
) -> dict[str, Any]:
    """Every variant in every round, alternated: fresh servers per round, then ``slices`` passes,
    each running every variant for ``duration`` s in an order that rotates, so a busy moment of the
    machine hits them all alike. Figures per round (its slices summed), ratios to the bare handler
    of the same round, then medians over rounds."""
    names = variants(baseline)
    pool = workload.label_pool(workload.WARM_LABEL_SETS, seed=1)
    sink = procs.PUBLIC_SINK_URL
    size = {regime: int(FILE_RATE[batch][regime] * duration * slices) + 4 * CONNECTIONS for regime in REGIMES}
    files = {
        "cold": workload.write_requests(tmp / f"posts-cold-{batch}.tsv", sink, size["cold"], batch, seed=batch),
        "warm": workload.write_requests(tmp / f"posts-warm-{batch}.tsv", sink, size["warm"], batch, seed=batch, pool=pool),
    }
    warmups = {
        "cold": workload.write_requests(tmp / f"warmup-cold-{batch}.tsv", sink, 200, batch, seed=10_000 + batch),
        "warm": workload.write_requests(tmp / f"warmup-warm-{batch}.tsv", sink, 200, batch, seed=10_000 + batch, pool=pool),
    }
    seed_file = workload.write_requests(tmp / "seed-warm.tsv", sink, len(pool) * SEED_PER_LABEL_SET // 50, 50, seed=40_000, pool=pool)
    regime_of = {"bare": "cold", "peer": "warm", "warm": "warm", "cold": "cold", "durable": "warm", "today": "warm"}
    exporters = [name for name in names if name not in REFERENCES]
    out: dict[str, Any] = {"variants": names, "rounds": []}
    for round_no in range(rounds):
        with contextlib.ExitStack() as stack:
            servers = {"bare": stack.enter_context(procs.bare()), "peer": stack.enter_context(procs.peer())}
            _post_all(servers["peer"], seed_file)  # the same label sets as the warm exporter
            for name in exporters:
                extra = [f"--state.path={tmp / f'state-{round_no}.sqlite'}"] if name == "durable" else []
                servers[name] = stack.enter_context(procs.exporter(*extra, source=baseline if name == "today" and baseline is not None else ROOT))
                if regime_of[name] == "warm":
                    _post_all(servers[name], seed_file)
            for name, server in servers.items():
                load(server, warmups[regime_of[name]], 1.0, wrap=name == "bare")
            counts_before = {name: _counts(servers[name]) for name in exporters}
            starts = dict.fromkeys(names, 0)
            runs: dict[str, list[dict[str, Any]]] = {name: [] for name in names}
            for slice_no in range(slices):
                shift = (round_no * slices + slice_no) % len(names)
                for name in names[shift:] + names[:shift]:
                    result = load(servers[name], files[regime_of[name]], duration, start=starts[name], wrap=name == "bare")
                    starts[name] = result["sent_until"]
                    runs[name].append(result)
            counts_after = {name: _counts(servers[name]) for name in exporters}
        figures = {name: _sum_runs(runs[name]) for name in names}
        # The peer answers every delivery 200 after recording all of it (no duplicates to skip).
        peer = figures["peer"]
        peer["summaries_per_s"] = peer["rate"] * batch
        peer["ratio"] = peer["rate"] / figures["bare"]["rate"]
        peer["cpu_ratio"] = figures["bare"]["cpu_us"] / peer["cpu_us"]
        for name in exporters:
            f, (before, samples_before), (after, samples_after) = figures[name], counts_before[name], counts_after[name]
            recorded = after.get("recorded", 0) - before.get("recorded", 0)
            f["summaries_per_s"] = recorded / f["seconds"]
            f["duplicates"] = after.get("duplicate", 0) - before.get("duplicate", 0)
            f["new_samples_per_summary"] = (samples_after - samples_before) / max(recorded, 1)
            f["samples_before"], f["samples_after"] = samples_before, samples_after
            f["ratio"] = f["rate"] / figures["bare"]["rate"]
            f["cpu_ratio"] = figures["bare"]["cpu_us"] / f["cpu_us"]
            if f["duplicates"] or f["exhausted"]:
                log(f"  WARNING: {name}: {f['duplicates']:.0f} duplicates, request file exhausted: {f['exhausted']}; not a fresh-delivery rate")
        for name in ("durable", "today"):
            if name in figures:
                figures[name]["vs_warm"] = figures[name]["rate"] / figures["warm"]["rate"]
                figures[name]["cpu_vs_warm"] = figures["warm"]["cpu_us"] / figures[name]["cpu_us"]
        for name in exporters:
            # Summaries, not requests: the same for single events, and for batches what counts.
            figures[name]["vs_peer"] = figures[name]["summaries_per_s"] / peer["summaries_per_s"]
            figures[name]["cpu_vs_peer"] = peer["cpu_us"] / figures[name]["cpu_us"]
        out["rounds"].append(figures)
        log(f"  round {round_no + 1}/{rounds}: " + "; ".join(_describe(name, figures[name], batch) for name in names))
    out["median"] = {
        name: {key: statistics.median(r[name][key]for r in out["rounds"]) for key in out["rounds"][0][name] if isinstance(out["rounds"][0][name][key], (int, float))}
        for name in names
    }  # fmt: skip
    return out


def _counts(server: Server) -> tuple[dict[str, float], int]:
    text = scrape_metrics(server)
    return outcomes(text), sample_count(text)


def _sum_runs(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """One round's slices of a variant as one run: rates and CPU from the totals, latency medians."""
    requests = sum(r["requests"] for r in runs)
    seconds = sum(r["duration_us"] for r in runs) / 1e6
    return {
        "requests": requests,
        "seconds": seconds,
        "rate": requests / seconds,
        "cpu_us": sum(r["cpu_us"] * r["requests"] for r in runs) / max(requests, 1),
        "p50_us": statistics.median(r["p50_us"] for r in runs),
        "p99_us": statistics.median(r["p99_us"] for r in runs),
        "non_2xx": sum(r["non_2xx"] for r in runs),
        "exhausted": any(r["exhausted"] for r in runs),
    }


def _describe(name: str, f: dict[str, Any], batch: int) -> str:
    text = f"{name} {f['rate']:.0f} req/s, {f['cpu_us']:.0f} µs CPU/req"
    if name != "bare":
        text += f" = {f['ratio']:.2f} x bare (CPU {f['cpu_ratio']:.2f} x)"
        if "vs_peer" in f:
            text += f", {f['vs_peer']:.2f} x peer (CPU {f['cpu_vs_peer']:.2f} x)"
        if batch > 1:
            text += f", {f['summaries_per_s']:.0f} summaries/s"
        if "vs_warm" in f:
            text += f", {f['vs_warm']:.2f} x warm"
        if f["non_2xx"]:
            text += f", non-2xx {f['non_2xx']}"
    return text


# Label sets of the scrape test's registry: about 200 samples each, so 100k samples take ~500.
SCRAPE_LABEL_SETS = 500


def scrapes_under_load(tmp: Path, duration: float, rate: float, target_samples: int, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Steady webhook load while two scrapers pull a large /metrics every 5 s: first warm
    (summaries of the label sets already in the registry), then cold (new label sets)."""
    pool = workload.label_pool(SCRAPE_LABEL_SETS, seed=2, teams=True)
    out: dict[str, Any] = {}
    with procs.exporter() as server:
        assert server.metrics is not None
        # Grow the registry to the target through the webhook itself, 50 summaries per delivery,
        # from the label sets the warm phase will use.
        # Until the label sets are saturated (their rarer detail labels too), so that the warm
        # phase adds next to no series.
        seed, samples = 20_000, 0
        for _ in range(400):  # bounded: ~60 rounds saturate 500 label sets
            fill = workload.write_requests(tmp / "fill.tsv", procs.PUBLIC_SINK_URL, 10, 50, seed=seed, pool=pool)
            _post_all(server, fill)
            seed += 1
            before, samples = samples, sample_count(scrape_metrics(server))
            if samples >= target_samples and samples - before < samples / 200:
                break
        out["samples"] = samples
        for regime in REGIMES:
            steady = workload.write_requests(
                tmp / f"steady-{regime}.tsv", procs.PUBLIC_SINK_URL, int(rate * duration) + 10, 1,
                seed=30_000 if regime == "warm" else 30_001, pool=pool if regime == "warm" else None,
            )  # fmt: skip
            scraper = subprocess.Popen(
                procs.pinned(CLIENT_CPU, [sys.executable, "-m", "bench.client", "scrape", server.metrics + "/metrics", "--interval=5", f"--duration={duration}", "--scrapers=2"]),
                cwd=ROOT, stdout=subprocess.PIPE, text=True,
            )  # fmt: skip
            client = subprocess.run(
                procs.pinned(CLIENT_CPU, [sys.executable, "-m", "bench.client", "steady", server.base, str(steady), f"--rate={rate}", f"--duration={duration}"]),
                cwd=ROOT, capture_output=True, text=True, timeout=duration + 120,
            )  # fmt: skip
            scrape_out, _ = scraper.communicate(timeout=120)
            webhook = _result(client.stdout)
            scrapes = _result(scrape_out)
            samples_after = sample_count(scrape_metrics(server))
            out[regime] = {"webhook": webhook, "scrapes": scrapes, "samples_before": samples, "samples_after": samples_after}
            log(
                f"  {regime}: {samples} -> {samples_after} samples: webhook at {rate:g}/s p50 {webhook['p50_us'] / 1000:.1f} ms, "
                f"p99 {webhook['p99_us'] / 1000:.1f} ms, max {webhook['max_us'] / 1000:.1f} ms ({webhook['requests']} requests, "
                f"{webhook['non_2xx']} non-2xx, {webhook['socket_errors']} errors); {scrapes['scrapes']} scrapes of "
                f"{scrapes['bytes'] / 1e6:.1f} MB, p50 {scrapes['p50_ms']:.0f} ms, max {scrapes['max_ms']:.0f} ms"
            )
            samples = samples_after
        out["rss_kib"] = server.rss_kib()
    return out


def _post_all(server: Server, requests: Path) -> None:
    for target, signature, body in _lines(requests):
        request = urllib.request.Request(
            server.base + target, data=body, headers={"X-Twilio-Signature": signature, "Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            response.read()


def _lines(path: Path) -> Iterator[tuple[str, str, bytes]]:
    for line in path.read_bytes().splitlines():
        target, signature, body = line.split(b"\t", 2)
        yield target.decode(), signature.decode(), body
