"""Load generators that run in their own process (pinned away from the server).

``post``    closed loop: N keep-alive connections POST the request file as fast as answered
            (the fallback when Debian's ``wrk`` is missing; same request file, same output).
``steady``  open loop: POSTs at a fixed rate, latency measured from each request's scheduled
            time, so a stalled server cannot hide its stall by slowing the client down.
``scrape``  a Prometheus-like scraper: GET /metrics every ``interval`` seconds, time each pull.

Every mode is bounded by a duration and prints one ``RESULT {json}`` line.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from pathlib import Path
from typing import Any

import aiohttp


def load_requests(path: Path) -> list[tuple[str, str, bytes]]:
    out = []
    for line in path.read_bytes().splitlines():
        target, signature, body = line.split(b"\t", 2)
        out.append((target.decode(), signature.decode(), body))
    return out


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q / 100 * len(ordered)))]


async def _post(session: aiohttp.ClientSession, base: str, item: tuple[str, str, bytes]) -> int:
    target, signature, body = item
    headers = {"X-Twilio-Signature": signature, "Content-Type": "application/json"}
    async with session.post(base + target, data=body, headers=headers) as response:
        await response.read()
        return response.status


async def closed_loop(base: str, items: list[Any], connections: int, duration: float, start: int = 0, wrap: bool = False) -> dict[str, Any]:
    """As post.lua: from line ``start``; past the end, start over (``wrap``) or stop sending."""
    latencies: list[float] = []
    counters = {"non_2xx": 0, "socket_errors": 0}
    next_index = start
    deadline = time.perf_counter() + duration

    async def worker(session: aiohttp.ClientSession) -> None:
        nonlocal next_index
        while time.perf_counter() < deadline:
            if next_index >= len(items) and not wrap:
                next_index += 1
                counters["non_2xx"] += 1  # as post.lua's /exhausted: visible, never a replay
                await asyncio.sleep(0.01)
                continue
            item = items[next_index % len(items)]
            next_index += 1
            started = time.perf_counter()
            try:
                status = await _post(session, base, item)
            except aiohttp.ClientError:
                counters["socket_errors"] += 1
                continue
            latencies.append(time.perf_counter() - started)
            if not 200 <= status < 300:
                counters["non_2xx"] += 1

    started = time.perf_counter()
    connector = aiohttp.TCPConnector(limit=connections)
    async with aiohttp.ClientSession(connector=connector) as session:
        await asyncio.gather(*(worker(session) for _ in range(connections)))
    elapsed = time.perf_counter() - started
    return {**_summary(latencies, elapsed, counters), "sent_until": next_index, "file_size": len(items)}


async def open_loop(base: str, items: list[Any], rate: float, duration: float) -> dict[str, Any]:
    latencies: list[float] = []
    counters = {"non_2xx": 0, "socket_errors": 0}
    total = int(rate * duration)
    started = time.perf_counter()

    async def one(i: int, session: aiohttp.ClientSession) -> None:
        scheduled = started + i / rate
        delay = scheduled - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        try:
            status = await asyncio.wait_for(_post(session, base, items[i % len(items)]), timeout=10)
        except (TimeoutError, aiohttp.ClientError):
            counters["socket_errors"] += 1
            return
        latencies.append(time.perf_counter() - scheduled)
        if not 200 <= status < 300:
            counters["non_2xx"] += 1

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=64)) as session:
        await asyncio.gather(*(one(i, session) for i in range(total)))
    return _summary(latencies, time.perf_counter() - started, counters)


async def scrape(url: str, interval: float, duration: float, scrapers: int, accept: str) -> dict[str, Any]:
    durations: list[float] = []
    sizes: list[int] = []
    deadline = time.perf_counter() + duration

    async def scraper(offset: float, session: aiohttp.ClientSession) -> None:
        await asyncio.sleep(offset)
        while time.perf_counter() < deadline:
            started = time.perf_counter()
            async with session.get(url, headers={"Accept": accept, "Accept-Encoding": "gzip"}) as response:
                body = await response.read()
            durations.append(time.perf_counter() - started)
            sizes.append(len(body))
            await asyncio.sleep(max(0.0, interval - (time.perf_counter() - started)))

    timeout = aiohttp.ClientTimeout(total=60)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        # Two scrapers a moment apart, as two Prometheus replicas would be.
        await asyncio.gather(*(scraper(i * 0.1, session) for i in range(scrapers)))
    return {
        "scrapes": len(durations),
        "p50_ms": percentile(durations, 50) * 1000,
        "max_ms": max(durations, default=float("nan")) * 1000,
        "bytes": max(sizes, default=0),
    }


def _summary(latencies: list[float], elapsed: float, counters: dict[str, Any]) -> dict[str, Any]:
    return {
        "requests": len(latencies),
        "duration_us": int(elapsed * 1e6),
        "p50_us": int(percentile(latencies, 50) * 1e6),
        "p99_us": int(percentile(latencies, 99) * 1e6),
        "max_us": int(max(latencies, default=0) * 1e6),
        **counters,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="mode", required=True)
    post = sub.add_parser("post")
    post.add_argument("base")
    post.add_argument("requests", type=Path)
    post.add_argument("--connections", type=int, default=16)
    post.add_argument("--duration", type=float, default=5)
    post.add_argument("--start", type=int, default=0)
    post.add_argument("--wrap", action="store_true")
    steady = sub.add_parser("steady")
    steady.add_argument("base")
    steady.add_argument("requests", type=Path)
    steady.add_argument("--rate", type=float, default=200)
    steady.add_argument("--duration", type=float, default=20)
    scr = sub.add_parser("scrape")
    scr.add_argument("url")
    scr.add_argument("--interval", type=float, default=5)
    scr.add_argument("--duration", type=float, default=20)
    scr.add_argument("--scrapers", type=int, default=2)
    scr.add_argument("--accept", default="application/openmetrics-text; version=1.0.0")
    args = parser.parse_args()
    if args.mode == "post":
        result = asyncio.run(closed_loop(args.base, load_requests(args.requests), args.connections, args.duration, args.start, args.wrap))
    elif args.mode == "steady":
        result = asyncio.run(open_loop(args.base, load_requests(args.requests), args.rate, args.duration))
    else:
        result = asyncio.run(scrape(args.url, args.interval, args.duration, args.scrapers, args.accept))
    print("RESULT " + json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
