"""A captured signed delivery, replayed: copies of it hold one share of the door, and a trickling sender holds what it has sent.

Real sockets and the webhook served as __main__ serves it; every delivery is signed with the
``twilio`` SDK's ``RequestValidator`` (exporter/synthetic.py ``sign``) and written by hand
(tests/raw_http.py), so a test decides when each body ends. The figures of the same attack (50
connections replaying one 1 MiB delivery) are measured by ``bench/edge.py``, not asserted here.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from exporter.doors.webhook.intake import FIRST_SHARE, MemoryBudget
from tests.helpers import until
from tests.raw_http import Raw, Served, body_of

P = "twilio_conference_participant_"
E = "twilio_insights_exporter_"
RESERVED = E + "webhook_memory_reserved_bytes"
REPLAYED = b'{"error": "a copy of this delivery is being received, retry later"}'


# --- copies of one signed request ---------------------------------------------------------------


async def test_a_second_copy_of_a_signed_delivery_is_refused_503_before_its_body_is_read_while_the_first_trickles_and_the_first_succeeds(
    serve_webhook: Callable[..., Awaitable[Served]], raw: Raw
) -> None:
    served = await serve_webhook("--webhook.read-timeout=30s")
    captured = body_of(1, padding=200_000)
    first = await raw(served, captured)
    await first.send(first.head + first.body[:1000])
    await until(lambda: served.runtime.intake.reading == 1)
    held = served.value(RESERVED)

    copy = await raw(served, captured)  # the same body to the same URL: the same signature
    assert copy.head == first.head
    await copy.send(copy.head)  # its body never comes: the answer does not wait for it
    status, headers, answer = await copy.answer()

    assert (status, headers["retry-after"], answer) == (503, "5", REPLAYED)
    assert headers["connection"] == "close"
    assert served.value(E + "webhook_rejections_total", reason="replayed") == 1
    assert served.value(E + "webhook_requests_total", code="503") == 1
    assert served.value(RESERVED) == held == MemoryBudget.cost(FIRST_SHARE)  # the copy holds no share
    assert served.runtime.intake.reading == 1

    await first.send(first.body[1000:])
    assert (await first.answer())[::2] == (200, b'{"recorded": 2}')
    assert served.value(P + "summaries_total") == 2
    assert served.value(RESERVED) == 0
    assert served.runtime.intake.signed == set()


async def test_once_the_first_copy_is_answered_the_same_signed_delivery_is_taken_again_and_counted_a_duplicate(
    serve_webhook: Callable[..., Awaitable[Served]], raw: Raw
) -> None:
    served = await serve_webhook("--webhook.read-timeout=30s")
    captured = body_of(2)
    first = await raw(served, captured)
    await first.send(first.head + first.body[:100])
    await until(lambda: served.runtime.intake.reading == 1)
    copy = await raw(served, captured)
    await copy.send(copy.head + copy.body)
    assert (await copy.answer())[::2] == (503, REPLAYED)
    await first.send(first.body[100:])
    assert (await first.answer())[::2] == (200, b'{"recorded": 2}')

    retried = await raw(served, captured)  # Twilio's retry of the refused copy
    await retried.send(retried.head + retried.body)

    assert (await retried.answer())[::2] == (200, b'{"duplicate": 2}')
    assert served.value(P + "summaries_total") == 2
    assert served.value(E + "events_total", source="webhook", type="summary", outcome="recorded") == 2
    assert served.value(E + "events_total", source="webhook", type="summary", outcome="duplicate") == 2
    assert served.value(E + "webhook_rejections_total", reason="replayed") == 1
    assert served.runtime.intake.signed == set()


async def test_a_copy_arriving_while_the_first_is_being_recorded_is_refused_too(serve_webhook: Callable[..., Awaitable[Served]], raw: Raw) -> None:
    served = await serve_webhook()
    gate = asyncio.Event()
    deliver = served.runtime.pipeline.deliver

    async def held_deliver(*args, **kwargs):
        await gate.wait()
        return await deliver(*args, **kwargs)

    served.runtime.pipeline.deliver = held_deliver  # type: ignore[method-assign]
    captured = body_of(3)
    first = await raw(served, captured)
    await first.send(first.head + first.body)
    await until(lambda: served.runtime.intake.in_flight == 1)

    copy = await raw(served, captured)
    await copy.send(copy.head + copy.body)

    assert (await copy.answer())[::2] == (503, REPLAYED)
    gate.set()
    assert (await first.answer())[::2] == (200, b'{"recorded": 2}')
    assert served.value(E + "webhook_rejections_total", reason="replayed") == 1


async def test_a_copy_cut_by_the_read_timeout_gives_its_place_back(serve_webhook: Callable[..., Awaitable[Served]], raw: Raw) -> None:
    # An attacker holding a captured delivery's place by trickling it holds it for the read timeout, no longer.
    served = await serve_webhook("--webhook.read-timeout=200ms")
    captured = body_of(4)
    trickler = await raw(served, captured)
    await trickler.send(trickler.head + trickler.body[:10])
    assert (await trickler.answer())[0] == 503
    assert served.value(E + "webhook_rejections_total", reason="read_timeout") == 1

    real = await raw(served, captured)
    await real.send(real.head + real.body)

    assert (await real.answer())[::2] == (200, b'{"recorded": 2}')
    assert served.value(E + "webhook_rejections_total", reason="replayed") == 0
    assert served.runtime.intake.signed == set()


async def test_without_signature_verification_concurrent_deliveries_to_one_url_are_not_copies(
    serve_webhook: Callable[..., Awaitable[Served]], raw: Raw
) -> None:
    served = await serve_webhook("--webhook.insecure-skip-signature-verification", "--webhook.read-timeout=30s")
    first, second = await raw(served, body_of(5)), await raw(served, body_of(6))
    for delivery in (first, second):  # the same URL (no bodySHA256) and the same unchecked header
        target = delivery.head.split(b" ")[1]
        signature = delivery.head.split(b"X-Twilio-Signature: ")[1].split(b"\r\n")[0]
        delivery.head = delivery.head.replace(target, b"/events").replace(signature, b"unchecked")
    assert first.head.split(b"Content-Length")[0] == second.head.split(b"Content-Length")[0]
    await first.send(first.head + first.body[:10])
    await until(lambda: served.runtime.intake.reading == 1)

    await second.send(second.head + second.body)
    assert (await second.answer())[::2] == (200, b'{"recorded": 2}')
    await first.send(first.body[10:])
    assert (await first.answer())[::2] == (200, b'{"recorded": 2}')
    assert served.value(E + "webhook_rejections_total") == 0


# --- the memory budget, charged as the body arrives ---------------------------------------------


async def test_a_trickling_sender_holds_only_the_bytes_it_has_sent(serve_webhook: Callable[..., Awaitable[Served]], raw: Raw) -> None:
    served = await serve_webhook("--webhook.max-body-size=1MiB", "--webhook.read-timeout=30s")
    delivery = await raw(served, body_of(7, padding=600_000))

    await delivery.send(delivery.head)
    await until(lambda: served.runtime.intake.reading == 1)
    assert served.value(RESERVED) == MemoryBudget.cost(FIRST_SHARE)  # not the 600 KB it announced
    await delivery.send(delivery.body[:200_000])
    await until(lambda: served.value(RESERVED) == MemoryBudget.cost(200_000), "200 KB charged")
    await delivery.send(delivery.body[200_000:500_000])
    await until(lambda: served.value(RESERVED) == MemoryBudget.cost(500_000), "500 KB charged")
    await delivery.send(delivery.body[500_000:])

    assert (await delivery.answer())[::2] == (200, b'{"recorded": 2}')
    assert served.value(RESERVED) == 0


async def test_a_delivery_that_stops_fitting_while_its_body_arrives_is_answered_503_and_holds_nothing(
    serve_webhook: Callable[..., Awaitable[Served]], raw: Raw
) -> None:
    # 11 MiB of budget, 11 bytes per body byte: about 1 MiB of bodies at once. Both 600 KB
    # deliveries fit when they arrive; once the first has sent 500 KB, the second's 600 KB do not.
    served = await serve_webhook("--webhook.max-body-size=1MiB", "--webhook.memory-budget=11MiB", "--webhook.read-timeout=30s")
    first, second = await raw(served, body_of(8, padding=600_000)), await raw(served, body_of(9, padding=600_000))
    await first.send(first.head)
    await second.send(second.head)
    await until(lambda: served.runtime.intake.reading == 2)
    await first.send(first.body[:500_000])
    await until(lambda: served.value(RESERVED) == MemoryBudget.cost(500_000 + FIRST_SHARE))

    await second.send(second.body)
    status, headers, answer = await second.answer()

    assert (status, headers["retry-after"], answer) == (503, "5", b'{"error": "too much being received now, retry later"}')
    assert served.value(E + "webhook_rejections_total", reason="memory_budget") == 1
    assert served.value(RESERVED) == MemoryBudget.cost(500_000)  # the second's bytes are dropped
    await first.send(first.body[500_000:])
    assert (await first.answer())[::2] == (200, b'{"recorded": 2}')
    assert served.value(RESERVED) == 0
    assert served.value(P + "summaries_total") == 2
