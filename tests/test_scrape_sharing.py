"""Concurrent scrapes share one render per format, in a real exporter process, on real sockets.

Scrapes that must arrive while one render is under way are made to arrive together: the process is
stopped (SIGSTOP) while they are written into their sockets and continued (SIGCONT) once all are
there, so its metrics listener reads them all at once; the render of a registry of many chunks
(exporter/families.py) then runs for many loop iterations after the last of them has arrived.
"""

from __future__ import annotations

import asyncio
import gzip
import os
import random
import signal
import urllib.request
from collections.abc import Iterator

import aiohttp
import pytest

from exporter.record.families import CHUNK_LINES
from exporter.synthetic import batch_body, cloud_event, generate_summary, sign
from tests.conftest import TOKEN
from tests.exporter_process import ExporterProcess, start_exporter

OPENMETRICS = "application/openmetrics-text; version=1.0.0"
TEXT = "text/plain; version=0.0.4"
RENDERS = "twilio_insights_exporter_metrics_renders_total"
SUMMARIES = "twilio_conference_participant_summaries_total"
# Enough series that a render is many chunks, each its own loop iteration (and a rest) or more.
MIN_CHUNKS = 20


def delivery(seed: int, summaries: int) -> bytes:
    rng = random.Random(seed)
    return batch_body([cloud_event(generate_summary(rng)) for _ in range(summaries)])


async def post(exporter: ExporterProcess, body: bytes) -> int:
    url, signature = sign(exporter.webhook_url, body, TOKEN)
    headers = {"X-Twilio-Signature": signature, "Content-Type": "application/json"}
    async with aiohttp.ClientSession() as session, session.post(url, data=body, headers=headers) as response:
        await response.read()
        return response.status


def scrape(exporter: ExporterProcess, accept: str = TEXT) -> str:
    request = urllib.request.Request(exporter.metrics_url + "/metrics", headers={"Accept": accept})
    with urllib.request.urlopen(request, timeout=60) as response:
        text: str = response.read().decode()
    return text


def values(text: str, name: str) -> list[float]:
    """Every sample value of ``name`` in a text exposition (a plain line scan: the parser takes
    seconds on a registry of this size); fails when there is none."""
    found = [float(line.rpartition(" ")[2]) for line in text.splitlines() if line.startswith((name + "{", name + " "))]
    assert found, f"no sample of {name}"
    return found


def renders(text: str, fmt: str) -> float:
    (counted,) = values(text, f'{RENDERS}{{format="{fmt}"}}')
    return counted


def sample_lines(body: bytes) -> int:
    return sum(1 for line in body.splitlines() if line and not line.startswith(b"#"))


class RawScrape:
    """A GET /metrics written by hand on a connection opened beforehand."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, accept: str, encoding: str) -> None:
        self.reader, self.writer = reader, writer
        self.request = f"GET /metrics HTTP/1.1\r\nHost: x\r\nAccept: {accept}\r\nAccept-Encoding: {encoding}\r\nConnection: close\r\n\r\n".encode()

    @classmethod
    async def open(cls, exporter: ExporterProcess, accept: str, encoding: str) -> RawScrape:
        host, port = exporter.metrics_url.removeprefix("http://").split(":")
        return cls(*await asyncio.open_connection(host, int(port)), accept, encoding)

    async def answer(self) -> tuple[dict[str, str], bytes]:
        async with asyncio.timeout(120):
            status_line = await self.reader.readline()
            assert status_line.split()[1] == b"200", status_line
            headers = {}
            while (line := await self.reader.readline()) != b"\r\n":
                name, _, text = line.decode().partition(":")
                headers[name.strip().lower()] = text.strip()
            body = await self.reader.readexactly(int(headers["content-length"]))
        self.writer.close()
        return headers, body


@pytest.fixture(scope="module")
def exporter(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ExporterProcess]:
    with start_exporter(env={"TWILIO_AUTH_TOKEN": TOKEN}, tmp_path=tmp_path_factory.mktemp("scrapes")) as process:
        for seed in range(50):  # a few are enough: each delivery adds thousands of series
            if scrape(process).count("\n") >= MIN_CHUNKS * CHUNK_LINES:
                break
            assert asyncio.run(post(process, delivery(seed, 200))) == 200
        else:
            pytest.fail(f"the registry did not reach {MIN_CHUNKS} chunks")
        yield process


async def scrapes_arriving_together(exporter: ExporterProcess, kinds: list[tuple[str, str]]) -> list[tuple[dict[str, str], bytes]]:
    """One scrape per ``(accept, accept-encoding)`` of ``kinds``, all read by the exporter at once."""
    scrapes = [await RawScrape.open(exporter, accept, encoding) for accept, encoding in kinds]
    os.kill(exporter.proc.pid, signal.SIGSTOP)
    try:
        for one in scrapes:
            one.writer.write(one.request)
            await one.writer.drain()
    finally:
        os.kill(exporter.proc.pid, signal.SIGCONT)
    return list(await asyncio.gather(*(one.answer() for one in scrapes)))


async def test_concurrent_scrapes_of_each_format_share_one_render_and_get_the_same_complete_bytes(exporter: ExporterProcess) -> None:
    kinds = [(accept, encoding) for accept in (OPENMETRICS, TEXT) for encoding in ("gzip", "identity")] * 3
    before = scrape(exporter)

    answers = await scrapes_arriving_together(exporter, kinds)

    after = scrape(exporter)
    # One render per format for the twelve scrapes; the scrapes before and after are text renders of their own.
    assert renders(after, "openmetrics") - renders(before, "openmetrics") == 1
    assert renders(after, "text") - renders(before, "text") == 1 + 1
    by_kind: dict[tuple[str, str], set[bytes]] = {}
    for kind, (headers, body) in zip(kinds, answers, strict=True):
        assert headers.get("content-encoding", "identity") == kind[1]
        assert headers["content-type"].startswith(kind[0].partition(";")[0])
        by_kind.setdefault(kind, set()).add(body)
    assert all(len(bodies) == 1 for bodies in by_kind.values()), "scrapes of one kind got different bytes"
    openmetrics, text = (by_kind[(accept, "identity")].pop() for accept in (OPENMETRICS, TEXT))
    # The gzip scrapes got the compression of the very render the others got.
    assert gzip.decompress(by_kind[(OPENMETRICS, "gzip")].pop()) == openmetrics
    assert gzip.decompress(by_kind[(TEXT, "gzip")].pop()) == text
    # Complete: the whole registry in both formats (no delivery came between the two renders).
    assert openmetrics.endswith(b"\n# EOF\n")
    assert sample_lines(text) == sample_lines(openmetrics) >= MIN_CHUNKS * CHUNK_LINES
    # The render counted itself before it wrote the counter.
    assert renders(openmetrics.decode(), "openmetrics") == renders(before, "openmetrics") + 1


async def test_a_scrape_after_a_render_ended_renders_again_and_sees_what_changed_since(exporter: ExporterProcess) -> None:
    first = scrape(exporter)
    assert await post(exporter, delivery(10_000, 1)) == 200

    second = scrape(exporter)

    assert renders(second, "text") == renders(first, "text") + 1
    assert sum(values(second, SUMMARIES)) == sum(values(first, SUMMARIES)) + 1
