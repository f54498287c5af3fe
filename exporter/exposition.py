"""``/metrics``: prometheus_client's exposition, rendered without stalling the webhook.

``prometheus_client.aiohttp.make_aiohttp_handler`` renders synchronously on the event loop; at
100k samples that held the loop for over a second, and every webhook delivery waited behind it.
This handler keeps the library's content negotiation (``choose_encoder``: OpenMetrics with
exemplars when the scraper asks for it) and its encoders for everything small, and writes the
large participant families (:mod:`exporter.record.families`) itself in chunks, yielding to the loop
between chunks. A render on the loop rather than in a thread: a thread would hold the GIL in
5 ms slices against the loop (measured in bench/), while a chunk is shorter than that.

Scrapers that arrive while a render of the same format is running share it instead of starting
another: two Prometheus replicas cost one render. A ``name[]`` scrape is rendered the same way,
restricted to the sample names asked for (as ``restricted_registry`` restricts them).

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
from collections.abc import Callable, Iterable, Sequence
from typing import Protocol

from aiohttp import hdrs, web
from aiohttp.abc import AbstractStreamWriter
from aiohttp.payload import Payload
from aiohttp.typedefs import Handler
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder
from prometheus_client.openmetrics.exposition import ALLOWUTF8, UNDERSCORES
from prometheus_client.registry import Collector

from exporter.record.families import rendered_separately

OPENMETRICS = "application/openmetrics-text"
EOF_LINE = b"# EOF\n"
# Escapings under which every family's names come out as they are (see the module docstring).
NAME_PRESERVING = frozenset({ALLOWUTF8, UNDERSCORES})
_ESCAPING_PARAM = re.compile(r"(;\s*escaping=)[^;,]*")

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


def make_metrics_handler(registry: CollectorRegistry, families: Sequence[RendersItself]) -> Handler:
    """A ``/metrics`` handler for ``registry``, whose ``families`` it renders itself."""
    in_flight: dict[str, asyncio.Future[list[bytes]]] = {}
    separately = frozenset(families)

    async def render(encoder: Encoder, openmetrics: bool, names: frozenset[str] | None = None) -> list[bytes]:
        token = rendered_separately.set(separately)
        try:
            # Everything but the participant families: small.
            head = encoder(registry if names is None else registry.restricted_registry(names))
        finally:
            rendered_separately.reset(token)
        parts = [head.removesuffix(EOF_LINE) if openmetrics else head]
        for family in families:
            for chunk in family.render(openmetrics, names):
                parts.append(chunk.encode())
                await asyncio.sleep(0)  # let webhook deliveries in between chunks
        if openmetrics:
            parts.append(EOF_LINE)
        return parts

    async def metrics(request: web.Request) -> web.Response:
        encoder, content_type = negotiate(",".join(request.headers.getall(hdrs.ACCEPT, [])))
        openmetrics = content_type.startswith(OPENMETRICS)
        if "name[]" in request.query:
            # Not shared: each asks for its own names. Chunked all the same: one name[] can be a
            # participant family of 100k samples.
            body = await render(encoder, openmetrics, frozenset(request.query.getall("name[]")))
        else:
            render_task = in_flight.get(content_type)
            if render_task is None:
                render_task = in_flight[content_type] = asyncio.ensure_future(render(encoder, openmetrics))
                render_task.add_done_callback(lambda done: in_flight.pop(content_type, None) if in_flight.get(content_type) is done else None)
            # shield: one scraper hanging up must not cancel the render the others wait for.
            body = await asyncio.shield(render_task)
        response = web.Response(body=Exposition(body), headers={hdrs.CONTENT_TYPE: content_type})
        response.enable_compression()
        return response

    return metrics
