"""``python -m bench.edge [--quick] [--baseline TREE] [--only SCENARIO ...]``: the public door under attack.

Four scenarios against a real exporter process (default flags, as the chart runs it), each
printed with its figures:

1. **Slow senders.** 200 connections each replay a real delivery's headers (they pass the
   signature; a delivery each) and trickle its body a byte every 0.5 s, reconnecting when cut; meanwhile 30 real signed
   deliveries, one every 0.1 s, and the health probes every 25 ms. Printed: the real deliveries'
   statuses and worst answer time, the probes' p50/p99.
2. **Forged bodies.** 16 concurrent connections each announce and send a 16 MiB body with a
   forged signature. Printed: how each ended (403, or closed) and the peak RSS growth (VmHWM at
   the end minus VmRSS before).
3. **Large valid deliveries.** 48 concurrent validly signed 4 MiB deliveries. Printed: how many
   got 2xx and 503 (each 503 with Retry-After?), the peak RSS against the chart's default limit,
   and whether every 2xx was counted exactly once.
4. **A replayed delivery.** 50 connections replay one captured, validly signed 1 MiB delivery
   (its headers and body as captured) and trickle its body, 1 KiB every 20 ms, reconnecting as
   soon as they are answered or cut; meanwhile 30 real signed deliveries, one every 0.1 s, each
   retried until 2xx (after 0.1 s, then doubling: Twilio's own backoff is not published), and
   the health probes every 25 ms from a process of their own (3 s of them before the attack: the
   machine's own figure). Printed: how many real deliveries got a 2xx within 1 s of their first
   attempt (the target: all), within 10 s, at their first attempt; the probes' p50/p99 under
   attack (the target: p99 under 100 ms); the attackers' connections and the refusals by reason.

``--baseline TREE`` runs the same scenarios against the exporter of another tree (e.g.
``git archive <commit> | tar -x -C /tmp/base``) in the same round: the "before" figures.
Clients run in this process (asyncio, raw sockets) on core 1, the exporter on core 0.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import multiprocessing.synchronize
import os
import random
import statistics
import time
import urllib.request
from collections.abc import Callable
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from prometheus_client.parser import text_string_to_metric_families

from exporter.synthetic import batch_body, cloud_event, generate_summary, sign

from . import procs
from .procs import CLIENT_CPU, PUBLIC_SINK_URL, ROOT
from .workload import AUTH_TOKEN

MiB = 1024**2
# The chart's default resources.limits.memory (helm/twilio-insights-exporter/values.yaml).
CHART_LIMIT_MIB = 1024


def delivery(seed: int, size: int = 0, count: int = 3) -> bytes:
    """A batch of ``count`` distinct summaries, or as many as make about ``size`` bytes."""
    rng = random.Random(seed)
    events = [cloud_event(generate_summary(rng)) for _ in range(count)]
    if size:
        one = len(batch_body(events[:1]))
        events = [cloud_event(generate_summary(rng)) for _ in range(max(1, size // one))]
    return batch_body(events)


def head(base: str, body: bytes, token: str = AUTH_TOKEN, length: int | None = None) -> bytes:
    signed_url, signature = sign(PUBLIC_SINK_URL, body, token)
    parts = urlsplit(signed_url)
    host = base.removeprefix("http://")
    return (
        f"POST {parts.path}?{parts.query} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
        f"X-Twilio-Signature: {signature}\r\nContent-Length: {len(body) if length is None else length}\r\n\r\n"
    ).encode()


async def answer(reader: asyncio.StreamReader) -> tuple[int, dict[str, str]]:
    """Status and headers of an answer; (0, {}) when the connection closed without one."""
    status_line = await reader.readline()
    if not status_line:
        return 0, {}
    headers = {}
    while (line := await reader.readline()) not in (b"\r\n", b""):
        name, _, value = line.decode().partition(":")
        headers[name.strip().lower()] = value.strip()
    await reader.readexactly(int(headers.get("content-length", "0")))
    return int(status_line.split()[1]), headers


def address(base: str) -> tuple[str, int]:
    host, port = base.removeprefix("http://").split(":")
    return host, int(port)


async def post(base: str, body: bytes, prepared: bytes | None = None) -> tuple[int, dict[str, str], float]:
    started = time.perf_counter()
    reader, writer = await asyncio.open_connection(*address(base))
    try:
        writer.write((prepared or head(base, body)) + body)
        await writer.drain()
        status, headers = await answer(reader)
    except ConnectionError:
        status, headers = 0, {}
    finally:
        writer.close()
    return status, headers, time.perf_counter() - started


async def slow_sender(base: str, prepared: bytes, body: bytes, stop: asyncio.Event, cuts: list[int]) -> None:
    """Headers, then a byte every 0.5 s; reconnect when cut, until ``stop``."""
    while not stop.is_set():
        try:
            reader, writer = await asyncio.open_connection(*address(base))
        except OSError:
            await asyncio.sleep(0.1)  # the attacker's pace, not synchronisation
            continue
        try:
            writer.write(prepared)
            await writer.drain()
            for byte in body:
                if stop.is_set() or reader.at_eof():
                    break
                writer.write(bytes([byte]))
                await writer.drain()
                await asyncio.sleep(0.5)  # the attacker's pace, not synchronisation
            cuts[0] += 1
        except ConnectionError:
            cuts[0] += 1
        finally:
            writer.close()


async def probes(metrics: str, stopped: Callable[[], bool], stamped: list[float] | None = None) -> list[float]:
    """Answer times of ``/-/healthy`` and ``/-/ready``, each on a fresh connection every 25 ms, until ``stopped()``;
    ``stamped`` gets the ``time.monotonic()`` at which each began."""
    times = []
    while not stopped():
        for path in ("/-/healthy", "/-/ready"):
            started = time.perf_counter()
            if stamped is not None:
                stamped.append(time.monotonic())
            reader, writer = await asyncio.open_connection(*address(metrics))
            writer.write(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
            await writer.drain()
            await answer(reader)
            writer.close()
            times.append(time.perf_counter() - started)
        await asyncio.sleep(0.025)  # the probe period, as a kubelet's
    return times


def probe_process(metrics: str, stop: multiprocessing.synchronize.Event, results: Connection) -> None:
    """:func:`probes` in a process of its own (a kubelet is one): their times are not the attackers' client loop's delays."""
    stamped: list[float] = []
    times = asyncio.run(probes(metrics, stop.is_set, stamped))
    results.send(list(zip(stamped, times, strict=True)))


def p99(times: list[float]) -> float:
    ordered = sorted(times)
    return ordered[int(0.99 * (len(ordered) - 1))] * 1000 if ordered else float("nan")


def rss_kib(server: procs.Server, field: str = "VmRSS:") -> int:
    for line in Path(f"/proc/{server.proc.pid}/status").read_text().splitlines():
        if line.startswith(field):
            return int(line.split()[1])
    return 0


def summaries(metrics: str) -> float:
    with urllib.request.urlopen(metrics + "/metrics", timeout=60) as response:
        text = response.read().decode()
    return sum(s.value for f in text_string_to_metric_families(text) for s in f.samples if s.name == "twilio_conference_participant_summaries_total")


async def slow_senders(server: procs.Server, senders: int, deliveries: int) -> dict[str, Any]:
    # A captured delivery each: copies of one would be refused as such (the replay scenario), not read slowly.
    bodies = [delivery(100_000 + n) for n in range(senders)]
    stop, cuts = asyncio.Event(), [0]
    attackers = [asyncio.create_task(slow_sender(server.base, head(server.base, body), body, stop, cuts)) for body in bodies]
    prober = asyncio.create_task(probes(server.metrics or "", stop.is_set))
    await asyncio.sleep(3)  # let every slow sender connect and be cut once (the attack's steady state)
    results = []
    for seed in range(deliveries):
        results.append(await post(server.base, delivery(1000 + seed)))
        await asyncio.sleep(0.1)  # Twilio's deliveries arrive spread out
    stop.set()
    probe_times = sorted(await prober)
    await asyncio.gather(*attackers, return_exceptions=True)
    statuses = [status for status, _, _ in results]
    return {
        "ok": statuses.count(200),
        "statuses": sorted(set(statuses)),
        "worst_s": max(t for _, _, t in results),
        "median_s": statistics.median(t for _, _, t in results),
        "probe_p50_ms": statistics.median(probe_times) * 1000,
        "probe_p99_ms": probe_times[int(0.99 * (len(probe_times) - 1))] * 1000,
        "slow_reconnects": cuts[0],
    }


async def forged_bodies(server: procs.Server, senders: int, size: int) -> dict[str, Any]:
    chunk = b" " * (256 * 1024)
    before = rss_kib(server)

    async def one(seed: int) -> int:
        body = delivery(seed)
        prepared = head(server.base, body, token="forged-token", length=size)
        reader, writer = await asyncio.open_connection(*address(server.base))
        # The answer is read while the body is being sent: a refusal comes before the body ends.
        answered = asyncio.create_task(answer(reader))
        try:
            writer.write(prepared)
            sent = 0
            while sent < size and not answered.done():
                writer.write(chunk)
                await writer.drain()
                sent += len(chunk)
        except ConnectionError:
            pass
        try:
            status, _ = await answered
        except (ConnectionError, asyncio.IncompleteReadError):
            status = 0
        finally:
            writer.close()
        return status

    statuses = await asyncio.gather(*(one(seed) for seed in range(senders)))
    return {
        "refused_403": statuses.count(403),
        "closed": statuses.count(0),
        "other": len(statuses) - statuses.count(403) - statuses.count(0),
        "rss_growth_mib": (rss_kib(server, "VmHWM:") - before) / 1024,
    }


async def large_deliveries(server: procs.Server, count: int, size: int) -> dict[str, Any]:
    bodies = [delivery(5000 + seed, size=size) for seed in range(count)]
    per_body = [len(json.loads(b)) for b in bodies]
    before = summaries(server.metrics or "")
    results = await asyncio.gather(*(post(server.base, body) for body in bodies))
    accepted = [n for (status, _, _), n in zip(results, per_body, strict=True) if 200 <= status < 300]
    unavailable = [(status, headers) for status, headers, _ in results if status == 503]
    counted = summaries(server.metrics or "") - before
    return {
        "ok": len(accepted),
        "unavailable": len(unavailable),
        "unavailable_with_retry_after": sum("retry-after" in h for _, h in unavailable),
        "other": count - len(accepted) - len(unavailable),
        "peak_rss_mib": rss_kib(server, "VmHWM:") / 1024,
        "counted_once": counted == sum(accepted),
        "counted": counted,
        "acknowledged_summaries": sum(accepted),
    }


async def replayed_delivery(server: procs.Server, attackers: int, deliveries: int, size: int) -> dict[str, Any]:
    # Exactly ``size`` (padded with spaces, still JSON): 16 copies of 1 MiB at 11x fill the default budget.
    captured = delivery(7, size=size * 9 // 10)
    captured += b" " * (size - len(captured))
    prepared = head(server.base, captured)
    spawn = multiprocessing.get_context("spawn")
    probing, (receiving, sending) = spawn.Event(), spawn.Pipe(duplex=False)
    prober = spawn.Process(target=probe_process, args=(server.metrics or "", probing, sending))
    prober.start()
    await asyncio.sleep(3)  # the probes alone first: the machine's own probe times, the reference
    attack_began, client_cpu, server_cpu = time.monotonic(), time.process_time(), server.cpu_ns()
    stop, connections = asyncio.Event(), [0]
    attack = [asyncio.create_task(replayer(server.base, prepared, captured, stop, connections)) for _ in range(attackers)]
    await asyncio.sleep(3)  # let the attack reach its steady state
    real, give_up = [], 10.0
    for seed in range(deliveries):
        real.append(asyncio.create_task(retried(server.base, delivery(2000 + seed), give_up)))
        await asyncio.sleep(0.1)  # Twilio's deliveries arrive spread out
    outcomes = await asyncio.gather(*real)
    # The attack lasts as long whatever the answers: the probes of both trees cover the same time.
    await asyncio.sleep(max(0.0, attack_began + 3 + give_up - time.monotonic()))
    # The clients' core is the probes' too: near 1, the probe times include waiting for it.
    lasted = time.monotonic() - attack_began
    client_share, server_share = (time.process_time() - client_cpu) / lasted, (server.cpu_ns() - server_cpu) / 1e9 / lasted
    stop.set()
    probing.set()
    probed = await asyncio.to_thread(receiving.recv)
    prober.join()
    await asyncio.gather(*attack, return_exceptions=True)
    answered = [t for t, _, _ in outcomes if t is not None]
    under_attack = [t for began, t in probed if began >= attack_began]
    return {
        "within_1s": sum(t <= 1.0 for t in answered),
        "within_10s": len(answered),
        "first_attempt_2xx": sum(200 <= first < 300 for _, first, _ in outcomes),
        "first_statuses": sorted({first for _, first, _ in outcomes}),
        "worst_s": max(answered, default=float("nan")),
        "attempts": sum(attempts for _, _, attempts in outcomes),
        "median_s": statistics.median(answered) if answered else float("nan"),
        "probe_p50_ms": statistics.median(under_attack) * 1000,
        "probe_p99_ms": p99(under_attack),
        "probes": len(under_attack),
        "probe_p99_before_attack_ms": p99([t for began, t in probed if began < attack_began]),
        "attacker_connections": connections[0],
        "client_cpu_share": client_share,
        "server_cpu_share": server_share,
        "rejections": rejections(server.metrics or ""),
        "peak_rss_mib": rss_kib(server, "VmHWM:") / 1024,
    }


async def replayer(base: str, prepared: bytes, body: bytes, stop: asyncio.Event, connections: list[int]) -> None:
    """A captured delivery replayed and trickled, 1 KiB every 20 ms; a new connection as soon as this one is answered or cut."""
    while not stop.is_set():
        try:
            reader, writer = await asyncio.open_connection(*address(base))
        except OSError:
            await asyncio.sleep(0.1)  # the attacker's pace, not synchronisation
            continue
        connections[0] += 1
        answered = asyncio.create_task(answer(reader))
        try:
            writer.write(prepared)
            for start in range(0, len(body), 1024):
                if stop.is_set() or answered.done():
                    break
                writer.write(body[start : start + 1024])
                await writer.drain()
                await asyncio.sleep(0.02)  # the attacker's pace, not synchronisation
        except ConnectionError:
            pass
        finally:
            answered.cancel()
            writer.close()
        await asyncio.gather(answered, return_exceptions=True)


async def retried(base: str, body: bytes, give_up: float = 10.0) -> tuple[float | None, int, int]:
    """One real delivery, retried until 2xx: (seconds from its first attempt to its 2xx or None, first status, attempts)."""
    prepared = head(base, body)
    started = time.perf_counter()
    first, attempts, pause = None, 0, 0.1
    while True:
        attempts += 1
        try:
            async with asyncio.timeout(5):  # Twilio's own timeout of an attempt
                status, _, _ = await post(base, body, prepared)
        except (TimeoutError, OSError, asyncio.IncompleteReadError):
            status = 0
        first = status if first is None else first
        elapsed = time.perf_counter() - started
        if 200 <= status < 300:
            return elapsed, first, attempts
        if elapsed + pause > give_up:
            return None, first, attempts
        await asyncio.sleep(pause)  # the sender's backoff, not synchronisation
        pause *= 2


def rejections(metrics: str) -> dict[str, int]:
    with urllib.request.urlopen(metrics + "/metrics", timeout=60) as response:
        text = response.read().decode()
    return {
        s.labels["reason"]: int(s.value)
        for f in text_string_to_metric_families(text)
        for s in f.samples
        if s.name == "twilio_insights_exporter_webhook_rejections_total" and s.value
    }


SCENARIOS = ("slow", "forged", "large", "replay")


def run(source: Path, quick: bool, args: tuple[str, ...], only: tuple[str, ...] = SCENARIOS) -> dict[str, Any]:
    out: dict[str, Any] = {}
    senders, deliveries = (50, 10) if quick else (200, 30)
    if "slow" in only:
        with procs.exporter(*args, source=source) as server:
            out["idle_rss_mib"] = rss_kib(server) / 1024
            out["slow"] = asyncio.run(slow_senders(server, senders, deliveries))
    if "forged" in only:
        with procs.exporter(*args, source=source) as server:
            out["forged"] = asyncio.run(forged_bodies(server, 4 if quick else 16, 16 * MiB))
    if "large" in only:
        with procs.exporter(*args, source=source) as server:
            out["large"] = asyncio.run(large_deliveries(server, 12 if quick else 48, 4 * MiB))
    if "replay" in only:
        # The attack as it was reported: the same in --quick, it lasts about 15 s.
        with procs.exporter(*args, source=source) as server:
            out["replay"] = asyncio.run(replayed_delivery(server, 50, 30, MiB))
    return out


def report(name: str, r: dict[str, Any]) -> str:
    lines = [f"{name}:" + (f" idle RSS {r['idle_rss_mib']:.0f} MiB" if "idle_rss_mib" in r else "")]
    if s := r.get("slow"):
        lines.append(
            f"  slow senders: {s['ok']} real deliveries answered 200 (statuses {s['statuses']}), worst {s['worst_s']:.3f} s, "
            f"median {s['median_s']:.3f} s; probes p50 {s['probe_p50_ms']:.1f} ms, p99 {s['probe_p99_ms']:.1f} ms; "
            f"{s['slow_reconnects']} slow connections cut"
        )
    if f := r.get("forged"):
        lines.append(
            f"  forged 16 MiB bodies: {f['refused_403']} answered 403, {f['closed']} closed, {f['other']} other; "
            f"peak RSS growth {f['rss_growth_mib']:.1f} MiB"
        )
    if g := r.get("large"):
        lines.append(
            f"  4 MiB valid deliveries: {g['ok']} 2xx, {g['unavailable']} 503 ({g['unavailable_with_retry_after']} with Retry-After), "
            f"{g['other']} other; peak RSS {g['peak_rss_mib']:.0f} MiB (chart limit {CHART_LIMIT_MIB}); "
            f"every 2xx counted once: {g['counted_once']} ({g['counted']:.0f} of {g['acknowledged_summaries']})"
        )
    if p := r.get("replay"):
        lines.append(
            f"  replayed 1 MiB delivery: {p['within_1s']} of 30 real deliveries 2xx within 1 s, {p['within_10s']} within 10 s, "
            f"{p['first_attempt_2xx']} at their first attempt (first statuses {p['first_statuses']}, {p['attempts']} attempts, "
            f"median {p['median_s']:.3f} s, worst {p['worst_s']:.3f} s); probes p50 {p['probe_p50_ms']:.1f} ms, p99 {p['probe_p99_ms']:.1f} ms "
            f"({p['probes']} probes; p99 {p['probe_p99_before_attack_ms']:.1f} ms before the attack); "
            f"{p['attacker_connections']} attacker connections (clients {p['client_cpu_share']:.0%} of a core, exporter {p['server_cpu_share']:.0%}); refusals {p['rejections']}; peak RSS {p['peak_rss_mib']:.0f} MiB"
        )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.edge", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer connections and deliveries")
    parser.add_argument("--baseline", type=Path, help="also run the exporter of this tree (the 'before' figures)")
    parser.add_argument("--only", nargs="+", choices=SCENARIOS, default=SCENARIOS, help="run only these scenarios")
    options = parser.parse_args()
    if hasattr(os, "sched_setaffinity") and (os.cpu_count() or 1) > 1:
        os.sched_setaffinity(0, {int(CLIENT_CPU)})
    rounds = [("this tree", ROOT)] + ([("baseline", options.baseline)] if options.baseline else [])
    results = {}
    for name, source in rounds:
        results[name] = run(source, options.quick, (), tuple(options.only))
        print(report(name, results[name]), flush=True)
    print(json.dumps(results, indent=2, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
