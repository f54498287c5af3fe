"""Small pieces the tests share: the environment they scrub, a fake clock, a signed URL's parts."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Mapping
from urllib.parse import urlsplit

import pytest

from exporter.config import Secrets


def secret_variables() -> tuple[str, ...]:
    """Every environment variable :class:`exporter.config.Secrets` reads (its fields' aliases)."""
    return tuple(str(field.validation_alias) for field in Secrets.model_fields.values())


def _scrubbed(name: str) -> bool:
    # The secrets, the settings' TWILIO_INSIGHTS_EXPORTER_* variables and those the twilio SDK reads
    # (TWILIO_EDGE, TWILIO_REGION): a developer's shell must not change what a test sees.
    return name in secret_variables() or name.startswith("TWILIO_")


def scrub_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Remove (for this test) every variable the exporter or the twilio SDK would read."""
    for name in {*secret_variables(), *os.environ}:
        if _scrubbed(name):
            monkeypatch.delenv(name, raising=False)


def clean_environ(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """``os.environ`` (or ``environ``) without those variables, for an exporter process a test starts."""
    return {name: value for name, value in (os.environ if environ is None else environ).items() if not _scrubbed(name)}


class FakeClock:
    """A clock the test moves by hand, and a sleep that records the wait and moves it at once."""

    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now
        self.waits: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.waits.append(seconds)
        self.now += seconds
        await asyncio.sleep(0)


def path_and_query(url: str) -> str:
    """What follows the host in a signed URL: the request target to send it to another server.

    >>> path_and_query("https://hooks.example.com/events?bodySHA256=ab12")
    '/events?bodySHA256=ab12'
    """
    parts = urlsplit(url)
    return parts.path + (f"?{parts.query}" if parts.query else "")


def signed_query(url: str) -> str:
    """The query of a signed URL (Twilio's ``bodySHA256``), to append to the URL a proxy forwards to.

    >>> signed_query("https://hooks.example.com/events?bodySHA256=ab12")
    'bodySHA256=ab12'
    """
    return urlsplit(url).query
