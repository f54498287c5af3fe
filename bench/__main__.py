"""``python -m bench [--quick]``: every figure of docs/performance.md, printed as one table.

Server on core 0, load generators on core 1 (``taskset``), medians of several runs; the
exporter and the bare aiohttp handler are measured alternately with the same client and the
same request file, so their ratio holds even on a busy machine.

Every HTTP figure is measured in two regimes (bench/workload.py): **warm**, the label sets
already in the registry (an exporter in its steady state), and **cold**, a registry still
growing (every few summaries bring ~200 new series). Both are printed, each named.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from . import httpbench, inprocess
from .procs import ROOT


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer and shorter runs (about 3 minutes instead of 10)")
    parser.add_argument("--runs", type=int, help="runs of each HTTP figure (default 3, quick 1)")
    parser.add_argument("--json", type=Path, help="also write every figure to this file")
    args = parser.parse_args()
    quick = args.quick
    runs = args.runs or (1 if quick else 3)
    if not httpbench.have_wrk():
        print("wrk not found (Debian: apt-get install wrk): using the aiohttp load generator in a separate process, "
              "which is slower than wrk, so the bare ceiling reads low", file=sys.stderr)  # fmt: skip
    started = time.monotonic()
    results: dict = {"quick": quick, "runs": runs}
    with tempfile.TemporaryDirectory(prefix="bench-") as tmp_name:
        tmp = Path(tmp_name)
        print(f"1/6 signed single-event POSTs, exporter warm and cold vs bare aiohttp, {runs} run(s)", flush=True)
        # Request files large enough that wrk never wraps around to deliveries already recorded.
        results["single"] = httpbench.posts(tmp, runs, duration=3 if quick else 6, batch=1, deliveries=25_000 if quick else 50_000)
        print(f"2/6 signed batches of 50, warm and cold, {runs} run(s)", flush=True)
        results["batch"] = httpbench.posts(tmp, runs, duration=3, batch=50, deliveries=1_500)
        print("3/6 in-process cost per summary, warm and cold registry", flush=True)
        results["stages"] = {}
        for regime in httpbench.REGIMES:
            results["stages"][regime] = inprocess.stage_costs(500 if quick else 2000, 3 if quick else 5, regime)
            print(f"  {regime}: " + ", ".join(f"{k} {v:.1f} µs" for k, v in results["stages"][regime].items()), flush=True)
        print("4/6 /metrics render at 10k and 100k samples", flush=True)
        results["render"] = {}
        for target in (10_000, 100_000):
            r = results["render"][target] = inprocess.render_times(target, 3 if quick else 5)
            print(f"  {r['samples']} samples: handler {r['handler_text']:.0f} ms (OpenMetrics {r['handler_openmetrics']:.0f} ms, "
                  f"longest loop stall {r['stall_openmetrics']:.1f} ms); generate_latest {r['generate_latest']:.0f} ms, "
                  f"OpenMetrics generate_latest {r['generate_openmetrics']:.0f} ms", flush=True)  # fmt: skip
        print("5/6 webhook latency at a steady 200/s while two scrapers pull /metrics every 5 s, warm then cold", flush=True)
        results["scrapes"] = httpbench.scrapes_under_load(tmp, duration=15 if quick else 30, rate=200, target_samples=100_000)
        print("6/6 peak RSS, 100k samples + 1M remembered deliveries", flush=True)
        out = subprocess.run(
            [sys.executable, "-m", "bench.inprocess", "rss", "100000", "1000000"], cwd=ROOT, capture_output=True, text=True, timeout=600
        )
        results["rss"] = httpbench._result(out.stdout)
        r = results["rss"]
        print(
            f"  {r['rss_peak_mib']:.0f} MiB ({r['rss_registry_mib']:.0f} MiB before the dedup windows; {r['dedup_add_us']:.1f} µs per add)",
            flush=True,
        )
    print(f"\n{table(results)}\n(total {time.monotonic() - started:.0f} s; medians of {runs} run(s); machine noise applies, see docs/performance.md)")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2, default=str))
    return 0


def table(r: dict) -> str:
    """The issue's table; the HTTP figures once per regime, each ratio to the bare run of its round."""
    med = statistics.median
    rows = []
    for regime in httpbench.REGIMES:
        single, batch, bare = r["single"][regime]["exporter"], r["batch"][regime]["exporter"], r["single"]["bare"]
        ratio = r["single"][regime]["ratio"]
        per_s = med(x["summaries_per_s"] for x in batch)
        rows += [
            (f"signed single-event POSTs, {regime}", f"{med(x['rate'] for x in single):.0f}/s vs bare {med(x['rate'] for x in bare):.0f}/s = "
             f"{ratio:.2f} x ceiling (runs {', '.join(f'{x:.2f}' for x in r['single'][regime]['ratios'])}; p50 {med(x['p50_us'] for x in single) / 1000:.1f} ms, "
             f"p99 {med(x['p99_us'] for x in single) / 1000:.1f} ms; bare p50 {med(x['p50_us'] for x in bare) / 1000:.1f} ms, "
             f"p99 {med(x['p99_us'] for x in bare) / 1000:.1f} ms; {med(x['new_samples_per_summary'] for x in single):.1f} new samples/summary)",
             ">= 0.5 x", ratio >= 0.5),
            (f"signed batches of 50, {regime}", f"{per_s:.0f} summaries/s (runs {', '.join(format(x['summaries_per_s'], '.0f') for x in batch)}; "
             f"{med(x['new_samples_per_summary'] for x in batch):.1f} new samples/summary)", ">= 20,000/s", per_s >= 20_000),
        ]  # fmt: skip
    for regime in httpbench.REGIMES:
        s = r["scrapes"][regime]
        rows.append(
            (f"webhook p99 during heavy scrapes, {regime}", f"{s['webhook']['p99_us'] / 1000:.1f} ms (p50 {s['webhook']['p50_us'] / 1000:.1f} ms, "
             f"max {s['webhook']['max_us'] / 1000:.0f} ms; {s['scrapes']['scrapes']} scrapes of {s['samples_before']}-{s['samples_after']} samples)",
             "<= 25 ms", s["webhook"]["p99_us"] <= 25_000)
        )  # fmt: skip
    rows += [
        ("/metrics at 100k samples", f"{r['render'][100_000]['handler_text']:.0f} ms text, {r['render'][100_000]['handler_openmetrics']:.0f} ms OpenMetrics "
         f"(generate_latest {r['render'][100_000]['generate_latest']:.0f} ms); longest loop stall {r['render'][100_000]['stall_openmetrics']:.1f} ms",
         "<= 300 ms", r["render"][100_000]["handler_openmetrics"] <= 300),
        ("peak RSS, 100k samples + 1M dedup", f"{r['rss']['rss_peak_mib']:.0f} MiB", "<= 200 MB", r["rss"]["rss_peak_mib"] * 1.048576 <= 200),
    ]  # fmt: skip
    lines = ["| figure | measured | target | met |", "|---|---|---|---|"]
    lines += [f"| {name} | {value} | {target} | {'yes' if ok else 'NO'} |" for name, value, target, ok in rows]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
