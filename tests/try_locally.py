"""Try pull mode or Kinesis mode on one machine, with no Twilio or AWS account: ``make try-pull``, ``make try-kinesis``.

    python -m tests.try_locally pull    [--calls 40] [--every 10] [--metrics-port 9802] [exporter flags ...]
    python -m tests.try_locally kinesis [--calls 40] [--every 10] [--metrics-port 9802] [exporter flags ...]

Each starts the local fake the tests use, filled with the synthetic Flex calls of
:mod:`exporter.synthetic` (each call: its TaskRouter events, two legs' participant and Call
Summaries, its Conference Summary), then runs the exporter against it in the foreground, its log
on this terminal, and says where to look (``/metrics``). ``--every`` seconds one more call
arrives, so that rates move (0: none). Ctrl-C (or SIGTERM) stops the exporter, then the fake.

- ``pull``: the fake Voice Insights REST API of tests/fake_insights.py on a free loopback port,
  holding the calls' summaries (REST has no TaskRouter events: their queue and team are
  ``unknown``); the exporter polls it (``--pull.enabled --pull.api-url=...``) every 15 s with
  the fake's credentials.
- ``kinesis``: kinesalite (tests/kinesis_server.py; ``npm ci --prefix tests/kinesalite``) with a
  stream ``twilio-events`` of one shard (so that a call's TaskRouter events stay before its
  summaries) holding one CloudEvent per record as a Twilio Kinesis sink writes them (every other
  one with its ``data`` as a JSON string) and a sink test event; the exporter consumes it
  (``--kinesis.stream-name=... --kinesis.endpoint-url=...``) with throwaway AWS credentials.

Flags this module does not know go to the exporter after its own, so they win
(e.g. ``--pull.interval=5s``, ``--log.level=debug``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import signal
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from exporter import synthetic
from tests import fake_insights as fi
from tests.exporter_process import ROOT, free_port
from tests.helpers import clean_environ, until
from tests.kinesis_server import AWS_ENV, create_stream, start_kinesalite

STREAM = "twilio-events"
POLL_INTERVAL = "15s"

# Adds one Flex call to the fake; the loop of --every calls it.
Feed = Callable[[synthetic.FlexCall], Any]


def _say(text: str) -> None:
    print(f"try-locally: {text}", flush=True)


def _flex_events(call: synthetic.FlexCall, rng: random.Random) -> list[dict[str, Any]]:
    """Every CloudEvent of one call, in the order Twilio sends them: TaskRouter's first, the summaries up to 30 minutes later."""
    events = synthetic.taskrouter_events(call)
    for leg in synthetic.LEGS:
        events.append(synthetic.cloud_event(synthetic.flex_participant_summary(rng, call, leg)))
    for leg in synthetic.LEGS:
        events.append(synthetic.call_event(synthetic.flex_call_summary(rng, call, leg)))
    events.append(synthetic.conference_event(synthetic.flex_conference_summary(rng, call)))
    return events


# -- pull --------------------------------------------------------------------------------------


def _publish(fake: fi.FakeInsights, call: synthetic.FlexCall, rng: random.Random, ended: float) -> None:
    """List one call's summaries in the fake API as the REST resources, the call having ended at Unix time ``ended``."""
    created = ended - 300
    conference = synthetic.flex_conference_summary(rng, call)
    fields = {k: v for k, v in conference.items() if k not in ("conference_sid", "create_time", "start_time", "end_time", "processing_state")}
    fake.add_conference(call.conference_sid, created, processing_state=conference["processing_state"], **fields)
    for leg in synthetic.LEGS:
        fake.add_participant(call.conference_sid, synthetic.flex_participant_summary(rng, call, leg))
        fake.add_call(synthetic.flex_call_summary(rng, call, leg), created)


@contextlib.asynccontextmanager
async def _fake_insights(calls: int, rng: random.Random) -> AsyncIterator[tuple[str, list[str], Feed]]:
    fake = fi.FakeInsights()
    now = time.time()
    for n in range(calls):
        # Spread over the last 40 minutes: within the first poll's --pull.lookback (1 h).
        _publish(fake, synthetic.generate_flex_call(rng), rng, now - 2400 + n * 2400 / max(calls, 1))
    runner = web.AppRunner(fake.app(), access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    url = f"http://127.0.0.1:{port}"
    try:
        yield (
            f"a fake Voice Insights API on {url} lists {calls} Flex calls ({2 * calls} participant and {2 * calls} Call Summaries, "
            f"{calls} Conference Summaries); in pull mode there are no TaskRouter events, so task_queue and team are unknown",
            ["--pull.enabled", f"--pull.api-url={url}", f"--pull.interval={POLL_INTERVAL}"],
            lambda call: _publish(fake, call, rng, time.time()),
        )
    finally:
        await runner.cleanup()


# -- kinesis -----------------------------------------------------------------------------------


def _record(event: dict[str, Any], n: int) -> bytes:
    # A Kinesis sink may write data as a JSON string (twilio-facts.md): every other record does.
    if n % 2:
        event = {**event, "data": json.dumps(event["data"])}
    return json.dumps(event).encode()


@contextlib.asynccontextmanager
async def _kinesalite(calls: int, rng: random.Random) -> AsyncIterator[tuple[str, list[str], Feed]]:
    import botocore.session

    with tempfile.TemporaryDirectory(prefix="try-kinesis-") as tmp:
        kinesalite = start_kinesalite(Path(tmp))
        try:
            events = [event for _ in range(calls) for event in _flex_events(synthetic.generate_flex_call(rng), rng)]
            records = [json.dumps(synthetic.sink_test_event()).encode(), *(_record(e, n) for n, e in enumerate(events))]
            await asyncio.to_thread(create_stream, kinesalite.url, STREAM, records, 1)
            session = botocore.session.get_session()
            session.set_credentials(AWS_ENV["AWS_ACCESS_KEY_ID"], AWS_ENV["AWS_SECRET_ACCESS_KEY"])
            client = session.create_client("kinesis", region_name="us-east-1", endpoint_url=kinesalite.url)

            def put(call: synthetic.FlexCall) -> None:
                for n, event in enumerate(_flex_events(call, rng)):
                    client.put_record(StreamName=STREAM, Data=_record(event, n), PartitionKey=call.task_sid)

            yield (
                f"kinesalite on {kinesalite.url} holds the stream {STREAM}: a sink test event and {calls} Flex calls "
                f"({len(events)} records: each call's 3 TaskRouter events, then 2 participant, 2 Call and 1 Conference Summary)",
                [f"--kinesis.stream-name={STREAM}", "--kinesis.region=us-east-1", f"--kinesis.endpoint-url={kinesalite.url}"],
                lambda call: asyncio.to_thread(put, call),
            )
        finally:
            kinesalite.proc.terminate()
            kinesalite.proc.wait(10)


# -- the exporter, in the foreground --------------------------------------------------------------


@contextlib.asynccontextmanager
async def _state_dir() -> AsyncIterator[Path]:
    with tempfile.TemporaryDirectory(prefix="try-state-") as tmp:
        yield Path(tmp)


async def _feed(feed: Feed, every: float, rng: random.Random) -> None:
    while True:
        await asyncio.sleep(every)  # the pace of the traffic, not a synchronisation
        result = feed(synthetic.generate_flex_call(rng))
        if asyncio.iscoroutine(result):
            await result


async def run(mode: str, calls: int, every: float, metrics_port: int, exporter_flags: Sequence[str]) -> int:
    """Start ``mode``'s fake, then the exporter against it until it exits (its exit status)."""
    rng = random.Random(f"try-{mode}")
    fake = _fake_insights if mode == "pull" else _kinesalite
    env = clean_environ() | ({"TWILIO_ACCOUNT_SID": fi.ACCOUNT_SID, "TWILIO_AUTH_TOKEN": fi.AUTH_TOKEN} if mode == "pull" else AWS_ENV)
    async with fake(calls, rng) as (what, flags, feed), _state_dir() as state:
        _say(what)
        metrics = f"http://127.0.0.1:{metrics_port}"
        # Only the /metrics listener (no webhook here), and a state file as in production: checkpoints
        # and deduplication keys survive a restart of the exporter within one try.
        own = [f"--web.listen-address=127.0.0.1:{metrics_port}", "--no-webhook.enabled", f"--state.path={state / 'state.db'}"]
        proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "exporter", *own, *flags, *exporter_flags, cwd=ROOT, env=env)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            # Ctrl-C reaches the exporter too (one process group); SIGTERM alone is passed on.
            loop.add_signal_handler(sig, lambda: proc.returncode is None and proc.terminate())
        feeding = None
        try:
            waiting = asyncio.create_task(proc.wait())
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as http:

                async def ready() -> bool:
                    if waiting.done():
                        return True
                    async with http.get(metrics + "/-/ready") as response:
                        return response.status == 200

                await until(ready, "the exporter ready", seconds=30, step=0.1, ignoring=(aiohttp.ClientError, asyncio.TimeoutError))
            if waiting.done():
                _say(f"the exporter exited with {proc.returncode}")
                return proc.returncode or 1
            pace = f"one more call every {every:g} s, " if every else ""
            _say(f"the exporter is ready: metrics at {metrics}/metrics ({pace}Ctrl-C stops it)")
            if every:
                feeding = asyncio.create_task(_feed(feed, every, rng))
            return await waiting
        finally:
            if feeding is not None:
                feeding.cancel()
            if proc.returncode is None:
                proc.terminate()
                await proc.wait()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.try_locally", description=__doc__.split("\n\n")[0])
    parser.add_argument("mode", choices=("pull", "kinesis"), help="the fake to start: the Voice Insights REST API, or a Kinesis stream")
    parser.add_argument("--calls", type=int, default=40, help="Flex calls the fake holds at the start (default: %(default)s)")
    parser.add_argument("--every", type=float, default=10.0, help="seconds between two more calls (default: %(default)s; 0: none)")
    parser.add_argument("--metrics-port", type=int, default=9802, help="loopback port of the exporter's /metrics (default: %(default)s)")
    args, exporter_flags = parser.parse_known_args(argv)
    if args.calls < 0 or args.every < 0:
        parser.error("--calls and --every must be 0 or more")
    return asyncio.run(run(args.mode, args.calls, args.every, args.metrics_port, exporter_flags))


if __name__ == "__main__":
    sys.exit(main())
