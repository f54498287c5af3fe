"""``python -m bench.scrapes [--quick] [--baseline TREE]``: webhook deliveries at 200/s while 16 scrapers pull a large ``/metrics``.

A real exporter process (default flags, as the chart runs it) is first filled with participant
label sets of random labels (2 MiB deliveries, as ``bench/scrape_memory.py`` does) until its
exposition holds ``--samples`` samples; then, in the same process and the same round, two
phases of ``--duration`` seconds each:

1. **alone**: signed single-summary deliveries at ``--rate`` per second, open loop (latency from
   each delivery's scheduled time, so a stalled server cannot hide its stall by slowing the
   client), of label sets already in the registry (the registry does not grow meanwhile);
2. **scraped**: the same rate while ``--scrapers`` scrapers pull ``/metrics`` back to back, most
   as Prometheus does (OpenMetrics, gzip), every eighth as ``curl`` does (text, no gzip).

Printed per phase: the share of deliveries answered 503, the webhook p50/p99/max, the scrapes
completed and their bytes, the renders the exporter counted (its
``twilio_insights_exporter_metrics_renders_total``, "n/a" for a tree without it) and the peak
RSS. The target (docs/performance.md, "Scrapes and deliveries"): no more 503s scraped than
alone plus a few percent, webhook p99 under 250 ms. ``--baseline TREE`` runs another tree's
exporter the same way after this one (e.g. ``git archive main | tar -x -C /tmp/base``).

The clients run in two processes of their own on core 1 (``python -m bench.scrapes deliver`` and
``scrape``), the exporter on core 0.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import aiohttp

from . import procs, workload
from .edge import MiB, delivery, post, rss_kib
from .procs import CLIENT_CPU, PUBLIC_SINK_URL, ROOT

# What Prometheus 2.x/3.x sends, and what curl sends.
PROMETHEUS_ACCEPT = (
    "application/openmetrics-text;version=1.0.0;q=0.5,application/openmetrics-text;version=0.0.1;q=0.4,text/plain;version=0.0.4;q=0.3,*/*;q=0.2"
)
CURL_ACCEPT = "*/*"
# The warm label sets the deliveries of both phases draw from (seeded before the phases).
WARM_LABEL_SETS = 300
RENDERS = re.compile(rb"^twilio_insights_exporter_metrics_renders_total\{[^}]*\} (\S+)$", re.MULTILINE)
FULL_COLLECTIONS = re.compile(rb'^python_gc_collections_total\{generation="2"\} (\S+)$', re.MULTILINE)


def exposition(server: procs.Server) -> bytes:
    with urllib.request.urlopen(f"{server.metrics}/metrics", timeout=600) as response:
        body: bytes = response.read()
    return body


def samples_in(text: bytes) -> int:
    return text.count(b"\n") - text.count(b"\n#") - (not text.startswith(b"#"))


def full_collections_in(text: bytes) -> float:
    found = FULL_COLLECTIONS.search(text)
    return float(found.group(1)) if found else float("nan")


def renders_in(text: bytes) -> float | None:
    found = RENDERS.findall(text)
    return sum(float(value) for value in found) if found else None


async def _fill(server: procs.Server, target: int, pool: list[workload.LabelSet], tmp: Path) -> int:
    """Random label sets until ``target`` samples, then the warm pool's, until adding them adds next to nothing."""
    samples, seed = samples_in(exposition(server)), 9000
    while samples < target:
        status, _, _ = await post(server.base, delivery(seed, size=MiB))  # about 40k samples of new label sets
        assert status == 200, status
        seed += 1
        samples = samples_in(exposition(server))
        print(f"  filled: {samples} samples", flush=True)
    for round_ in range(20):  # bounded: a few rounds saturate the pool's rarer detail labels
        before = samples
        requests = workload.write_requests(tmp / "warm.tsv", PUBLIC_SINK_URL, 12, 50, seed=40_000 + round_, pool=pool)
        for target_path, signature, body in _lines(requests):
            status, _, _ = await post(server.base, body, _head(server.base, target_path, signature, body))
            assert status == 200, status
        samples = samples_in(exposition(server))
        if samples - before < 1000:
            break
    return samples


def _lines(path: Path) -> list[tuple[str, str, bytes]]:
    out = []
    for line in path.read_bytes().splitlines():
        target, signature, body = line.split(b"\t", 2)
        out.append((target.decode(), signature.decode(), body))
    return out


def _head(base: str, target: str, signature: str, body: bytes) -> bytes:
    return (
        f"POST {target} HTTP/1.1\r\nHost: {base.removeprefix('http://')}\r\nContent-Type: application/json\r\n"
        f"X-Twilio-Signature: {signature}\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    ).encode()


def _client(*argv: str, stdin: int | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen(
        procs.pinned(CLIENT_CPU, [sys.executable, "-m", "bench.scrapes", *argv]), cwd=ROOT, stdin=stdin, stdout=subprocess.PIPE, text=True
    )


def _result(out: str) -> dict[str, Any]:
    for line in out.splitlines():
        if line.startswith("RESULT "):
            parsed: dict[str, Any] = json.loads(line.removeprefix("RESULT "))
            return parsed
    raise RuntimeError(f"no RESULT line in {out!r}")


def phase(server: procs.Server, requests: Path, start: int, rate: float, duration: float, scrapers: int) -> dict[str, Any]:
    """Deliveries at ``rate`` for ``duration`` s from line ``start``, with ``scrapers`` scraping meanwhile."""
    text = exposition(server)
    before, collections = renders_in(text), full_collections_in(text)
    del text
    cpu = server.cpu_ns()
    scraping = None
    if scrapers:
        scraping = _client("scrape", f"{server.metrics}/metrics", f"--scrapers={scrapers}", stdin=subprocess.PIPE)
        assert scraping.stdout is not None and scraping.stdin is not None
        # The deliveries start once every scraper has its first bytes: the whole phase is scraped.
        assert scraping.stdout.readline().startswith("SCRAPING"), "scrapers did not start"
    delivering = _client("deliver", server.base, str(requests), f"--start={start}", f"--rate={rate}", f"--duration={duration}")
    out, _ = delivering.communicate(timeout=duration + 120)
    result = {"webhook": _result(out), "cpu_s": (server.cpu_ns() - cpu) / 1e9}
    if scraping is not None:
        scrape_out, _ = scraping.communicate("", timeout=600)  # the scrapers stop when their stdin closes
        result["scrapes"] = _result(scrape_out)
    text = exposition(server)
    after = renders_in(text)
    result["renders"] = None if before is None or after is None else after - before - 1  # less the scrape before the phase
    result["full_collections"] = full_collections_in(text) - collections
    result["peak_rss_mib"] = rss_kib(server, "VmHWM:") / 1024
    return result


def run(source: Path, samples: int, rate: float, duration: float, scrapers: int, rounds: int) -> dict[str, Any]:
    pool = workload.label_pool(WARM_LABEL_SETS, seed=3)
    out: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="bench-scrapes-") as tmp_name, procs.exporter(source=source) as server:
        tmp = Path(tmp_name)
        out["samples"] = asyncio.run(_fill(server, samples, pool, tmp))
        text = exposition(server)
        out["text_mib"] = len(text) / MiB
        del text
        per_phase = int(rate * duration) + 10
        requests = workload.write_requests(tmp / "steady.tsv", PUBLIC_SINK_URL, 2 * rounds * per_phase, 1, seed=50_000, pool=pool)
        out["rounds"] = []
        for i in range(rounds):  # alternated, so that a noisy moment of the machine does not fall on one side only
            alone = phase(server, requests, 2 * i * per_phase, rate, duration, 0)
            scraped = phase(server, requests, (2 * i + 1) * per_phase, rate, duration, scrapers)
            out["rounds"].append({"alone": alone, "scraped": scraped})
        out["samples_after"] = samples_in(exposition(server))
    return out


def report(name: str, r: dict[str, Any], rate: float, scrapers: int) -> str:
    lines = [f"{name}: {r['samples']} samples ({r['text_mib']:.0f} MiB of text), {r['samples_after']} after"]
    for i, key, p in ((i, key, phases[key]) for i, phases in enumerate(r["rounds"], 1) for key in ("alone", "scraped")):
        label = f"round {i}, " + ("alone" if key == "alone" else f"{scrapers} scrapers")
        w = p["webhook"]
        line = (
            f"  {label}: {w['sent']} deliveries at {rate:g}/s: 503 {100 * w['share_503']:.1f} %, other non-2xx {w['other']}, "
            f"p50 {w['p50_ms']:.0f} ms, p99 {w['p99_ms']:.0f} ms, max {w['max_ms']:.0f} ms"
        )
        if "scrapes" in p:
            s = p["scrapes"]
            renders = "n/a" if p["renders"] is None else f"{p['renders']:.0f}"
            line += (
                f"; {s['scrapes']} scrapes completed ({s['bytes_mib']:.0f} MiB read, p50 {s['p50_s']:.1f} s, max {s['max_s']:.1f} s), "
                f"{renders} renders"
            )
        lines.append(line + f"; server CPU {p['cpu_s']:.1f} s, {p['full_collections']:.0f} full GCs, peak RSS {p['peak_rss_mib']:.0f} MiB")
    return "\n".join(lines)


# The two client processes.


async def deliver(base: str, requests: Path, start: int, rate: float, duration: float) -> dict[str, Any]:
    """Open loop: delivery ``i`` is sent at ``i / rate`` s, its latency counted from then."""
    items = _lines(requests)
    total = int(rate * duration)
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    began = time.perf_counter()

    async def one(i: int, session: aiohttp.ClientSession) -> None:
        scheduled = began + i / rate
        if (delay := scheduled - time.perf_counter()) > 0:
            await asyncio.sleep(delay)  # the schedule, not synchronisation
        target, signature, body = items[start + i]
        try:
            async with asyncio.timeout(30):
                headers = {"X-Twilio-Signature": signature, "Content-Type": "application/json"}
                async with session.post(base + target, data=body, headers=headers) as response:
                    await response.read()
                    status = response.status
        except (TimeoutError, aiohttp.ClientError):
            status = 0
        latencies.append(time.perf_counter() - scheduled)
        statuses[status] = statuses.get(status, 0) + 1

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=256)) as session:
        await asyncio.gather(*(one(i, session) for i in range(total)))
    latencies.sort()
    ok = sum(n for status, n in statuses.items() if 200 <= status < 300)
    return {
        "sent": total,
        "statuses": statuses,
        "share_503": statuses.get(503, 0) / total,
        "other": total - ok - statuses.get(503, 0),
        "p50_ms": statistics.median(latencies) * 1000,
        "p99_ms": latencies[int(0.99 * (len(latencies) - 1))] * 1000,
        "max_ms": latencies[-1] * 1000,
    }


async def scrape(url: str, scrapers: int) -> dict[str, Any]:
    """``scrapers`` scrapers back to back until stdin closes; every eighth as curl, the rest as Prometheus."""
    durations: list[float] = []
    read = [0]
    first = [asyncio.Event() for _ in range(scrapers)]

    async def scraper(i: int, session: aiohttp.ClientSession) -> None:
        curl = i % 8 == 7
        headers = {"Accept": CURL_ACCEPT} if curl else {"Accept": PROMETHEUS_ACCEPT, "Accept-Encoding": "gzip"}
        while True:
            started = time.perf_counter()
            async with session.get(url, headers=headers) as response:
                assert response.status == 200, response.status
                async for chunk in response.content.iter_any():
                    read[0] += len(chunk)
                    first[i].set()
            durations.append(time.perf_counter() - started)

    # Raw bytes, not decompressed: the client's core is shared with the deliveries' client.
    async with aiohttp.ClientSession(auto_decompress=False, connector=aiohttp.TCPConnector(limit=0)) as session:
        tasks = [asyncio.create_task(scraper(i, session)) for i in range(scrapers)]
        await asyncio.gather(*(event.wait() for event in first))
        print("SCRAPING", flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    return {
        "scrapes": len(durations),
        "bytes_mib": read[0] / MiB,
        "p50_s": statistics.median(durations) if durations else float("nan"),
        "max_s": max(durations, default=float("nan")),
    }


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.scrapes", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="mode")
    parser.add_argument("--quick", action="store_true", help="a smaller registry and shorter phases")
    parser.add_argument("--baseline", type=Path, help="also run the exporter of this tree (the 'before' figures)")
    parser.add_argument("--samples", type=int, help="fill the registry to at least this many samples (default 300,000; quick 100,000)")
    parser.add_argument("--rate", type=float, default=200, help="deliveries per second")
    parser.add_argument("--duration", type=float, help="seconds of each phase (default 30; quick 15)")
    parser.add_argument("--scrapers", type=int, default=16, help="concurrent scrapers in the scraped phase")
    parser.add_argument("--rounds", type=int, help="alone and scraped phases, alternated (default 2; quick 1)")
    client = sub.add_parser("deliver")
    client.add_argument("base")
    client.add_argument("requests", type=Path)
    client.add_argument("--start", type=int, default=0)
    client.add_argument("--rate", type=float, default=200)
    client.add_argument("--duration", type=float, default=20)
    scraper = sub.add_parser("scrape")
    scraper.add_argument("url")
    scraper.add_argument("--scrapers", type=int, default=16)
    options = parser.parse_args()
    if options.mode == "deliver":
        print("RESULT " + json.dumps(asyncio.run(deliver(options.base, options.requests, options.start, options.rate, options.duration))), flush=True)
        return 0
    if options.mode == "scrape":
        print("RESULT " + json.dumps(asyncio.run(scrape(options.url, options.scrapers))), flush=True)
        return 0
    if hasattr(os, "sched_setaffinity") and (os.cpu_count() or 1) > 1:
        os.sched_setaffinity(0, {int(CLIENT_CPU)})
    samples = options.samples or (100_000 if options.quick else 300_000)
    duration = options.duration or (15 if options.quick else 30)
    rounds = [("this tree", ROOT)] + ([("baseline", options.baseline)] if options.baseline else [])
    results = {}
    for name, source in rounds:
        print(f"{name}: filling to {samples} samples", flush=True)
        results[name] = run(source, samples, options.rate, duration, options.scrapers, options.rounds or (1 if options.quick else 2))
        print(report(name, results[name], options.rate, options.scrapers), flush=True)
    print(json.dumps(results, indent=2, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
