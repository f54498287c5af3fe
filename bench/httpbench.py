"""Benchmarks over HTTP: server pinned to one core, load generator to the other."""

from __future__ import annotations

import json
import shutil
import statistics
import subprocess
import sys
import urllib.request
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from . import procs, workload
from .procs import CLIENT_CPU, ROOT, Server

LUA = Path(__file__).with_name("post.lua")
CONNECTIONS = 16


def have_wrk() -> bool:
    return shutil.which("wrk") is not None


def _result(output: str) -> dict:
    for line in output.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT ") :])
    raise RuntimeError(f"load generator printed no result:\n{output[-2000:]}")


def load(server: Server, requests: Path, duration: float, connections: int = CONNECTIONS) -> dict:
    """Closed-loop POSTs of ``requests`` for ``duration`` seconds; wrk if installed."""
    if have_wrk():
        argv = ["wrk", "-t1", f"-c{connections}", f"-d{duration:g}s", "--timeout", "10s", "-s", str(LUA), server.base, "--", str(requests)]
    else:
        argv = [sys.executable, "-m", "bench.client", "post", server.base, str(requests), f"--connections={connections}", f"--duration={duration}"]
    out = subprocess.run(procs.pinned(CLIENT_CPU, argv), cwd=ROOT, capture_output=True, text=True, timeout=duration + 60)
    result = _result(out.stdout)
    result["rate"] = result["requests"] / (result["duration_us"] / 1e6)
    return result


def scrape_metrics(server: Server) -> str:
    with urllib.request.urlopen(server.metrics + "/metrics", timeout=60) as response:
        return response.read().decode()


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


def posts(tmp: Path, runs: int, duration: float, batch: int, deliveries: int, log=print) -> dict:
    """Exporter vs the bare handler, alternated run by run with the same client and request file."""
    requests = workload.write_requests(tmp / f"posts-{batch}.tsv", procs.PUBLIC_SINK_URL, deliveries, batch, seed=batch)
    warmup = workload.write_requests(tmp / f"warmup-{batch}.tsv", procs.PUBLIC_SINK_URL, 200, batch, seed=10_000 + batch)
    exporter_runs, bare_runs, ratios = [], [], []
    for run in range(runs):
        with procs.exporter() as server:
            load(server, warmup, 1.0)
            before = outcomes(scrape_metrics(server))
            result = load(server, requests, duration)
            after = outcomes(scrape_metrics(server))
        recorded = after.get("recorded", 0) - before.get("recorded", 0)
        duplicates = after.get("duplicate", 0) - before.get("duplicate", 0)
        result["summaries_per_s"] = recorded / (result["duration_us"] / 1e6)
        result["duplicates"] = duplicates
        exporter_runs.append(result)
        with procs.bare() as server:
            load(server, warmup, 1.0)
            bare_result = load(server, requests, duration)
        bare_runs.append(bare_result)
        ratios.append(result["rate"] / bare_result["rate"])
        log(
            f"  run {run + 1}/{runs}: exporter {result['rate']:.0f} req/s ({result['summaries_per_s']:.0f} summaries/s recorded, "
            f"{duplicates:.0f} duplicates, p50 {result['p50_us'] / 1000:.1f} ms, p99 {result['p99_us'] / 1000:.1f} ms, "
            f"non-2xx {result['non_2xx']}); bare {bare_result['rate']:.0f} req/s (p50 {bare_result['p50_us'] / 1000:.1f} ms, "
            f"p99 {bare_result['p99_us'] / 1000:.1f} ms); ratio {ratios[-1]:.2f}"
        )
    return {"exporter": exporter_runs, "bare": bare_runs, "ratio": statistics.median(ratios), "ratios": ratios}


def scrapes_under_load(tmp: Path, duration: float, rate: float, target_samples: int, log=print) -> dict:
    """Steady webhook load while two scrapers pull a large /metrics every 5 s."""
    with procs.exporter() as server:
        # Grow the registry to the target through the webhook itself, 50 summaries per delivery.
        seed = 20_000
        while True:
            fill = workload.write_requests(tmp / "fill.tsv", procs.PUBLIC_SINK_URL, 10, 50, seed=seed, teams=True)
            _post_all(server, fill)
            seed += 1
            samples = sample_count(scrape_metrics(server))
            if samples >= target_samples:
                break
        steady = workload.write_requests(tmp / "steady.tsv", procs.PUBLIC_SINK_URL, int(rate * duration) + 10, 1, seed=30_000)
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
        rss_kib = server.rss_kib()
    log(
        f"  {samples} samples: webhook at {rate:g}/s p50 {webhook['p50_us'] / 1000:.1f} ms, p99 {webhook['p99_us'] / 1000:.1f} ms, "
        f"max {webhook['max_us'] / 1000:.1f} ms ({webhook['requests']} requests, {webhook['non_2xx']} non-2xx, {webhook['socket_errors']} errors); "
        f"{scrapes['scrapes']} scrapes of {scrapes['bytes'] / 1e6:.1f} MB, p50 {scrapes['p50_ms']:.0f} ms, max {scrapes['max_ms']:.0f} ms"
    )
    return {"samples": samples, "webhook": webhook, "scrapes": scrapes, "rss_kib": rss_kib}


def _post_all(server: Server, requests: Path) -> None:
    for target, signature, body in _lines(requests):
        request = urllib.request.Request(
            server.base + target, data=body, headers={"X-Twilio-Signature": signature, "Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            response.read()


def _lines(path: Path):
    for line in path.read_bytes().splitlines():
        target, signature, body = line.split(b"\t", 2)
        yield target.decode(), signature.decode(), body
