"""The Event Streams webhook, the request step: admission, size limit, credentials, body, status codes.

Status codes follow what Twilio does with them (twilio-facts.md): a 4xx other than 429 makes
Twilio discard the delivery for good, so it is kept for what no retry can fix (forged,
oversized, not JSON); anything the exporter itself got wrong is a 5xx, which Twilio retries for
4 hours. A batch is answered 200 as soon as it is authentic JSON: the valid events are recorded,
the invalid ones counted, and redelivering the batch would change nothing.

The handler runs the request step and asks the others: admission (exporter/intake.py), the
signature and Basic credentials (exporter/verify.py), then the pipeline with the decoded events.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from . import parse
from .intake import Intake
from .keys import RUNTIME
from .metrics import Source
from .runtime import Runtime
from .verify import can_verify

log = logging.getLogger(__name__)

# Seconds a 503 asks the sender to wait. Twilio applies its own backoff (retries for 4 h); the
# header is for other senders and for whoever reads the answer.
RETRY_AFTER_SECONDS = 5
# Counted in webhook_requests_total for a delivery whose sender hung up before it was answered:
# nginx's "client closed request". Nothing is sent; the code only names the outcome.
CLIENT_CLOSED = 499


@dataclass(frozen=True, slots=True)
class Rejection:
    """Why a whole request was refused: status, the counted reason, a one-line message."""

    status: int
    reason: str
    message: str


def _reply(status: int, **fields: Any) -> web.Response:
    return web.json_response(fields, status=status)


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
    refused = intake.enter()
    if refused is not None:
        # Before the body is read: a refusal under overload must cost next to nothing.
        em.webhook_rejections.labels(refused).inc()
        intake.refusals.warning(log, refused, "delivery refused, answered 503", remote=request.remote, in_flight=intake.in_flight)
        response: web.StreamResponse = _unavailable("shutting down, retry later" if refused == "shutting_down" else "overloaded, retry later")
        if refused == "shutting_down":
            # The sender's retry opens a new connection, to another replica or the restarted pod.
            response.force_close()
        status = response.status
    else:
        try:
            response = await _handle(request, runtime)
            status = response.status
        except _ClientGone:
            # Nothing to answer and nothing of ours failed: its own outcome, not a 500.
            em.webhook_rejections.labels("client_disconnected").inc()
            intake.refusals.info(log, "client_disconnected", "sender hung up before its body was read", remote=request.remote)
            response = _reply(CLIENT_CLOSED, error="connection closed by the sender")
            status = CLIENT_CLOSED
        except Exception:
            # Twilio retries a 5xx; what was recorded before the failure is deduplicated then.
            log.exception("webhook failed")
            response = _reply(500, error="internal error, delivery will be retried")
            status = 500
        finally:
            intake.leave()

    em.webhook_requests.labels(str(status)).inc()
    em.webhook_request_duration.observe(time.perf_counter() - started)
    return response


async def _handle(request: web.Request, runtime: Runtime) -> web.StreamResponse:
    em = runtime.exporter_metrics
    rejection = await _read_and_verify(request, runtime)
    if isinstance(rejection, Rejection):
        refusals = runtime.intake.refusals
        if rejection.status == 403:
            em.signature_failures.labels(rejection.reason).inc()
            refusals.warning(log, f"signature/{rejection.reason}", "signature refused", reason=rejection.reason, remote=request.remote)
        elif rejection.status == 401:
            em.basic_auth_failures.inc()
            refusals.warning(log, "basic_auth", "basic credentials refused", remote=request.remote)
        else:
            em.webhook_rejections.labels(rejection.reason).inc()
            refusals.warning(log, rejection.reason, "delivery refused", reason=rejection.reason, remote=request.remote)
        if rejection.status == 503:
            response = _unavailable(rejection.message)
        else:
            response = _reply(rejection.status, error=rejection.message)
        if rejection.status == 401:
            response.headers["WWW-Authenticate"] = 'Basic realm="twilio-insights-exporter"'
        if rejection.reason == "read_timeout":
            await _answer_and_close(request, response)
        return response
    outcomes = await runtime.pipeline.deliver(rejection, Source.WEBHOOK)
    return _reply(200, **outcomes)


async def _answer_and_close(request: web.Request, response: web.StreamResponse) -> None:
    """Send ``response`` now and close the connection.

    Left to aiohttp, a handler that did not read the whole body is followed by up to 10 s of
    "lingering" reads of the rest: for a sender trickling its body, exactly what the read
    timeout is there to end.
    """
    response.force_close()
    await response.prepare(request)
    await response.write_eof()
    if request.transport is not None:
        request.transport.close()


async def _read_and_verify(request: web.Request, runtime: Runtime) -> Rejection | list[Any]:
    webhook = runtime.config.settings.webhook
    if not can_verify(runtime.config):
        # Our configuration, not the sender's fault: a 403 would make Twilio discard the delivery,
        # a 503 makes it retry for 4 hours while the operator sets the token.
        return Rejection(503, "no_auth_token_configured", "no auth token configured on the exporter, retry later")
    limit = webhook.max_body_size
    if request.content_length is not None and request.content_length > limit:
        return Rejection(413, "too_large", f"body larger than {limit} bytes")
    if not runtime.basic_auth.check(request):
        return Rejection(401, "basic_auth", "missing or wrong credentials")
    try:
        # One deadline for the whole body, not per chunk: a sender trickling a byte a second
        # would pass any per-read timeout. Twilio itself gives up after 5 s.
        async with asyncio.timeout(webhook.read_timeout.total_seconds()):
            # client_max_size of the webhook app bounds a chunked body that announced no length.
            body = await request.read()
    except web.HTTPRequestEntityTooLarge:
        return Rejection(413, "too_large", f"body larger than {limit} bytes")
    except TimeoutError:
        return Rejection(503, "read_timeout", f"body not received within {webhook.read_timeout}, retry later")
    except ConnectionError as exc:
        raise _ClientGone from exc
    # From here to the answer the delivery runs without yielding: its turn (see Intake.turn).
    await runtime.intake.turn()
    reason = runtime.verifier.check(request, body)
    if reason is not None:
        return Rejection(403, reason, f"signature check failed: {reason}")
    try:
        return parse.batch(body)
    except parse.NotABatch as exc:
        return Rejection(400, exc.reason, exc.message)
