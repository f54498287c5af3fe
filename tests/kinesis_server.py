"""A local Kinesis for the tests: kinesalite (npm), behind a thin proxy that makes it answer as AWS documents.

Why kinesalite rather than moto's server mode (both tried, moto 5.2.5 and kinesalite 3.3.3):
kinesalite is the more faithful of the two where a consumer can go wrong. After a split it writes
to the children (moto keeps writing to the closed parent); a drained closed shard ends with no
``NextShardIterator`` (moto's never ends); its sequence numbers are AWS-shaped 56-digit numbers
(moto's are 1, 2, 3); its iterators expire after 5 minutes and are opaque; ``ListShards`` honours
``ExclusiveStartShardId``; it is a single-threaded server (moto's backend is not thread-safe under
its threaded server). It speaks the JSON protocol the AWS SDK uses for Kinesis.

Where kinesalite still differs from AWS's documented behaviour, :class:`AwsProxy` (an aiohttp
server in the test's own loop, between the SDK and kinesalite) corrects it:

- ``GetRecords`` at the end of a closed shard: AWS returns ``ChildShards`` (the shards that
  continue its hash range) with the final, iterator-less answer; kinesalite never does. The
  proxy adds them from kinesalite's own shard list.
- ``ListShards``: AWS answers at most ``MaxResults`` shards (1000 by default) and a ``NextToken``
  for the rest; kinesalite always answers every shard. The proxy pages (``page_size``, small in
  the tests so that paging is exercised).
- ``MillisBehindLatest``: AWS reports how far behind the tip a read is; kinesalite always says 0
  for an open shard. A test sets the figure AWS would give per shard (``behind_ms``).
- Throttling (``ProvisionedThroughputExceededException``, the 5 reads/s per shard limit;
  ``LimitExceededException`` for the control calls) and ``ExpiredIteratorException`` before
  5 minutes are not something a test can wait for: :meth:`AwsProxy.fail` makes the next calls of
  an operation answer exactly as AWS does (HTTP 400, ``__type`` and ``message``).

Not corrected (the consumer does not depend on them): kinesalite ignores ``ShardFilter``; it
answers one extra empty page before the end of a drained shard (AWS may too).
"""

from __future__ import annotations

import base64
import json
import shutil
import socket
import subprocess
import uuid
from collections import Counter, deque
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiobotocore.session import get_session
from aiohttp import web

from tests.helpers import until, until_blocking

ROOT = Path(__file__).resolve().parent.parent
KINESALITE = ROOT / "tests" / "kinesalite" / "node_modules" / "kinesalite" / "index.js"
INSTALL = "make test-deps (npm ci --prefix tests/kinesalite)"
JSON_11 = "application/x-amz-json-1.1"
# Hash keys that land on shard 0 and shard 1 of a two-shard stream, and on the two children of
# shard 0 split at 2**126.
SHARD0, SHARD1 = "0", str(2**127)
CHILD_LOW, CHILD_HIGH = "1", str(2**126)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass
class Kinesalite:
    proc: subprocess.Popen[bytes]
    url: str
    log: Path


def start_kinesalite(log_dir: Path) -> Kinesalite:
    """kinesalite on a free loopback port, in memory, creating and resharding streams at once (AWS takes seconds)."""
    node = shutil.which("node")
    if node is None or not KINESALITE.is_file():
        raise RuntimeError(f"kinesalite is not installed: run {INSTALL}")
    port = free_port()
    log = log_dir / "kinesalite.log"
    with log.open("wb") as out:
        # Through kinesalite's API rather than its cli.js, which listens on every interface: loopback only here.
        launcher = (
            "require(process.argv[1])({createStreamMs: 0, deleteStreamMs: 0, updateStreamMs: 0, shardLimit: 100000})"
            ".listen(+process.argv[2], '127.0.0.1')"
        )
        proc = subprocess.Popen([node, "-e", launcher, str(KINESALITE.parent), str(port)], stdout=out, stderr=subprocess.STDOUT)

    def listening() -> bool:
        if proc.poll() is not None:
            raise RuntimeError(f"kinesalite exited with {proc.returncode}: {log.read_text()}")
        with socket.socket() as s:
            return s.connect_ex(("127.0.0.1", port)) == 0

    try:
        until_blocking(listening, "kinesalite listening", seconds=20, step=0.05)
    except TimeoutError as exc:
        proc.kill()
        raise RuntimeError(f"{exc}: {log.read_text()}") from None
    return Kinesalite(proc, f"http://127.0.0.1:{port}", log)


@dataclass
class AwsProxy:
    """Between the AWS SDK and kinesalite; see the module docstring for what it corrects and injects."""

    upstream: str
    page_size: int = 2
    behind_ms: dict[str, int] = field(default_factory=dict)
    calls: Counter[str] = field(default_factory=Counter)
    _faults: dict[str, deque[str]] = field(default_factory=dict)
    _iterators: dict[str, str] = field(default_factory=dict)  # shard iterator -> shard id
    _streams: dict[str, str] = field(default_factory=dict)  # shard id -> stream name (kinesalite's shard ids repeat across streams)
    _session: aiohttp.ClientSession | None = None
    _runner: web.AppRunner | None = None
    url: str = ""

    def fail(self, operation: str, code: str, times: int = 1) -> None:
        """Answer the next ``times`` calls of ``operation`` (``GetRecords``, ``ListShards``, ...) with AWS's error ``code``."""
        self._faults.setdefault(operation, deque()).extend([code] * times)

    async def start(self) -> None:
        self._session = aiohttp.ClientSession()
        app = web.Application()
        app.router.add_post("/", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        port = free_port()
        await web.TCPSite(self._runner, "127.0.0.1", port).start()
        self.url = f"http://127.0.0.1:{port}"

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        if self._session is not None:
            await self._session.close()

    async def _handle(self, request: web.Request) -> web.Response:
        operation = request.headers.get("X-Amz-Target", "").rpartition(".")[2]
        body = await request.read()
        self.calls[operation] += 1
        faults = self._faults.get(operation)
        if faults:
            code = faults.popleft()
            return self._error(400, code, _MESSAGES.get(code, code))
        params = json.loads(body or b"{}")
        if operation == "ListShards":
            return await self._list_shards(request, params)
        status, answer = await self._forward(request, body)
        if status == 200 and operation == "GetShardIterator":
            self._iterators[answer["ShardIterator"]] = params["ShardId"]
            self._streams[params["ShardId"]] = params.get("StreamName", "")
        if status == 200 and operation == "GetRecords":
            shard_id = self._iterators.get(params["ShardIterator"], "")
            if answer.get("NextShardIterator"):
                self._iterators[answer["NextShardIterator"]] = shard_id
                if shard_id in self.behind_ms:
                    answer["MillisBehindLatest"] = self.behind_ms[shard_id]
            else:
                # AWS: the final answer for a closed shard names its children (ChildShards).
                shards = await self._all_shards(request, self._streams.get(shard_id, "")) or []
                answer["ChildShards"] = [
                    {
                        "ShardId": s["ShardId"],
                        "ParentShards": [p for p in (s.get("ParentShardId"), s.get("AdjacentParentShardId")) if p],
                        "HashKeyRange": s["HashKeyRange"],
                    }
                    for s in shards
                    if shard_id in (s.get("ParentShardId"), s.get("AdjacentParentShardId"))
                ]
        return web.Response(status=status, body=json.dumps(answer).encode(), content_type=JSON_11)

    async def _list_shards(self, request: web.Request, params: dict[str, Any]) -> web.Response:
        """AWS pages ListShards; the NextToken here is the stream and the offset, opaque to the SDK."""
        if "NextToken" in params:
            stream, offset = json.loads(base64.b64decode(params["NextToken"]))
        else:
            stream, offset = params["StreamName"], 0
        shards = await self._all_shards(request, stream)
        if shards is None:
            return self._error(400, "ResourceNotFoundException", f"Stream {stream} under account 000000000000 not found.")
        size = min(self.page_size, params.get("MaxResults", 1000))
        answer: dict[str, Any] = {"Shards": shards[offset : offset + size]}
        if offset + size < len(shards):
            answer["NextToken"] = base64.b64encode(json.dumps([stream, offset + size]).encode()).decode()
        return web.Response(body=json.dumps(answer).encode(), content_type=JSON_11)

    async def _all_shards(self, request: web.Request, stream: str) -> Any:
        headers = {**request.headers, "X-Amz-Target": "Kinesis_20131202.ListShards"}
        status, answer = await self._forward(request, json.dumps({"StreamName": stream}).encode(), headers)
        if status != 200:
            return None
        for shard in answer["Shards"]:
            self._streams[shard["ShardId"]] = stream
        return answer["Shards"]

    async def _forward(self, request: web.Request, body: bytes, headers: Any = None) -> tuple[int, Any]:
        assert self._session is not None
        # kinesalite does not check signatures, so the SDK's headers go through as they are.
        forwarded = {k: v for k, v in (headers or request.headers).items() if k.lower() not in ("host", "content-length")}
        async with self._session.post(self.upstream, data=body, headers=forwarded) as response:
            return response.status, json.loads(await response.read() or b"{}")

    @staticmethod
    def _error(status: int, code: str, message: str) -> web.Response:
        return web.Response(status=status, body=json.dumps({"__type": code, "message": message}).encode(), content_type=JSON_11)


# AWS's messages for the errors the tests inject.
_MESSAGES = {
    "ProvisionedThroughputExceededException": "Rate exceeded for shard shardId-000000000000 in stream s under account 000000000000.",
    "LimitExceededException": "Rate exceeded for stream s under account 000000000000.",
    "ExpiredIteratorException": "Iterator expired. The iterator was created at time Sun Nov 22 01:00:00 UTC 2026 while right now it is "
    "Sun Nov 22 01:05:01 UTC 2026 which is further in the future than the tolerated delay of 300000 milliseconds.",
}


# The standard credential chain from the environment, for exporter processes the tests start.
AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "AKIDEXAMPLE",
    "AWS_SECRET_ACCESS_KEY": "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
    "AWS_CONFIG_FILE": "/nonexistent",
    "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent",
    "AWS_EC2_METADATA_DISABLED": "true",
}


def create_stream(url: str, name: str, records: list[bytes], shards: int = 2) -> None:
    """A stream on kinesalite holding ``records``, written with the AWS SDK (botocore, synchronous: for fixtures)."""
    import botocore.session

    session = botocore.session.get_session()
    session.set_credentials(AWS_ENV["AWS_ACCESS_KEY_ID"], AWS_ENV["AWS_SECRET_ACCESS_KEY"])
    client = session.create_client("kinesis", region_name="us-east-1", endpoint_url=url)
    client.create_stream(StreamName=name, ShardCount=shards)
    client.get_waiter("stream_exists").wait(StreamName=name, WaiterConfig={"Delay": 0.05, "MaxAttempts": 200})
    for n, data in enumerate(records):
        client.put_record(StreamName=name, Data=data, PartitionKey=f"p{n}")


class Stream:
    """One stream of a test, written with the SDK (an aiobotocore client) straight to kinesalite."""

    def __init__(self, client: Any, name: str) -> None:
        self.client = client
        self.name = name

    async def put(self, data: bytes | dict[str, Any], hash_key: str = SHARD0) -> str:
        body = data if isinstance(data, bytes) else json.dumps(data).encode()
        answer = await self.client.put_record(StreamName=self.name, Data=body, PartitionKey="p", ExplicitHashKey=hash_key)
        return str(answer["SequenceNumber"])

    async def split(self, shard_id: str, at: str) -> None:
        await self.client.split_shard(StreamName=self.name, ShardToSplit=shard_id, NewStartingHashKey=at)
        await self.active()

    async def active(self) -> None:
        async def is_active() -> bool:
            summary = await self.client.describe_stream_summary(StreamName=self.name)
            return bool(summary["StreamDescriptionSummary"]["StreamStatus"] == "ACTIVE")

        await until(is_active, "the stream ACTIVE", step=0.01)  # kinesalite with --createStreamMs 0: active at once; bounded anyway


# --- fixtures (registered by tests/conftest.py) -----------------------------------------------


@pytest.fixture(scope="module")
def kinesalite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Kinesalite]:
    """One kinesalite per test module."""
    server = start_kinesalite(tmp_path_factory.mktemp("kinesalite"))
    yield server
    server.proc.terminate()
    server.proc.wait(10)


@pytest.fixture
def aws_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """The standard credential chain, from the environment only (never a developer's ~/.aws)."""
    for name, value in AWS_ENV.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)


@pytest.fixture
async def proxy(kinesalite: Kinesalite) -> AsyncIterator[AwsProxy]:
    p = AwsProxy(kinesalite.url)
    await p.start()
    yield p
    await p.close()


@pytest.fixture
async def stream(kinesalite: Kinesalite) -> AsyncIterator[Stream]:
    """A new two-shard stream on kinesalite, ACTIVE."""
    async with get_session().create_client("kinesis", region_name="us-east-1", endpoint_url=kinesalite.url) as client:
        s = Stream(client, f"twilio-{uuid.uuid4().hex[:12]}")
        await client.create_stream(StreamName=s.name, ShardCount=2)
        await s.active()
        yield s
