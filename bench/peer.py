"""The naive peer: what a Python user would write in an afternoon instead of adopting this project.

One aiohttp handler: the ``twilio`` SDK's ``RequestValidator.validate(url, body, signature)``,
``json.loads``, a pydantic v2 model of the envelope and the summary (the participant SID, the
six common labels, both streams' MOS, jitter, latency, loss, packets and tags), and
prometheus_client's own ``Histogram`` and ``Counter``, the six common labels plus ``stream``
(plus ``stat`` on jitter and latency), observed with ``.labels(...).observe(...)``. No
deduplication, no journal, no atomicity (a summary that fails half-way stays half counted), no
label bounds, no self-metrics.

It is written to be fair, not to lose: the way the libraries' own documentation shows them,
nothing slowed down on purpose. The model holds only the fields it records (fewer than the
exporter validates), the module-level metrics on the default registry are what the
prometheus_client README does, and the bucket edges are the exporter's own
(``exporter.metrics``, one source of truth), so both sides observe into the same histograms.
The one concession to the bench: it is told the public URL Twilio signed (as the exporter is with
``--webhook.public-url``), because behind a proxy ``request.url`` is not that URL.

The reply is the exporter's and the bare handler's: 200, ``{"recorded": N}``.

Run as ``python -m bench.peer PORT PUBLIC_URL`` with ``TWILIO_AUTH_TOKEN`` set; it serves
``POST /events`` and ``GET /metrics`` on 127.0.0.1.
"""

from __future__ import annotations

import json
import os
import sys

from aiohttp import web
from prometheus_client import Counter, Histogram
from prometheus_client.aiohttp import make_aiohttp_handler
from pydantic import BaseModel, ValidationError
from twilio.request_validator import RequestValidator

from exporter.subjects.participant import COMMON_LABELS, JITTER, LATENCY, MOS, PACKET_LOSS, PACKETS_LOST, PACKETS_RECEIVED, TAGS
from exporter.subjects.thresholds import JITTER_BUCKETS, LATENCY_BUCKETS, MOS_BUCKETS, PACKET_LOSS_BUCKETS

SUMMARY_TYPE = "com.twilio.voice.insights.conference-participant-summary.complete"


class Stat(BaseModel):
    avg: float | None = None
    max: float | None = None


class Stream(BaseModel):
    mos: float | None = None
    jitter: Stat | None = None
    latency: Stat | None = None
    packet_loss_percentage: float | None = None
    total_packets_received: int | None = None
    total_packets_lost: int | None = None
    tags: list[str] = []


class StreamPair(BaseModel):
    inbound: Stream | None = None
    outbound: Stream | None = None


class Summary(BaseModel):
    participant_sid: str
    call_type: str | None = None
    call_direction: str | None = None
    participant_region: str | None = None
    conference_region: str | None = None
    country_code: str | None = None
    label: str | None = None
    metrics: StreamPair | None = None


class Event(BaseModel):
    id: str
    type: str
    data: Summary | None = None


COMMON = list(COMMON_LABELS)
STREAM = [*COMMON, "stream"]
mos = Histogram(MOS, "MOS per stream.", STREAM, buckets=MOS_BUCKETS)
jitter = Histogram(JITTER, "Jitter per stream.", [*STREAM, "stat"], buckets=JITTER_BUCKETS)
latency = Histogram(LATENCY, "Latency per stream.", [*STREAM, "stat"], buckets=LATENCY_BUCKETS)
packet_loss = Histogram(PACKET_LOSS, "Packet loss ratio per stream.", STREAM, buckets=PACKET_LOSS_BUCKETS)
packets_received = Counter(PACKETS_RECEIVED, "Packets received.", STREAM)
packets_lost = Counter(PACKETS_LOST, "Packets lost.", STREAM)
tags = Counter(TAGS, "Quality tags.", [*STREAM, "tag"])

validator = RequestValidator(os.environ["TWILIO_AUTH_TOKEN"])
PUBLIC_URL = sys.argv[2] if len(sys.argv) > 2 else "http://localhost/events"


def record(summary: Summary) -> None:
    common = [
        summary.call_type or "unknown",
        summary.call_direction or "unknown",
        summary.participant_region or "unknown",
        summary.conference_region or "unknown",
        summary.country_code or "unknown",
        summary.label or "unknown",
    ]
    if summary.metrics is None:
        return
    for name, stream in (("inbound", summary.metrics.inbound), ("outbound", summary.metrics.outbound)):
        if stream is None:
            continue
        if stream.mos is not None:
            mos.labels(*common, name).observe(stream.mos)
        for histogram, stat in ((jitter, stream.jitter), (latency, stream.latency)):
            if stat is not None and stat.avg is not None:
                histogram.labels(*common, name, "avg").observe(stat.avg / 1000)
            if stat is not None and stat.max is not None:
                histogram.labels(*common, name, "max").observe(stat.max / 1000)
        if stream.packet_loss_percentage is not None:
            packet_loss.labels(*common, name).observe(stream.packet_loss_percentage / 100)
        if stream.total_packets_received is not None:
            packets_received.labels(*common, name).inc(stream.total_packets_received)
        if stream.total_packets_lost is not None:
            packets_lost.labels(*common, name).inc(stream.total_packets_lost)
        for tag in stream.tags:
            tags.labels(*common, name, tag).inc()


async def events(request: web.Request) -> web.Response:
    body = await request.text()
    url = PUBLIC_URL + "?" + request.query_string
    if not validator.validate(url, body, request.headers.get("X-Twilio-Signature", "")):
        return web.json_response({"error": "invalid signature"}, status=403)
    try:
        document = json.loads(body)
        batch = [Event.model_validate(e) for e in (document if isinstance(document, list) else [document])]
    except (ValueError, ValidationError) as exc:
        return web.json_response({"error": str(exc)}, status=400)
    recorded = 0
    for event in batch:
        if event.type == SUMMARY_TYPE and event.data is not None:
            record(event.data)
            recorded += 1
    return web.json_response({"recorded": recorded})


def main() -> None:
    app = web.Application(client_max_size=16 * 1024**2)
    app.router.add_post("/events", events)
    app.router.add_get("/metrics", make_aiohttp_handler())
    web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), access_log=None, print=None)


if __name__ == "__main__":
    main()
