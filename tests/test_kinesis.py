"""Consumer mode against a real local Kinesis (kinesalite) through the real AWS SDK (aiobotocore).

Every test writes into its own stream with the SDK, then drives the consumer with
``catch_up()`` (read until every shard is at the tip or ended), so no test waits for a timer;
backoff waits go through an injected sleep that records them. Between the SDK and kinesalite
sits :class:`tests.kinesis_server.AwsProxy`, which makes kinesalite answer as AWS documents
(ChildShards, paged ListShards, MillisBehindLatest) and injects throttling and expired iterators.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client import CollectorRegistry

from exporter.app import Runtime, create_apps
from exporter.config import KinesisSettings, load_config
from exporter.doors.kinesis.consumer import SHARD_END, KinesisApi, KinesisConsumer
from exporter.metrics import KINESIS_ERROR_KINDS, build_kinesis_metrics
from exporter.synthetic import cloud_event, generate_summary, sink_test_event
from tests.conftest import sample_sum
from tests.helpers import scrub_environment, until
from tests.kinesis_server import CHILD_HIGH, CHILD_LOW, SHARD0, SHARD1, AwsProxy, Stream

E = "twilio_insights_exporter_"
K = E + "kinesis_"
BACKOFF = 0.5
JITTER = 0.5
# The SDK's credential chain from the environment only, for every test here (tests/conftest.py).
pytestmark = pytest.mark.usefixtures("aws_environment")


class Harness:
    """A consumer over a real runtime (its pipeline is the sink), the proxy as its endpoint.

    ``argv`` configures the runtime (``--state.path`` for a durable one); ``start``/``stop`` open
    and close the pipeline's state around the consumer, as the application's cleanup_ctx does.
    """

    def __init__(self, proxy: AwsProxy, stream: Stream, runtime: Runtime | None = None, argv: tuple[str, ...] = (), **settings: Any) -> None:
        self.registry = CollectorRegistry() if runtime is None else runtime.registry
        self.runtime = runtime or Runtime.build(load_config(list(argv)), self.registry)
        self.sink = self.runtime.pipeline
        self.settings = KinesisSettings(stream_name=stream.name, region="us-east-1", endpoint_url=proxy.url, backoff=BACKOFF, **settings)
        self.kinesis_registry = CollectorRegistry()
        self.sleeps: list[float] = []
        self.consumer = KinesisConsumer(
            self.settings,
            KinesisApi(self.settings),
            self.sink,
            build_kinesis_metrics(self.kinesis_registry),
            sleep=self._sleep,
            jitter=lambda: JITTER,
        )

    async def _sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)

    async def start(self) -> None:
        await self.runtime.durable.open()
        await self.consumer.start()

    async def stop(self) -> None:
        await self.consumer.stop()
        await self.runtime.durable.close()

    def value(self, name: str, **labels: str) -> float:
        """A sample of the pipeline's or the consumer's registry; fails on a name neither has."""
        for registry in (self.registry, self.kinesis_registry):
            value = registry.get_sample_value(name, labels)
            if value is not None:
                return value
        raise AssertionError(f"no sample {name}{labels}")

    def events(self, type_: str, outcome: str) -> float:
        return self.value(E + "events_total", source="kinesis", type=type_, outcome=outcome)

    def recorded(self) -> float:
        return self.events("summary", "recorded")


@pytest.fixture
async def harness(proxy: AwsProxy, stream: Stream) -> AsyncIterator[Harness]:
    h = Harness(proxy, stream)
    await h.start()
    yield h
    await h.stop()


def summary_event(n: int, **overrides: Any) -> dict[str, Any]:
    return cloud_event(generate_summary(random.Random(n), participant_sid=f"CP{n:032d}", country_code="US"), event_id=f"EZ{n:032d}", **overrides)


async def test_two_shards_each_record_recorded_once_and_checkpointed_after(harness: Harness, stream: Stream) -> None:
    last = {}
    for n in range(5):
        last["shardId-000000000000"] = await stream.put(summary_event(n), SHARD0)
    for n in range(5, 8):
        last["shardId-000000000001"] = await stream.put(summary_event(n), SHARD1)

    await harness.consumer.catch_up()

    assert harness.recorded() == 8
    assert harness.value(K + "records_read_total") == 8
    assert harness.value(K + "checkpoints_written_total") == 2  # one page per shard
    assert harness.value(K + "shards_reading") == 2
    for shard, sequence in last.items():
        assert harness.sink.checkpoint(f"kinesis/{stream.name}/{shard}") == sequence
        assert len(sequence) > 20  # AWS-shaped, kept as text
    assert all(harness.value(K + "errors_total", kind=kind) == 0 for kind in KINESIS_ERROR_KINDS)

    # Caught up: reading again finds nothing and writes no checkpoint.
    await harness.consumer.catch_up()
    assert harness.value(K + "records_read_total") == 8
    assert harness.value(K + "checkpoints_written_total") == 2


async def test_split_mid_stream_parent_is_drained_before_its_children(proxy: AwsProxy, stream: Stream) -> None:
    # One record a read, so that a child read too early would interleave with its parent's records.
    harness = Harness(proxy, stream, batch_size=1)
    order: list[tuple[str, str]] = []
    deliver = harness.sink.deliver

    async def recording(events: list[Any], source: str, checkpoint: tuple[str, str] | None = None) -> Any:
        order.extend((checkpoint[0].rsplit("/", 1)[1] if checkpoint else "", json.loads(record)["id"]) for record in events)
        return await deliver(events, source, checkpoint)

    harness.sink.deliver = recording  # type: ignore[method-assign]
    await harness.start()
    try:
        for n in range(3):
            await stream.put(summary_event(n), SHARD0)
        await harness.consumer.catch_up()
        # Written to the parent after it was read, then the split, then writes that land on the children.
        for n in range(3, 6):
            await stream.put(summary_event(n), SHARD0)
        await stream.split("shardId-000000000000", str(2**126))
        for n in range(6, 8):
            await stream.put(summary_event(n), CHILD_LOW)
        for n in range(8, 10):
            await stream.put(summary_event(n), CHILD_HIGH)

        await harness.consumer.catch_up()
    finally:
        await harness.stop()

    assert harness.recorded() == 10
    assert harness.value(K + "records_read_total") == 10
    shards = [shard for shard, _ in order]
    assert shards[:6] == ["shardId-000000000000"] * 6  # the parent to its end first
    assert sorted(shards[6:]) == ["shardId-000000000002"] * 2 + ["shardId-000000000003"] * 2
    assert harness.sink.checkpoint(f"kinesis/{stream.name}/shardId-000000000000") == SHARD_END
    # Reading: shard 1 and both children; the drained parent's lag gauge is gone.
    assert harness.value(K + "shards_reading") == 3
    assert harness.kinesis_registry.get_sample_value(K + "behind_latest_seconds", {"shard": "shardId-000000000000"}) is None
    assert harness.kinesis_registry.get_sample_value(K + "behind_latest_seconds", {"shard": "shardId-000000000002"}) == 0
    assert proxy.calls["ListShards"] >= 2  # the shard list was paged (2 a page) and read again after the split


async def test_records_redelivered_by_twilio_are_counted_once(harness: Harness, stream: Stream) -> None:
    event = summary_event(1)
    await stream.put(event, SHARD0)
    await stream.put(event, SHARD1)  # the same event written twice, to either shard
    again = summary_event(1)
    again["id"] = "EZ" + "f" * 32  # the same participant under another event id
    await stream.put(again, SHARD0)

    await harness.consumer.catch_up()

    assert harness.recorded() == 1
    assert harness.events("summary", "duplicate") == 2
    assert harness.value(K + "records_read_total") == 3


async def test_a_restart_resumes_after_the_checkpoint(proxy: AwsProxy, stream: Stream, tmp_path: Path) -> None:
    """Two exporters in turn on one state file: the second reads only what came after the first's checkpoints."""
    argv = (f"--state.path={tmp_path / 'state.sqlite'}",)
    first = Harness(proxy, stream, argv=argv)
    await first.start()
    for n in range(4):
        await stream.put(summary_event(n), SHARD0 if n % 2 else SHARD1)
    await first.consumer.catch_up()
    await first.stop()
    for n in range(4, 6):
        await stream.put(summary_event(n), SHARD0)

    second = Harness(proxy, stream, argv=argv)  # a new runtime, registry and consumer
    await second.start()
    try:
        await second.consumer.catch_up()
    finally:
        await second.stop()

    assert second.value(K + "records_read_total") == 2  # only what came after the checkpoints
    assert second.recorded() == 2
    assert second.events("summary", "duplicate") == 0
    assert sample_sum(second.registry, "twilio_conference_participant_summaries_total") == 6  # restored, plus the new two


async def test_records_read_again_before_their_checkpoint_are_deduplicated(proxy: AwsProxy, stream: Stream) -> None:
    """Records read again (a checkpoint behind what was recorded) meet the participant SIDs already recorded."""
    first = Harness(proxy, stream)
    await first.start()
    sequences = [await stream.put(summary_event(n), SHARD0) for n in range(3)]
    await first.consumer.catch_up()
    await first.consumer.stop()

    pipeline = first.runtime.pipeline  # the checkpoint moved back to the first record
    await pipeline.deliver([], "kinesis", (f"kinesis/{stream.name}/shardId-000000000000", sequences[0]))
    second = Harness(proxy, stream, runtime=first.runtime)
    await second.consumer.start()
    try:
        await second.consumer.catch_up()
    finally:
        await second.stop()

    assert second.value(K + "records_read_total") == 2
    assert second.recorded() == 3
    assert second.events("summary", "duplicate") == 2
    assert pipeline.checkpoint(f"kinesis/{stream.name}/shardId-000000000000") == sequences[2]


async def test_throttling_is_backed_off_with_jitter_and_loses_nothing(harness: Harness, stream: Stream, proxy: AwsProxy) -> None:
    for n in range(4):
        await stream.put(summary_event(n), SHARD0)
    proxy.fail("ListShards", "LimitExceededException")
    proxy.fail("GetRecords", "ProvisionedThroughputExceededException", times=3)

    await harness.consumer.catch_up()

    assert harness.value(K + "errors_total", kind="throttled") == 4
    assert harness.recorded() == 4
    assert harness.value(K + "records_read_total") == 4
    # Full jitter (0.5 here) of a ceiling that doubles per shard: the listing's wait, then the
    # shards read in turn: shard 0 throttled (1st), shard 1 throttled (1st), shard 0 again (2nd).
    assert harness.sleeps == [BACKOFF * JITTER, BACKOFF * JITTER, BACKOFF * JITTER, 2 * BACKOFF * JITTER]


async def test_an_expired_iterator_is_renewed_from_the_checkpoint(harness: Harness, stream: Stream, proxy: AwsProxy) -> None:
    for n in range(2):
        await stream.put(summary_event(n), SHARD0)
    await harness.consumer.catch_up()
    for n in range(2, 4):
        await stream.put(summary_event(n), SHARD0)
    proxy.fail("GetRecords", "ExpiredIteratorException")
    iterators = proxy.calls["GetShardIterator"]

    await harness.consumer.catch_up()

    assert harness.value(K + "errors_total", kind="expired_iterator") == 1
    assert proxy.calls["GetShardIterator"] == iterators + 1
    assert harness.recorded() == 4
    assert harness.value(K + "records_read_total") == 4  # after the checkpoint: nothing read twice
    assert harness.events("summary", "duplicate") == 0
    assert harness.sleeps == []  # renewed at once


async def test_test_event_poison_record_and_string_data(harness: Harness, stream: Stream) -> None:
    await stream.put(sink_test_event(), SHARD0)
    await stream.put(b"\x00not json{", SHARD0)
    stringly = summary_event(7)
    stringly["data"] = json.dumps(stringly["data"])
    await stream.put(stringly, SHARD0)
    await stream.put({"type": "com.twilio.voice.insights.conference-participant-summary.complete"}, SHARD0)  # no id
    last = await stream.put(summary_event(8), SHARD0)

    await harness.consumer.catch_up()
    await harness.consumer.catch_up()  # nothing stuck: the poison record is behind the checkpoint

    assert harness.events("test", "test") == 1
    assert harness.value(E + "invalid_events_total", source="kinesis", reason="not_json") == 1
    assert harness.value(E + "invalid_events_total", source="kinesis", reason="missing_id") == 1
    assert harness.events("other", "invalid") == 2
    assert harness.recorded() == 2
    assert harness.value(K + "records_read_total") == 5
    assert harness.sink.checkpoint(f"kinesis/{stream.name}/shardId-000000000000") == last


async def test_records_with_a_lone_surrogate_a_deep_nesting_or_a_nan_cost_only_themselves(harness: Harness, stream: Stream) -> None:
    for n in range(3):
        await stream.put(summary_event(n))
    await stream.put(json.dumps(summary_event(3)).replace('"specversion": "1.0"', '"specversion": "1.0\\ud83d"').encode())
    await stream.put(json.dumps(summary_event(4))[:-1].encode() + b', "x": ' + b"[" * 10_000 + b"]" * 10_000 + b"}")
    await stream.put(json.dumps(summary_event(5))[:-1].encode() + b', "x": NaN}')
    for n in range(6, 9):
        await stream.put(summary_event(n))

    await harness.consumer.catch_up()

    assert harness.recorded() == 7
    assert harness.value(E + "invalid_events_total", source="kinesis", reason="nested_too_deep") == 1
    assert harness.value(E + "invalid_events_total", source="kinesis", reason="not_json") == 1
    assert harness.events("other", "invalid") == 2


async def test_poison_records_meet_the_one_parser_counted_each_and_logged_once_a_minute(
    harness: Harness, stream: Stream, caplog: pytest.LogCaptureFixture
) -> None:
    for poison in (b"\x00not json{", b"{truncated", b"[" * 5000):
        await stream.put(poison, SHARD0)
    last = await stream.put(summary_event(1), SHARD0)

    with caplog.at_level(logging.WARNING):
        await harness.consumer.catch_up()

    assert harness.value(E + "invalid_events_total", source="kinesis", reason="not_json") == 2
    assert harness.value(E + "invalid_events_total", source="kinesis", reason="nested_too_deep") == 1
    assert harness.events("other", "invalid") == 3
    assert harness.recorded() == 1
    assert harness.sink.checkpoint(f"kinesis/{stream.name}/shardId-000000000000") == last
    # Through the pipeline's throttle, as every invalid event: one line a reason for the three.
    invalid = [r for r in caplog.records if r.getMessage() == "invalid event"]
    assert [(r.name, getattr(r, "source", None), getattr(r, "reason", None)) for r in invalid] == [
        ("exporter.pipeline", "kinesis", "not_json"),
        ("exporter.pipeline", "kinesis", "nested_too_deep"),
    ]


async def test_millis_behind_latest_is_a_gauge_of_seconds_per_shard(harness: Harness, stream: Stream, proxy: AwsProxy) -> None:
    proxy.behind_ms["shardId-000000000001"] = 12_345
    await stream.put(summary_event(1), SHARD0)

    # An empty page that is behind the tip is not caught up (AWS answers such pages): reading goes on.
    with pytest.raises(RuntimeError, match="not caught up after 6 reads"):
        await harness.consumer.catch_up(max_steps=6)

    assert harness.value(K + "behind_latest_seconds", shard="shardId-000000000000") == 0
    assert harness.value(K + "behind_latest_seconds", shard="shardId-000000000001") == 12.345
    assert harness.value(K + "last_read_timestamp_seconds") > 0


async def test_start_position_latest_skips_what_came_before(proxy: AwsProxy, stream: Stream) -> None:
    h = Harness(proxy, stream, start_position="latest")
    await h.start()
    try:
        await stream.put(summary_event(1), SHARD0)
        await h.consumer.catch_up()
        await stream.put(summary_event(2), SHARD0)
        await h.consumer.catch_up()
    finally:
        await h.stop()

    assert h.recorded() == 1
    assert h.value(K + "records_read_total") == 1


async def test_the_exporter_consumes_the_stream_in_the_background(proxy: AwsProxy, stream: Stream) -> None:
    """The real factory: the consumer runs as a cleanup_ctx task of the webhook application (the pipeline's loop)."""
    config = load_config(
        [f"--kinesis.stream-name={stream.name}", "--kinesis.region=us-east-1", f"--kinesis.endpoint-url={proxy.url}", "--kinesis.poll-interval=50ms"]
    )
    registry = CollectorRegistry()
    apps = create_apps(config, registry)
    await stream.put(summary_event(1), SHARD0)
    await stream.put(summary_event(2), SHARD1)
    async with TestClient(TestServer(apps.webhook)), TestClient(TestServer(apps.metrics)) as client:
        # The consumer is a background task: poll its metric, bounded.
        await until(lambda: registry.get_sample_value(E + "events_total", {"source": "kinesis", "type": "summary", "outcome": "recorded"}) == 2)
        text = await (await client.get("/metrics")).text()
    assert registry.get_sample_value(E + "events_total", {"source": "kinesis", "type": "summary", "outcome": "recorded"}) == 2
    assert f"{K}records_read_total 2.0" in text
    assert f'{K}errors_total{{kind="throttled"}} 0.0' in text


async def test_a_kinesis_only_exporter_without_an_auth_token_is_ready_while_its_webhook_answers_503(
    proxy: AwsProxy, stream: Stream, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Readiness per mode: without a token a webhook exporter is not ready (tests/test_webhook_edges.py),
    but one that consumes Kinesis needs no token for what it reads, so it is."""
    scrub_environment(monkeypatch)  # no TWILIO_AUTH_TOKEN, whatever the developer's shell holds
    config = load_config(
        [f"--kinesis.stream-name={stream.name}", "--kinesis.region=us-east-1", f"--kinesis.endpoint-url={proxy.url}", "--kinesis.poll-interval=50ms"]
    )
    registry = CollectorRegistry()
    apps = create_apps(config, registry)
    await stream.put(summary_event(1), SHARD0)
    async with TestClient(TestServer(apps.webhook)) as webhook, TestClient(TestServer(apps.metrics)) as metrics:
        await until(
            lambda: sample_sum(registry, E + "events_total", source="kinesis", type="summary", outcome="recorded") == 1, "the record consumed"
        )
        ready = await metrics.get("/-/ready")
        delivery = await webhook.post("/events", data=b"[]")

    assert ready.status == 200
    assert delivery.status == 503
    assert sample_sum(registry, E + "webhook_rejections_total", reason="no_auth_token_configured") == 1
    assert sample_sum(registry, E + "events_total", source="webhook") == 0


def test_help_says_which_start_position_loses_nothing(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        load_config(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "--kinesis.start-position" in text
    assert "trim_horizon (the default) loses nothing" in text


def test_a_malformed_stream_name_is_refused() -> None:
    with pytest.raises(ValueError, match=r"kinesis\.stream_name"):
        load_config(["--kinesis.stream-name=no spaces allowed"])


async def test_a_failed_delivery_is_read_again_from_the_checkpoint(harness: Harness, stream: Stream) -> None:
    """Nothing of a page whose delivery failed is checkpointed: it is read again, and recorded once."""
    deliver = harness.sink.deliver
    failures = [RuntimeError("state store unavailable")]

    async def flaky(events: list[Any], source: str, checkpoint: tuple[str, str] | None = None) -> Any:
        if failures:
            raise failures.pop()
        return await deliver(events, source, checkpoint)

    harness.sink.deliver = flaky  # type: ignore[method-assign]
    for n in range(3):
        await stream.put(summary_event(n), SHARD0)

    await harness.consumer.catch_up()

    assert harness.value(K + "errors_total", kind="internal") == 1
    assert harness.value(K + "records_read_total") == 6  # the page twice
    assert harness.recorded() == 3
    assert harness.value(K + "checkpoints_written_total") == 1
    assert harness.sleeps == [BACKOFF * JITTER]


async def test_the_running_service_follows_a_split_to_the_children(proxy: AwsProxy, stream: Stream) -> None:
    """run(): one task per shard, a new listing when a shard ends; real timers, polled with a deadline."""
    harness = Harness(proxy, stream, poll_interval=0.02, shard_sync_interval=3600)
    consumer = KinesisConsumer(harness.settings, KinesisApi(harness.settings), harness.sink, build_kinesis_metrics(CollectorRegistry()))

    async def recorded(expected: int) -> None:
        await until(lambda: harness.recorded() == expected, f"{expected} recorded")

    await consumer.start()
    task = asyncio.create_task(consumer.run())
    try:
        for n in range(2):
            await stream.put(summary_event(n), SHARD0)
            await stream.put(summary_event(10 + n), SHARD1)
        await recorded(4)
        await stream.split("shardId-000000000000", str(2**126))
        await stream.put(summary_event(20), CHILD_LOW)
        await stream.put(summary_event(21), CHILD_HIGH)
        # The shard listing is hourly here: only the parent's end can have led to its children.
        await recorded(6)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await consumer.stop()
    assert harness.sink.checkpoint(f"kinesis/{stream.name}/shardId-000000000000") == SHARD_END
    assert harness.events("summary", "duplicate") == 0


async def test_a_merged_shard_is_read_after_both_its_parents(proxy: AwsProxy, stream: Stream) -> None:
    """The first parent's ChildShards name the child, but the child waits for the other parent too."""
    harness = Harness(proxy, stream, batch_size=1)
    order: list[str] = []
    deliver = harness.sink.deliver

    async def recording(events: list[Any], source: str, checkpoint: tuple[str, str] | None = None) -> Any:
        order.extend(checkpoint[0].rsplit("/", 1)[1] for _ in events if checkpoint)
        return await deliver(events, source, checkpoint)

    harness.sink.deliver = recording  # type: ignore[method-assign]
    await stream.put(summary_event(1), SHARD0)
    for n in range(2, 8):
        await stream.put(summary_event(n), SHARD1)
    await stream.client.merge_shards(StreamName=stream.name, ShardToMerge="shardId-000000000000", AdjacentShardToMerge="shardId-000000000001")
    await stream.active()
    for n in range(8, 10):
        await stream.put(summary_event(n), SHARD0)

    await harness.start()
    try:
        await harness.consumer.catch_up()
    finally:
        await harness.stop()

    assert harness.recorded() == 9
    assert order == ["shardId-000000000000"] + ["shardId-000000000001"] * 6 + ["shardId-000000000002"] * 2
    for parent in ("shardId-000000000000", "shardId-000000000001"):
        assert harness.sink.checkpoint(f"kinesis/{stream.name}/{parent}") == SHARD_END


async def test_start_position_latest_skips_a_closed_parent_and_its_childrens_backlog(proxy: AwsProxy, stream: Stream) -> None:
    """Resharded before the first start: latest means the children's tip, not their beginning."""
    await stream.put(summary_event(1), SHARD0)
    await stream.split("shardId-000000000000", str(2**126))
    await stream.put(summary_event(2), CHILD_LOW)
    h = Harness(proxy, stream, start_position="latest")
    await h.start()
    try:
        await h.consumer.catch_up()
        await stream.put(summary_event(3), CHILD_HIGH)
        await h.consumer.catch_up()
    finally:
        await h.stop()

    assert h.recorded() == 1
    assert h.value(K + "records_read_total") == 1
    assert h.value(K + "shards_reading") == 3  # shard 1 and both children; the closed parent is never read
