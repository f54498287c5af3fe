"""The public door holds (issue 18): refused before reading, bounded memory, slow senders starve nobody.

Real sockets throughout: each delivery is written by hand (tests/raw_http.py), so a test decides
what the sender sends, and "refused before its body is read" is proven by a sender that never
sends its body and still gets its answer. The timings and memory figures of the same attacks are
measured by ``bench/edge.py`` (``make bench``), not asserted here.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

import pytest
from twilio.request_validator import RequestValidator

from exporter.doors.webhook.intake import FIRST_SHARE, MemoryBudget
from tests.conftest import TOKEN, HarnessFactory
from tests.helpers import path_and_query, until
from tests.raw_http import Raw, Served, announcing, body_of, forged

P = "twilio_conference_participant_"
E = "twilio_insights_exporter_"
MiB = 1024**2


# --- verify before reading ---------------------------------------------------------------------


async def test_a_forged_delivery_announcing_16_mib_is_refused_403_without_its_body_being_sent(
    serve_webhook: Callable[..., Awaitable[Served]], raw: Raw, caplog: pytest.LogCaptureFixture
) -> None:
    served = await serve_webhook()
    caplog.set_level(logging.WARNING)
    delivery = announcing(forged(await raw(served, body_of(1))), 16 * MiB)

    await delivery.send(delivery.head)  # the body never comes: the answer does not wait for it
    status, headers, answer = await delivery.answer()

    assert (status, answer) == (403, b'{"error": "signature check failed: invalid_signature"}')
    assert headers["connection"] == "close" and await delivery.closed_by_server()
    assert served.value(E + "signature_failures_total", reason="invalid_signature") == 1
    assert served.value(E + "webhook_requests_total", code="403") == 1
    assert served.runtime.intake.budget.reserved == 0
    # The URL that was checked is logged (it holds no secret): behind a proxy, what tells a wrong public URL from a forgery.
    [record] = [r for r in caplog.records if r.name == "exporter.doors.webhook.handler"]
    checked = served.base + delivery.head.split(b" ")[1].decode()
    assert (record.getMessage(), record.url, record.reason) == ("signature refused", checked, "invalid_signature")


async def test_a_url_without_body_hash_is_refused_403_before_its_body_is_read(serve_webhook: Callable[..., Awaitable[Served]], raw: Raw) -> None:
    served = await serve_webhook()
    delivery = await raw(served, body_of(2))
    # Signed as Twilio signs, but for the URL alone: a captured signature of it would accept any body.
    target = path_and_query(delivery.head.split(b" ")[1].decode())
    signature = RequestValidator(TOKEN).compute_signature(served.url(), {})
    head = delivery.head.decode().replace(target, "/events")
    real = head.split("X-Twilio-Signature: ", 1)[1].split("\r\n", 1)[0]
    delivery.head = head.replace(real, signature).encode()

    await delivery.send(delivery.head)
    status, _, answer = await delivery.answer()

    assert (status, answer) == (403, b'{"error": "signature check failed: missing_body_hash"}')
    assert served.value(E + "signature_failures_total", reason="missing_body_hash") == 1


async def test_a_valid_url_signature_with_a_body_that_does_not_match_its_hash_is_refused_403_once_read(
    serve_webhook: Callable[..., Awaitable[Served]], raw: Raw
) -> None:
    served = await serve_webhook()
    delivery = await raw(served, body_of(3))

    tampered = delivery.body.replace(b'"', b"'", 1)  # as long as the signed body, one byte changed
    await delivery.send(delivery.head + tampered)
    status, _, answer = await delivery.answer()

    assert (status, answer) == (403, b'{"error": "signature check failed: invalid_signature"}')
    assert served.value(P + "summaries_total") == 0
    assert served.runtime.intake.budget.reserved == 0


# --- bounded memory ----------------------------------------------------------------------------


async def test_past_the_memory_budget_a_delivery_gets_503_with_retry_after_before_its_body_is_read(
    serve_webhook: Callable[..., Awaitable[Served]], raw: Raw
) -> None:
    # 11 MiB of budget: a delivery holds 11 times the bytes of its body received (its body and what
    # it becomes); 500 KB of the first leave less than the 6.6 MB the second's 600 KB would need.
    served = await serve_webhook("--webhook.max-body-size=1MiB", "--webhook.memory-budget=11MiB", "--webhook.read-timeout=30s")
    first = await raw(served, body_of(4, padding=600_000))
    second = await raw(served, body_of(5, padding=600_000))

    await first.send(first.head + first.body[:500_000])
    await until(lambda: served.value(E + "webhook_memory_reserved_bytes") == MemoryBudget.cost(500_000) == 11 * 500_000)
    await second.send(second.head)  # its body never comes
    status, headers, answer = await second.answer()

    assert (status, headers["retry-after"], answer) == (503, "5", b'{"error": "too much being received now, retry later"}')
    # A real delivery that cannot be taken now: its body, if it comes, is read and dropped, then the
    # connection closes (closing at once would reset it and could lose the 503 on the way).
    assert headers["connection"] == "close"
    await second.send(second.body)
    assert await second.closed_by_server()
    assert served.value(E + "webhook_rejections_total", reason="memory_budget") == 1

    # The first is recorded, and the budget is whole again: the refused one, retried, fits.
    await first.send(first.body[500_000:])
    assert (await first.answer())[::2] == (200, b'{"recorded": 2}')
    assert served.value(E + "webhook_memory_reserved_bytes") == 0
    retried = await raw(served, second.body)
    await retried.send(retried.head + retried.body)
    assert (await retried.answer())[::2] == (200, b'{"recorded": 2}')
    assert served.value(P + "summaries_total") == 4


async def test_a_chunked_body_without_a_length_is_taken_only_when_the_largest_size_fits_and_charged_as_it_arrives(
    serve_webhook: Callable[..., Awaitable[Served]], raw: Raw
) -> None:
    served = await serve_webhook("--webhook.max-body-size=1MiB", "--webhook.memory-budget=11MiB", "--webhook.read-timeout=30s")
    delivery = await raw(served, body_of(6))
    delivery.head = delivery.head.replace(f"Content-Length: {len(delivery.body)}".encode(), b"Transfer-Encoding: chunked")

    await delivery.send(delivery.head + f"{len(delivery.body):x}\r\n".encode() + delivery.body + b"\r\n")
    await until(lambda: served.runtime.intake.reading == 1)
    assert served.value(E + "webhook_memory_reserved_bytes") == MemoryBudget.cost(FIRST_SHARE)
    # Another chunked delivery now: the largest body it may become (1 MiB, 11 MiB) does not fit.
    other = await raw(served, body_of(7))
    await other.send(other.head.replace(f"Content-Length: {len(other.body)}".encode(), b"Transfer-Encoding: chunked"))
    assert (await other.answer())[0] == 503
    assert served.value(E + "webhook_rejections_total", reason="memory_budget") == 1
    await delivery.send(b"0\r\n\r\n")

    assert (await delivery.answer())[::2] == (200, b'{"recorded": 2}')
    assert served.value(E + "webhook_memory_reserved_bytes") == 0


# --- slow senders -------------------------------------------------------------------------------


async def test_every_real_delivery_is_answered_200_while_slow_senders_hold_connections(
    serve_webhook: Callable[..., Awaitable[Served]], raw: Raw
) -> None:
    # One slot of work in flight, 60 connections trickling their bodies (60 captured deliveries'
    # headers replayed, so they pass the signature): none of them holds the slot.
    served = await serve_webhook("--webhook.max-in-flight=1", "--webhook.read-timeout=60s")
    slow = [await raw(served, body_of(1000 + n)) for n in range(60)]
    for sender in slow:
        await sender.send(sender.head + sender.body[:10])
    await until(lambda: served.runtime.intake.reading == 60)

    answers = []
    for seed in range(10):
        delivery = await raw(served, body_of(100 + seed))
        await delivery.send(delivery.head + delivery.body)
        answers.append(await delivery.answer())

    assert [(status, body) for status, _, body in answers] == [(200, b'{"recorded": 2}')] * 10
    assert served.runtime.intake.reading == 60
    assert served.value(P + "summaries_total") == 20
    assert served.value(E + "webhook_rejections_total") == 0


# --- source networks ----------------------------------------------------------------------------


async def test_a_source_outside_the_allowed_networks_is_refused_403_before_anything_is_read_and_one_inside_is_served(
    serve_webhook: Callable[..., Awaitable[Served]], raw: Raw
) -> None:
    outside = await serve_webhook("--webhook.allowed-networks=35.90.102.128/25")
    inside = await serve_webhook("--webhook.allowed-networks=35.90.102.128/25,127.0.0.0/8")

    refused = await raw(outside, body_of(8))
    await refused.send(refused.head)
    served = await raw(inside, body_of(8))
    await served.send(served.head + served.body)

    assert (await refused.answer())[::2] == (403, b'{"error": "source address not in --webhook.allowed-networks"}')
    assert outside.value(E + "webhook_rejections_total", reason="source_network") == 1
    assert outside.value(E + "signature_failures_total") == 0  # refused before the signature was looked at
    assert (await served.answer())[::2] == (200, b'{"recorded": 2}')


@pytest.mark.parametrize(
    "forwarded_for, status",
    [
        ("35.90.102.130", 200),  # appended by the trusted proxy: Twilio's
        ("203.0.113.7", 403),  # appended by the trusted proxy: not Twilio's
        ("35.90.102.130, 203.0.113.7", 403),  # the first value is whatever the client wrote
        ("203.0.113.7, 35.90.102.130, 127.0.0.2", 200),  # past two trusted proxies, Twilio's
        ("not-an-address", 403),
        (None, 403),  # the proxy's own address is not in the allowed networks
    ],
)
async def test_behind_trusted_proxies_the_client_is_read_from_x_forwarded_for_right_to_left(
    serve_webhook: Callable[..., Awaitable[Served]], raw: Raw, forwarded_for: str | None, status: int
) -> None:
    served = await serve_webhook("--webhook.allowed-networks=35.90.102.128/25", "--webhook.trusted-proxies=127.0.0.0/8")
    delivery = await raw(served, body_of(9))
    if forwarded_for is not None:
        delivery.head = delivery.head.replace(b"\r\n\r\n", f"\r\nX-Forwarded-For: {forwarded_for}\r\n\r\n".encode())

    await delivery.send(delivery.head + delivery.body)

    assert (await delivery.answer())[0] == status


async def test_an_x_forwarded_for_from_an_untrusted_peer_is_ignored(serve_webhook: Callable[..., Awaitable[Served]], raw: Raw) -> None:
    served = await serve_webhook("--webhook.allowed-networks=35.90.102.128/25")
    delivery = await raw(served, body_of(10))
    delivery.head = delivery.head.replace(b"\r\n\r\n", b"\r\nX-Forwarded-For: 35.90.102.130\r\n\r\n")

    await delivery.send(delivery.head)

    assert (await delivery.answer())[0] == 403


async def test_the_health_paths_of_the_webhook_listener_answer_from_any_network_without_credentials(make_harness: HarnessFactory) -> None:
    harness = await make_harness("--webhook.allowed-networks=35.90.102.128/25")
    harness.runtime.ready = True

    healthy, ready = await harness.client.get("/-/healthy"), await harness.client.get("/-/ready")

    assert (healthy.status, await healthy.text(), ready.status, await ready.text()) == (200, "Healthy.\n", 200, "Ready.\n")
    assert (await harness.client.get("/metrics")).status == 404


# --- answers and gauges -------------------------------------------------------------------------


async def test_404_and_405_of_the_webhook_listener_are_one_line_of_json(make_harness: HarnessFactory) -> None:
    harness = await make_harness()

    missing = await harness.client.get("/nowhere")
    wrong = await harness.client.get("/events")

    assert (missing.status, missing.content_type, await missing.text()) == (404, "application/json", '{"error": "not found"}')
    assert (wrong.status, await wrong.text(), wrong.headers["Allow"]) == (405, '{"error": "method not allowed"}', "POST")


@pytest.mark.parametrize("args, enabled", [((), 1), (("--webhook.insecure-skip-signature-verification",), 0)])
async def test_the_signature_verification_gauge_says_whether_signatures_are_checked(make_harness: HarnessFactory, args, enabled) -> None:
    harness = await make_harness(*args)

    assert harness.value(E + "signature_verification_enabled") == enabled
