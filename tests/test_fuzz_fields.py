"""Values of every kind in every field position of a valid, signed summary (issue 9).

Each example takes the reference summary, puts a hostile value at one position (any field, any
depth), sends it as an object or as a ``data`` string, retries the delivery, and scrapes
``/metrics`` in both formats. Invariants: never a 5xx; participant metrics change only when the
summary is recorded, and then exactly once whatever is retried; the exposition always parses
with prometheus_client's own parsers (and ``promtool check metrics`` at the end).
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry
from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse_openmetrics
from prometheus_client.parser import text_string_to_metric_families as parse_text

from exporter.app import create_apps
from exporter.config import load_config
from exporter.synthetic import batch_body, sign
from tests.conftest import TOKEN, fixture, sample_sum, snapshot

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "120"))
OPENMETRICS = "application/openmetrics-text; version=1.0.0"


def paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every position in a JSON value: each key of each object, each index of each list."""
    found = [prefix] if prefix else []
    if isinstance(value, dict):
        for key, inner in value.items():
            found += paths(inner, (*prefix, key))
    elif isinstance(value, list):
        for i, inner in enumerate(value):
            found += paths(inner, (*prefix, i))
    return found


REFERENCE = fixture("reference_event.json")
POSITIONS = paths(REFERENCE["data"])


def nested(depth: int) -> Any:
    value: Any = 1
    for _ in range(depth):
        value = [value]
    return value


hostile = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**80), max_value=2**80)
    | st.sampled_from([10**300, -(10**300), 2**63, 2**64 + 1])
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.sampled_from([-0.0, 5e-324, 1.7976931348623157e308, 1e16, 4.9999999])
    | st.text(max_size=80)
    | st.sampled_from(["\x00", "\n\r\t", "\u2028", "\ufeff", "\U0001f4de" * 20, "a" * 10_000, '"}\\', "NaN", "Infinity", "1e999"])
    | st.integers(min_value=1, max_value=300).map(nested)
    | st.lists(st.text(max_size=5), max_size=5)
    | st.dictionaries(st.text(max_size=5), st.integers() | st.text(max_size=5), max_size=4)
)


def put(document: Any, path: tuple[Any, ...], value: Any) -> Any:
    target = document
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    return document


async def deliver_twice(event: dict[str, Any]) -> None:
    os.environ["TWILIO_AUTH_TOKEN"] = TOKEN
    try:
        config = load_config([])
    finally:
        del os.environ["TWILIO_AUTH_TOKEN"]
    registry = CollectorRegistry()
    apps = create_apps(config, registry)
    async with TestClient(TestServer(apps.webhook)) as client, TestClient(TestServer(apps.metrics)) as metrics:
        body = batch_body([event])
        answers = []
        for _ in range(2):  # the delivery and Twilio's retry of it
            url, signature = sign(str(client.make_url("/events")), body, TOKEN)
            path = url.split(str(client.make_url("")).rstrip("/"), 1)[1]
            response = await client.post(path, data=body, headers={"X-Twilio-Signature": signature})
            text = await response.text()
            assert response.status in (200, 400), (response.status, text)
            answers.append(json.loads(text) if response.status == 200 else {})
            recorded = sample_sum(registry, "twilio_insights_exporter_events_total", outcome="recorded")
            assert recorded == (1 if answers[0].get("recorded") else 0)  # exactly once, whatever is retried
            if not recorded:
                assert snapshot(registry) == {}
            else:
                assert sample_sum(registry, "twilio_conference_participant_summaries_total") == 1
        for accept in ("", OPENMETRICS):
            scrape = await metrics.get("/metrics", headers={"Accept": accept} if accept else {})
            assert scrape.status == 200
            text = await scrape.text()
            list((parse_openmetrics if accept else parse_text)(text))
        assert sample_sum(registry, "twilio_insights_exporter_webhook_requests_total", code="500") == 0


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(position=st.sampled_from(POSITIONS), value=hostile, as_string=st.booleans())
def test_any_value_at_any_position_never_breaks_counting_or_the_exposition(position: tuple[Any, ...], value: Any, as_string: bool) -> None:
    event = json.loads(json.dumps(REFERENCE))
    put(event["data"], position, value)
    if as_string:
        event["data"] = json.dumps(event["data"])
    asyncio.run(deliver_twice(event))


ODDITIES = [
    ("label", 'q"b\\n\n'),
    ("country_code", "\u0000\u0007"),
    ("call_type", "\u2028carrier"),
    ("participant_region", "\U0001f4de" * 40),
    ("processing_state", "\ufeff"),
    ("call_status", " "),
]


async def test_promtool_accepts_an_exposition_of_every_oddity(aiohttp_client: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    promtool = shutil.which("promtool")
    assert promtool, "promtool is needed: apt-get install prometheus (make test installs it)"
    monkeypatch.setenv("TWILIO_AUTH_TOKEN", TOKEN)
    registry = CollectorRegistry()
    apps = create_apps(load_config([]), registry)
    webhook, metrics = await aiohttp_client(apps.webhook), await aiohttp_client(apps.metrics)
    events = []
    for i, (field, value) in enumerate(ODDITIES):
        event = json.loads(json.dumps(REFERENCE))
        event["id"] = f"EZ{i}"
        event["data"]["participant_sid"] = f"CP{i}"
        event["data"][field] = value
        event["data"]["metrics"]["inbound"]["tags"] = [value]
        events.append(event)
    body = batch_body(events)
    url, signature = sign(str(webhook.make_url("/events")), body, TOKEN)
    response = await webhook.post(url.split(str(webhook.make_url("")).rstrip("/"), 1)[1], data=body, headers={"X-Twilio-Signature": signature})
    assert await response.json() == {"recorded": len(ODDITIES)}

    # promtool reads the text format; the OpenMetrics one is parsed by prometheus_client's parser.
    text = await (await metrics.get("/metrics")).text()
    result = await asyncio.to_thread(subprocess.run, [promtool, "check", "metrics"], input=text, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    list(parse_openmetrics(await (await metrics.get("/metrics", headers={"Accept": OPENMETRICS})).text()))
