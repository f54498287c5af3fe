"""Pull mode's participant rig: a poller on the real configuration, pipeline and state store, against
:class:`tests.fake_insights.FakeInsights`, driven by ``poll_once()`` and a clock of its own.

Registered by tests/conftest.py (``pytest_plugins``): its fixtures ``fake``, ``fake_server`` and
``make_rig`` serve tests/test_pull.py and tests/test_write_path.py. tests/test_pull_summaries.py
declares its own (calls and conferences, a shared clock fixture), which take precedence there.
"""

from __future__ import annotations

import random
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestServer
from prometheus_client import CollectorRegistry

from exporter.app import Runtime
from exporter.config import load_config
from exporter.doors.pull.poller import Poller
from exporter.metrics import build_pull_metrics
from exporter.state.store import StateStore
from exporter.synthetic import generate_summary
from tests import fake_insights as fi
from tests.conftest import sample_sum
from tests.helpers import FakeClock, scrub_environment

P = "twilio_conference_participant_"
PARTICIPANTS_ONLY = "--pull.summaries=participant"
CREDENTIALS = {"TWILIO_ACCOUNT_SID": fi.ACCOUNT_SID, "TWILIO_AUTH_TOKEN": fi.AUTH_TOKEN}


def cf(n: int) -> str:
    return f"CF{n:032d}"


def cp(n: int) -> str:
    return f"CP{n:032d}"


def participant(n: int, seed: int | None = None, **overrides: Any) -> dict[str, Any]:
    """A REST-shaped summary with the quirks real answers have; US so it never mixes with the GB fixture."""
    summary = generate_summary(random.Random(n if seed is None else seed), participant_sid=cp(n), country_code="US", **overrides)
    if n % 2:  # half name the status call_state, as some payloads do
        summary["call_state"] = summary.pop("call_status")
    summary["last_rtp_count"] = 1000 + n  # undocumented keys
    summary["early_media"] = None
    if summary["events"] is None:
        summary["events"] = {"mute": [1636007397844 + n]}  # milliseconds
    return summary


@dataclass
class Rig:
    """A poller wired to the fake API, the pipeline the webhook uses, a registry and a state store."""

    fake: fi.FakeInsights
    poller: Poller
    runtime: Runtime
    registry: CollectorRegistry
    time: FakeClock
    store: StateStore

    def value(self, name: str, **labels: str) -> float:
        return sample_sum(self.registry, name, **labels)

    async def poll(self) -> bool:
        return await self.poller.poll_once()


RigFactory = Callable[..., Awaitable[Rig]]


@pytest.fixture
async def fake() -> fi.FakeInsights:
    return fi.FakeInsights()


@pytest.fixture
async def fake_server(aiohttp_server: Any, fake: fi.FakeInsights) -> TestServer:
    return await aiohttp_server(fake.app())


@pytest.fixture
async def make_rig(fake: fi.FakeInsights, fake_server: TestServer, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[RigFactory]:
    opened: list[Rig] = []
    scrub_environment(monkeypatch)

    async def build(*flags: str, env: dict[str, str] | None = None, state: Path | None = None, clock: FakeClock | None = None) -> Rig:
        for name, value in (CREDENTIALS if env is None else env).items():
            monkeypatch.setenv(name, value)
        state_flag = [f"--state.path={state}"] if state is not None else []
        config = load_config(
            ["--pull.enabled", f"--pull.api-url=http://127.0.0.1:{fake_server.port}", "--pull.page-size=2", PARTICIPANTS_ONLY, *state_flag, *flags]
        )
        registry = CollectorRegistry()
        t = clock or FakeClock()
        runtime = Runtime.build(config, registry, clock=t)
        store = runtime.state
        await runtime.durable.open()
        poller = Poller.build(config, runtime.pipeline, store, build_pull_metrics(registry), clock=t, sleep=t.sleep)
        await poller.start()
        rig = Rig(fake, poller, runtime, registry, t, store)
        opened.append(rig)
        return rig

    yield build
    for rig in opened:
        await rig.poller.stop()
        await rig.runtime.durable.close()


def conference_with(fake: fi.FakeInsights, n: int, created: float, participants: list[dict[str, Any]], state: str = "complete") -> str:
    sid = fake.add_conference(cf(n), created, processing_state=state)
    for summary in participants:
        fake.add_participant(sid, summary)
    return sid
