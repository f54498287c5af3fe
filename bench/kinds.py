"""``python -m bench.kinds [COUNT] [REPEATS]``: CPU µs per summary of each kind, through the real pipeline.

One row per kind of summary (participant, call, conference), single events and batches of 50,
in memory and with ``--state.path`` (the writer thread's CPU included: ``process_time`` is the
whole process). In process, without HTTP: the naive peer (bench/peer.py) takes participant
summaries only, so the HTTP figures against it are participants only; these rows say what the
other kinds cost beside them. Warm: every kind's label set is recorded once before the passes.
The call and conference summaries are the test fixtures with a fresh SID each.
"""

from __future__ import annotations

import asyncio
import copy
import gc
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from exporter import synthetic
from exporter.metrics import Source
from exporter.models import loads
from exporter.subjects import NAMES

from . import workload
from .levers import _apps

FIXTURES = Path(__file__).resolve().parent.parent / "tests" / "fixtures"
KINDS = NAMES  # exporter/subjects/__init__.py: the one list of subjects


def _events(kind: str, count: int, seed: int) -> list[dict[str, Any]]:
    if kind == "participant":
        return list(workload.events(count, seed=seed, pool=workload.label_pool(workload.WARM_LABEL_SETS, seed=1)))
    name, key = ("call_summary_complete.json", "call_sid") if kind == "call" else ("conference_summary_complete.json", "conference_sid")
    template = json.loads((FIXTURES / name).read_text())
    prefix = "CA" if kind == "call" else "CF"
    out = []
    for i in range(count):
        event = copy.deepcopy(template)
        event["id"] = f"EZ{seed:08x}{i:024x}"
        event["data"][key] = f"{prefix}{seed:08x}{i:024x}"
        out.append(event)
    return out


async def _run(runtime: Any, warm: list[Any], deliveries: list[list[Any]]) -> float:
    await runtime.durable.open()
    try:
        for start in range(0, len(warm), 50):
            await runtime.pipeline.deliver(warm[start : start + 50], Source.WEBHOOK)
        gc.collect()
        started = time.process_time()
        for delivery in deliveries:
            await runtime.pipeline.deliver(delivery, Source.WEBHOOK)
        return time.process_time() - started
    finally:
        await runtime.durable.close()


def kind_costs(count: int = 400, repeats: int = 3) -> dict[str, dict[str, float]]:
    """``{kind: {"single, in memory": µs, "single, durable": µs, "batch of 50, ...": µs}}``, medians."""
    timings: dict[str, dict[str, list[float]]] = {kind: {} for kind in KINDS}
    with tempfile.TemporaryDirectory(prefix="kinds-") as tmp:
        for rep in range(repeats):
            for kind in KINDS:
                variants = [(shape, durable) for shape in (1, 50) for durable in (False, True)]
                variants = variants[rep % 4 :] + variants[: rep % 4]
                for batch, durable in variants:
                    flags = [f"--state.path={Path(tmp) / f'{kind}-{rep}-{batch}.sqlite'}"] if durable else []
                    runtime = _apps(*flags).runtime
                    n_warm = len(workload.label_pool(workload.WARM_LABEL_SETS, seed=1)) * 3 if kind == "participant" else 1
                    events = [loads(synthetic.batch_body([e]))[0] for e in _events(kind, n_warm + count, seed=100 + rep)]
                    warm, events = events[:n_warm], events[n_warm:]
                    deliveries = [events[i : i + batch] for i in range(0, len(events), batch)]
                    cpu = asyncio.run(_run(runtime, warm, deliveries))
                    name = f"{'single' if batch == 1 else 'batch of 50'}, {'durable' if durable else 'in memory'}"
                    timings[kind].setdefault(name, []).append(cpu / count * 1e6)
    return {kind: {name: statistics.median(v) for name, v in rows.items()} for kind, rows in timings.items()}


def main() -> int:
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 400
    repeats = int(sys.argv[2]) if len(sys.argv) > 2 else 3
    print(json.dumps(kind_costs(count, repeats)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
