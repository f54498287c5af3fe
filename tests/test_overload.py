"""Overload is answered, not queued: past the in-flight bound a delivery gets 503 with Retry-After at once.

What is deterministic is asserted here (who gets 503, that nothing is lost or counted twice);
the latencies under a flood are measured by ``bench/overload.py``.
"""

from __future__ import annotations

import asyncio
import json
import random

from exporter.synthetic import batch_body, cloud_event, generate_summary
from tests.conftest import Harness, HarnessFactory
from tests.helpers import until
from tests.raw_http import Raw, RawDelivery

P = "twilio_conference_participant_"
E = "twilio_insights_exporter_"
BATCH = 5
BOUND = 3


def delivery_body(seed: int) -> bytes:
    rng = random.Random(seed)
    return batch_body([cloud_event(generate_summary(rng)) for _ in range(BATCH)])


async def hold_in_flight(harness: Harness, raw: Raw, seeds: range) -> tuple[list[RawDelivery], asyncio.Event]:
    """Whole deliveries held in the pipeline (being recorded) until the returned gate opens.

    The bound counts work being recorded, not connections still sending a body (issue 18): a
    delivery is in flight once its body is read.
    """
    gate = asyncio.Event()
    deliver = harness.runtime.pipeline.deliver

    async def held_deliver(*args, **kwargs):
        await gate.wait()
        return await deliver(*args, **kwargs)

    harness.runtime.pipeline.deliver = held_deliver  # type: ignore[method-assign]
    held = []
    for seed in seeds:
        delivery = await raw(harness, delivery_body(seed))
        await delivery.send(delivery.head + delivery.body)
        held.append(delivery)
    await until(lambda: harness.runtime.intake.in_flight == len(seeds))
    return held, gate


async def test_past_the_bound_a_delivery_gets_503_with_retry_after_at_once_and_nothing_is_lost_or_counted_twice(
    make_harness: HarnessFactory, raw: Raw
) -> None:
    harness = await make_harness(f"--webhook.max-in-flight={BOUND}", "--webhook.read-timeout=30s")
    held, gate = await hold_in_flight(harness, raw, range(BOUND))
    assert harness.value(E + "webhook_in_flight") == BOUND

    # Saturated: the next delivery is refused without waiting for any of those in flight.
    async with asyncio.timeout(2):
        refused = await harness.post(delivery_body(BOUND))
    assert refused.status == 503
    assert refused.headers["Retry-After"] == "5"
    assert await refused.json() == {"error": "overloaded, retry later"}
    assert harness.value(E + "webhook_rejections_total", reason="overloaded") == 1
    assert harness.value(P + "summaries_total") == 0

    # Those in flight finish and are acknowledged; the refused one is retried (as Twilio does).
    gate.set()
    answers = [await delivery.answer() for delivery in held]
    assert [(status, json.loads(body)) for status, _, body in answers] == [(200, {"recorded": BATCH})] * BOUND
    retried = await harness.post(delivery_body(BOUND))
    assert (retried.status, await retried.json()) == (200, {"recorded": BATCH})

    # Every summary of every delivery counted exactly once, whatever is redelivered now.
    for seed in range(BOUND + 1):
        again = await harness.post(delivery_body(seed))
        assert (again.status, await again.json()) == (200, {"duplicate": BATCH})
    assert harness.value(P + "summaries_total") == (BOUND + 1) * BATCH
    assert harness.value(E + "events_total", source="webhook", type="summary", outcome="recorded") == (BOUND + 1) * BATCH
    assert harness.value(E + "events_total", source="webhook", type="summary", outcome="duplicate") == (BOUND + 1) * BATCH
    assert harness.value(E + "webhook_requests_total", code="503") == 1
    assert harness.value(E + "webhook_requests_total", code="200") == 2 * (BOUND + 1)
    assert harness.value(E + "webhook_in_flight") == 0


async def test_a_burst_arriving_at_once_is_cut_at_the_bound(make_harness: HarnessFactory) -> None:
    # Bodies already buffered are read without yielding: the bound must still see them all.
    harness = await make_harness(f"--webhook.max-in-flight={BOUND}")
    burst = 4 * BOUND

    responses = await asyncio.gather(*(harness.post(delivery_body(seed)) for seed in range(burst)))

    statuses = sorted(response.status for response in responses)
    assert statuses.count(503) >= burst - 2 * BOUND  # a finished delivery frees its place for a later one
    assert set(statuses) == {200, 503}
    assert all(response.headers["Retry-After"] == "5" for response in responses if response.status == 503)
    accepted = statuses.count(200)
    assert harness.value(P + "summaries_total") == accepted * BATCH
    assert harness.value(E + "webhook_rejections_total", reason="overloaded") == burst - accepted
