"""/metrics as a scraper and an operator see it: promtool-clean, documented in docs/metrics.md."""

from __future__ import annotations

import asyncio
import gzip
import itertools
import re
import subprocess
import sys
import zlib
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request
from aiohttp.typedefs import Handler
from prometheus_client import CollectorRegistry, Counter, disable_created_metrics, enable_created_metrics, generate_latest
from prometheus_client.exposition import choose_encoder

from exporter.app import create_apps
from exporter.config import load_config
from exporter.exposition import make_metrics_handler
from exporter.synthetic import cloud_event, sink_test_event, summaries
from tests.conftest import Harness, fixture
from tests.family_pairs import BUCKETS, fill, ours

ROOT = Path(__file__).resolve().parent.parent


async def _populated(harness: Harness) -> None:
    """Every family with samples: recorded summaries, a test event, rejections of each kind."""
    await harness.post([fixture("reference_event.json"), *(cloud_event(s) for s in summaries(30, seed=3)), sink_test_event()])
    await harness.post([{"id": "EZ1", "type": "other"}, {"id": "EZ2", "type": fixture("reference_event.json")["type"], "data": []}])
    await harness.post(b"not json")
    await harness.post([fixture("reference_event.json")], token=None)


async def test_promtool_check_metrics_finds_nothing_to_complain_about(harness: Harness) -> None:
    await _populated(harness)
    text = await (await harness.metrics.get("/metrics")).text()

    result = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True, text=True)

    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == "" and result.stderr.strip() == ""


async def test_every_exported_family_is_in_the_metrics_reference_and_back(harness: Harness) -> None:
    await _populated(harness)
    text = await (await harness.metrics.get("/metrics")).text()
    # In the text format a counter's TYPE line already names it with _total, an Info's with _info.
    exported = {m.group(1) for m in re.finditer(r"^# TYPE (twilio_\w+) \w+", text, re.M)}
    reference = (ROOT / "docs" / "metrics.md").read_text()
    documented = set(re.findall(r"^\| `(twilio_[a-z_]+)`", reference, re.M))

    exported_core = {name for name in exported if not name.startswith("twilio_insights_exporter_pull_")}
    assert exported_core - documented == set(), "exported but not in docs/metrics.md"
    assert documented - exported == set(), "in docs/metrics.md but not exported"


def test_the_docs_generated_tables_are_generated_from_the_settings_and_the_caps() -> None:
    result = subprocess.run([sys.executable, "scripts/readme_tables.py", "--check"], cwd=ROOT, capture_output=True, text=True)

    assert result.returncode == 0, result.stderr


# --- negotiation and name[] scrapes, byte for byte against prometheus_client ----------------------

PROMETHEUS_3_ACCEPT = (
    "application/openmetrics-text;version=1.0.0;escaping=allow-utf-8;q=0.6,application/openmetrics-text;version=0.0.1;q=0.5,"
    "text/plain;version=1.0.0;escaping=allow-utf-8;q=0.4,text/plain;version=0.0.4;q=0.3,*/*;q=0.2"
)
ACCEPTS = [
    "",
    "text/plain",
    "text/plain; version=1.0.0; escaping=dots",
    "text/plain; version=1.0.0; escaping=values",
    "application/openmetrics-text; version=1.0.0",
    "application/openmetrics-text; version=1.0.0; escaping=allow-utf-8",
    "application/openmetrics-text; version=1.0.0; escaping=dots",
    "application/openmetrics-text; version=1.0.0; escaping=values",
    "application/openmetrics-text; version=2.0.0; escaping=underscores",
    "application/openmetrics-text",
    PROMETHEUS_3_ACCEPT,
]


def renders_counter() -> Counter:
    """The handler's renders counter, on a registry of its own (out of the compared exposition)."""
    return Counter("renders", "Renders.", ["format"], registry=CollectorRegistry())


@pytest.fixture
async def small(aiohttp_client):
    """A /metrics handler over a registry of participant families and one library counter."""
    disable_created_metrics()
    registry = CollectorRegistry()
    Counter("requests", "Requests.", ["code"], registry=registry).labels("200").inc(3)
    families = fill(registry, ours, ours)
    app = web.Application()
    app.router.add_get("/metrics", make_metrics_handler(registry, families, renders_counter()))
    return registry, families, await aiohttp_client(app)


@pytest.mark.parametrize("accept", ACCEPTS)
async def test_every_negotiated_format_is_prometheus_clients_own_output_for_the_whole_registry(small, accept: str) -> None:
    registry, _, client = small

    response = await client.get("/metrics", headers={"Accept": accept} if accept else {})

    content_type = response.headers["Content-Type"]
    escaping = content_type.partition("escaping=")[2]
    assert escaping in ("", "underscores", "allow-utf-8"), "an escaping the participant families do not write"
    # The library's encoder for exactly what the response announces, over the same registry.
    encoder, _ = choose_encoder(content_type)
    assert await response.read() == encoder(registry)


async def test_a_scrape_asking_for_dots_is_told_underscores_not_sent_a_mixed_document(small) -> None:
    _, _, client = small

    response = await client.get("/metrics", headers={"Accept": "application/openmetrics-text; version=1.0.0; escaping=dots"})

    assert response.headers["Content-Type"] == "application/openmetrics-text; version=1.0.0; charset=utf-8; escaping=underscores"
    text = await response.text()
    assert "mos_bucket{" in text and "requests_total{" in text and "__" not in text


@pytest.mark.parametrize("accept", ["text/plain", "application/openmetrics-text; version=1.0.0"])
@pytest.mark.parametrize(
    "names",
    [["calls_total"], ["mos_bucket"], ["mos_count", "mos_sum"], ["mos_sum", "calls_total", "requests_total"], ["mos"], ["nothing_of_that_name"]],
)
async def test_a_name_filtered_scrape_is_prometheus_clients_restricted_output(small, accept: str, names: list[str]) -> None:
    registry, _, client = small

    response = await client.get("/metrics", params=[("name[]", n) for n in names], headers={"Accept": accept})

    encoder, _ = choose_encoder(accept)
    expected = encoder(registry.restricted_registry(names))
    body = await response.read()
    # restricted_registry walks its collectors in set order: compare family by family.
    eof = b"# EOF\n" if accept.startswith("application/openmetrics-text") else b""
    assert body.endswith(eof) and expected.endswith(eof)
    assert sorted(body.removesuffix(eof).split(b"# HELP ")) == sorted(expected.removesuffix(eof).split(b"# HELP "))
    if len(names) == 1:
        assert body == expected


async def test_a_name_filtered_scrape_of_a_participant_family_is_rendered_by_the_family_not_collected(small, monkeypatch) -> None:
    _, families, client = small
    collected = []
    for family in families:
        monkeypatch.setattr(family, "collect", lambda collect=family.collect: collected.extend(collect()) or [])

    response = await client.get("/metrics", params={"name[]": "mos_bucket"})

    assert response.status == 200
    assert collected == [], "the library's synchronous collect() path rendered a participant family"
    assert (await response.text()).count("mos_bucket{") == 2 * (len(BUCKETS) + 1)


# --- the render shares the loop, and one scraper's hang-up is not everyone's ----------------------


class ChunkedFamily:
    """A participant family stand-in whose render is a chunk per step, watching the loop as it goes."""

    def __init__(self, chunks: int) -> None:
        self.chunks = chunks
        self.renders = 0
        self.started = asyncio.Event()
        self.release = False
        self.callbacks_run: list[int] = []
        self.seen: list[list[int]] = []

    def render(self, openmetrics: bool, names: frozenset[str] | None) -> Iterator[str]:
        self.renders += 1
        loop = asyncio.get_running_loop()
        for i in range(self.chunks):
            self.seen.append(list(self.callbacks_run))
            # Runs at the loop's next iteration: before chunk i + 1 only if the render yielded.
            loop.call_soon(self.callbacks_run.append, i)
            self.started.set()
            yield f"# chunk {i}\n"
        while not self.release and len(self.seen) < 10_000:  # held open until the test lets it end
            self.seen.append(list(self.callbacks_run))
            yield ""


def scrape(handler: Handler) -> asyncio.Task[web.StreamResponse]:
    return asyncio.ensure_future(handler(make_mocked_request("GET", "/metrics", headers={"Accept": "text/plain"})))


async def test_the_render_lets_other_work_run_on_the_loop_between_chunks() -> None:
    family = ChunkedFamily(chunks=3)
    family.release = True
    handler = make_metrics_handler(CollectorRegistry(), [family], renders_counter())

    response = await scrape(handler)

    assert (await response.body.as_bytes()).endswith(b"# chunk 0\n# chunk 1\n# chunk 2\n")
    # Work scheduled while chunk 0 was written ran before chunk 1 was, and so on.
    assert family.seen == [[], [0], [0, 1]]


async def test_a_scraper_hanging_up_does_not_cancel_the_render_another_scraper_waits_for() -> None:
    family = ChunkedFamily(chunks=2)
    handler = make_metrics_handler(CollectorRegistry(), [family], renders_counter())
    first, second = scrape(handler), scrape(handler)
    await family.started.wait()  # both scrapes are waiting for the one render now

    # What aiohttp does to the handler of a scraper that hung up (handler cancellation) or at shutdown.
    first.cancel()
    with pytest.raises(asyncio.CancelledError):
        await first
    family.release = True
    response = await second

    assert response.status == 200
    assert (await response.body.as_bytes()).endswith(b"# chunk 0\n# chunk 1\n")
    assert family.renders == 1


async def test_a_scrape_is_written_chunk_by_chunk_and_never_joined_into_one_copy() -> None:
    family = ChunkedFamily(chunks=3)
    family.release = True
    handler = make_metrics_handler(CollectorRegistry(), [family], renders_counter())
    response = await scrape(handler)
    writes: list[bytes] = []

    class Writer:
        async def write(self, chunk: bytes) -> None:
            writes.append(bytes(chunk))

    await response.body.write(Writer())  # type: ignore[arg-type]

    # One write per rendered chunk (each drains before the next): a joined body would be one write.
    assert writes[-3:] == [b"# chunk 0\n", b"# chunk 1\n", b"# chunk 2\n"]
    assert response.body.size == sum(len(chunk) for chunk in writes)


async def test_an_uncompressed_scrape_announces_its_length_and_a_compressed_one_is_the_same_text(small) -> None:
    registry, _, client = small

    plain = await client.get("/metrics", headers={"Accept": "text/plain", "Accept-Encoding": "identity"})
    gzipped = await client.get("/metrics", headers={"Accept": "text/plain", "Accept-Encoding": "gzip"})

    body = await plain.read()
    assert "Content-Encoding" not in plain.headers
    assert int(plain.headers["Content-Length"]) == len(body)
    assert body == choose_encoder("text/plain")[0](registry)
    assert gzipped.headers["Content-Encoding"] == "gzip"
    assert await gzipped.read() == body  # decompressed by the client


@pytest.mark.parametrize("accept", ["text/plain", "application/openmetrics-text; version=1.0.0", PROMETHEUS_3_ACCEPT])
async def test_a_gzip_scrape_is_prometheus_clients_own_output_compressed(small, accept: str) -> None:
    registry, _, client = small

    response = await client.get("/metrics", headers={"Accept": accept, "Accept-Encoding": "gzip"}, auto_decompress=False)

    assert response.headers["Content-Encoding"] == "gzip"
    compressed = await response.read()
    assert int(response.headers["Content-Length"]) == len(compressed)
    assert gzip.decompress(compressed) == choose_encoder(response.headers["Content-Type"])[0](registry)


def mocked_scrape(handler: Handler, accept: str, encoding: str) -> asyncio.Task[web.StreamResponse]:
    request = make_mocked_request("GET", "/metrics", headers={"Accept": accept, "Accept-Encoding": encoding})
    return asyncio.ensure_future(handler(request))


async def test_scrapes_of_a_format_arriving_during_its_render_share_the_render_and_one_compression(monkeypatch) -> None:
    compressions = []
    compressobj = zlib.compressobj
    monkeypatch.setattr(zlib, "compressobj", lambda *args: compressions.append(args) or compressobj(*args))
    family = ChunkedFamily(chunks=3)
    counters = CollectorRegistry()
    handler = make_metrics_handler(CollectorRegistry(), [family], Counter("renders", "Renders.", ["format"], registry=counters))
    scrapes = [mocked_scrape(handler, "text/plain", encoding) for encoding in ("gzip", "identity", "gzip, deflate", "identity")]
    await family.started.wait()  # every scrape joined the render: they all ran up to it before it began
    family.release = True

    bodies = [await (await scrape).body.as_bytes() for scrape in scrapes]

    assert family.renders == 1 and counters.get_sample_value("renders_total", {"format": "text"}) == 1
    assert len(compressions) == 1
    assert bodies[0] == bodies[2] and bodies[1] == bodies[3]
    assert gzip.decompress(bodies[0]) == bodies[1]


async def test_a_scrape_arriving_after_a_render_ended_starts_another() -> None:
    family = ChunkedFamily(chunks=2)
    family.release = True
    handler = make_metrics_handler(CollectorRegistry(), [family], renders_counter())

    await scrape(handler)
    await scrape(handler)

    assert family.renders == 2


class TimedFamily:
    """A family whose every chunk notes the loop iteration it runs in (``iteration``) and when it ends."""

    def __init__(self, chunks: int, busy: float = 0.0) -> None:
        self.chunks, self.busy = chunks, busy
        self.iteration = 0
        self.ran: list[tuple[int, float, float]] = []  # (iteration, started, ended)

    def render(self, openmetrics: bool, names: frozenset[str] | None) -> Iterator[str]:
        loop = asyncio.get_running_loop()
        for i in range(self.chunks):
            started = loop.time()
            while loop.time() - started < self.busy:  # a chunk that takes this long to render
                pass
            self.ran.append((self.iteration, started, loop.time()))
            yield f"# chunk {i}\n"


async def test_concurrent_renders_and_compressions_run_one_chunk_per_loop_iteration() -> None:
    family = TimedFamily(chunks=20)
    handler = make_metrics_handler(CollectorRegistry(), [family], renders_counter())
    running = True

    async def count_iterations() -> None:  # runs once in every iteration of the loop
        while running:
            family.iteration += 1
            await asyncio.sleep(0)

    counter = asyncio.ensure_future(count_iterations())
    # Two renders (one per format) and the compression of each: four streams of chunks at once.
    scrapes = [mocked_scrape(handler, accept, "gzip") for accept in ("text/plain", "application/openmetrics-text; version=1.0.0")]
    await asyncio.gather(*scrapes)
    running = False
    await counter

    iterations = [iteration for iteration, _, _ in family.ran]
    assert len(iterations) == 2 * 20
    assert len(set(iterations)) == len(iterations), "two render chunks ran in one loop iteration"


async def test_after_each_chunk_the_next_waits_as_long_as_that_one_took() -> None:
    family = TimedFamily(chunks=4, busy=0.02)
    handler = make_metrics_handler(CollectorRegistry(), [family], renders_counter())

    await scrape(handler)

    for (_, _, ended), (_, started, _) in itertools.pairwise(family.ran):
        assert started - ended >= 0.02


def test_the_app_factory_switches_the_created_series_off() -> None:
    # prometheus_client's switch is process-wide and other tests throw it too: start as a fresh process does.
    enable_created_metrics()
    try:
        registry = CollectorRegistry()
        apps = create_apps(load_config([]), registry)
        apps.runtime.exporter_metrics.webhook_requests.labels("200").inc()
        text = generate_latest(registry).decode()
    finally:
        disable_created_metrics()

    assert 'twilio_insights_exporter_webhook_requests_total{code="200"} 1.0' in text
    assert "_created" not in text
