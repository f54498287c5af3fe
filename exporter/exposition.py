"""``/metrics``: prometheus_client's exposition, rendered without stalling the webhook.

``prometheus_client.aiohttp.make_aiohttp_handler`` renders synchronously on the event loop; at
100k samples that held the loop for over a second, and every webhook delivery waited behind it.
This handler keeps the library's content negotiation (``choose_encoder``: OpenMetrics with
exemplars when the scraper asks for it) and its encoders for everything small, and writes the
large participant families (:mod:`exporter.families`) itself in chunks, yielding to the loop
between chunks. A render on the loop rather than in a thread: a thread would hold the GIL in
5 ms slices against the loop (measured in bench/), while a chunk is shorter than that.

Scrapers that arrive while a render of the same format is running share it instead of starting
another: two Prometheus replicas cost one render.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from aiohttp import hdrs, web
from aiohttp.typedefs import Handler
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder

from .families import rendered_separately

OPENMETRICS = "application/openmetrics-text"
EOF_LINE = b"# EOF\n"


def make_metrics_handler(registry: CollectorRegistry, families: Sequence[object]) -> Handler:
    """A ``/metrics`` handler for ``registry``, whose ``families`` it renders itself."""
    in_flight: dict[str, asyncio.Future[bytes]] = {}
    separately = frozenset(families)

    async def render(encoder, openmetrics: bool) -> bytes:
        token = rendered_separately.set(separately)
        try:
            head = encoder(registry)  # everything but the participant families: small
        finally:
            rendered_separately.reset(token)
        parts = [head.removesuffix(EOF_LINE) if openmetrics else head]
        for family in families:
            for chunk in family.render(openmetrics):  # type: ignore[attr-defined]
                parts.append(chunk.encode())
                await asyncio.sleep(0)  # let webhook deliveries in between chunks
        if openmetrics:
            parts.append(EOF_LINE)
        return b"".join(parts)

    async def metrics(request: web.Request) -> web.Response:
        encoder, content_type = choose_encoder(",".join(request.headers.getall(hdrs.ACCEPT, [])))
        if "name[]" in request.query:
            # A filtered scrape is small: the library's own path.
            body = encoder(registry.restricted_registry(request.query.getall("name[]")))
        else:
            render_task = in_flight.get(content_type)
            if render_task is None:
                render_task = in_flight[content_type] = asyncio.ensure_future(render(encoder, content_type.startswith(OPENMETRICS)))
                render_task.add_done_callback(lambda done: in_flight.pop(content_type, None) if in_flight.get(content_type) is done else None)
            # shield: one scraper hanging up must not cancel the render the others wait for.
            body = await asyncio.shield(render_task)
        response = web.Response(body=body, headers={hdrs.CONTENT_TYPE: content_type})
        response.enable_compression()
        return response

    return metrics
