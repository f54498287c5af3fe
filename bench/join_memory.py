"""``python -m bench.join_memory [--tasks N] [--name-length L]``: the TaskRouter join map's memory, live and after a kill -9.

A real exporter process (default flags, with ``--state.path``, as the chart runs it) gets
``--tasks`` signed ``reservation.accepted`` events (default 50,000, the default
``--taskrouter.max-joins``) whose queue, workflow and team names are ``--name-length`` characters
(default 10 KB: what an attacker, or a broken Flex plugin, may put there), in batches of 50. Printed:
the join map's estimated bytes (``twilio_insights_exporter_taskrouter_join_memory_bytes``, bounded
by ``--taskrouter.max-join-memory``), the tasks it holds, and the process's resident set and peak;
then the process is killed with SIGKILL, restarted on the same state file, and the same figures
are printed before its first delivery. The chart's memory limit is beside them.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import tempfile
import urllib.request
from pathlib import Path
from typing import Any

from . import procs
from .edge import CHART_LIMIT_MIB, post, rss_kib

_GAUGE = re.compile(rb"^(twilio_insights_exporter_taskrouter_join(?:_memory_bytes|s)) (\S+)$", re.MULTILINE)


def event(n: int, name_length: int) -> dict[str, Any]:
    conference = {"sid": f"CF{n:032d}", "participants": {"customer": f"CA{n:031d}1", "worker": f"CA{n:031d}2"}}
    payload = {
        "eventtype": "reservation.accepted",
        "timestamp": "2026-11-01T10:00:10Z",
        "task_sid": f"WT{n:032d}",
        "reservation_sid": f"WR{n:032d}",
        "task_channel_unique_name": "voice",
        "task_queue_sid": "WQ" + "1" * 32,
        "task_queue_name": "q" * name_length or "Support",
        "workflow_sid": "WW" + "1" * 32,
        "workflow_name": "w" * name_length or "Inbound",
        "task_attributes": json.dumps({"call_sid": f"CA{n:031d}1", "direction": "inbound", "conference": conference}),
        "worker_attributes": json.dumps({"team_name": "t" * name_length or "Billing"}),
    }
    return {
        "specversion": "1.0",
        "type": "com.twilio.taskrouter.reservation.accepted",
        "source": "/v1/Workspaces/WS/Tasks",
        "id": f"EZ{n:032d}",
        "datacontenttype": "application/json",
        "data": {"payload": payload},
    }


def figures(server: procs.Server) -> dict[str, float]:
    assert server.metrics is not None
    with urllib.request.urlopen(f"{server.metrics}/metrics", timeout=300) as response:
        text = response.read()
    found = {name.decode(): float(value) for name, value in _GAUGE.findall(text)}
    return {
        "tasks": found["twilio_insights_exporter_taskrouter_joins"],
        "join_mib": found["twilio_insights_exporter_taskrouter_join_memory_bytes"] / 2**20,
        "rss_mib": rss_kib(server) / 1024,
        "peak_mib": rss_kib(server, "VmHWM:") / 1024,
    }


def show(when: str, f: dict[str, float]) -> None:
    print(
        f"  {when}: {f['tasks']:.0f} tasks, join map {f['join_mib']:.0f} MiB (estimated); RSS {f['rss_mib']:.0f} MiB, "
        f"peak {f['peak_mib']:.0f} MiB (chart limit {CHART_LIMIT_MIB} MiB)",
        flush=True,
    )


async def fill(server: procs.Server, tasks: int, name_length: int, batch: int = 50) -> None:
    for start in range(0, tasks, batch):
        body = json.dumps([event(n, name_length) for n in range(start, min(tasks, start + batch))]).encode()
        status, _, _ = await post(server.base, body)
        assert status == 200, status


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=50_000)
    parser.add_argument("--name-length", type=int, default=10_000)
    parser.add_argument("--quick", action="store_true", help="5,000 tasks")
    args = parser.parse_args(argv)
    tasks = 5_000 if args.quick else args.tasks
    print(f"TaskRouter join memory: {tasks} tasks, names of {args.name_length} characters, --state.path, default flags")
    with tempfile.TemporaryDirectory() as tmp:
        state = f"--state.path={Path(tmp) / 'state.db'}"
        with procs.exporter(state) as server:
            asyncio.run(fill(server, tasks, args.name_length))
            show("live", figures(server))
            server.proc.kill()  # kill -9: no snapshot, no clean close
            server.proc.wait()
        with procs.exporter(state) as server:
            show("restarted on the state file, before any delivery", figures(server))


if __name__ == "__main__":
    main()
