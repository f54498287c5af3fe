"""/-/ready per mode, with the real factory: ready after every door started, Kinesis ready only while its shards list.

The webhook application is started as ``serve`` starts it (its cleanup contexts: the state, the
Kinesis consumer, readiness last), without listening (``--no-webhook.enabled``); the probe asks
the metrics application.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client import CollectorRegistry

from exporter import listener
from exporter.app import Apps, create_apps
from exporter.config import load_config
from tests.exporter_process import free_port
from tests.helpers import until
from tests.kinesis_server import AwsProxy, Stream

# The SDK's credential chain from the environment only, for every test here (tests/conftest.py).
pytestmark = pytest.mark.usefixtures("aws_environment")


@pytest.fixture
async def started(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Callable[..., Any]]:
    runners: list[web.AppRunner] = []
    clients: list[TestClient] = []

    async def start(*argv: str) -> tuple[Apps, TestClient]:
        apps = create_apps(load_config(list(argv)), CollectorRegistry())
        client = TestClient(TestServer(apps.metrics))
        await client.start_server()
        clients.append(client)
        runner = web.AppRunner(apps.webhook)
        await runner.setup()  # its cleanup contexts start; nothing listens
        runners.append(runner)
        return apps, client

    yield start
    for runner in runners:
        await runner.cleanup()
    for client in clients:
        await client.close()


async def probe(client: TestClient) -> tuple[int, str]:
    response = await client.get("/-/ready")
    return response.status, await response.text()


async def test_kinesis_mode_is_not_ready_while_listing_the_shards_fails_and_ready_once_it_answers(
    started: Callable[..., Any],
    proxy: AwsProxy,
    stream: Stream,
) -> None:
    proxy.fail("ListShards", "AccessDeniedException", times=3)
    apps, client = await started(
        f"--kinesis.stream-name={stream.name}",
        f"--kinesis.endpoint-url={proxy.url}",
        "--kinesis.region=us-east-1",
        "--kinesis.backoff=50ms",
        "--kinesis.max-backoff=100ms",
        "--no-webhook.enabled",
    )
    failing = (503, "Not ready: listing the Kinesis stream's shards fails (see kinesis_errors_total and the log).\n")
    statuses: list[tuple[int, str]] = []

    async def seen(expected: tuple[int, str]) -> bool:
        statuses.append(await probe(client))
        return statuses[-1] == expected

    # Polled until each state shows (a listing is retried after its backoff), with a bound.
    for expected in (failing, (200, "Ready.\n")):
        end = time.monotonic() + 20
        while not await seen(expected):
            assert time.monotonic() < end, statuses[-5:]
            await asyncio.sleep(0.01)  # a polling step, not synchronisation: the loop ends on the answer
    assert proxy.calls["ListShards"] == 4  # three refused, the fourth answered
    assert apps.runtime.ready is True


async def test_readiness_comes_after_the_state_is_open_and_goes_before_it_closes(
    started: Callable[..., Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TWILIO_AUTH_TOKEN", "token")
    seen: list[tuple[str, bool]] = []
    apps = create_apps(load_config([]), CollectorRegistry())
    durable, runtime = apps.runtime.durable, apps.runtime
    open_, close = durable.open, durable.close

    async def watched_open() -> None:
        seen.append(("open", runtime.ready))
        await open_()

    async def watched_close() -> None:
        seen.append(("close", runtime.ready))
        await close()

    monkeypatch.setattr(durable, "open", watched_open)
    monkeypatch.setattr(durable, "close", watched_close)
    runner = web.AppRunner(apps.webhook)
    await runner.setup()
    seen.append(("started", runtime.ready))
    await runner.cleanup()
    seen.append(("stopped", runtime.ready))

    assert seen == [("open", False), ("started", True), ("close", False), ("stopped", False)]


async def test_serve_is_not_ready_until_the_webhook_listener_listens(monkeypatch: pytest.MonkeyPatch) -> None:
    """The readiness context ends the webhook's setup(), before its site listens: the probe waits for the site.

    Seen in CI as a restarted exporter answering ready while its webhook port still refused connections.
    """
    monkeypatch.setenv("TWILIO_AUTH_TOKEN", "token")
    metrics_port, webhook_port = free_port(), free_port()
    config = load_config([f"--web.listen-address=127.0.0.1:{metrics_port}", f"--webhook.listen-address=127.0.0.1:{webhook_port}"])
    seen: list[tuple[int, str]] = []
    real_listen = listener.listen

    async def probe() -> tuple[int, str]:
        async with aiohttp.ClientSession() as session, session.get(f"http://127.0.0.1:{metrics_port}/-/ready") as response:
            return response.status, await response.text()

    async def watched_listen(runner: web.AppRunner, address: str, flag: str, context: Any = None) -> web.TCPSite:
        if flag == "--webhook.listen-address":  # not the metrics listener, on its own thread's loop
            seen.append(await probe())
        return await real_listen(runner, address, flag, context)

    monkeypatch.setattr(listener, "listen", watched_listen)
    serving = asyncio.ensure_future(listener.serve(config))
    try:
        await until(lambda: bool(seen) or serving.done())
        assert seen == [(503, "Not ready: the webhook listener is not listening yet.\n")]

        async def ready() -> bool:
            return await probe() == (200, "Ready.\n")

        await until(ready, "ready once listening")
        # Ready, so the webhook port takes connections.
        _, writer = await asyncio.open_connection("127.0.0.1", webhook_port)
        writer.close()
    finally:
        os.kill(os.getpid(), signal.SIGTERM)  # serve's own handler: a graceful stop
        await serving
