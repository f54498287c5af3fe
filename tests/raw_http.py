"""Deliveries written by hand on their own connections, for tests that decide when a body ends."""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

import pytest
from aiohttp import web
from prometheus_client import CollectorRegistry

from exporter.app import Runtime, create_apps
from exporter.config import load_config
from exporter.synthetic import batch_body, cloud_event, generate_summary, sign
from tests.conftest import TOKEN, Harness, sample_sum
from tests.helpers import path_and_query, scrub_environment

Raw = Callable[["Harness | Served", bytes], Awaitable["RawDelivery"]]


@dataclass
class RawDelivery:
    """A signed delivery written by hand on its own connection, so a test decides when the body ends."""

    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    head: bytes
    body: bytes

    @classmethod
    async def open(cls, url: str, body: bytes) -> RawDelivery:
        signed_url, signature = sign(url, body, TOKEN)
        parts = urlsplit(signed_url)
        head = (
            f"POST {path_and_query(signed_url)} HTTP/1.1\r\nHost: {parts.netloc}\r\nContent-Type: application/json\r\n"
            f"X-Twilio-Signature: {signature}\r\nContent-Length: {len(body)}\r\n\r\n"
        ).encode()
        reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
        return cls(reader, writer, head, body)

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def answer(self) -> tuple[int, dict[str, str], bytes]:
        """Status, headers and body of the answer; fails if none comes within 5 s."""
        async with asyncio.timeout(5):
            status_line = await self.reader.readline()
            headers = {}
            while (line := await self.reader.readline()) not in (b"\r\n", b""):
                name, _, value = line.decode().partition(":")
                headers[name.strip().lower()] = value.strip()
            body = await self.reader.readexactly(int(headers.get("content-length", "0")))
        return int(status_line.split()[1]), headers, body

    async def closed_by_server(self) -> bool:
        async with asyncio.timeout(5):
            return await self.reader.read(1) == b""

    def close(self) -> None:
        self.writer.close()


def forged(delivery: RawDelivery) -> RawDelivery:
    """The same delivery with a signature made with another token."""
    _, signature = sign("http://unused/", delivery.body, "another-token")
    head = delivery.head.decode()
    real = head.split("X-Twilio-Signature: ", 1)[1].split("\r\n", 1)[0]
    delivery.head = head.replace(real, signature).encode()
    return delivery


def announcing(delivery: RawDelivery, length: int) -> RawDelivery:
    """The same delivery with a head announcing ``length`` bytes of body."""
    delivery.head = delivery.head.replace(f"Content-Length: {len(delivery.body)}".encode(), f"Content-Length: {length}".encode())
    return delivery


def body_of(seed: int, count: int = 2, padding: int = 0) -> bytes:
    """A batch of ``count`` summaries; ``padding`` spaces (still JSON) make it as large as a test needs."""
    rng = random.Random(seed)
    return batch_body([cloud_event(generate_summary(rng)) for _ in range(count)]) + b" " * padding


@contextlib.asynccontextmanager
async def raw_connections() -> AsyncIterator[Raw]:
    """Opens :class:`RawDelivery` connections to a harness or a served webhook, all closed at the end."""
    opened: list[RawDelivery] = []

    async def open_delivery(target: Harness | Served, body: bytes) -> RawDelivery:
        opened.append(await RawDelivery.open(target.url(), body))
        return opened[-1]

    try:
        yield open_delivery
    finally:
        for delivery in opened:
            delivery.writer.close()
            try:
                await delivery.writer.wait_closed()
            except ConnectionError:
                pass


@dataclass
class Served:
    """The webhook application served as __main__ serves it (aiohttp's AppRunner defaults).

    The test client's server cancels a handler whose sender hangs up; the exporter's runner does
    not, so what a hang-up does is tested here.
    """

    runtime: Runtime
    registry: CollectorRegistry
    base: str

    def url(self) -> str:
        return self.base + "/events"

    def value(self, name: str, **labels: str) -> float:
        return sample_sum(self.registry, name, **labels)


@contextlib.asynccontextmanager
async def served_webhooks() -> AsyncIterator[Callable[..., Awaitable[Served]]]:
    """Serve webhook applications built from flags as __main__ does; all stopped at the end.

    The caller sets the environment (the auth token) first.
    """
    runners: list[web.AppRunner] = []

    async def serve(*args: str) -> Served:
        registry = CollectorRegistry()
        apps = create_apps(load_config(list(args)), registry)
        runner = web.AppRunner(apps.webhook, access_log=None)
        runners.append(runner)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        host, port = runner.addresses[0][:2]
        return Served(apps.runtime, registry, f"http://{host}:{port}")

    try:
        yield serve
    finally:
        for runner in runners:
            await runner.cleanup()


# --- fixtures (registered by tests/conftest.py) -----------------------------------------------


@pytest.fixture
async def raw() -> AsyncIterator[Raw]:
    async with raw_connections() as open_delivery:
        yield open_delivery


@pytest.fixture
async def serve_webhook(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Callable[..., Awaitable[Served]]]:
    scrub_environment(monkeypatch)
    monkeypatch.setenv("TWILIO_AUTH_TOKEN", TOKEN)
    async with served_webhooks() as serve:
        yield serve
