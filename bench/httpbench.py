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


REGIMES = ("warm", "cold")
# Summaries per label set posted before a warm measurement: enough that the rarer detail
# labels (tags, severities, degradations, actions) of each set exist too.
SEED_PER_LABEL_SET = 20


def posts(tmp: Path, runs: int, duration: float, batch: int, deliveries: int, log=print) -> dict:
    """The exporter warm and cold, and the bare handler, alternated run by run with the same
    client; each regime's ratio is to the bare run of the same round."""
    pool = workload.label_pool(workload.WARM_LABEL_SETS, seed=1)
    files = {
        "cold": (
            workload.write_requests(tmp / f"posts-cold-{batch}.tsv", procs.PUBLIC_SINK_URL, deliveries, batch, seed=batch),
            workload.write_requests(tmp / f"warmup-cold-{batch}.tsv", procs.PUBLIC_SINK_URL, 200, batch, seed=10_000 + batch),
            None,
        ),
        "warm": (
            workload.write_requests(tmp / f"posts-warm-{batch}.tsv", procs.PUBLIC_SINK_URL, deliveries, batch, seed=batch, pool=pool),
            workload.write_requests(tmp / f"warmup-warm-{batch}.tsv", procs.PUBLIC_SINK_URL, 200, batch, seed=10_000 + batch, pool=pool),
            workload.write_requests(tmp / "seed-warm.tsv", procs.PUBLIC_SINK_URL, len(pool) * SEED_PER_LABEL_SET // 50, 50, seed=40_000, pool=pool),
        ),
    }
    out: dict = {regime: {"exporter": [], "ratios": []} for regime in REGIMES}
    out["bare"] = []
    for run in range(runs):
        with procs.bare() as server:
            load(server, files["cold"][1], 1.0)
            bare_result = load(server, files["cold"][0], duration)
        out["bare"].append(bare_result)
        line = [
            f"  run {run + 1}/{runs}: bare {bare_result['rate']:.0f} req/s (p50 {bare_result['p50_us'] / 1000:.1f} ms, p99 {bare_result['p99_us'] / 1000:.1f} ms)"
        ]
        for regime in REGIMES:
            requests, warmup, seed = files[regime]
            with procs.exporter() as server:
                if seed is not None:
                    _post_all(server, seed)
                load(server, warmup, 1.0)
                text = scrape_metrics(server)
                before, samples_before = outcomes(text), sample_count(text)
                result = load(server, requests, duration)
                text = scrape_metrics(server)
                after, samples_after = outcomes(text), sample_count(text)
            recorded = after.get("recorded", 0) - before.get("recorded", 0)
            result["summaries_per_s"] = recorded / (result["duration_us"] / 1e6)
            result["duplicates"] = after.get("duplicate", 0) - before.get("duplicate", 0)
            result["samples_before"], result["samples_after"] = samples_before, samples_after
            # New series per recorded summary: ~0 warm, tens to ~200 cold.
            result["new_samples_per_summary"] = (samples_after - samples_before) / max(recorded, 1)
            result["ratio"] = result["rate"] / bare_result["rate"]
            if result["duplicates"]:
                log(
                    f"  WARNING: {regime}: the request file wrapped around ({result['duplicates']:.0f} duplicates); its rate is not a fresh-delivery rate"
                )
            out[regime]["exporter"].append(result)
            out[regime]["ratios"].append(result["ratio"])
            line.append(
                f"{regime} {result['rate']:.0f} req/s = {result['ratio']:.2f} x ({result['summaries_per_s']:.0f} summaries/s, "
                f"p50 {result['p50_us'] / 1000:.1f} ms, p99 {result['p99_us'] / 1000:.1f} ms, non-2xx {result['non_2xx']}, "
                f"{result['duplicates']:.0f} duplicates, registry {samples_before} -> {samples_after} samples)"
            )
        log("; ".join(line))
    for regime in REGIMES:
        out[regime]["ratio"] = statistics.median(out[regime]["ratios"])
    return out


# Label sets of the scrape test's registry: about 200 samples each, so 100k samples take ~500.
SCRAPE_LABEL_SETS = 500


def scrapes_under_load(tmp: Path, duration: float, rate: float, target_samples: int, log=print) -> dict:
    """Steady webhook load while two scrapers pull a large /metrics every 5 s: first warm
    (summaries of the label sets already in the registry), then cold (new label sets)."""
    pool = workload.label_pool(SCRAPE_LABEL_SETS, seed=2, teams=True)
    out: dict = {}
    with procs.exporter() as server:
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


def _lines(path: Path):
    for line in path.read_bytes().splitlines():
        target, signature, body = line.split(b"\t", 2)
        yield target.decode(), signature.decode(), body
