"""In-process figures, no HTTP: stage costs, /metrics render time, peak memory.

``python -m bench.inprocess rss`` is run as its own process by the harness, so its peak RSS is
the exporter's alone.
"""

from __future__ import annotations

import asyncio
import gc
import json
import os
import random
import resource
import statistics
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from aiohttp import web
from aiohttp.test_utils import make_mocked_request
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.openmetrics.exposition import generate_latest as generate_openmetrics

from exporter import synthetic
from exporter.models import CloudEvent, ParticipantSummary, loads
from exporter.pipeline import Pipeline
from exporter.subjects import PARTICIPANT

from . import workload
from .procs import PUBLIC_SINK_URL

OPENMETRICS_ACCEPT = "application/openmetrics-text; version=1.0.0"


def build_apps() -> Any:
    """The real apps and runtime, configured as the benchmarks' exporter process is."""
    os.environ["TWILIO_AUTH_TOKEN"] = workload.AUTH_TOKEN
    from exporter.app import create_apps
    from exporter.config import load_config

    config = load_config([f"--webhook.public-url={PUBLIC_SINK_URL}"])
    return create_apps(config, CollectorRegistry())


def stage_costs(count: int, repeats: int, regime: str = "warm", cold_warmup: int = 3000) -> dict[str, float]:
    """Median microseconds per summary of each step of the data's path.

    ``warm``: the registry is seeded with every label set of the measured summaries first
    (bench/workload.py); ``cold``: seeded with ``cold_warmup`` summaries of the open
    distribution, then measured on new ones, most of which bring new label sets.
    """
    pool = workload.label_pool(workload.WARM_LABEL_SETS, seed=1) if regime == "warm" else None

    def seed(pipeline: Pipeline) -> None:
        if pool is not None:
            seeding = workload.events(len(pool) * 20, seed=98, pool=pool)
        else:
            seeding = workload.events(cold_warmup, seed=98)
        for event in seeding:
            _record(pipeline.subjects[PARTICIPANT].recorder, ParticipantSummary.model_validate(event["data"]))

    deliveries = []
    for i, event in enumerate(workload.events(count, seed=99, pool=pool)):
        body = synthetic.batch_body([event])
        signed_url, signature = synthetic.sign(PUBLIC_SINK_URL, body, workload.AUTH_TOKEN)
        path_query = "/" + signed_url.split("://", 1)[1].partition("/")[2]
        request = make_mocked_request("POST", path_query, headers={"Host": "127.0.0.1:8080", "X-Twilio-Signature": signature})
        deliveries.append((request, body))
    figures: dict[str, list[float]] = {
        "verify": [],
        "verify, SDK only (today)": [],
        "json": [],
        "parse": [],
        "dedup": [],
        "record": [],
        "deliver (pipeline)": [],
    }
    for _ in range(repeats):
        runtime = build_apps().runtime
        pipeline = runtime.pipeline
        participants = runtime.subjects[PARTICIPANT].window
        seed(pipeline)

        def timed(name: str, fn: Callable[[Any], Any], items: Sequence[Any]) -> list[Any]:
            started = time.perf_counter()
            out = [fn(item) for item in items]
            figures[name].append((time.perf_counter() - started) / count * 1e6)
            return out

        assert all(r is None for r in timed("verify", lambda d: runtime.verifier.check(*d), deliveries))
        verifier = runtime.verifier
        assert all(
            r is None
            for r in timed(
                "verify, SDK only (today)",
                lambda d: verifier.sdk_check(verifier.signed_url(d[0]), d[1], d[0].headers["X-Twilio-Signature"]),
                deliveries,
            )
        )
        raw = timed("json", lambda d: loads(d[1]), deliveries)
        events = timed("parse", lambda r: CloudEvent.model_validate(r[0]), raw)
        summaries = [ParticipantSummary.model_validate(e.data) for e in events]

        def dedup(pair: tuple[CloudEvent, ParticipantSummary]) -> bool:
            _event, summary = pair
            seen = summary.participant_sid in participants
            participants.add(summary.participant_sid)
            return seen

        # The summary half of parsing, timed with the envelope above.
        started = time.perf_counter()
        for event in events:
            ParticipantSummary.model_validate(event.data)
        figures["parse"][-1] += (time.perf_counter() - started) / count * 1e6
        assert not any(timed("dedup", dedup, list(zip(events, summaries, strict=False))))
        timed("record", lambda summary: _record(runtime.subjects[PARTICIPANT].recorder, summary), summaries)
        fresh = build_apps().runtime.pipeline
        seed(fresh)
        raw = [loads(body)[0] for _, body in deliveries]
        loop = asyncio.new_event_loop()
        try:
            timed("deliver (pipeline)", lambda r: loop.run_until_complete(fresh.deliver([r], "webhook")), raw)
        finally:
            loop.close()
    return {name: statistics.median(values) for name, values in figures.items()}


def _record(recorder: Any, summary: ParticipantSummary) -> None:
    recorder.apply(recorder.plan(summary))


def fill_registry(runtime: Any, target_samples: int, seed: int = 7) -> int:
    """Record team-labelled summaries until the registry holds ``target_samples``; the count."""
    rng = random.Random(seed)
    while True:
        for _ in range(100):
            summary = synthetic.generate_summary(rng, label=workload.TEAM_LABELS[rng.randrange(len(workload.TEAM_LABELS))])
            _record(runtime.subjects[PARTICIPANT].recorder, ParticipantSummary.model_validate(summary))
        # Counted from the families' own render, chunk by chunk: collect() would build every
        # sample as an object and its transient peak would be what the RSS figure measures.
        families = runtime.subjects.families()
        samples: int = sum(chunk.count("\n") - chunk.count("\n#") - chunk.startswith("#") for f in families for chunk in f.render(False))
        if samples >= target_samples:
            return samples


async def _time_handler(handler: Callable[[web.Request], Awaitable[Any]], accept: str) -> tuple[float, float]:
    """(render seconds, longest event-loop stall seconds) of one /metrics request."""
    longest = 0.0
    running = True

    async def ticker() -> None:
        nonlocal longest
        last = time.perf_counter()
        while running:
            await asyncio.sleep(0)
            now = time.perf_counter()
            longest = max(longest, now - last)
            last = now

    tick = asyncio.ensure_future(ticker())
    await asyncio.sleep(0)
    started = time.perf_counter()
    response = await handler(make_mocked_request("GET", "/metrics", headers={"Accept": accept}))
    elapsed = time.perf_counter() - started
    running = False
    await tick
    assert response.status == 200 and response.body.size > 1000
    return elapsed, longest


def render_times(target_samples: int, repeats: int) -> dict[str, float]:
    """Median milliseconds: the exporter's /metrics handler and generate_latest of the same registry."""
    apps = build_apps()
    samples = fill_registry(apps.runtime, target_samples)
    handler = next(route.handler for route in apps.metrics.router.routes() if route.method == "GET" and route.resource.canonical == "/metrics")
    out: dict[str, list[float]] = {
        k: [] for k in ("handler_text", "handler_openmetrics", "stall_openmetrics", "generate_latest", "generate_openmetrics")
    }
    loop = asyncio.new_event_loop()
    try:
        for _ in range(repeats):
            gc.collect()
            elapsed, _stall = loop.run_until_complete(_time_handler(handler, "text/plain"))
            out["handler_text"].append(elapsed)
            elapsed, stall = loop.run_until_complete(_time_handler(handler, OPENMETRICS_ACCEPT))
            out["handler_openmetrics"].append(elapsed)
            out["stall_openmetrics"].append(stall)
            for name, encode in (("generate_latest", generate_latest), ("generate_openmetrics", generate_openmetrics)):
                started = time.perf_counter()
                encode(apps.runtime.registry)
                out[name].append(time.perf_counter() - started)
    finally:
        loop.close()
    return {"samples": samples, **{k: statistics.median(v) * 1000 for k, v in out.items()}}


def peak_rss(samples: int, deliveries: int) -> dict[str, float]:
    """Peak RSS with ``samples`` in the registry and ``deliveries`` in both dedup windows."""
    apps = build_apps()
    found = fill_registry(apps.runtime, samples)
    gc.collect()
    registry_mib = _peak_rss_mib()
    participants = apps.runtime.subjects[PARTICIPANT].window
    now = time.time()
    started = time.perf_counter()
    for i in range(deliveries):
        # The shapes of real keys: CloudEvent ids and participant SIDs, 34 characters each.
        participants.add(f"CP{i:032x}", at=now)
    add_us = (time.perf_counter() - started) / deliveries * 1e6
    return {
        "samples": found,
        "participant_sids": len(participants),
        "rss_registry_mib": registry_mib,
        "rss_peak_mib": _peak_rss_mib(),
        "dedup_add_us": add_us,
    }


def _peak_rss_mib() -> float:
    """VmHWM, not ru_maxrss: Linux carries ru_maxrss over fork and exec, so a child of the
    (large) harness process would report the harness's peak."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


if __name__ == "__main__":
    if sys.argv[1:2] == ["rss"]:
        print("RESULT " + json.dumps(peak_rss(int(sys.argv[2]), int(sys.argv[3]))))
