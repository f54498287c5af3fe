"""The hot-path levers of issue 21, each prototyped against the real exporter objects, none in the exporter.

``python -m bench.levers [parse|record|reply|journal|switch|profile|all] [--repeats N]``: CPU µs
(``process_time``, so a pass that waits for the shared core is not counted), medians of
alternated passes, today's code and the prototype side by side in each pass. What each lever
is worth goes into docs/performance.md, "Against the naive peer".

* **parse**: a whole delivery validated in one pydantic call in JSON mode
  (``TypeAdapter(list[Event]).validate_json(body)``, the envelope's ``data`` typed as the real
  ``ParticipantSummary``: bench/parse.py's :func:`~bench.parse.event_model`) against today's
  ``models.loads`` + ``CloudEvent.model_validate`` + ``ParticipantSummary.model_validate`` per
  event; and the fallback's price: a batch with one invalid event, where the one call fails and
  today's per-event path runs after it.
* **record**: today's ``Recorder.plan`` + ``Recorder.apply`` against :func:`record_fast`: the
  summary's raw label tuple resolved once to its common label set (a cache valid while every
  value in it is kept), observations as flat tuples, and an undo log of what each observation
  overwrote (bucket index, old sum, old exemplar) instead of a copy of every histogram's buckets.
  The prototype's registry is checked equal to today's, series by series, after the same summaries.
* **reply**: ``web.json_response(outcomes)`` against a reply encoded once per distinct outcome
  dict; the self-metrics of the fast path (``.labels(...)`` per request against children
  resolved once).
* **journal**: today's ``json.dumps`` of the journaled changes of one commit against ``marshal``,
  ``pickle`` and msgpack (if installed), and a compact encoding (family index + label values +
  value); encode and decode, bytes per change.
* **switch**: the durable path in process (the real ``Pipeline`` with a ``StateStore`` on a
  temporary file, its writer thread, single-event deliveries awaited one by one as the
  webhook does) under ``sys.setswitchinterval(0.005)`` (Python's default) and ``0.001`` (what
  ``exporter/listener.py`` sets), and the in-memory pipeline beside them.
* **profile**: py-spy on the real exporter under the HTTP bench's single-event load (warm):
  the share of samples in each step of the path, and the functions with most samples of their own.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import marshal
import os
import pickle
import statistics
import struct
import sys
import tempfile
import time
from bisect import bisect_left
from collections.abc import Callable
from pathlib import Path
from typing import Any

from aiohttp import web
from prometheus_client import CollectorRegistry
from pydantic import TypeAdapter

from exporter import synthetic
from exporter.metrics import Source
from exporter.models import CloudEvent, ParticipantSummary, loads
from exporter.subjects import PARTICIPANT
from exporter.subjects.participant import ParticipantRecorder as Recorder
from exporter.subjects.participant import exemplar as _exemplar

from . import workload
from .httpbench import CONNECTIONS
from .parse import event_model
from .procs import PUBLIC_SINK_URL


def _apps(*flags: str) -> Any:
    os.environ["TWILIO_AUTH_TOKEN"] = workload.AUTH_TOKEN
    from exporter.app import create_apps
    from exporter.config import load_config

    return create_apps(load_config([f"--webhook.public-url={PUBLIC_SINK_URL}", *flags]), CollectorRegistry())


def _pool() -> list[workload.LabelSet]:
    return workload.label_pool(workload.WARM_LABEL_SETS, seed=1)


def _seeded_recorder() -> Recorder:
    """The real recorder of a fresh app, seeded warm (every label set of the pool, 20 times)."""
    recorder: Recorder = _apps().runtime.subjects[PARTICIPANT].recorder
    for event in workload.events(len(_pool()) * 20, seed=98, pool=_pool()):
        summary = ParticipantSummary.model_validate(event["data"])
        recorder.apply(recorder.plan(summary))
    return recorder


def _passes(methods: dict[str, Callable[[], int]], repeats: int) -> dict[str, float]:
    """Median CPU µs per item of each method; each call returns how many items it handled."""
    timings: dict[str, list[float]] = {name: [] for name in methods}
    for i in range(repeats):
        names = list(methods)
        names = names[i % len(names) :] + names[: i % len(names)]  # rotated, pass by pass
        for name in names:
            gc.collect()
            started = time.process_time()
            items = methods[name]()
            timings[name].append((time.process_time() - started) / items * 1e6)
    return {name: statistics.median(values) for name, values in timings.items()}


# -- (a) parse ---------------------------------------------------------------------------------


def _today_parse(body: bytes) -> list[Any]:
    return [ParticipantSummary.model_validate(CloudEvent.model_validate(raw).data) for raw in loads(body)]


def parse_lever(repeats: int) -> dict[str, dict[str, float]]:
    # A model built at run time is no type mypy can check: the adapter validates a list of its events.
    whole: TypeAdapter[list[Any]] = TypeAdapter(list[event_model(ParticipantSummary)])  # type: ignore[misc,arg-type]

    def one_call_or_fallback(body: bytes) -> list[Any]:
        try:
            return [event.data for event in whole.validate_json(body)]
        except ValueError:
            return _today_parse_tolerant(body)

    out: dict[str, dict[str, float]] = {}
    pool = _pool()
    for shape, batch, count in (("single event", 1, 2000), ("batch of 50", 50, 40), ("batch of 50, one invalid", 50, 40)):
        stream = workload.events(batch * count, seed=batch + 7, pool=pool)
        events = [[next(stream) for _ in range(batch)] for _ in range(count)]
        if shape.endswith("invalid"):
            for delivery in events:
                delivery[17]["data"]["duration_seconds"] = "60"  # a string: refused by the strict model
        bodies = [synthetic.batch_body(delivery) for delivery in events]
        # The same summaries (and, with one invalid, the same error in its place) either way.
        assert [repr(s) for s in _today_parse_tolerant(bodies[0])] == [repr(s) for s in one_call_or_fallback(bodies[0])]

        def today(bodies: list[bytes] = bodies) -> int:
            return sum(len(_today_parse_tolerant(b)) for b in bodies)

        def one_call(bodies: list[bytes] = bodies) -> int:
            return sum(len(one_call_or_fallback(b)) for b in bodies)

        methods: dict[str, Callable[[], int]] = {
            "today (from_json + model_validate per event)": today,
            "one TypeAdapter.validate_json call (fallback per event)": one_call,
        }
        out[shape] = _passes(methods, repeats)
    return out


def _today_parse_tolerant(body: bytes) -> list[Any]:
    """Today's per-event path with an invalid event counted apart, as the pipeline does."""
    out: list[Any] = []
    for raw in loads(body):
        try:
            out.append(ParticipantSummary.model_validate(CloudEvent.model_validate(raw).data))
        except ValueError as exc:
            out.append(exc)
    return out


# -- (b) record --------------------------------------------------------------------------------


class FastRecorder:
    """The record lever's prototype over a real :class:`Recorder` (its families, label policy and
    series map): a summary's raw label tuple resolves once to a *handle* of its label set, the
    series a stream's numbers land in, as a tuple; detail labels (tags, severities, actions, ...)
    are looked up as today; the undo log holds what each observation overwrote (bucket index, old
    sum, old exemplar) instead of a copy of every histogram's buckets. Not for the exporter as is:
    whatever the handle does not hold (a new series, a new label value, an overflow) goes to
    today's plan/apply, and the check against today's registry says the outcome is the same."""

    def __init__(self, recorder: Recorder) -> None:
        self.r = recorder
        self.m = recorder.metrics
        # raw common-label values -> handle; valid while every value in it is kept (kept values are
        # dropped only by the undo of the summary that added them).
        self.handles: dict[tuple[Any, ...], tuple[Any, ...]] = {}

    def _handle(self, common: tuple[str, ...]) -> tuple[Any, ...] | None:
        m, series_of = self.m, self.r._series_of.get(common)
        if series_of is None:
            return None
        streams = {}
        for stream in ("inbound", "outbound"):
            keys = [(m.mos, stream), (m.jitter, stream, "avg"), (m.jitter, stream, "max"), (m.latency, stream, "avg"), (m.latency, stream, "max"),
                    (m.packet_loss, stream), (m.packets_received, stream), (m.packets_lost, stream)]  # fmt: skip
            streams[stream] = tuple(series_of.get(key) for key in keys)
        singles = tuple(series_of.get((f,)) for f in (m.quality_issues, m.duration, m.queue_time, m.region_mismatch))
        return (series_of, streams, singles)

    def record(self, s: ParticipantSummary) -> None:
        r, m, lp = self.r, self.m, self.r.labels
        raw = (s.call_type, s.call_direction, s.participant_region, s.conference_region, s.country_code, s.label)
        handle = self.handles.get(raw)
        if handle is None:
            change = r.plan(s)  # the slow path: today's, once per raw label tuple
            r.apply(change)
            if not change.overflow:
                handle = self._handle(change.common)
                if handle is not None:
                    self.handles[raw] = handle
            return
        series_of, streams, singles = handle
        pending: dict[str, set[str]] = {}
        overflow: list[str] = []
        detail = lp.detail
        # (series or None, value, is_histogram): None means the handle lacks it -> today's path.
        obs: list[tuple[Any, float, bool]] = [
            (
                series_of.get(
                    (
                        m.summaries,
                        detail("processing_state", s.processing_state, pending, overflow),
                        detail("call_status", s.status, pending, overflow),
                    )
                ),
                1,
                False,
            )
        ]
        metrics = s.metrics
        if metrics is not None:
            for stream, sm in (("inbound", metrics.inbound), ("outbound", metrics.outbound)):
                if sm is None:
                    continue
                mos, javg, jmax, lavg, lmax, loss, received, lost = streams[stream]
                if sm.mos is not None:
                    obs.append((mos, sm.mos, True))
                j, la = sm.jitter, sm.latency
                if j is not None:
                    if j.avg is not None:
                        obs.append((javg, j.avg / 1000, True))
                    if j.max is not None:
                        obs.append((jmax, j.max / 1000, True))
                if la is not None:
                    if la.avg is not None:
                        obs.append((lavg, la.avg / 1000, True))
                    if la.max is not None:
                        obs.append((lmax, la.max / 1000, True))
                if sm.packet_loss_percentage is not None:
                    obs.append((loss, sm.packet_loss_percentage / 100, True))
                if sm.total_packets_received is not None:
                    obs.append((received, sm.total_packets_received, False))
                if sm.total_packets_lost is not None:
                    obs.append((lost, sm.total_packets_lost, False))
                for tag in dict.fromkeys(sm.tags or ()):
                    obs.append((series_of.get((m.tags, stream, detail("tag", tag, pending, overflow))), 1, False))
                if sm.tags_info is not None:
                    for issue, severity in sm.tags_info.severities().items():
                        key = (m.tag_severity, stream, detail("issue", issue, pending, overflow), detail("severity", severity, pending, overflow))
                        obs.append((series_of.get(key), 1, False))
                if sm.occurrences is not None:
                    for metric, count in sm.occurrences.counts().items():
                        obs.append((series_of.get((m.degradations, stream, detail("metric", metric, pending, overflow))), count, False))
        quality, duration, queue_time, mismatch = singles
        if s.quality_issues is not None:
            obs.append((quality, s.quality_issues, True))
        if s.duration_seconds is not None:
            obs.append((duration, s.duration_seconds, True))
        if s.outbound_time_in_queue is not None:
            obs.append((queue_time, s.outbound_time_in_queue, True))
        if s.events is not None:
            for action, count in s.events.counts().items():
                obs.append((series_of.get((m.actions, detail("action", action, pending, overflow))), count, False))
        if s.participant_region and s.conference_region and s.participant_region != s.conference_region:
            obs.append((mismatch, 1, False))
        if pending or overflow or any(series is None for series, _, _ in obs):
            # A new detail value or series: today's path decides (admission, creation, undo).
            r.apply(r.plan(s))
            return
        exemplar = _exemplar(s)
        undo: list[tuple[Any, int, float, Any]] = []
        try:
            for series, value, histogram in obs:
                if histogram:
                    i = bisect_left(series._upper, value)
                    undo.append((series, i, series.sum, series.exemplars[i]))
                    series.observe(value, exemplar)
                else:
                    undo.append((series, -1, series.value, None))
                    series.inc(value)
        except BaseException:
            for series, i, old, old_exemplar in reversed(undo):
                if i < 0:
                    series.value = old
                else:
                    series.counts[i] -= 1
                    series.sum = old
                    series.exemplars[i] = old_exemplar
            raise


def _state(recorder: Recorder) -> dict[tuple[str, tuple[str, ...]], list[float]]:
    return {(f.name, values): recorder.saved_values(series) for f in recorder.families() for values, series in f._series.items()}


def record_lever(repeats: int) -> dict[str, float]:
    summaries = [ParticipantSummary.model_validate(e["data"]) for e in workload.events(2000, seed=99, pool=_pool())]
    today, fast = _seeded_recorder(), FastRecorder(_seeded_recorder())
    for s in summaries[:200]:
        today.apply(today.plan(s))
        fast.record(s)
    assert _state(today) == _state(fast.r), "the prototype recorded something else"

    def run_today() -> int:
        for s in summaries:
            today.apply(today.plan(s))
        return len(summaries)

    def run_fast() -> int:
        for s in summaries:
            fast.record(s)
        return len(summaries)

    def plan_only() -> int:
        for s in summaries:
            today.plan(s)
        return len(summaries)

    figures = _passes({"today: plan + apply": run_today, "of it plan": plan_only, "cached label set + tuple undo log": run_fast}, repeats)
    assert _state(today) == _state(fast.r), "the prototype recorded something else"
    return figures


# -- (c) reply and self-metrics --------------------------------------------------------------


def reply_lever(repeats: int) -> dict[str, float]:
    runtime = _apps().runtime
    em = runtime.exporter_metrics
    n = 20_000
    cache: dict[tuple[tuple[str, int], ...], bytes] = {}

    def json_reply() -> int:
        for _ in range(n):
            web.json_response({"recorded": 1}, status=200)
        return n

    def cached_reply() -> int:
        for _ in range(n):
            outcomes = {"recorded": 1}
            key = tuple(outcomes.items())
            body = cache.get(key)
            if body is None:
                body = cache[key] = json.dumps(outcomes).encode()
            web.Response(body=body, status=200, content_type="application/json", charset="utf-8")
        return n

    def metrics_today() -> int:
        for _ in range(n):
            em.webhook_requests.labels("200").inc()
            em.webhook_request_duration.observe(0.002)
            em.events.labels("webhook", "summary", "recorded").inc()
            em.last_summary.labels("participant").set(1.0)
        return n

    requests_200 = em.webhook_requests.labels("200")
    recorded = em.events.labels("webhook", "summary", "recorded")

    def metrics_resolved() -> int:
        for _ in range(n):
            requests_200.inc()
            em.webhook_request_duration.observe(0.002)
            recorded.inc()
            em.last_summary.labels("participant").set(1.0)
        return n

    return _passes(
        {
            "json_response": json_reply,
            "reply encoded once per outcome": cached_reply,
            "self-metrics, .labels() each time": metrics_today,
            "self-metrics, children resolved once": metrics_resolved,
        },
        repeats,
    )


# -- (d) journal encoding --------------------------------------------------------------------


def journal_lever(repeats: int) -> dict[str, dict[str, float]]:
    recorder = _seeded_recorder()
    journaled = _apps().runtime.subjects[PARTICIPANT].journaled
    changes = [journaled(recorder.plan(ParticipantSummary.model_validate(e["data"])))[1] for e in workload.events(2000, seed=99, pool=_pool())]
    family_index = {f.name: i for i, f in enumerate(recorder.families())}
    names = [f.name for f in recorder.families()]

    def compact(batch: list[Any]) -> bytes:
        # Label values joined by \x00 (they never hold it: labels.py cleans them), family index and
        # value as struct fields: the shape a hand-written binary journal would take.
        parts = []
        for common, observations in batch:
            parts.append(struct.pack("<H", len(observations)))
            parts.append(_text("\x00".join(common)))
            for name, others, value in observations:
                parts.append(struct.pack("<Bd", family_index[name], value))
                parts.append(_text("\x00".join(others)))
        return b"".join(parts)

    def uncompact(data: bytes) -> list[Any]:
        out, at = [], 0
        while at < len(data):
            (count,) = struct.unpack_from("<H", data, at)
            at += 2
            common, at = _untext(data, at)
            observations = []
            for _ in range(count):
                index, value = struct.unpack_from("<Bd", data, at)
                at += 9
                others, at = _untext(data, at)
                observations.append((names[index], others, value))
            out.append((common, observations))
        return out

    codecs: dict[str, tuple[Callable[[Any], bytes], Callable[[bytes], Any]]] = {
        "json (today)": (lambda b: json.dumps(b, separators=(",", ":")).encode(), json.loads),
        "marshal": (marshal.dumps, marshal.loads),
        "pickle": (lambda b: pickle.dumps(b, protocol=5), pickle.loads),
        "compact struct": (compact, uncompact),
    }
    try:
        import msgpack  # type: ignore[import-not-found]

        codecs["msgpack"] = (msgpack.packb, msgpack.unpackb)
    except ImportError:
        pass
    # One commit of a single-event delivery (one change) and of a batch of 50.
    out: dict[str, dict[str, float]] = {}
    for shape, size in (("1 change", 1), ("50 changes", 50)):
        batches = [changes[i : i + size] for i in range(0, len(changes), size)]
        methods: dict[str, Callable[[], int]] = {}
        for name, (encode, decode) in codecs.items():

            def encoding(encode: Callable[[Any], bytes] = encode) -> int:
                return sum(len(encode(b)) * 0 + len(b) for b in batches)

            encoded = [encode(b) for b in batches]

            def decoding(decode: Callable[[bytes], Any] = decode, encoded: list[bytes] = encoded) -> int:
                return sum(len(decode(e)) for e in encoded)

            methods[f"{name} encode"] = encoding
            methods[f"{name} decode"] = decoding
        figures = _passes(methods, repeats)
        for name, (encode, _) in codecs.items():
            figures[f"{name} bytes/change"] = sum(len(encode(b)) for b in batches) / len(changes)
        out[shape] = figures
    return out


def _text(value: str) -> bytes:
    raw = value.encode()
    return struct.pack("<H", len(raw)) + raw


def _untext(data: bytes, at: int) -> tuple[list[str], int]:
    (length,) = struct.unpack_from("<H", data, at)
    at += 2
    text = data[at : at + length].decode()
    return (text.split("\x00") if text else []), at + length


# -- (d) the switch interval on the durable path ---------------------------------------------


def switch_lever(repeats: int, count: int = 1500) -> dict[str, float]:
    """CPU µs per single-event delivery (the whole process, the writer thread included; wall time
    on the shared machine says nothing), and SQLite transactions per delivery (group commit)."""
    pool = _pool()
    timings: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory(prefix="levers-") as tmp:
        for rep in range(repeats):
            variants = [
                ("durable, switch interval 5 ms (default)", 0.005, True),
                ("durable, switch interval 1 ms (exporter)", 0.001, True),
                ("in memory, 1 ms", 0.001, False),
            ]
            variants = variants[rep % 3 :] + variants[: rep % 3]
            for name, interval, durable in variants:
                flags = [f"--state.path={Path(tmp) / f'state-{rep}-{interval}.sqlite'}"] if durable else []
                runtime = _apps(*flags).runtime
                recorder = runtime.subjects[PARTICIPANT].recorder
                for event in workload.events(len(pool) * 20, seed=98 + rep, pool=pool):
                    summary = ParticipantSummary.model_validate(event["data"])
                    recorder.apply(recorder.plan(summary))
                raw = [loads(synthetic.batch_body([e]))[0] for e in workload.events(count, seed=1000 + rep, pool=pool)]
                cpu, writer, commits = asyncio.run(_deliver_all(runtime, raw, interval))
                timings.setdefault(f"{name}: CPU", []).append(cpu / count * 1e6)
                if durable:
                    timings.setdefault(f"{name}: of it the writer thread", []).append(writer / count * 1e6)
                    timings.setdefault(f"{name}: commits per delivery", []).append(commits / count)
    sys.setswitchinterval(0.005)
    return {name: statistics.median(values) for name, values in timings.items()}


def _thread_cpu(native_id: int | None) -> float:
    """CPU seconds a thread of this process has run (/proc schedstat); 0 without one."""
    if native_id is None:
        return 0.0
    return int(Path(f"/proc/self/task/{native_id}/schedstat").read_text().split()[0]) / 1e9


async def _deliver_all(runtime: Any, raw: list[Any], interval: float) -> tuple[float, float, int]:
    """(process CPU, writer thread CPU) seconds and the commits made, delivering ``raw`` one event a delivery."""
    pipeline, store = runtime.pipeline, runtime.state
    await runtime.durable.open()
    writer = store._thread.native_id if store._thread is not None else None
    commits = 0
    real_commit = store.commit

    def counted(commit: Any) -> Any:
        nonlocal commits
        commits += 1
        return real_commit(commit)

    store.commit = counted
    sys.setswitchinterval(interval)
    try:
        gc.collect()
        events = iter(raw)

        async def connection() -> None:
            for event in events:
                await pipeline.deliver([event], Source.WEBHOOK)

        cpu, writer_cpu = time.process_time(), _thread_cpu(writer)
        # As many deliveries in flight as the HTTP bench's connections: commits group as there.
        await asyncio.gather(*(connection() for _ in range(CONNECTIONS)))
        return time.process_time() - cpu, _thread_cpu(writer) - writer_cpu, commits
    finally:
        sys.setswitchinterval(0.005)
        await runtime.durable.close()


# -- (e) where the CPU per request goes: py-spy on the exporter under single-event load -------

# Frames whose inclusive share is printed, each a step of the data's path (function names as
# py-spy reports them, "name (file)").
STEPS = {
    "handler (_handle)": "_handle (exporter/doors/webhook/handler.py",
    "read body": "read (aiohttp/web_request.py",
    "verify": "check (exporter/doors/webhook/verify.py",
    "JSON (loads)": "loads (exporter/models.py",
    "pipeline.deliver": "deliver (exporter/pipeline.py",
    "pydantic (model_validate)": "model_validate (pydantic/main.py",
    "record: plan": "plan (exporter/record/recorder.py",
    "record: apply": "apply (exporter/record/recorder.py",
    "reply (json_response)": "json_response (aiohttp/web_response.py",
    "self-metrics (prometheus_client)": "prometheus_client/metrics.py",
    "whole webhook handler (handle_webhook)": "handle_webhook (exporter/doors/webhook/handler.py",
}


def profile(seconds: float = 8.0, rate: int = 250, top: int = 25) -> dict[str, Any]:
    """py-spy (``--gil``: samples of the thread holding the GIL, i.e. running Python) of the real
    exporter, warm, under the closed-loop single-event load of the HTTP bench."""
    import shutil
    import subprocess
    from collections import Counter

    from . import httpbench, procs

    py_spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    pool = _pool()
    with tempfile.TemporaryDirectory(prefix="levers-") as tmp_name:
        tmp = Path(tmp_name)
        sink = procs.PUBLIC_SINK_URL
        seed = workload.write_requests(tmp / "seed.tsv", sink, len(pool) * httpbench.SEED_PER_LABEL_SET // 50, 50, seed=40_000, pool=pool)
        requests = workload.write_requests(tmp / "posts.tsv", sink, int(seconds * 8000), 1, seed=1, pool=pool)
        raw = tmp / "profile.txt"
        with procs.exporter() as server:
            httpbench._post_all(server, seed)
            spy = subprocess.Popen(
                procs.pinned(procs.CLIENT_CPU, [py_spy, "record", "--pid", str(server.proc.pid), "--format", "raw", "--gil", "--nonblocking",
                                                f"--rate={rate}", f"--duration={seconds:g}", "--output", str(raw)]),
                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
            )  # fmt: skip
            result = httpbench.load(server, requests, seconds + 1)
            _, errors = spy.communicate(timeout=60)
        if not raw.exists():
            raise RuntimeError(f"py-spy wrote no profile: {errors[-2000:]}")
        lines = raw.read_text().splitlines()
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in lines:
        stack, _, count_text = line.rpartition(" ")
        count = int(count_text)
        frames = stack.split(";")
        total += count
        own[_short(frames[-1])] += count
        for step, needle in STEPS.items():
            if any(needle in frame for frame in frames):
                inclusive[step] += count
    return {
        "requests_per_s": result["rate"],
        "cpu_us_per_request": result["cpu_us"],
        "samples": total,
        "steps_percent": {
            **{step: 100 * inclusive[step] / total for step in STEPS},
            # aiohttp's HTTP parsing, the response's write, asyncio's loop, the GC between handlers.
            "outside the handler": 100 - 100 * inclusive["whole webhook handler (handle_webhook)"] / total,
        },
        "top_own_percent": {name: 100 * n / total for name, n in own.most_common(top)},
    }


def _short(frame: str) -> str:
    """``name (path/file.py:line)`` without the line and the site-packages prefix."""
    name, _, where = frame.partition(" (")
    where = where.rstrip(")").rsplit(":", 1)[0]
    for marker in ("site-packages/", "wt-bench/", "lib/python3.11/"):
        if marker in where:
            where = where.split(marker, 1)[1]
    return f"{name} ({where})"


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.levers", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("lever", nargs="?", default="all", choices=["parse", "record", "reply", "journal", "switch", "profile", "all"])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    levers: dict[str, Callable[[int], Any]] = {
        "parse": parse_lever,
        "record": record_lever,
        "reply": reply_lever,
        "journal": journal_lever,
        "switch": switch_lever,
        "profile": lambda _repeats: profile(),
    }
    results = {}
    for name, lever in levers.items():
        if args.lever in (name, "all"):
            results[name] = figures = lever(args.repeats)
            print(f"{name}:", flush=True)
            for key, value in figures.items():
                if isinstance(value, dict):
                    print(f"  {key}: " + ", ".join(f"{k} {v:.2f}" for k, v in value.items()), flush=True)
                else:
                    print(f"  {key}: {value:.2f}", flush=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
