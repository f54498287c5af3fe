"""The door of a real exporter process, as the chart runs it: slow and forged senders do not stop Twilio's deliveries."""

from __future__ import annotations

import random

from prometheus_client.parser import text_string_to_metric_families

from exporter.doors.webhook.intake import MemoryBudget
from exporter.synthetic import batch_body, cloud_event, generate_summary
from tests.conftest import TOKEN
from tests.exporter_process import get, metric, start_exporter
from tests.helpers import until
from tests.raw_http import RawDelivery, announcing, forged

MiB = 1024**2


def body_of(seed: int) -> bytes:
    rng = random.Random(seed)
    return batch_body([cloud_event(generate_summary(rng)) for _ in range(3)])


async def test_real_deliveries_are_answered_200_while_slow_senders_hold_connections_and_forged_ones_are_refused_unread(tmp_path) -> None:
    with start_exporter("--webhook.read-timeout=60s", env={"TWILIO_AUTH_TOKEN": TOKEN}, tmp_path=tmp_path) as exporter:
        opened: list[RawDelivery] = []
        try:
            # 100 connections trickle a captured delivery's body (its headers replayed pass the
            # signature): more than six times --webhook.max-in-flight (16).
            for _ in range(100):
                slow = await RawDelivery.open(exporter.webhook_url, body_of(1))
                await slow.send(slow.head + slow.body[:10])
                opened.append(slow)
            await until(
                lambda: metric(exporter, "twilio_insights_exporter_webhook_memory_reserved_bytes") == 100 * MemoryBudget.cost(len(body_of(1)))
            )

            # 16 forged deliveries announcing 16 MiB each: refused from their headers, no body sent.
            for seed in range(16):
                fake = announcing(forged(await RawDelivery.open(exporter.webhook_url, body_of(seed))), 16 * MiB)
                opened.append(fake)
                await fake.send(fake.head)
                assert (await fake.answer())[0] == 403

            answers = []
            for seed in range(10, 30):
                real = await RawDelivery.open(exporter.webhook_url, body_of(seed))
                opened.append(real)
                await real.send(real.head + real.body)
                answers.append((await real.answer())[::2])
            assert answers == [(200, b'{"recorded": 3}')] * 20

            assert metric(exporter, "twilio_insights_exporter_webhook_memory_reserved_bytes") == 100 * MemoryBudget.cost(len(body_of(1)))
            assert get(exporter.webhook_url.rsplit("/", 1)[0] + "/-/healthy")[0] == 200
        finally:
            for delivery in opened:
                delivery.close()
        text = get(exporter.metrics_url + "/metrics")[2].decode()
    assert 'twilio_insights_exporter_signature_failures_total{reason="invalid_signature"} 16.0' in text
    summaries = [
        s.value for f in text_string_to_metric_families(text) for s in f.samples if s.name == "twilio_conference_participant_summaries_total"
    ]
    assert sum(summaries) == 60
    assert "twilio_insights_exporter_signature_verification_enabled 1.0" in text
