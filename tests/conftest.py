"""Fixtures: the real app factory, a fresh registry per test, requests signed by the twilio SDK."""

from __future__ import annotations

import copy
import io
import json
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiohttp import ClientResponse
from aiohttp.test_utils import TestClient
from prometheus_client import CollectorRegistry

from exporter.app import Runtime, create_apps
from exporter.config import load_config
from exporter.synthetic import batch_body, cloud_event, generate_summary, sign
from tests.helpers import path_and_query, scrub_environment

# Fixtures of one topic live with its helpers: deliveries written by hand and the webhook served as
# __main__ serves it; kinesalite, its proxy and a stream; pull mode's participant rig.
pytest_plugins = ["tests.raw_http", "tests.kinesis_server", "tests.pull_rig"]

FIXTURES = Path(__file__).parent / "fixtures"
TOKEN = "test-auth-token-primary"
# The TaskRouter join's labels of a summary whose call the join does not know (exporter/join.py).
JOINLESS = {"task_queue": "unknown", "workflow": "unknown", "team": "unknown"}
# The common labels of tests/fixtures/rest_participant.json, whichever path records it.
REST_PARTICIPANT_LABELS = {
    **JOINLESS,
    "call_type": "carrier",
    "call_direction": "outbound",
    "participant_region": "ie1",
    "conference_region": "us1",
    "country_code": "GB",
    "participant_label": "unknown",
}

SECONDARY_TOKEN = "test-auth-token-secondary"


def fixture(name: str) -> Any:
    """A fresh copy of a JSON fixture from tests/fixtures/."""
    return copy.deepcopy(json.loads((FIXTURES / name).read_text()))


# The sample names of each family type. No ``_created``: the exporter turns created series off
# (prometheus_client.disable_created_metrics), so a test asking for one asks for nothing.
_SUFFIXES = {
    "counter": ("_total",),
    "gauge": ("",),
    "histogram": ("_bucket", "_count", "_sum"),
    "info": ("_info",),
    "summary": ("", "_count", "_sum"),
    "stateset": ("",),
    "gaugehistogram": ("_bucket", "_gcount", "_gsum"),
    "unknown": ("",),
}


def sample_sum(registry: CollectorRegistry, name: str, **labels: str) -> float:
    """Sum of the samples called ``name`` whose labels include ``labels`` (0 when none match).

    A name no metric of ``registry`` can have is an error, not 0, and so is a label name no sample
    of ``name`` carries: a misspelt name would otherwise make every ``== 0`` assertion pass whatever
    the code does. A family without samples yet (no child made) cannot say which labels it has: ask
    it without labels (its sum is then 0).
    """
    total = 0.0
    known = False
    label_names: set[str] = set()
    sampled = False
    for family in registry.collect():
        if not known and any(name == family.name + suffix for suffix in _SUFFIXES.get(family.type, ("",))):
            known = True
        for sample in family.samples:
            if sample.name == name:
                known = sampled = True
                label_names.update(sample.labels)
                if all(sample.labels.get(k) == v for k, v in labels.items()):
                    total += sample.value
    if not known:
        raise KeyError(f"no metric of this registry is called {name!r}")
    if unknown := sorted(set(labels) - label_names):
        if not sampled:
            raise KeyError(f"{name!r} has no sample yet, so the label names {unknown} cannot be checked: ask without labels")
        raise KeyError(f"no sample of {name!r} has the label names {unknown} (its labels: {sorted(label_names)})")
    return total


def snapshot(registry: CollectorRegistry, prefix: str = "twilio_conference_participant_") -> dict[tuple[str, tuple], float]:
    """Every sample under ``prefix``, to show that something did not change.

    A prefix no metric of ``registry`` has is an error: two empty snapshots compare equal whatever
    the code does.
    """
    families = [family for family in registry.collect() if family.name.startswith(prefix)]
    if not families:
        raise KeyError(f"no metric of this registry is called {prefix!r}...")
    return {(s.name, tuple(sorted(s.labels.items()))): s.value for family in families for s in family.samples if s.name.startswith(prefix)}


@dataclass
class Harness:
    """The webhook and metrics applications of one exporter, with a signing client."""

    client: TestClient
    metrics: TestClient
    registry: CollectorRegistry
    runtime: Runtime
    path: str = "/events"

    def url(self, path: str | None = None) -> str:
        return str(self.client.make_url(path or self.path))

    async def post(
        self,
        payload: Any,
        *,
        token: str | None = TOKEN,
        url: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> ClientResponse:
        """POST ``payload`` (bytes, or a JSON value) signed for ``url`` with ``token`` (None: unsigned)."""
        body = payload if isinstance(payload, bytes) else batch_body(payload) if isinstance(payload, list) else json.dumps(payload).encode()
        target = url or self.url()
        all_headers = {"Content-Type": "application/json", **(headers or {})}
        if token is not None:
            target, signature = sign(target, body, token)
            all_headers["X-Twilio-Signature"] = signature
        # The request goes to the test server whatever host the signed URL names (proxy tests).
        # A body over 1 MiB as a stream: aiohttp warns (an error here) that raw bytes that large block the loop.
        data = io.BytesIO(body) if len(body) > 2**20 else body
        return await self.client.post(path_and_query(target), data=data, headers=all_headers)

    def value(self, name: str, **labels: str) -> float:
        return sample_sum(self.registry, name, **labels)


HarnessFactory = Callable[..., Awaitable[Harness]]


async def post_all(harness: Harness, batches: list[list[dict[str, Any]]]) -> None:
    """Deliver each batch in turn; each must be answered 200."""
    for batch in batches:
        assert (await harness.post(batch)).status == 200


def deliveries(count: int, seed: int = 7, per_delivery: int = 1) -> list[list[dict[str, Any]]]:
    """``count`` deliveries of ``per_delivery`` seeded participant summaries each, with event ids of their own."""
    rng = random.Random(seed)
    out = []
    for i in range(count):
        out.append([cloud_event(generate_summary(rng), event_id=f"EZ{seed}-{i}-{j}") for j in range(per_delivery)])
    return out


@pytest.fixture
def make_harness(aiohttp_client: Any, monkeypatch: pytest.MonkeyPatch) -> HarnessFactory:
    """Build an exporter from command-line ``args`` and environment ``env`` (defaults: signed, one token)."""
    scrub_environment(monkeypatch)

    async def build(*args: str, env: dict[str, str] | None = None) -> Harness:
        for name, value in ({"TWILIO_AUTH_TOKEN": TOKEN} if env is None else env).items():
            monkeypatch.setenv(name, value)
        registry = CollectorRegistry()
        apps = create_apps(load_config(list(args)), registry)
        return Harness(
            client=await aiohttp_client(apps.webhook),
            metrics=await aiohttp_client(apps.metrics),
            registry=registry,
            runtime=apps.runtime,
            path=apps.runtime.config.settings.webhook.path,
        )

    return build


@pytest.fixture
async def harness(make_harness: HarnessFactory) -> Harness:
    return await make_harness()
