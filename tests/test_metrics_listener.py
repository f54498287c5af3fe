"""The metrics listener's thread, end to end in one process: probes answered on its loop, /metrics on the owner's.

The real factory, the real listener (exporter/listener.py) on a real socket, the webhook on the
test's loop: what ``serve`` runs, without a process around it.
"""

from __future__ import annotations

import asyncio
import random
import socket
import threading
from collections.abc import AsyncIterator, Iterator

import aiohttp
import pytest
from aiohttp import web
from prometheus_client import CollectorRegistry
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from exporter.app import create_apps
from exporter.config import load_config
from exporter.listener import MetricsListener
from exporter.synthetic import batch_body, cloud_event, generate_summary, sign
from tests.conftest import TOKEN
from tests.helpers import scrub_environment


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ThreadSpy(Collector):
    """A collector that remembers which thread collected it (a scrape renders every collector)."""

    def __init__(self) -> None:
        self.threads: list[int] = []

    def collect(self) -> Iterator[GaugeMetricFamily]:
        self.threads.append(threading.get_ident())
        yield GaugeMetricFamily("spy", "Which thread renders the scrape.", value=1)


@pytest.fixture
async def served(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[tuple[str, str, ThreadSpy]]:
    scrub_environment(monkeypatch)
    monkeypatch.setenv("TWILIO_AUTH_TOKEN", TOKEN)
    metrics_port, webhook_port = free_port(), free_port()
    config = load_config([f"--web.listen-address=127.0.0.1:{metrics_port}", f"--webhook.listen-address=127.0.0.1:{webhook_port}"])
    registry = CollectorRegistry()
    spy = ThreadSpy()
    registry.register(spy)
    apps = create_apps(config, registry)
    listener = MetricsListener(apps.metrics, config.settings.web.listen_address, None, owner=asyncio.get_running_loop())
    await listener.start()
    webhook = web.AppRunner(apps.webhook)
    await webhook.setup()
    await web.TCPSite(webhook, "127.0.0.1", webhook_port).start()
    try:
        yield f"http://127.0.0.1:{metrics_port}", f"http://127.0.0.1:{webhook_port}", spy
    finally:
        await webhook.cleanup()
        await listener.stop()


async def test_probes_answer_on_the_listeners_thread_and_a_scrape_renders_on_the_owners_loop(served: tuple[str, str, ThreadSpy]) -> None:
    metrics, webhook, spy = served
    body = batch_body([cloud_event(generate_summary(random.Random(1)))])
    url, signature = sign(webhook + "/events", body, TOKEN)
    async with aiohttp.ClientSession() as session:
        async with session.get(metrics + "/-/ready") as response:
            assert (response.status, await response.text()) == (200, "Ready.\n")
        async with session.get(metrics + "/-/healthy") as response:
            assert response.status == 200
        async with session.post(url, data=body, headers={"X-Twilio-Signature": signature, "Content-Type": "application/json"}) as response:
            assert await response.json() == {"recorded": 1}
        async with session.get(metrics + "/metrics") as response:
            text = await response.text()
    # The delivery recorded on this loop is in the scrape, rendered on this loop (this thread).
    assert "twilio_conference_participant_summaries_total" in text
    assert any(line.startswith("twilio_conference_participant_summaries_total{") and line.endswith(" 1.0") for line in text.splitlines())
    assert spy.threads == [threading.get_ident()]
