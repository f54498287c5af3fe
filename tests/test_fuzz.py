"""Arbitrary JSON and bytes at the webhook: never a 5xx, never an escaped exception, never a
participant metric changed by an event that was not recorded."""

from __future__ import annotations

import asyncio
import json
import os

from aiohttp.test_utils import TestClient, TestServer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry

from exporter.app import create_apps
from exporter.config import load_config
from exporter.synthetic import LEGACY_SUMMARY_TYPE, SUMMARY_TYPE, TEST_EVENT_TYPE, sign
from tests.conftest import TOKEN, sample_sum, snapshot
from tests.helpers import path_and_query

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "150"))

scalars = st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=False) | st.text(max_size=12)
json_values = st.recursive(
    scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=12
)
numbers = st.integers(-5, 10**6) | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=4) | st.none()
stat = st.fixed_dictionaries({}, optional={"avg": numbers, "max": numbers}) | json_values
stream = st.fixed_dictionaries(
    {},
    optional={
        "mos": numbers,
        "jitter": stat,
        "latency": stat,
        "packet_loss_percentage": numbers,
        "total_packets_received": numbers,
        "total_packets_lost": numbers,
        "tags": st.lists(st.text(max_size=6) | st.none(), max_size=3) | json_values,
        "tags_info": st.dictionaries(
            st.text(max_size=8), st.fixed_dictionaries({"severity": st.text(max_size=6) | st.none()}) | json_values, max_size=3
        ),
        "occurrences": st.dictionaries(st.text(max_size=8), st.lists(json_values, max_size=3) | json_values, max_size=3),
    },
)
summary_like = st.fixed_dictionaries(
    {"participant_sid": st.text(max_size=10) | json_values},
    optional={
        "call_sid": st.text(max_size=60) | json_values,
        "conference_sid": st.text(max_size=60),
        "label": st.text(max_size=80) | json_values,
        "country_code": st.text(max_size=4) | numbers,
        "duration_seconds": numbers,
        "outbound_time_in_queue": numbers,
        "quality_issues": numbers,
        "events": st.dictionaries(st.text(max_size=8), st.lists(numbers, max_size=3) | json_values, max_size=3),
        "metrics": st.fixed_dictionaries({}, optional={"inbound": stream, "outbound": stream}) | json_values,
        "join_time": st.text(max_size=25) | numbers,
    },
)
events = st.fixed_dictionaries(
    {"id": st.text(max_size=6) | json_values, "type": st.sampled_from([SUMMARY_TYPE, LEGACY_SUMMARY_TYPE, TEST_EVENT_TYPE, "x"]) | json_values},
    optional={"data": summary_like | json_values | summary_like.map(json.dumps), "specversion": json_values},
)
bodies = (
    st.lists(events, max_size=4).map(lambda v: json.dumps(v).encode())
    | events.map(lambda v: json.dumps(v).encode())
    | json_values.map(lambda v: json.dumps(v).encode())
    | st.binary(max_size=200)
)


async def _deliver(bodies_to_send: list[bytes]) -> None:
    os.environ["TWILIO_AUTH_TOKEN"] = TOKEN
    try:
        config = load_config([])
    finally:
        del os.environ["TWILIO_AUTH_TOKEN"]
    registry = CollectorRegistry()
    apps = create_apps(config, registry)
    async with TestClient(TestServer(apps.webhook)) as client:
        for body in bodies_to_send:
            before = snapshot(registry)
            recorded_before = sample_sum(registry, "twilio_insights_exporter_events_total", outcome="recorded")
            url, signature = (
                sign(str(client.make_url("/events")), body, TOKEN) if _is_utf8(body) else (str(client.make_url("/events?bodySHA256=0")), "x")
            )
            response = await client.post(path_and_query(url), data=body, headers={"X-Twilio-Signature": signature})
            text = await response.text()

            assert response.status in (200, 400, 403), (response.status, text)
            assert "Traceback" not in text
            recorded = sample_sum(registry, "twilio_insights_exporter_events_total", outcome="recorded") - recorded_before
            if response.status == 200:
                assert json.loads(text).get("recorded", 0) == recorded
            if recorded == 0:
                assert snapshot(registry) == before
        assert sample_sum(registry, "twilio_insights_exporter_webhook_requests_total", code="500") == 0


def _is_utf8(body: bytes) -> bool:
    try:
        body.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(st.lists(bodies, min_size=1, max_size=3))
def test_arbitrary_deliveries_never_fail_the_server_or_touch_metrics_unless_recorded(deliveries: list[bytes]) -> None:
    asyncio.run(_deliver(deliveries))
