"""The signature fast path accepts only what the twilio SDK accepts, and the SDK decides every refusal.

The check before the body is read (the URL's signature) and the check once it is read (the
body's hash) together give exactly the SDK's verdict on the whole delivery: a wrong 403 before
reading would make Twilio discard a real delivery for good.

The reference is the real ``twilio.request_validator.RequestValidator``: URLs and signatures are
generated around what Twilio sends (a sink URL, ``bodySHA256`` appended, the URL signed with or
without its default port, another token, a changed body) and around what the fast path must hand
over (percent-escapes, ``+``, fragments, repeated or blank ``bodySHA256``, odd hosts and ports).
"""

from __future__ import annotations

import hashlib
import json
from urllib.parse import parse_qs, urlsplit

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from twilio.request_validator import RequestValidator

from exporter.config import Config, Secrets, load_config
from exporter.doors.webhook.verify import SignatureVerifier
from exporter.synthetic import sign
from tests.conftest import SECONDARY_TOKEN, TOKEN, Harness, HarnessFactory
from tests.helpers import signed_query

E = "twilio_insights_exporter_"
SETTINGS = load_config([]).settings


def verifier(*tokens: str) -> SignatureVerifier:
    names = ("TWILIO_AUTH_TOKEN", "TWILIO_AUTH_TOKEN_SECONDARY")
    return SignatureVerifier(Config(settings=SETTINGS, secrets=Secrets.model_validate(dict(zip(names, tokens, strict=False)))))


def sdk_verdict(tokens: tuple[str, ...], url: str, body: bytes, signature: str) -> bool:
    """The exporter's verdict before the fast path: the SDK alone, and a body hash required."""
    if "bodySHA256" not in parse_qs(urlsplit(url).query):
        return False
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        return False
    for token in tokens:
        try:
            if RequestValidator(token).validate(url, text, signature):
                return True
        except (TypeError, ValueError):
            continue
    return False


SCHEMES = st.sampled_from(["https", "http", "https", "HTTPS"])
HOSTS = st.sampled_from(
    [
        "hooks.example.com",
        "hooks.example.com",
        "hooks.example.com:443",
        "hooks.example.com:80",
        "127.0.0.1:8080",
        "[::1]:9",
        "h:x",
        "h:",
        "xn--bcher-kva.example",
    ]
)
PATHS = st.sampled_from(["/events", "/events", "/", "", "/a;b", "/a;", "/p%20q", "/ünï", "/a b"])
BODIES = st.one_of(
    st.builds(lambda v: json.dumps([{"id": v}]).encode(), st.text(max_size=20)),
    st.binary(max_size=40),
)


@st.composite
def deliveries(draw: st.DrawFn) -> tuple[tuple[str, ...], str, bytes, str]:
    tokens = draw(st.sampled_from([(TOKEN,), (TOKEN, SECONDARY_TOKEN), (SECONDARY_TOKEN,)]))
    body = draw(BODIES)
    right_hash = hashlib.sha256(body).hexdigest()
    noise = st.sampled_from(
        [
            f"bodySHA256={right_hash.upper()}",
            "bodySHA256=" + hashlib.sha256(body + b"x").hexdigest(),
            "bodySHA256=",
            "bodySHA256",
            f"body%53HA256={right_hash}",
            "body%53HA256=" + "0" * 64,
            f"bodySHA256={right_hash[:10]}%{right_hash[10:]}",
            f"bodySHA256={right_hash}+",
            "a=b+c",
            "x=%41",
            "y=1#frag",
            "z=é",
            "t=\t",
            "n=\n",
            "",
        ]
    )
    fields = draw(st.lists(noise, max_size=3))
    # Most deliveries carry the right body hash somewhere among the other fields, as Twilio's do.
    if draw(st.integers(0, 9)):
        fields.insert(draw(st.integers(0, len(fields))), f"bodySHA256={right_hash}")
    query = "&".join(fields)
    base = f"{draw(SCHEMES)}://{draw(HOSTS)}{draw(PATHS)}"
    url = base + (f"?{query}" if query else "") + draw(st.sampled_from(["", "", "", "", "", "?", "#"]))
    signer = RequestValidator(draw(st.sampled_from([*tokens, "another-token"])))
    # What Twilio signs (this exact URL, most often), what the SDK also tries (with or without the
    # default port), and what a forger sends.
    signed = draw(st.sampled_from([url, url, url, url.replace(":443", "").replace(":80", ""), url.replace(".com/", ".com:443/"), url + "&extra=1"]))
    signature = signer.compute_signature(signed, {})
    signature = draw(st.sampled_from([signature, signature, signature, " " + signature, signature + "é", draw(st.text(max_size=30))]))
    return tokens, url, body, signature


@settings(max_examples=1500, deadline=None)
@given(deliveries())
@example(((TOKEN,), "https://hooks.example.com/events?bodySHA256=" + hashlib.sha256(b"[]").hexdigest(), b"[]", ""))
def test_the_fast_path_accepts_only_what_the_sdk_accepts_and_the_verdicts_agree(delivery) -> None:
    tokens, url, body, signature = delivery
    v = verifier(*tokens)

    fast = v.fast_match(url, body, signature)
    whole = fast or v.sdk_check(url, body, signature) is None

    if fast:
        assert sdk_verdict(tokens, url, body, signature), "the fast path accepted what the SDK refuses"
    assert whole == sdk_verdict(tokens, url, body, signature)


def sdk_url_verdict(tokens: tuple[str, ...], url: str, signature: str) -> bool:
    """The SDK's verdict on the URL's signature alone (the parameters empty, as once a body hash is checked)."""
    for token in tokens:
        try:
            if RequestValidator(token).validate(url, {}, signature):
                return True
        except (TypeError, ValueError):
            continue
    return False


@settings(max_examples=1500, deadline=None)
@given(deliveries())
@example(((TOKEN,), "https://hooks.example.com/events?bodySHA256=" + hashlib.sha256(b"[]").hexdigest(), b"[]", ""))
def test_the_check_before_reading_and_the_body_check_together_give_the_sdk_verdict(delivery) -> None:
    tokens, url, body, signature = delivery
    v = verifier(*tokens)

    before_reading = v.url_verdict(url, signature) is None
    once_read = v.check_body(url, body) is None

    assert (before_reading and once_read) == sdk_verdict(tokens, url, body, signature)
    if before_reading:
        # Nothing refused before reading that the SDK would take, nothing taken it would refuse.
        assert sdk_url_verdict(tokens, url, signature)
    if v.fast_url_match(url, signature):
        assert sdk_url_verdict(tokens, url, signature), "the fast path accepted a URL signature the SDK refuses"


@pytest.mark.parametrize("tokens", [(TOKEN,), (SECONDARY_TOKEN, TOKEN)])
@pytest.mark.parametrize(
    "sink", ["https://hooks.example.com/events", "http://127.0.0.1:8080/twilio/events?team=a", "https://hooks.example.com:8443/"]
)
def test_a_delivery_signed_as_twilio_signs_it_is_taken_by_the_fast_path(tokens, sink) -> None:
    body = json.dumps([{"id": "EZ1", "data": {"participant_sid": "CP1"}}]).encode()
    url, signature = sign(sink, body, TOKEN)

    assert verifier(*tokens).fast_match(url, body, signature)


def test_the_fast_path_leaves_the_url_signed_without_its_default_port_to_the_sdk() -> None:
    body = b"[]"
    url, _ = sign("https://hooks.example.com:443/events", body, TOKEN)
    signature = RequestValidator(TOKEN).compute_signature(url.replace(":443", ""), {})
    v = verifier(TOKEN)

    assert not v.fast_match(url, body, signature)
    assert v.sdk_check(url, body, signature) is None


class ValidateSpy:
    """Counts calls of ``RequestValidator.validate`` and returns the SDK's own answers."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls = 0
        original = RequestValidator.validate

        def validate(validator, *args, **kwargs):
            self.calls += 1
            return original(validator, *args, **kwargs)

        monkeypatch.setattr(RequestValidator, "validate", validate)


async def test_an_authentic_delivery_is_accepted_without_asking_the_sdk(harness: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    spy = ValidateSpy(monkeypatch)

    response = await harness.post([])

    assert response.status == 200
    assert spy.calls == 0


async def test_a_forged_delivery_is_refused_by_the_sdk(harness: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    spy = ValidateSpy(monkeypatch)

    response = await harness.post([], token="another-token")

    assert response.status == 403
    assert spy.calls == 1
    assert harness.value(E + "signature_failures_total", reason="invalid_signature") == 1


async def test_a_delivery_signed_with_the_default_port_is_accepted_by_the_sdk(make_harness: HarnessFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    # Twilio may sign the URL with :443 while the configured public URL has none: the SDK's
    # port variants decide it, as before the fast path.
    harness = await make_harness("--webhook.public-url=https://hooks.example.com/events")
    spy = ValidateSpy(monkeypatch)
    body = b"[]"
    url, signature = sign("https://hooks.example.com:443/events", body, TOKEN)

    response = await harness.client.post(harness.path + "?" + signed_query(url), data=body, headers={"X-Twilio-Signature": signature})

    assert response.status == 200
    assert spy.calls == 1
