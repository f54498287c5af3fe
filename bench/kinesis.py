"""Records per second read from a Kinesis stream through the AWS SDK, on one core.

    python -m bench.kinesis [--records 20000] [--rounds 3]

kinesalite (tests/kinesalite, ``make test-deps``) serves one stream of realistic summary events on
core 1; the reader runs on core 0. Each round reads the whole stream four ways, in the same round
so the ratios hold on a noisy machine:

- ``bare``: GetRecords posted with aiohttp and its JSON decoded by hand, no SDK (the ceiling);
- ``aiobotocore``: the SDK on the event loop, as exporter/doors/kinesis/consumer.py does;
- ``botocore-thread``: the synchronous SDK in a worker thread (``asyncio.to_thread``);
- ``consumer``: the exporter's consumer end to end (aiobotocore, JSON, validation, recording).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import random
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import botocore.session
from aiobotocore.session import get_session
from prometheus_client import CollectorRegistry

from exporter.config import KinesisSettings, load_config
from exporter.doors.kinesis.api import KinesisApi
from exporter.doors.kinesis.consumer import KinesisConsumer
from exporter.metrics import build_kinesis_metrics
from exporter.runtime import Runtime
from exporter.synthetic import cloud_event, generate_summary
from tests.kinesis_server import AWS_ENV, start_kinesalite

STREAM = "bench"
LIMIT = 1000


def fill(url: str, count: int) -> int:
    session = botocore.session.get_session()
    session.set_credentials(AWS_ENV["AWS_ACCESS_KEY_ID"], AWS_ENV["AWS_SECRET_ACCESS_KEY"])
    client = session.create_client("kinesis", region_name="us-east-1", endpoint_url=url)
    client.create_stream(StreamName=STREAM, ShardCount=1)
    client.get_waiter("stream_exists").wait(StreamName=STREAM, WaiterConfig={"Delay": 0.05, "MaxAttempts": 200})
    rng = random.Random(1)
    size = 0
    for start in range(0, count, 500):
        entries = []
        for n in range(start, min(count, start + 500)):
            data = json.dumps(cloud_event(generate_summary(rng, participant_sid=f"CP{n:032d}"))).encode()
            size += len(data)
            entries.append({"Data": data, "PartitionKey": str(n)})
        client.put_records(StreamName=STREAM, Records=entries)
    return size // count


async def read_bare(url: str) -> int:
    headers = {
        "Content-Type": "application/x-amz-json-1.1",
        "Authorization": "AWS4-HMAC-SHA256 Credential=a/b/c/d/e, SignedHeaders=x, Signature=y",
        "X-Amz-Date": "20261122T000000Z",
    }
    async with aiohttp.ClientSession() as http:

        async def call(target: str, body: dict[str, Any]) -> Any:
            async with http.post(url, json=body, headers={**headers, "X-Amz-Target": f"Kinesis_20131202.{target}"}) as r:
                return json.loads(await r.read())

        answer = await call("GetShardIterator", {"StreamName": STREAM, "ShardId": "shardId-000000000000", "ShardIteratorType": "TRIM_HORIZON"})
        iterator, total = answer["ShardIterator"], 0
        while True:
            page = await call("GetRecords", {"ShardIterator": iterator, "Limit": LIMIT})
            for record in page["Records"]:
                base64.b64decode(record["Data"])
            total += len(page["Records"])
            if not page["Records"]:
                return total
            iterator = page["NextShardIterator"]


async def read_aiobotocore(url: str) -> int:
    async with get_session().create_client("kinesis", region_name="us-east-1", endpoint_url=url) as client:
        answer = await client.get_shard_iterator(StreamName=STREAM, ShardId="shardId-000000000000", ShardIteratorType="TRIM_HORIZON")
        iterator, total = answer["ShardIterator"], 0
        while True:
            page = await client.get_records(ShardIterator=iterator, Limit=LIMIT)
            total += len(page["Records"])
            if not page["Records"]:
                return total
            iterator = page["NextShardIterator"]


async def read_botocore_thread(url: str) -> int:
    client = botocore.session.get_session().create_client("kinesis", region_name="us-east-1", endpoint_url=url)
    answer = await asyncio.to_thread(client.get_shard_iterator, StreamName=STREAM, ShardId="shardId-000000000000", ShardIteratorType="TRIM_HORIZON")
    iterator, total = answer["ShardIterator"], 0
    while True:
        page = await asyncio.to_thread(client.get_records, ShardIterator=iterator, Limit=LIMIT)
        total += len(page["Records"])
        if not page["Records"]:
            client.close()
            return total
        iterator = page["NextShardIterator"]


async def read_consumer(url: str) -> int:
    registry = CollectorRegistry()
    runtime = Runtime.build(load_config([]), registry)
    settings = KinesisSettings(stream_name=STREAM, region="us-east-1", endpoint_url=url, batch_size=LIMIT)
    km = build_kinesis_metrics(CollectorRegistry())
    consumer = KinesisConsumer(settings, KinesisApi(settings), runtime.pipeline, km)
    await consumer.start()
    try:
        await consumer.catch_up()
    finally:
        await consumer.stop()
    return int(
        registry.get_sample_value("twilio_insights_exporter_events_total", {"source": "kinesis", "type": "summary", "outcome": "recorded"}) or 0
    )


READERS = {"bare": read_bare, "aiobotocore": read_aiobotocore, "botocore-thread": read_botocore_thread, "consumer": read_consumer}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=20000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    os.environ.update(AWS_ENV)
    server = start_kinesalite(Path(tempfile.mkdtemp()))
    try:
        if hasattr(os, "sched_setaffinity"):
            os.sched_setaffinity(server.proc.pid, {1})
            os.sched_setaffinity(0, {0})
        size = fill(server.url, args.records)
        print(f"{args.records} records of ~{size} bytes, one shard, pages of {LIMIT}; reader on core 0, kinesalite on core 1")
        # Records per CPU second of the reader (its threads included): what one core can read,
        # whatever kinesalite's own speed; wall-clock rates beside them. The order rotates per round.
        cpu: dict[str, list[float]] = {name: [] for name in READERS}
        wall: dict[str, list[float]] = {name: [] for name in READERS}
        names = list(READERS)
        for round_ in range(args.rounds):
            for name in names[round_ % len(names) :] + names[: round_ % len(names)]:
                began, began_cpu = time.perf_counter(), time.process_time()
                count = asyncio.run(READERS[name](server.url))
                elapsed, elapsed_cpu = time.perf_counter() - began, time.process_time() - began_cpu
                assert count == args.records, f"{name} read {count}"
                cpu[name].append(count / elapsed_cpu)
                wall[name].append(count / elapsed)
        bare = statistics.median(cpu["bare"])
        for name in names:
            median = statistics.median(cpu[name])
            print(
                f"{name:16} {median:9,.0f} records per CPU second ({median / bare:.2f} x bare; runs: {', '.join(f'{v:,.0f}' for v in cpu[name])}); "
                f"wall {statistics.median(wall[name]):,.0f}/s"
            )
    finally:
        server.proc.terminate()
        server.proc.wait(10)


if __name__ == "__main__":
    main()
