"""``/metrics``: prometheus_client's exposition, rendered without stalling the webhook.

``prometheus_client.aiohttp.make_aiohttp_handler`` renders synchronously on the event loop; at
100k samples that held the loop for over a second, and every webhook delivery waited behind it.
This handler keeps the library's content negotiation (``choose_encoder``: OpenMetrics with
exemplars when the scraper asks for it) and its encoders for everything small, and writes the
large participant families (:mod:`exporter.record.families`) itself in chunks, yielding to the loop
between chunks. A render on the loop rather than in a thread: a thread would hold the GIL in
5 ms slices against the loop (measured in bench/), while a chunk is shorter than that.

Scrapers that arrive while a render of the same format is running share it instead of starting
another: two Prometheus replicas cost one render. A scrape that arrives after a render ended
starts a new one, so it sees every change made before it arrived. Gzip is done here too, once per
render for all its gzip scrapers (:class:`Rendering`), rather than by aiohttp once per response:
sixteen scrapers pulling a large registry cost sixteen compressions of the whole text, in
executor threads that took the core from the webhook. The chunks of every render and
compression under way take turns, one per loop iteration, each followed by as long a rest
(:class:`Pace`). A ``name[]`` scrape is rendered the same way, restricted to the sample names
asked for (as ``restricted_registry`` restricts them), and not shared. Figures:
docs/performance.md, "Scrapes and deliveries".

Name escaping (``escaping=`` in ``Accept``) and the OpenMetrics version are negotiated by
``choose_encoder``, and only what every family writes identically is accepted: ``underscores``
and ``allow-utf-8`` leave names in the legacy character set (all of ours, families.py checks it)
as they are, so the whole document is what prometheus_client would write. ``dots`` and ``values``
would rewrite them (``values`` even only on OpenMetrics sample lines, not on their HELP), so a
scraper asking for those is answered with ``escaping=underscores``, said in the Content-Type as
the protocol allows, rather than with a mixed document. The version only changes how native
histograms are written, which no family here has.
"""

from __future__ import annotations

import asyncio
import re
import zlib
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from itertools import chain
from typing import Protocol, TypeVar, cast

from aiohttp import hdrs, web
from aiohttp.abc import AbstractStreamWriter
from aiohttp.payload import Payload
from aiohttp.typedefs import Handler
from prometheus_client import CollectorRegistry, Counter
from prometheus_client.exposition import choose_encoder, gzip_accepted
from prometheus_client.openmetrics.exposition import ALLOWUTF8, UNDERSCORES
from prometheus_client.registry import Collector

from exporter.record.families import rendered_separately

OPENMETRICS = "application/openmetrics-text"
EOF_LINE = b"# EOF\n"
# Escapings under which every family's names come out as they are (see the module docstring).
NAME_PRESERVING = frozenset({ALLOWUTF8, UNDERSCORES})
_ESCAPING_PARAM = re.compile(r"(;\s*escaping=)[^;,]*")
# The format label of the renders counter, by ``openmetrics``.
FORMATS = ("text", "openmetrics")
# zlib's fastest level (see gzip_chunks), as a gzip member (wbits 16 + 15).
GZIP_LEVEL = 1
GZIP_WBITS = 16 + zlib.MAX_WBITS

T = TypeVar("T")
_DONE = object()
# What choose_encoder returns: it renders a registry or a restricted_registry() of one.
Encoder = Callable[[Collector], bytes]


class RendersItself(Protocol):
    """A family the handler writes itself (exporter.record.families), in chunks of text lines."""

    def render(self, openmetrics: bool, names: frozenset[str] | None = None) -> Iterable[str]: ...


def negotiate(accept: str) -> tuple[Encoder, str]:
    """prometheus_client's encoder and Content-Type for ``accept``, the escaping narrowed to
    one every family writes.

    >>> negotiate("application/openmetrics-text; version=1.0.0; escaping=dots")[1]
    'application/openmetrics-text; version=1.0.0; charset=utf-8; escaping=underscores'
    >>> negotiate("application/openmetrics-text;version=1.0.0;escaping=allow-utf-8")[1]
    'application/openmetrics-text; version=1.0.0; charset=utf-8; escaping=allow-utf-8'
    """
    encoder, content_type = choose_encoder(accept)
    escaping = content_type.partition("escaping=")[2]
    if escaping and escaping not in NAME_PRESERVING:
        encoder, content_type = choose_encoder(_ESCAPING_PARAM.sub(rf"\g<1>{UNDERSCORES}", accept))
    return encoder, content_type


class Exposition(Payload):
    """A rendered exposition as the chunks it was rendered in, written one by one.

    Not joined into one ``bytes``: at 533,703 samples (142 MiB of text, 9,631 participant summaries
    of random labels) a scrape raised the peak RSS by 534 MiB, 3.8 times the text: the chunks, the
    joined copy, and the copy asyncio's transport makes of whatever the socket did not take at once
    (Python 3.11 extends a bytearray with it). Written chunk by chunk, each write drains before the
    next, so only the chunks are held (docs/performance.md, "/metrics memory"). aiohttp's own
    ``AsyncIterablePayload`` would do the writing but gives no size, so every answer would be
    chunked, never with a ``Content-Length``.
    """

    _value: list[bytes]

    def __init__(self, chunks: list[bytes]) -> None:
        super().__init__(chunks)
        self._size = sum(len(chunk) for chunk in chunks)

    def decode(self, encoding: str = "utf-8", errors: str = "strict") -> str:
        return b"".join(self._value).decode(encoding, errors)

    async def as_bytes(self, encoding: str = "utf-8", errors: str = "strict") -> bytes:
        return b"".join(self._value)

    async def write(self, writer: AbstractStreamWriter) -> None:
        for chunk in self._value:
            await writer.write(chunk)


class Pace:
    """Scrape work in slices that leave the event loop to the deliveries.

    A render (and the compression of one) is cut into chunks (:class:`RendersItself`), each a few
    milliseconds of work. One chunk runs per loop iteration, whichever render or compression it
    belongs to: with a bare ``sleep(0)`` between chunks, a text render, an OpenMetrics render and
    a compression under way together each ran a chunk in every iteration, and every hop of a
    webhook delivery (accept, read, record, answer) waited behind all three. After each chunk the
    next waits as long as that one took (``rest`` times), so that scrape work takes at most half
    of the loop's time and CPU however many scrapers pull back to back; without that, the loop
    ran scrape work all the time and deliveries waited for the CPU, not only for the loop
    (docs/performance.md, "Scrapes and deliveries"). An idle exporter renders at half speed.
    """

    def __init__(self, rest: float = 1.0) -> None:
        self.rest = rest
        self._waiting: deque[asyncio.Future[None]] = deque()
        self._dispatching = False
        self._not_before = 0.0

    async def slices(self, work: Iterable[T]) -> AsyncIterator[T]:
        """``work``'s items, each produced (and handled by the caller) in a turn of its own."""
        loop = asyncio.get_running_loop()
        items = iter(work)
        while True:
            await self._turn(loop)
            started = loop.time()
            item = next(items, _DONE)
            if item is _DONE:
                return
            yield cast(T, item)
            # This slice's work: producing the item and the caller's handling of it.
            now = loop.time()
            self._not_before = max(self._not_before, now + (now - started) * self.rest)

    async def _turn(self, loop: asyncio.AbstractEventLoop) -> None:
        waiter: asyncio.Future[None] = loop.create_future()
        self._waiting.append(waiter)
        if not self._dispatching:
            self._dispatching = True
            loop.call_soon(self._next)
        await waiter

    def _next(self) -> None:
        loop = asyncio.get_running_loop()
        if loop.time() < self._not_before:
            loop.call_at(self._not_before, self._next)
            return
        while self._waiting:
            waiter = self._waiting.popleft()
            if not waiter.done():  # a waiter cancelled meanwhile (its name[] scrape hung up) gives its turn away
                waiter.set_result(None)
                break
        if self._waiting:
            loop.call_soon(self._next)  # runs in the next iteration, after the slice just granted
        else:
            self._dispatching = False


class Rendering:
    """One render of one format, and its gzip, shared by the scrapes that arrive while it runs.

    The text is rendered once (``text``); the first scrape that accepts gzip starts the one
    compression of that text (``gzipped``), which every gzip scrape of the render then shares.
    """

    def __init__(self, text: asyncio.Future[list[bytes]], pace: Pace) -> None:
        self.text = text
        self._pace = pace
        self._gzipped: asyncio.Future[list[bytes]] | None = None

    def gzipped(self) -> asyncio.Future[list[bytes]]:
        if self._gzipped is None:
            self._gzipped = asyncio.ensure_future(self._compress())
        return self._gzipped

    async def _compress(self) -> list[bytes]:
        return await gzip_chunks(await self.text, self._pace)


async def gzip_chunks(chunks: list[bytes], pace: Pace) -> list[bytes]:
    """``chunks`` as one gzip member, compressed on the loop a chunk per slice of ``pace``.

    At :data:`GZIP_LEVEL`: level 1 compresses a participant exposition 2.3 times faster than
    zlib's default 6 for a body about a quarter larger (docs/performance.md, "Scrapes and deliveries").
    """
    compressor = zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, GZIP_WBITS)
    out = []
    async for chunk in pace.slices(chunks):
        if piece := compressor.compress(chunk):
            out.append(piece)
    out.append(compressor.flush())
    return out


def make_metrics_handler(registry: CollectorRegistry, families: Sequence[RendersItself], renders: Counter) -> Handler:
    """A ``/metrics`` handler for ``registry``, whose ``families`` it renders itself; ``renders``
    counts its renders by format (``text``, ``openmetrics``)."""
    in_flight: dict[str, Rendering] = {}
    pace = Pace()
    separately = frozenset(families)
    for fmt in FORMATS:
        renders.labels(fmt)

    async def render(encoder: Encoder, openmetrics: bool, names: frozenset[str] | None = None) -> list[bytes]:
        renders.labels(FORMATS[openmetrics]).inc()
        token = rendered_separately.set(separately)
        try:
            # Everything but the participant families: small.
            head = encoder(registry if names is None else registry.restricted_registry(names))
        finally:
            rendered_separately.reset(token)
        parts = [head.removesuffix(EOF_LINE) if openmetrics else head]
        async for chunk in pace.slices(chain.from_iterable(family.render(openmetrics, names) for family in families)):
            parts.append(chunk.encode())
        if openmetrics:
            parts.append(EOF_LINE)
        return parts

    def shared(encoder: Encoder, content_type: str, openmetrics: bool) -> Rendering:
        """The render of ``content_type`` under way, or a new one: never one that already ended,
        so a scrape always sees every change made before it arrived."""
        rendering = in_flight.get(content_type)
        if rendering is None:
            rendering = in_flight[content_type] = Rendering(asyncio.ensure_future(render(encoder, openmetrics)), pace)
            rendering.text.add_done_callback(lambda _: in_flight.pop(content_type) if in_flight.get(content_type) is rendering else None)
        return rendering

    async def metrics(request: web.Request) -> web.Response:
        encoder, content_type = negotiate(",".join(request.headers.getall(hdrs.ACCEPT, [])))
        openmetrics = content_type.startswith(OPENMETRICS)
        compress = gzip_accepted(request.headers.get(hdrs.ACCEPT_ENCODING, ""))
        if "name[]" in request.query:
            # Not shared: each asks for its own names. Chunked all the same: one name[] can be a
            # participant family of 100k samples.
            body = await render(encoder, openmetrics, frozenset(request.query.getall("name[]")))
            if compress:
                body = await gzip_chunks(body, pace)
        else:
            rendering = shared(encoder, content_type, openmetrics)
            # shield: one scraper hanging up must not cancel the render the others wait for.
            body = await asyncio.shield(rendering.gzipped() if compress else rendering.text)
        headers = {hdrs.CONTENT_TYPE: content_type}
        if compress:
            headers[hdrs.CONTENT_ENCODING] = "gzip"
        return web.Response(body=Exposition(body), headers=headers)

    return metrics
