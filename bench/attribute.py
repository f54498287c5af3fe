"""Where the exporter's server CPU per request goes, next to the bare handler's (issue 11).

Sampling profilers mislead on a shared 2-core machine: py-spy samples wall time, and a server
preempted on its way out of ``send()`` is charged to ``transport.write``. This measures CPU
instead: each variant is the real exporter (``exporter.__main__.serve``) in a process of its own,
pinned like ``make bench``'s, with one change, and reports server CPU µs per request from
schedstat, user and kernel apart, plus CPU (``thread_time``) spent inside the handler and in the
garbage collector, counted in process. Variants:

``exporter``            as shipped
``exporter-bare``       the exporter's applications and process, the bare handler on its route:
                        what aiohttp costs as the exporter configures it
``no-self-metrics``     the handler without its prometheus_client request counter and histogram
``cached-reply``        the reply's JSON encoded once per distinct reply instead of ``json_response``
``gc-off``              the collector disabled after start-up (an experiment, not an option)
``bare``                bench/bare.py, for reference

``python -m bench.attribute [--rounds N] [--duration S]``; variants alternate within each round.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from . import httpbench, procs, workload

VARIANTS = ("bare", "exporter", "exporter-bare", "no-self-metrics", "cached-reply", "gc-off")


def serve(variant: str, report: Path, argv: list[str]) -> None:
    """Run the exporter with ``variant``'s one change; write in-process counters to ``report`` on exit."""
    from aiohttp import web

    from exporter import app as app_module
    from exporter import listener
    from exporter import pipeline as pipeline_module
    from exporter.config import load_config
    from exporter.doors.webhook import handler as webhook
    from exporter.doors.webhook import verify
    from exporter.subjects.participant import ParticipantRecorder as Recorder

    counters = {"requests": 0, "handler_ns": 0, "gc_ns": 0, "gc_collections": 0}
    handle = webhook._handle

    async def timed_handle(request, runtime):
        started = time.thread_time_ns()
        response = await handle(request, runtime)
        counters["handler_ns"] += time.thread_time_ns() - started
        counters["requests"] += 1
        return response

    def timed(name, fn):
        counters[name + "_ns"] = 0

        def wrapper(*args, **kwargs):
            started = time.thread_time_ns()
            try:
                return fn(*args, **kwargs)
            finally:
                counters[name + "_ns"] += time.thread_time_ns() - started

        return wrapper

    if variant == "cached-reply":
        replies: dict[tuple, bytes] = {}

        def cached_reply(status: int, **fields: object) -> web.Response:
            key = (status, *fields.items())
            body = replies.get(key)
            if body is None:
                body = replies[key] = json.dumps(fields).encode()
            return web.Response(body=body, status=status, content_type="application/json", charset="utf-8")

        webhook._reply = cached_reply
    # The handler's steps, each timed where it is called (CPU time, this thread).
    verify.SignatureVerifier.check = timed("verify", verify.SignatureVerifier.check)
    webhook.loads = timed("json", webhook.loads)
    webhook._reply = timed("reply", webhook._reply)
    pipeline_module.Pipeline._accept_event = timed("accept_event", pipeline_module.Pipeline._accept_event)
    Recorder.plan = timed("plan", Recorder.plan)
    Recorder.apply = timed("apply", Recorder.apply)
    for model in ("CloudEvent", "ParticipantSummary"):
        original = getattr(pipeline_module, model)
        setattr(pipeline_module, model, type(model, (), {"model_validate": staticmethod(timed("validate", original.model_validate))}))

    def dump(*_: object) -> None:
        with report.open("a") as out:
            out.write(json.dumps(counters) + "\n")

    signal.signal(signal.SIGUSR1, dump)
    webhook._handle = timed_handle
    if variant == "exporter-bare":

        async def bare(request: web.Request) -> web.Response:
            await request.read()
            counters["requests"] += 1
            return web.Response(body=b'{"recorded": 1}', content_type="application/json", charset="utf-8")

        app_module.handle_webhook = bare
    elif variant == "no-self-metrics":

        async def without_self_metrics(request: web.Request) -> web.Response:
            return await timed_handle(request, request.app[webhook.RUNTIME])

        app_module.handle_webhook = without_self_metrics
    gc_started = 0

    def on_gc(phase: str, info: dict[str, Any]) -> None:
        nonlocal gc_started
        if phase == "start":
            gc_started = time.thread_time_ns()
        else:
            counters["gc_ns"] += time.thread_time_ns() - gc_started
            counters["gc_collections"] += 1

    gc.callbacks.append(on_gc)
    config = load_config(argv)
    serving = listener.serve(config)
    if variant == "gc-off":
        gc.disable()
    asyncio.run(serving)


def measure(rounds: int, duration: float) -> dict[str, dict[str, float]]:
    with tempfile.TemporaryDirectory(prefix="attribute-") as tmp_name:
        tmp = Path(tmp_name)
        pool = workload.label_pool(workload.WARM_LABEL_SETS, seed=1)
        size = int(httpbench.FILE_RATE[1]["warm"] * duration) + 100
        posts = workload.write_requests(tmp / "posts.tsv", procs.PUBLIC_SINK_URL, size, 1, seed=1, pool=pool)
        warmup = workload.write_requests(tmp / "warmup.tsv", procs.PUBLIC_SINK_URL, 300, 1, seed=7, pool=pool)
        seed = workload.write_requests(
            tmp / "seed.tsv", procs.PUBLIC_SINK_URL, len(pool) * httpbench.SEED_PER_LABEL_SET // 50, 50, seed=40_000, pool=pool
        )
        results: dict[str, list[dict[str, float]]] = {v: [] for v in VARIANTS}
        for round_no in range(rounds):
            order = VARIANTS[round_no % len(VARIANTS) :] + VARIANTS[: round_no % len(VARIANTS)]
            for variant in order:
                report = tmp / f"{variant}.json"
                if variant == "bare":
                    server_cm = procs.bare()
                else:
                    server_cm = procs.exporter(module=["bench.attribute", "serve", variant, str(report)])
                with server_cm as server:
                    if variant != "bare":
                        httpbench._post_all(server, seed)
                    httpbench.load(server, warmup, 1.0, wrap=variant == "bare")
                    user0, sys0 = _times(server.proc.pid)
                    _dump(server, report, 1)
                    result = httpbench.load(server, posts, duration, wrap=variant == "bare")
                    user1, sys1 = _times(server.proc.pid)
                    _dump(server, report, 2)
                n = result["requests"]
                figures = {
                    "rate": result["rate"],
                    "cpu_us": result["cpu_us"],
                    "user_us": (user1 - user0) / n * 1e6,
                    "sys_us": (sys1 - sys0) / n * 1e6,
                }
                if variant != "bare":
                    before, after = (json.loads(line) for line in report.read_text().splitlines())
                    total = max(after["requests"] - before["requests"], 1)
                    for key in after:
                        if key.endswith("_ns"):
                            figures[key.removesuffix("_ns") + "_us"] = (after[key] - before[key]) / total / 1000
                    report.unlink()
                results[variant].append(figures)
                print(f"  round {round_no + 1} {variant}: " + ", ".join(f"{k} {v:.0f}" for k, v in figures.items()), flush=True)
        return {v: {k: statistics.median(r[k] for r in runs) for k in runs[0]} for v, runs in results.items()}


def _dump(server: procs.Server, report: Path, lines: int) -> None:
    """Have the server append its counters to ``report`` (SIGUSR1) and wait until it has."""
    if server.metrics is None:
        return
    server.proc.send_signal(signal.SIGUSR1)
    deadline = time.monotonic() + 10
    while not (report.exists() and len(report.read_text().splitlines()) >= lines):
        if time.monotonic() > deadline:
            raise TimeoutError("the server wrote no counters")
        time.sleep(0.01)  # polling another process's file, bounded by the deadline


def _times(pid: int) -> tuple[float, float]:
    """(user, system) CPU seconds of ``pid`` so far, from /proc/PID/stat."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    tick = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) / tick, int(fields[12]) / tick


if __name__ == "__main__":
    if sys.argv[1:2] == ["serve"]:
        serve(sys.argv[2], Path(sys.argv[3]), sys.argv[4:])
    else:
        parser = argparse.ArgumentParser(prog="python -m bench.attribute", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
        parser.add_argument("--rounds", type=int, default=3)
        parser.add_argument("--duration", type=float, default=4)
        args = parser.parse_args()
        medians = measure(args.rounds, args.duration)
        keys = [
            "rate",
            "cpu_us",
            "user_us",
            "sys_us",
            "handler_us",
            "verify_us",
            "json_us",
            "accept_event_us",
            "validate_us",
            "plan_us",
            "apply_us",
            "reply_us",
            "gc_us",
        ]
        print("| variant | " + " | ".join(keys) + " |")
        print("|---|" + "---|" * len(keys))
        for variant, f in medians.items():
            print(f"| {variant} | " + " | ".join(f"{f[k]:.1f}" if k in f else "-" for k in keys) + " |")
