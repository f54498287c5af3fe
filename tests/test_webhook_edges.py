"""The webhook's edges: slow and vanishing senders, a missing token, throttled refusal logs."""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable

import pytest

from exporter.logs import Throttle
from exporter.synthetic import batch_body, cloud_event, generate_summary
from tests.conftest import TOKEN, HarnessFactory
from tests.helpers import FakeClock, until
from tests.raw_http import Raw, Served

P = "twilio_conference_participant_"
E = "twilio_insights_exporter_"


def events(count: int, seed: int = 1) -> list[dict]:
    rng = random.Random(seed)
    return [cloud_event(generate_summary(rng)) for _ in range(count)]


# --- a sender that trickles its body ----------------------------------------------------------


async def test_a_body_trickled_past_the_read_timeout_is_answered_503_counted_and_the_connection_closed(
    make_harness: HarnessFactory, raw: Raw
) -> None:
    harness = await make_harness("--webhook.read-timeout=200ms")
    delivery = await raw(harness, batch_body(events(2)))

    await delivery.send(delivery.head + delivery.body[:10])  # ... and nothing more
    status, headers, body = await delivery.answer()

    assert status == 503  # not a 4xx: if it was Twilio on a bad network, it retries
    assert headers["retry-after"] == "5"
    assert b"not received within 200ms" in body
    assert await delivery.closed_by_server()
    assert harness.value(E + "webhook_rejections_total", reason="read_timeout") == 1
    assert harness.value(E + "webhook_requests_total", code="503") == 1
    assert harness.value(P + "summaries_total") == 0
    assert harness.runtime.intake.in_flight == 0


async def test_the_read_timeout_bounds_the_whole_body_not_each_chunk(make_harness: HarnessFactory, raw: Raw) -> None:
    harness = await make_harness("--webhook.read-timeout=300ms")
    delivery = await raw(harness, batch_body(events(1)))
    await delivery.send(delivery.head)
    sent = 0

    async def trickle() -> None:
        nonlocal sent
        for byte in delivery.body:
            await delivery.send(bytes([byte]))
            sent += 1
            await asyncio.sleep(0.02)  # the sender's pace: a byte every 20 ms, the behaviour under test

    trickler = asyncio.create_task(trickle())
    started = time.monotonic()
    try:
        status, _, _ = await delivery.answer()
    finally:
        trickler.cancel()

    assert status == 503
    assert 5 < sent < len(delivery.body)  # each chunk came in time; the body as a whole did not
    assert time.monotonic() - started < 2
    assert harness.value(E + "webhook_rejections_total", reason="read_timeout") == 1


async def test_a_body_within_the_read_timeout_is_recorded(make_harness: HarnessFactory, raw: Raw) -> None:
    harness = await make_harness("--webhook.read-timeout=5s")
    delivery = await raw(harness, batch_body(events(3)))

    await delivery.send(delivery.head + delivery.body[:100])
    await until(lambda: harness.runtime.intake.reading == 1)
    await delivery.send(delivery.body[100:])
    status, _, body = await delivery.answer()

    assert (status, body) == (200, b'{"recorded": 3}')
    assert harness.value(P + "summaries_total") == 3
    assert harness.value(E + "webhook_rejections_total") == 0


# --- a sender that hangs up -------------------------------------------------------------------


async def test_a_sender_hanging_up_mid_body_is_its_own_outcome_not_a_500_and_no_traceback(
    serve_webhook: Callable[..., Awaitable[Served]], raw: Raw, caplog: pytest.LogCaptureFixture
) -> None:
    served = await serve_webhook()
    delivery = await raw(served, batch_body(events(2)))
    caplog.set_level(logging.DEBUG)

    await delivery.send(delivery.head + delivery.body[:50])
    await until(lambda: served.runtime.intake.reading == 1)
    delivery.close()
    await until(lambda: served.runtime.intake.reading == 0)

    assert served.value(E + "webhook_rejections_total", reason="client_disconnected") == 1
    assert served.value(E + "webhook_requests_total", code="499") == 1
    assert served.value(E + "webhook_requests_total", code="500") == 0
    assert served.value(P + "summaries_total") == 0
    assert [r.getMessage() for r in caplog.records if r.name == "exporter.doors.webhook.handler"] == ["sender hung up before its body was read"]
    assert not [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]


# --- no auth token ------------------------------------------------------------------------------


async def test_without_an_auth_token_the_exporter_is_not_ready(make_harness: HarnessFactory) -> None:
    harness = await make_harness(env={})

    response = await harness.metrics.get("/-/ready")

    assert response.status == 503
    assert "no auth token configured" in await response.text()
    assert (await harness.metrics.get("/-/healthy")).status == 200  # alive: restarting fixes nothing


async def test_without_an_auth_token_a_delivery_is_refused_before_its_body_is_read(make_harness: HarnessFactory, raw: Raw) -> None:
    harness = await make_harness(env={})
    delivery = await raw(harness, batch_body(events(1)))

    await delivery.send(delivery.head)  # the body never comes: the answer does not wait for it
    status, headers, _ = await delivery.answer()

    assert (status, headers["retry-after"]) == (503, "5")
    assert harness.value(E + "webhook_rejections_total", reason="no_auth_token_configured") == 1


async def test_a_delivery_announcing_more_than_the_size_limit_is_answered_413_before_its_body_is_read(make_harness: HarnessFactory, raw: Raw) -> None:
    harness = await make_harness("--webhook.max-body-size=1MiB")
    body = batch_body(events(1))
    delivery = await raw(harness, body)
    announced = str(harness.runtime.config.settings.webhook.max_body_size + 1)

    # Only the head, announcing one byte over the limit: a 413 that waited for the body would never come.
    await delivery.send(delivery.head.replace(f"Content-Length: {len(body)}".encode(), f"Content-Length: {announced}".encode()))
    status, _, answer = await delivery.answer()

    assert status == 413 and b"body larger than 1048576 bytes" in answer
    assert harness.value(E + "webhook_rejections_total", reason="too_large") == 1
    assert harness.value(E + "webhook_rejections_total", reason="read_timeout") == 0
    assert harness.value(E + "webhook_requests_total", code="413") == 1


@pytest.mark.parametrize(
    "args, env",
    [
        (("--webhook.insecure-skip-signature-verification",), {}),
        (("--pull.enabled",), {"TWILIO_API_KEY": "SKxxxxxxxx", "TWILIO_API_SECRET": "secret"}),
        ((), {"TWILIO_AUTH_TOKEN": TOKEN}),
    ],
    ids=["insecure mode", "pull-only", "with a token"],
)
async def test_ready_without_an_auth_token_only_when_insecure_or_pull_only(make_harness: HarnessFactory, args: tuple, env: dict) -> None:
    harness = await make_harness(*args, "--pull.interval=1h", "--pull.api-url=http://127.0.0.1:9", env=env)

    assert (await harness.metrics.get("/-/ready")).status == 200


# --- refusals are logged, but not every one of them -------------------------------------------


async def test_refused_requests_are_logged_once_per_reason_per_interval_with_the_count_of_the_others(
    make_harness: HarnessFactory, caplog: pytest.LogCaptureFixture
) -> None:
    harness = await make_harness("--webhook.max-body-size=8KiB")
    clock = FakeClock()
    harness.runtime.intake.refusals = Throttle(interval=60, clock=clock)
    caplog.set_level(logging.INFO, logger="exporter")

    def refusal_lines() -> list[tuple[str, str | None, int | None]]:
        lines = [
            (r.getMessage(), getattr(r, "reason", None), getattr(r, "suppressed", None))
            for r in caplog.records
            if r.name == "exporter.doors.webhook.handler"
        ]
        caplog.clear()
        return lines

    for _ in range(5):
        assert (await harness.post(events(1), token=None)).status == 403
    for _ in range(3):
        assert (await harness.post(events(1), token="wrong")).status == 403
    for seed in range(4):
        assert (await harness.post(events(20, seed=seed))).status == 413
    assert refusal_lines() == [
        ("signature refused", "missing_signature", None),
        ("signature refused", "invalid_signature", None),
        ("delivery refused", "too_large", None),
    ]
    assert harness.value(E + "signature_failures_total", reason="missing_signature") == 5
    assert harness.value(E + "signature_failures_total", reason="invalid_signature") == 3
    assert harness.value(E + "webhook_rejections_total", reason="too_large") == 4

    clock.now += 59.9
    assert (await harness.post(events(1), token=None)).status == 403
    assert refusal_lines() == []

    clock.now += 0.1
    assert (await harness.post(events(1), token=None)).status == 403
    assert (await harness.post(events(20))).status == 413
    assert refusal_lines() == [("signature refused", "missing_signature", 5), ("delivery refused", "too_large", 3)]


def test_the_throttle_counts_what_it_held_back_per_key(caplog: pytest.LogCaptureFixture) -> None:
    clock = FakeClock()
    throttle = Throttle(interval=10, clock=clock)
    logger = logging.getLogger("exporter.test")
    caplog.set_level(logging.INFO, logger="exporter.test")

    written = [throttle.info(logger, key, "refused", reason=key) for key in ("a", "a", "b", "a", "b")]
    clock.now += 10
    written += [throttle.info(logger, "a", "refused", reason="a"), throttle.info(logger, "a", "refused", reason="a")]

    assert written == [True, False, True, False, False, True, False]
    assert [(r.reason, getattr(r, "suppressed", 0)) for r in caplog.records] == [("a", 0), ("b", 0), ("a", 2)]
