"""Is this delivery Twilio's? ``X-Twilio-Signature`` over the URL and body, and optional Basic credentials.

The verify step of a delivery's path (exporter/webhook.py asks it after reading the body): the
``twilio`` SDK's ``RequestValidator`` decides every refusal; a faster check accepts only what
the SDK would accept (:class:`SignatureVerifier`).
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

from .config import Config

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
