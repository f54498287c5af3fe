"""The Event Streams webhook: size limit, credentials, signature, batch handling, status codes.

Status codes follow what Twilio does with them (twilio-facts.md): a 4xx other than 429 makes
Twilio discard the delivery for good, so it is kept for what no retry can fix (forged,
oversized, not JSON); anything the exporter itself got wrong is a 5xx, which Twilio retries for
4 hours. A batch is answered 200 as soon as it is authentic JSON: the valid events are recorded,
the invalid ones counted, and redelivering the batch would change nothing.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import functools
import hashlib
import hmac
import logging
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlparse, urlsplit

from aiohttp import web
from twilio.request_validator import RequestValidator

from .config import Config
from .keys import RUNTIME
from .logs import Throttle
from .models import loads

log = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-Twilio-Signature"
# Seconds a 503 asks the sender to wait. Twilio applies its own backoff (retries for 4 h); the
# header is for other senders and for whoever reads the answer.
RETRY_AFTER_SECONDS = 5
# Counted in webhook_requests_total for a delivery whose sender hung up before it was answered:
# nginx's "client closed request". Nothing is sent; the code only names the outcome.
CLIENT_CLOSED = 499
# Deliveries whose work one loop iteration runs (Intake.turn). Measured under a flood of signed
# batches of 50 from 400 connections (bench/overload.py, 10 s, --webhook.max-in-flight=32, one
# run each on a shared 2-core VM): 1 turn an iteration acknowledged 178 deliveries at p99 1.8 s
# (refusals crowd out the work), 8 turns 817 at p99 0.8 s, no limit 496 at p99 2.2 s. Eight
# batches of 50 are ~30 ms of work. docs/performance.md has the figures of the default bound.
TURNS_PER_ITERATION = 8


@dataclass(frozen=True, slots=True)
class Rejection:
    """Why a whole request was refused: status, the counted reason, a one-line message."""

    status: int
    reason: str
    message: str


@dataclass
class Intake:
    """Whether the webhook takes a delivery now: the bound on work in flight, the shutdown switch.

    A delivery past ``max_in_flight`` is answered 503 at once instead of waiting in the event
    loop's queue: queued work is what made a flood answer in seconds and starve the health probes
    (docs/performance.md). Twilio retries a 503 for 4 hours, so refusing loses nothing.
    """

    max_in_flight: int
    in_flight: int = 0
    closing: bool = False
    # Refused requests are logged at most once per reason per interval, with the count of the rest.
    refusals: Throttle = field(default_factory=Throttle)
    _idle: asyncio.Event = field(default_factory=asyncio.Event)
    _turns: deque[asyncio.Future[None]] = field(default_factory=deque)
    _dispatching: bool = False

    def __post_init__(self) -> None:
        self._idle.set()

    def enter(self) -> str | None:
        """Admit one delivery, or the reason it is refused (``shutting_down``, ``overloaded``)."""
        if self.closing:
            return "shutting_down"
        if self.in_flight >= self.max_in_flight:
            return "overloaded"
        self.in_flight += 1
        self._idle.clear()
        return None

    def leave(self) -> None:
        self.in_flight -= 1
        if self.in_flight == 0:
            self._idle.set()

    async def turn(self) -> None:
        """Wait for this delivery's turn to do its work: TURNS_PER_ITERATION deliveries per loop iteration.

        A delivery's work (signature, parsing, every event of the batch) runs in one step of the
        event loop, and a loop iteration runs every step that is ready: with 32 batches of 50
        ready together, one iteration took 32 x ~4 ms, and everything else (reading other
        requests, answering 503s) waited a few such iterations. Handing out a few turns per
        iteration keeps iterations short, so refusals and the deliveries' own reads go on
        between them. Waiting here also lets every request that arrived at the
        same time reach :meth:`enter` first: a body already buffered is read without yielding.
        """
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[None] = loop.create_future()
        self._turns.append(waiter)
        if not self._dispatching:
            self._dispatching = True
            loop.call_soon(self._next_turn)
        await waiter

    def _next_turn(self) -> None:
        granted = 0
        while self._turns and granted < TURNS_PER_ITERATION:
            waiter = self._turns.popleft()
            if not waiter.done():  # a waiter cancelled meanwhile gives its turn away
                waiter.set_result(None)
                granted += 1
        if self._turns:
            # The next turns are handed out in the next iteration, after this one's work.
            asyncio.get_running_loop().call_soon(self._next_turn)
        else:
            self._dispatching = False

    def close(self) -> None:
        """From now on every delivery is answered 503 (shutdown)."""
        self.closing = True

    async def idle(self) -> None:
        """Return once no delivery is in flight."""
        await self._idle.wait()


def can_verify(config: Config) -> bool:
    """Whether a delivery can be authenticated at all: an auth token, or the insecure switch."""
    return bool(config.secrets.auth_tokens()) or config.settings.webhook.insecure_skip_signature_verification


class SignatureVerifier:
    """Checks ``X-Twilio-Signature`` against every configured token; the ``twilio`` SDK decides every refusal.

    Fast path: the signature Twilio would send for the exact URL is computed with a pre-keyed
    HMAC-SHA1 (and the body's SHA-256 against ``bodySHA256``) and compared in constant time; a
    match is authentic. Anything else (no match, another token's signature, the URL signed with
    or without its default port, a query the fast path does not parse) goes to the SDK's
    ``RequestValidator``, whose answer stands. The fast path only takes URLs that the SDK would
    check verbatim (:meth:`verbatim_prefix`, :meth:`body_hash`), so it accepts nothing the SDK
    would refuse (tests/test_signature_fast_path.py checks it against the SDK). Why not the SDK
    alone: it hashes the URL twice and compares in a Python loop, ~5 x the cost (docs/performance.md).
    """

    def __init__(self, config: Config) -> None:
        webhook = config.settings.webhook
        self.insecure = webhook.insecure_skip_signature_verification
        self.public_url = urlsplit(webhook.public_url) if webhook.public_url else None
        self.trust_forwarded = webhook.trust_forwarded_headers
        tokens = config.secrets.auth_tokens()
        # Primary and secondary token both verify, so a rotation on Twilio's side loses nothing.
        self.validators = [RequestValidator(token) for token in tokens]
        # HMAC objects keyed once: copy() then update() skips the key schedule of hmac.new().
        self._keyed = [hmac.new(token.encode("utf-8"), digestmod=hashlib.sha1) for token in tokens]

    def signed_url(self, request: web.Request) -> str:
        """The URL Twilio signed: public scheme, host and path, plus the query as received.

        The query comes from the request because Twilio appends ``bodySHA256`` to it; the path
        comes from the public URL because a proxy may rewrite it.
        """
        query = request.raw_path.partition("?")[2]
        if self.public_url is not None:
            scheme, host, path = self.public_url.scheme, self.public_url.netloc, self.public_url.path or "/"
        elif self.trust_forwarded:
            scheme = _first(request.headers.get("X-Forwarded-Proto")) or request.scheme
            host = _first(request.headers.get("X-Forwarded-Host")) or request.host
            path = request.raw_path.partition("?")[0]
        else:
            scheme, host, path = request.scheme, request.host, request.raw_path.partition("?")[0]
        return f"{scheme}://{host}{path}" + (f"?{query}" if query else "")

    def check(self, request: web.Request, body: bytes) -> str | None:
        """``None`` when authentic, else the reason for refusing it."""
        if self.insecure:
            return None
        if not self.validators:
            return "no_auth_token_configured"
        signature = request.headers.get(SIGNATURE_HEADER)
        if not signature:
            return "missing_signature"
        url = self.signed_url(request)
        if self.fast_match(url, body, signature):
            return None
        return self.sdk_check(url, body, signature)

    def fast_match(self, url: str, body: bytes, signature: str) -> bool:
        """True when ``signature`` is a configured token's signature of exactly ``url`` and the body
        hash matches; False means only "not decided here", never "forged"."""
        prefix, _, query = url.partition("?")
        claimed = self.body_hash(query)
        if claimed is None or not signature.isascii() or not self.verbatim_prefix(prefix):
            return False
        # The SDK hashes the body decoded and re-encoded as UTF-8: the same bytes when it is valid
        # UTF-8 (isascii() is the cheap proof for the usual JSON); anything else is the SDK's call.
        if not (body.isascii() or self.is_utf8(body)):
            return False
        if not hmac.compare_digest(hashlib.sha256(body).hexdigest(), claimed):
            return False
        message = url.encode("utf-8")
        for keyed in self._keyed:
            mac = keyed.copy()
            mac.update(message)
            if hmac.compare_digest(base64.b64encode(mac.digest()).decode("ascii"), signature):
                return True
        return False

    def sdk_check(self, url: str, body: bytes, signature: str) -> str | None:
        """The ``twilio`` SDK's verdict on a signature the fast path did not match."""
        # Without bodySHA256 the signature covers the URL only: a captured signature would then
        # accept any body. Twilio always sends it for JSON bodies, so its absence is refused.
        if "bodySHA256" not in parse_qs(urlsplit(url).query):
            return "missing_body_hash"
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError:
            return "body_not_utf8"
        for validator in self.validators:
            try:
                # The raw body, never {}: passing {} would skip the body hash check.
                if validator.validate(url, text, signature):
                    return None
            except (TypeError, ValueError):
                # The SDK raises instead of answering False for some malformed inputs: fail closed.
                continue
        return "invalid_signature"

    @staticmethod
    def body_hash(query: str) -> str | None:
        """The ``bodySHA256`` value ``parse_qs`` would give the SDK, when reading it takes no decoding.

        ``None`` (leave it to the SDK) for a query with percent-escapes or ``+`` (which ``parse_qs``
        decodes), characters ``urlsplit`` drops or splits on (controls, ``#``), non-ASCII (which
        ``compare_digest`` refuses), or no such field.

        >>> SignatureVerifier.body_hash("a=1&bodySHA256=ab12&bodySHA256=cd")
        'ab12'
        >>> SignatureVerifier.body_hash("bodySHA256=&x=1") is None, SignatureVerifier.body_hash("body%53HA256=00&bodySHA256=ab") is None
        (True, True)
        """
        if not query or not query.isascii() or not query.isprintable() or "%" in query or "#" in query:
            return None
        for pair in query.split("&"):
            name, _, value = pair.partition("=")
            # parse_qs skips blank values and keeps the first of repeated names.
            if name == "bodySHA256" and value:
                return value
        return None

    @staticmethod
    @functools.lru_cache(maxsize=64)
    def verbatim_prefix(prefix: str) -> bool:
        """Whether the SDK signs ``prefix?query`` as written: ``urlparse(...).geturl()`` gives it back
        and its port parses. Cached: the prefix is the public URL, or one of a few hosts.

        >>> SignatureVerifier.verbatim_prefix("https://example.com/events"), SignatureVerifier.verbatim_prefix("HTTPS://example.com/events")
        (True, False)
        >>> SignatureVerifier.verbatim_prefix("https://example.com:x/events"), SignatureVerifier.verbatim_prefix("https://example.com/events;")
        (False, False)
        """
        if "?" in prefix or "#" in prefix or not prefix.isprintable():
            return False
        probe = prefix + "?bodySHA256=0"
        try:
            parsed = urlparse(probe)
            parsed.port  # noqa: B018 - raises ValueError for a port the SDK cannot parse either
        except ValueError:
            return False
        return parsed.geturl() == probe

    @staticmethod
    def is_utf8(body: bytes) -> bool:
        try:
            body.decode("utf-8")
        except UnicodeDecodeError:
            return False
        return True


class BasicAuth:
    """Optional HTTP Basic credentials that Twilio sends when the sink URL carries them."""

    def __init__(self, config: Config) -> None:
        secrets = config.secrets
        self.expected: bytes | None = None
        if secrets.basic_auth_username is not None and secrets.basic_auth_password is not None:
            self.expected = f"{secrets.basic_auth_username}:{secrets.basic_auth_password.get_secret_value()}".encode()

    def check(self, request: web.Request) -> bool:
        if self.expected is None:
            return True
        scheme, _, value = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            given = base64.b64decode(value.strip(), validate=True)
        except (binascii.Error, ValueError):
            return False
        return hmac.compare_digest(given, self.expected)


def _first(header: str | None) -> str | None:
    """The first value of a possibly comma-joined forwarded header (the client-facing hop)."""
    if not header:
        return None
    return header.split(",", 1)[0].strip() or None


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


async def _handle(request: web.Request, runtime: Any) -> web.StreamResponse:
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
    outcomes = await runtime.pipeline.deliver(rejection, "webhook")
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


async def _read_and_verify(request: web.Request, runtime: Any) -> Rejection | list[Any]:
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
        document = loads(body)
    except (ValueError, RecursionError):
        return Rejection(400, "invalid_json", "body is not valid JSON")
    if isinstance(document, dict):
        return [document]
    if isinstance(document, list) and all(isinstance(item, dict) for item in document):
        return document
    return Rejection(400, "not_cloudevents", "body is neither a CloudEvent object nor an array of them")
