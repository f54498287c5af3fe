"""Is this delivery Twilio's? ``X-Twilio-Signature`` over the URL and body, and optional Basic credentials.

The verify step of a delivery's path, in two halves: exporter/doors/webhook/handler.py asks :meth:`SignatureVerifier.check_url`
from the request line and headers before reading the body (the signature covers the URL, which
carries ``bodySHA256``), and :meth:`SignatureVerifier.check_body` once the body is read. The
``twilio`` SDK's ``RequestValidator`` decides every refusal of a signature; a faster check
accepts only what the SDK would accept.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import hmac
from urllib.parse import parse_qs, urlparse, urlsplit

from aiohttp import web
from twilio.request_validator import RequestValidator

from exporter.config import Config

SIGNATURE_HEADER = "X-Twilio-Signature"


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
    alone: it hashes the URL twice and compares in a Python loop, several times the cost of the
    fast path (figures in docs/performance.md, "signature fast path").
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
        """``None`` when authentic, else the reason for refusing it: :meth:`check_url`, then :meth:`check_body`."""
        url, reason = self.check_url(request)
        return reason if reason is not None else self.check_body(url, body)

    def check_url(self, request: web.Request) -> tuple[str, str | None]:
        """The URL Twilio signed, and ``None`` when its signature is a configured token's, else the reason.

        Needs the request line and headers alone, so a forged delivery is refused before a byte
        of its body is read. The SDK's ``validate(url, body, signature)`` is exactly "the body
        hash matches ``bodySHA256``" and "the signature covers the URL (with or without its
        default port)", the second computed with no parameters: this is the second half, and
        :meth:`check_body` the first (tests/test_signature_fast_path.py checks the split
        against the SDK).
        """
        url = self.signed_url(request)
        if self.insecure:
            return url, None
        if not self.validators:
            return url, "no_auth_token_configured"
        signature = request.headers.get(SIGNATURE_HEADER)
        if not signature:
            return url, "missing_signature"
        return url, self.url_verdict(url, signature)

    def url_verdict(self, url: str, signature: str) -> str | None:
        """``None`` when ``signature`` signs ``url`` for a configured token (fast path, else the SDK)."""
        if self.fast_url_match(url, signature):
            return None
        # Without bodySHA256 the signature covers the URL only: a captured signature would then
        # accept any body. Twilio always sends it for JSON bodies, so its absence is refused.
        if "bodySHA256" not in parse_qs(urlparse(url).query):
            return "missing_body_hash"
        for validator in self.validators:
            try:
                # {} as the parameters: the signature of the URL alone, which is what the SDK
                # computes once it has checked a body hash (the body is checked in check_body).
                if validator.validate(url, {}, signature):
                    return None
            except (TypeError, ValueError):
                # The SDK raises instead of answering False for some malformed inputs: fail closed.
                continue
        return "invalid_signature"

    def check_body(self, url: str, body: bytes) -> str | None:
        """``None`` when ``body`` hashes to the URL's ``bodySHA256`` as the SDK compares it, else the reason."""
        if self.insecure:
            return None
        # The SDK hashes the body decoded and re-encoded as UTF-8: the same bytes when it is valid
        # UTF-8 (isascii() is the cheap proof for the usual JSON); a body that is not cannot pass.
        if not (body.isascii() or self.is_utf8(body)):
            return "body_not_utf8"
        query = url.partition("?")[2]
        claimed = self.body_hash(query)
        if claimed is None:
            values = parse_qs(urlparse(url).query).get("bodySHA256")
            if not values:
                return "missing_body_hash"
            claimed = values[0]
        # Bytes, not str: compare_digest refuses non-ASCII strings, and UTF-8 keeps equality.
        if not hmac.compare_digest(hashlib.sha256(body).hexdigest().encode("ascii"), claimed.encode("utf-8")):
            return "invalid_signature"
        return None

    def fast_url_match(self, url: str, signature: str) -> bool:
        """True when ``signature`` is a configured token's signature of exactly ``url``; False means
        only "not decided here", never "forged"."""
        prefix, _, query = url.partition("?")
        if self.body_hash(query) is None or not signature.isascii() or not self.verbatim_prefix(prefix):
            return False
        message = url.encode("utf-8")
        for keyed in self._keyed:
            mac = keyed.copy()
            mac.update(message)
            if hmac.compare_digest(base64.b64encode(mac.digest()).decode("ascii"), signature):
                return True
        return False

    def fast_match(self, url: str, body: bytes, signature: str) -> bool:
        """Both halves on the fast path: the URL's signature and the body's hash (bench/inprocess.py)."""
        return self.fast_url_match(url, signature) and self.check_body(url, body) is None

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
