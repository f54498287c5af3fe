"""``python -m bench.overload [--quick]``: a flood of signed batches, and the health probes during it.

400 keep-alive connections (wrk) POST signed batches of 50 summaries as fast as they are
answered, while a prober asks ``/-/healthy`` and ``/-/ready`` on a fresh connection every
25 ms, as the kubelet does. Printed: the webhook's p99 and worst answer time, how many
deliveries were acknowledged and how many refused with 503 (and whether every 503 carried
Retry-After), the probes' p50/p99/worst, and whether every acknowledged summary was counted
exactly once.

Measured in the same round against a baseline: the same exporter with the in-flight bound
lifted (``--webhook.max-in-flight`` very large), which is what the exporter did before it had
one. ``--baseline REV`` adds another commit's exporter, bounded, to every round (the loop design
of ``REV`` against this tree's: docs/performance.md, "Overload"); ``--rounds N`` alternates the
variants N times. Server on core 0, load generator and prober on core 1, as in ``python -m bench``.
"""

from __future__ import annotations

import argparse
import http.client
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from . import httpbench, procs, workload
from .procs import CLIENT_CPU, ROOT

CONNECTIONS = 400
BATCH = 50
PROBE_INTERVAL = 0.025
# What the issue asks of the bounded exporter under this flood.
TARGET_P99_S, TARGET_WORST_S, TARGET_PROBE_S = 1.0, 5.0, 0.1
UNBOUNDED = 1_000_000

# wrk: every line of the request file once per request, in turn; counts answers by status and
# 503s without Retry-After, per thread, summed in done().
LUA = r"""
local requests = {}
local index = 0
local threads = {}

function setup(thread)
   table.insert(threads, thread)
end

function init(args)
   local file = assert(io.open(args[1], "r"))
   for line in file:lines() do
      local path, signature, body = line:match("^([^\t]*)\t([^\t]*)\t(.*)$")
      requests[#requests + 1] = wrk.format("POST", path,
         {["X-Twilio-Signature"] = signature, ["Content-Type"] = "application/json"}, body)
   end
   file:close()
   ok, unavailable, other, no_retry_after = 0, 0, 0, 0
end

function request()
   index = index % #requests + 1
   return requests[index]
end

function response(status, headers, body)
   if status == 200 then
      ok = ok + 1
   elseif status == 503 then
      unavailable = unavailable + 1
      if headers["Retry-After"] == nil then no_retry_after = no_retry_after + 1 end
   else
      other = other + 1
   end
end

function done(summary, latency, requests)
   local t = {ok = 0, unavailable = 0, other = 0, no_retry_after = 0}
   for _, thread in ipairs(threads) do
      for k, _ in pairs(t) do t[k] = t[k] + thread:get(k) end
   end
   io.write(string.format(
      'RESULT {"requests": %d, "duration_us": %d, "ok": %d, "unavailable": %d, "other": %d, "no_retry_after": %d, '
      .. '"socket_errors": %d, "timeouts": %d, "p50_us": %d, "p99_us": %d, "max_us": %d}\n',
      summary.requests, summary.duration, t.ok, t.unavailable, t.other, t.no_retry_after,
      summary.errors.connect + summary.errors.read + summary.errors.write, summary.errors.timeout,
      latency:percentile(50), latency:percentile(99), latency.max))
end
"""


def probe(metrics_base: str, duration: float) -> dict[str, Any]:
    """``/-/healthy`` and ``/-/ready`` in turn on a fresh connection every PROBE_INTERVAL; latency of each."""
    host, port = metrics_base.removeprefix("http://").split(":")
    times: dict[str, list[float]] = {"/-/healthy": [], "/-/ready": []}
    failures = 0
    deadline = time.monotonic() + duration
    while time.monotonic() < deadline:
        for path, latencies in times.items():
            started = time.perf_counter()
            connection = http.client.HTTPConnection(host, int(port), timeout=10)
            try:
                connection.request("GET", path)
                response = connection.getresponse()
                response.read()
                if response.status != 200:
                    failures += 1
            except OSError:
                failures += 1
            finally:
                connection.close()
            latencies.append(time.perf_counter() - started)
        time.sleep(PROBE_INTERVAL)  # the probe period, as a kubelet's; not synchronisation
    out: dict[str, Any] = {"failures": failures}
    for path, latencies in times.items():
        ordered = sorted(latencies)
        out[path] = {
            "probes": len(ordered),
            "p50_ms": statistics.median(ordered) * 1000,
            "p99_ms": ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))] * 1000,
            "max_ms": ordered[-1] * 1000,
        }
    return out


def counted(metrics_base: str) -> dict[str, float]:
    """Webhook summary events by outcome, and the summaries the participant family counted."""
    with urllib.request.urlopen(metrics_base + "/metrics", timeout=60) as response:
        text = response.read().decode()
    found = {"summaries": 0.0}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "twilio_insights_exporter_events_total" and sample.labels.get("type") == "summary":
                found[sample.labels["outcome"]] = found.get(sample.labels["outcome"], 0.0) + sample.value
            elif sample.name == "twilio_conference_participant_summaries_total":
                found["summaries"] += sample.value
    return found


def flood(requests: Path, seed: Path, duration: float, *exporter_args: str, source: Path = ROOT) -> dict[str, Any]:
    """One exporter (of the tree ``source``), warmed with ``seed``, under the flood, probed throughout."""
    lua = requests.with_suffix(".lua")
    lua.write_text(LUA)
    with procs.exporter(*exporter_args, source=source) as server:
        httpbench._post_all(server, seed)
        assert server.metrics is not None
        before = counted(server.metrics)
        prober = subprocess.Popen(
            procs.pinned(CLIENT_CPU, [sys.executable, "-m", "bench.overload", "probe", server.metrics, str(duration + 1)]),
            cwd=ROOT, stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        argv = ["wrk", "-t1", f"-c{CONNECTIONS}", f"-d{duration:g}s", "--timeout", "10s", "-s", str(lua), server.base, "--", str(requests)]
        wrk = subprocess.run(procs.pinned(CLIENT_CPU, argv), cwd=ROOT, capture_output=True, text=True, timeout=duration + 120)
        probe_out, _ = prober.communicate(timeout=duration + 60)
        after = counted(server.metrics)
    result: dict[str, Any] = {"webhook": _result(wrk.stdout + wrk.stderr), "probes": _result(probe_out)}
    delta = {k: after.get(k, 0.0) - before.get(k, 0.0) for k in after}
    result["counted"] = delta
    # Nothing lost: the events of every acknowledged delivery were counted, as recorded or as
    # duplicates (the request file wraps around). Deliveries still in flight when wrk stopped
    # are processed without their answer being counted, hence >=. Nothing counted twice: the
    # participant family counted exactly the recorded ones, never more than the file holds.
    with requests.open("rb") as lines:
        distinct = sum(1 for _ in lines) * BATCH
    recorded = delta.get("recorded", 0)
    result["nothing_lost"] = recorded + delta.get("duplicate", 0) >= result["webhook"]["ok"] * BATCH
    result["nothing_twice"] = delta["summaries"] == recorded <= distinct
    result["exactly_once"] = result["nothing_lost"] and result["nothing_twice"]
    return result


def _result(output: str) -> dict[str, Any]:
    for line in output.splitlines():
        if line.startswith("RESULT "):
            result: dict[str, Any] = json.loads(line[len("RESULT ") :])
            return result
    raise RuntimeError(f"no result:\n{output[-2000:]}")


def report(name: str, r: dict[str, Any]) -> str:
    w, p = r["webhook"], r["probes"]
    health, ready = p["/-/healthy"], p["/-/ready"]
    return (
        f"  {name}: webhook p50 {w['p50_us'] / 1000:.0f} ms, p99 {w['p99_us'] / 1000:.0f} ms, worst {w['max_us'] / 1000:.0f} ms; "
        f"{w['requests']} answers: {w['ok']} x 200, {w['unavailable']} x 503 ({w['no_retry_after']} without Retry-After), {w['other']} other, "
        f"{w['socket_errors']} socket errors, {w['timeouts']} timeouts (10 s); "
        f"/-/healthy p50 {health['p50_ms']:.1f} ms, p99 {health['p99_ms']:.1f} ms, worst {health['max_ms']:.1f} ms; "
        f"/-/ready p50 {ready['p50_ms']:.1f} ms, p99 {ready['p99_ms']:.1f} ms, worst {ready['max_ms']:.1f} ms "
        f"({health['probes'] + ready['probes']} probes, {p['failures']} not 200); "
        f"{r['counted'].get('recorded', 0):.0f} recorded, {r['counted'].get('duplicate', 0):.0f} duplicates, exactly once: {'yes' if r['exactly_once'] else 'NO'}"
    )


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "probe":
        print("RESULT " + json.dumps(probe(sys.argv[2], float(sys.argv[3]))), flush=True)
        return 0
    parser = argparse.ArgumentParser(prog="python -m bench.overload", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a shorter flood")
    parser.add_argument("--duration", type=float, help="seconds of flood per exporter (default 15, quick 8)")
    parser.add_argument("--max-in-flight", type=int, help="the bounded exporter's --webhook.max-in-flight (default: the exporter's default)")
    parser.add_argument("--overload-json", type=Path, help="also write the figures to this file")
    parser.add_argument(
        "--baseline", dest="overload_baseline", help="git revision (or extracted tree) whose exporter, bounded, is measured in every round too"
    )
    parser.add_argument("--rounds", dest="overload_rounds", type=int, default=1, help="rounds of every variant, alternated (default 1)")
    args, _ = parser.parse_known_args()  # make bench passes its ARGS to every section
    duration = args.duration or (8 if args.quick else 15)
    if not shutil.which("wrk"):
        print("bench.overload needs wrk: apt-get install wrk", file=sys.stderr)
        return 1
    bound = [f"--webhook.max-in-flight={args.max_in_flight}"] if args.max_in_flight else []
    print(f"overload: {CONNECTIONS} connections posting signed batches of {BATCH} for {duration:g} s; probes every {PROBE_INTERVAL * 1000:.0f} ms")
    results: dict[str, dict[str, Any]] = {}
    runs: dict[str, list[dict[str, Any]]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-overload-") as tmp:
        variants: list[tuple[str, list[str], Path]] = [
            ("unbounded (baseline)", [f"--webhook.max-in-flight={UNBOUNDED}"], ROOT),
            ("bounded", bound, ROOT),
        ]
        if args.overload_baseline and Path(args.overload_baseline).is_dir():  # a tree extracted already
            variants.append((f"bounded, {Path(args.overload_baseline).name}", bound, Path(args.overload_baseline)))
        elif args.overload_baseline:
            tree = Path(tmp) / "baseline"
            tree.mkdir()
            archive = subprocess.run(["git", "archive", args.overload_baseline], cwd=ROOT, capture_output=True, check=True).stdout
            subprocess.run(["tar", "-x", "-C", str(tree)], input=archive, check=True)
            variants.append((f"bounded, {args.overload_baseline}", bound, tree))
        # The warm regime of bench/workload.py: the label sets are in the registry before the
        # flood (an exporter in its steady state), SIDs and event ids fresh in every delivery.
        pool = workload.label_pool(workload.WARM_LABEL_SETS, seed=1)
        seed = workload.write_requests(
            Path(tmp) / "seed.tsv", procs.PUBLIC_SINK_URL, len(pool) * httpbench.SEED_PER_LABEL_SET // BATCH, BATCH, seed=40_000, pool=pool
        )
        # Up to ~250 deliveries a second are recorded here; a shorter file wraps around into duplicates.
        requests = workload.write_requests(Path(tmp) / "flood.tsv", procs.PUBLIC_SINK_URL, int(duration * 100), BATCH, seed=77, pool=pool)
        for round_ in range(args.overload_rounds):
            for name, extra, source in variants:
                results[name] = flood(requests, seed, duration, *extra, source=source)
                runs.setdefault(name, []).append(results[name])
                print(report(f"{name} (round {round_ + 1})", results[name]), flush=True)
    b = results["bounded"]
    worst_probe = max(b["probes"][path]["max_ms"] for path in ("/-/healthy", "/-/ready")) / 1000
    checks = [
        ("webhook p99", b["webhook"]["p99_us"] / 1e6, TARGET_P99_S),
        ("webhook worst", b["webhook"]["max_us"] / 1e6, TARGET_WORST_S),
        ("health probes worst", worst_probe, TARGET_PROBE_S),
    ]
    print("| figure (bounded) | measured | target | met |\n|---|---|---|---|")
    for name, value, target in checks:
        print(f"| {name} | {value * 1000:.0f} ms | < {target * 1000:.0f} ms | {'yes' if value < target else 'NO'} |")
    print(f"| every 503 with Retry-After | {b['webhook']['no_retry_after']} without | 0 | {'yes' if b['webhook']['no_retry_after'] == 0 else 'NO'} |")
    print(f"| acknowledged summaries counted exactly once | {'yes' if b['exactly_once'] else 'no'} | yes | {'yes' if b['exactly_once'] else 'NO'} |")
    if args.overload_json:
        args.overload_json.write_text(json.dumps(runs, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
