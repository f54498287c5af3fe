"""``python -m bench.scrape_memory [--baseline TREE]``: the memory of ``/metrics`` as the label sets fill up.

A real exporter process (default flags, as the chart runs it) gets 2 MiB deliveries of
participant summaries of random labels, one after another, and is scraped (plain text, as a
``curl`` would) after every five, until the participant label-set budget overflows
(``label_overflow_total{label="label_set"}`` moves) or ``--max-deliveries``. Printed per step:
the samples and size of the exposition, the resident set between scrapes and its peak (VmHWM).
The peak is what the chart's ``resources.limits.memory`` must hold (docs/performance.md,
"/metrics memory"). ``--baseline TREE`` runs another tree's exporter in the same run.
Not part of ``make bench``: filling the budget takes a few minutes.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import urllib.request
from pathlib import Path

from . import procs
from .edge import CHART_LIMIT_MIB, MiB, delivery, post, rss_kib
from .procs import CLIENT_CPU, ROOT

_OVERFLOW = re.compile(rb'twilio_insights_exporter_label_overflow_total\{label="label_set",subject="participant"\} (\S+)')


def scrape(server: procs.Server) -> bytes:
    with urllib.request.urlopen(f"{server.metrics}/metrics", timeout=300) as response:
        body: bytes = response.read()
    return body


async def fill(server: procs.Server, max_deliveries: int, every: int = 5) -> list[dict[str, float]]:
    steps = []
    sent = 0
    while sent < max_deliveries:
        for _ in range(every):
            status, _, _ = await post(server.base, delivery(9000 + sent, size=2 * MiB))
            assert status == 200, status
            sent += 1
        text = scrape(server)
        found = _OVERFLOW.search(text)
        overflow = float(found.group(1)) if found else 0.0
        steps.append(
            {
                "deliveries": sent,
                "samples": float(text.count(b"\n") - text.count(b"\n#")),
                "text_mib": len(text) / MiB,
                "rss_mib": rss_kib(server) / 1024,
                "peak_mib": rss_kib(server, "VmHWM:") / 1024,
                "overflowed": overflow,
            }
        )
        s = steps[-1]
        print(
            f"  {sent} deliveries: {s['samples']:.0f} samples, {s['text_mib']:.0f} MiB of text; RSS {s['rss_mib']:.0f} MiB, "
            f"peak {s['peak_mib']:.0f} MiB (chart limit {CHART_LIMIT_MIB}); {overflow:.0f} summaries in the overflow set",
            flush=True,
        )
        if overflow:
            break
    return steps


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.scrape_memory", description=__doc__.split("\n\n")[0])
    parser.add_argument("--baseline", type=Path, help="also run the exporter of this tree")
    parser.add_argument("--max-deliveries", type=int, default=60, help="stop after this many 2 MiB deliveries")
    options = parser.parse_args()
    if hasattr(os, "sched_setaffinity") and (os.cpu_count() or 1) > 1:
        os.sched_setaffinity(0, {int(CLIENT_CPU)})
    for name, source in [("this tree", ROOT)] + ([("baseline", options.baseline)] if options.baseline else []):
        print(f"{name}:", flush=True)
        with procs.exporter(source=source) as server:
            asyncio.run(fill(server, options.max_deliveries))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
