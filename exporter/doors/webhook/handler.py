"""The Event Streams webhook, the request step: source, credentials, signature, budget, body, status codes.

Status codes follow what Twilio does with them (twilio-facts.md): a 4xx other than 429 makes
Twilio discard the delivery for good, so it is kept for what no retry can fix (forged,
oversized, not JSON); anything the exporter itself got wrong is a 5xx, which Twilio retries for
4 hours. A batch is answered 200 as soon as it is authentic JSON: the valid events are recorded,
the invalid ones counted, and redelivering the batch would change nothing.

The handler runs the request step and asks the others, in this order and, up to the body, from
the request line and headers alone, so that a refusal reads nothing: the source network
(exporter/doors/webhook/network.py), Basic credentials and the URL's signature (exporter/doors/webhook/verify.py), a copy of
the same signed request in flight and the memory budget (exporter/doors/webhook/intake.py); then the body within
its deadline, charged to the budget as it arrives, its hash, the in-flight bound, and the pipeline
with the decoded events.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from aiohttp import web

from exporter import parse
from exporter.doors.webhook.intake import BodyCharge, Hold, Intake
from exporter.doors.webhook.network import FORWARDED_FOR
from exporter.doors.webhook.verify import SIGNATURE_HEADER, can_verify
from exporter.keys import RUNTIME
from exporter.metrics import ExporterMetrics, Source
from exporter.pipeline import counter_child
from exporter.runtime import Runtime

log = logging.getLogger(__name__)

# Seconds a 503 asks the sender to wait. Twilio applies its own backoff (retries for 4 h); the
# header is for other senders and for whoever reads the answer.
RETRY_AFTER_SECONDS = 5
# Counted in webhook_requests_total for a delivery whose sender hung up before it was answered:
# nginx's "client closed request". Nothing is sent; the code only names the outcome.
CLIENT_CLOSED = 499


class Refusal(Exception):
    """A whole request refused: its status, counted reason and one-line message, and the counter it bumps.

    Raised by the steps of :func:`_verified_events` and answered by :func:`handle_webhook`; each
    kind of refusal is made by one constructor below, which also says which counter it counts in.
    """

    def __init__(
        self,
        status: int,
        reason: str,
        message: str,
        count: Callable[[ExporterMetrics], None],
        log_key: str,
        log_message: str,
        fields: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason
        self.message = message
        self.count = count
        self.log_key = log_key
        self.log_message = log_message
        self.fields = fields or {}
        # Set by the steps before the body is read: the answer then closes the connection, at once
        # (what no retry on this connection can fix), or once aiohttp has read and dropped the rest
        # of the body (``drain``: a real delivery that cannot be taken now; closing with its body
        # unread would reset the connection and lose the 503 on the way).
        self.unread = False
        self.drain = False

    @classmethod
    def signature(cls, reason: str, url: str) -> Refusal:
        # The URL that was checked: behind a proxy, what tells a wrong public URL from a forgery.
        # It holds no secret (bodySHA256 is a hash of the body; credentials never reach it).
        return cls(
            403,
            reason,
            f"signature check failed: {reason}",
            lambda em: em.signature_failures.labels(reason).inc(),
            f"signature/{reason}",
            "signature refused",
            {"reason": reason, "url": url},
        )

    @classmethod
    def credentials(cls) -> Refusal:
        return cls(
            401, "basic_auth", "missing or wrong credentials", lambda em: em.basic_auth_failures.inc(), "basic_auth", "basic credentials refused"
        )

    @classmethod
    def delivery(cls, status: int, reason: str, message: str) -> Refusal:
        return cls(status, reason, message, lambda em: em.webhook_rejections.labels(reason).inc(), reason, "delivery refused", {"reason": reason})

    def before_reading(self, drain: bool = False) -> Refusal:
        self.unread, self.drain = True, drain
        return self

    def response(self) -> web.Response:
        if self.status == 503:
            response = _unavailable(self.message)
        else:
            response = _reply(self.status, error=self.message)
        if self.status == 401:
            response.headers["WWW-Authenticate"] = 'Basic realm="twilio-insights-exporter"'
        return response


def _reply(status: int, **fields: Any) -> web.Response:
    return web.json_response(fields, status=status)


# The 200 reply's body per distinct outcome dict, encoded once: cheaper than ``json_response`` per
# request (measured by bench/levers.py reply; docs/performance.md). Bounded: counts vary with batch sizes.
_OK_BODIES: dict[tuple[tuple[str, int], ...], bytes] = {}
_OK_BODIES_MAX = 1024


def _ok(outcomes: dict[str, int]) -> web.Response:
    key = tuple(outcomes.items())
    body = _OK_BODIES.get(key)
    if body is None:
        body = json.dumps(outcomes).encode()
        if len(_OK_BODIES) < _OK_BODIES_MAX:
            _OK_BODIES[key] = body
    return web.Response(body=body, status=200, content_type="application/json", charset="utf-8")


def _unavailable(message: str) -> web.Response:
    """503 with Retry-After: our side cannot take the delivery now, and Twilio retries it."""
    response = _reply(503, error=message)
    response.headers["Retry-After"] = str(RETRY_AFTER_SECONDS)
    return response


class _ClientGone(Exception):
    """The sender closed the connection before its body was read."""


async def handle_webhook(request: web.Request) -> web.StreamResponse:
    """``POST`` of one delivery: a JSON array of CloudEvents or one bare CloudEvent."""
    runtime = request.app[RUNTIME]
    em = runtime.exporter_metrics
    intake: Intake = runtime.intake
    started = time.perf_counter()
    response: web.StreamResponse
    try:
        events, hold = await _admitted(request, runtime)
        try:
            outcomes = await runtime.pipeline.deliver(events, Source.WEBHOOK)
        finally:
            hold.release()
        response = _ok(outcomes)
    except Refusal as refusal:
        refusal.count(em)
        intake.refusals.warning(log, refusal.log_key, refusal.log_message, remote=request.remote, **refusal.fields)
        response = refusal.response()
        if refusal.drain:
            # aiohttp reads and drops what remains (at most 10 s of it, nothing kept), then closes.
            response.force_close()
        elif refusal.unread:
            await _answer_and_close(request, response)
    except _ClientGone:
        # Nothing to answer and nothing of ours failed: its own outcome, not a 500.
        em.webhook_rejections.labels("client_disconnected").inc()
        intake.refusals.info(log, "client_disconnected", "sender hung up before its body was read", remote=request.remote)
        response = _reply(CLIENT_CLOSED, error="connection closed by the sender")
    except Exception:
        # Twilio retries a 5xx; what was recorded before the failure is deduplicated then.
        log.exception("webhook failed")
        response = _reply(500, error="internal error, delivery will be retried")

    counter_child(em.webhook_requests, str(response.status)).inc()
    em.webhook_request_duration.observe(time.perf_counter() - started)
    return response


async def _answer_and_close(request: web.Request, response: web.StreamResponse) -> None:
    """Send ``response`` now and close the connection.

    Left to aiohttp, a handler that did not read the whole body is followed by up to 10 s of
    "lingering" reads of the rest: for a sender trickling its body, exactly what the read
    timeout is there to end, and for a forged 16 MiB body, exactly the reading a refusal before
    reading is there to save.
    """
    response.force_close()
    await response.prepare(request)
    await response.write_eof()
    if request.transport is not None:
        request.transport.close()


async def _admitted(request: web.Request, runtime: Runtime) -> tuple[list[Any], Hold]:
    """The events of an authentic delivery and what it holds of the intake (the caller releases it); else raises :class:`Refusal`.

    In this order: source network, Basic credentials, URL signature, a copy of the same signed
    request in flight, the in-flight bound, the memory budget for the announced length (each
    from the request line and headers alone, so a refusal costs no buffer and reads nothing),
    then the body within its deadline, charged to the budget as it arrives, its hash, and the
    in-flight bound again.
    """
    webhook = runtime.config.settings.webhook
    intake = runtime.intake
    if not runtime.networks.allows(request.remote, request.headers.getall(FORWARDED_FOR, [])):
        raise Refusal.delivery(403, "source_network", "source address not in --webhook.allowed-networks").before_reading()
    if not can_verify(runtime.config):
        # Our configuration, not the sender's fault: a 403 would make Twilio discard the delivery,
        # a 503 makes it retry for 4 hours while the operator sets the token.
        raise Refusal.delivery(503, "no_auth_token_configured", "no auth token configured on the exporter, retry later").before_reading()
    limit = webhook.max_body_size
    if request.content_length is not None and request.content_length > limit:
        raise Refusal.delivery(413, "too_large", f"body larger than {limit} bytes").before_reading()
    if not runtime.basic_auth.check(request):
        raise Refusal.credentials().before_reading()
    url, reason = runtime.verifier.check_url(request)
    if reason is not None:
        raise Refusal.signature(reason, url).before_reading()
    # Cheap refusals of what cannot be taken now, before a byte of the body is held.
    refused = intake.start_reading()
    if refused is not None:
        # The sender's retry opens a new connection, to another replica or the restarted pod.
        raise Refusal.delivery(503, refused, "shutting down, retry later").before_reading(drain=True)
    hold = Hold(intake)
    try:
        signature = request.headers.get(SIGNATURE_HEADER)
        # Without verification (the insecure switch) a signature proves nothing, and deliveries
        # without one would all look like copies of each other.
        if signature and not runtime.verifier.insecure:
            if intake.claim(url, signature) is not None:
                # Answered and closed at once, its body never read: draining a copy's trickled body
                # is the replayer's lever on the loop. Twilio never sends one delivery twice at once;
                # should the 503 be lost to the reset, a lost answer is retried like a 503.
                raise Refusal.delivery(503, "replayed", "a copy of this delivery is being received, retry later").before_reading()
            hold.claim = (url, signature)
        if intake.in_flight >= intake.max_in_flight:
            raise Refusal.delivery(503, "overloaded", "overloaded, retry later").before_reading(drain=True)
        # A body without a length may be as large as the limit allows (checked as it is read).
        hold.charge = intake.budget.admit(request.content_length if request.content_length is not None else limit)
        if hold.charge is None:
            raise Refusal.delivery(503, "memory_budget", "too much being received now, retry later").before_reading(drain=True)
        body = await _read_body(request, webhook.read_timeout, limit, hold.charge)
        reason = runtime.verifier.check_body(url, body)
        if reason is not None:
            raise Refusal.signature(reason, url)
        # Entered before it stops reading, so that the shutdown never sees it in neither.
        if intake.enter() is not None:
            raise Refusal.delivery(503, "overloaded", "overloaded, retry later")
        hold.entered = True
    except BaseException:
        hold.release()
        raise
    finally:
        intake.stop_reading()
    try:
        # From here to the answer the delivery runs without yielding: its turn (see Intake.turn).
        await intake.turn()
        return _events(body), hold
    except BaseException:
        hold.release()
        raise


async def _read_body(request: web.Request, deadline: timedelta, limit: int, charge: BodyCharge) -> bytes:
    """The body, each chunk paid for in the budget as it arrives (a trickler holds what it sent); the size limit checked here too."""
    chunks: list[bytes] = []
    received = 0
    try:
        # One deadline for the whole body, not per chunk: a sender trickling a byte a second
        # would pass any per-read timeout. Twilio itself gives up after 5 s. A trickling sender
        # costs its socket, this timer and what it has sent, no in-flight slot (Intake).
        async with asyncio.timeout(deadline.total_seconds()):
            while chunk := await request.content.readany():
                received += len(chunk)
                if received > limit:
                    raise Refusal.delivery(413, "too_large", f"body larger than {limit} bytes").before_reading()
                if not charge.cover(received):
                    # Others took the budget while this body arrived: dropped, and retried by Twilio.
                    raise Refusal.delivery(503, "memory_budget", "too much being received now, retry later").before_reading(drain=True)
                chunks.append(chunk)
    except TimeoutError:
        raise Refusal.delivery(503, "read_timeout", f"body not received within {deadline}, retry later").before_reading() from None
    except ConnectionError as exc:
        raise _ClientGone from exc
    return b"".join(chunks)


def _events(body: bytes) -> list[Any]:
    try:
        return parse.batch(body)
    except parse.NotABatch as exc:
        raise Refusal.delivery(400, exc.reason, exc.message) from None
