"""Small pieces the tests share: the environment they scrub, a fake clock, a signed URL's parts,
a held state commit, and :func:`until`, the one way a test waits for something it cannot await."""

from __future__ import annotations

import asyncio
import inspect
import os
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any
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


class HeldCommit:
    """A ``StateStore.commit_hook`` that keeps the writer inside its transaction until :meth:`release`:
    a long commit that ends when the test says, not after some sleep."""

    def __init__(self) -> None:
        self.holding = threading.Event()
        self._release = threading.Event()

    def __call__(self) -> None:
        self.holding.set()
        self._release.wait(timeout=60)  # a bound, so a broken test cannot hang the writer for ever

    def release(self) -> None:
        self._release.set()


async def until(
    condition: Callable[[], Any],
    what: str = "the condition",
    *,
    seconds: float = 10.0,
    step: float = 0.02,
    ignoring: tuple[type[BaseException], ...] = (),
) -> Any:
    """Poll ``condition`` until it returns a true value (returned), or fail naming ``what``.

    The one poll-until loop of the tests, for a test on an event loop: it sleeps on the loop
    between checks, so what the test waits for runs meanwhile, and ``condition`` may be a
    coroutine function. It gives up after ``seconds`` with a ``TimeoutError``. Exceptions of the
    types in ``ignoring`` count as "not yet" (a server still starting); the last one is chained to
    the timeout, so that the failure says what went wrong. :func:`until_blocking` is the same loop
    for code without an event loop (a synchronous test, a thread).
    """
    deadline = _Deadline(what, seconds)
    while True:
        error = None
        try:
            result = condition()
            if inspect.isawaitable(result):
                result = await result
            if result:
                return result
        except ignoring as exc:
            error = exc
        deadline.check(error)
        await asyncio.sleep(step)  # a polling step on the loop, not synchronisation: the loop ends on the condition


def until_blocking(
    condition: Callable[[], Any],
    what: str = "the condition",
    *,
    seconds: float = 10.0,
    step: float = 0.02,
    ignoring: tuple[type[BaseException], ...] = (),
) -> Any:
    """:func:`until` for code without an event loop: it blocks between checks (never call it
    from a coroutine that waits for something its own loop has to do)."""
    deadline = _Deadline(what, seconds)
    while True:
        error = None
        try:
            if result := condition():
                return result
        except ignoring as exc:
            error = exc
        deadline.check(error)
        time.sleep(step)  # a polling step, not synchronisation: the loop ends on the condition, bounded


class _Deadline:
    def __init__(self, what: str, seconds: float) -> None:
        self.what, self.seconds = what, seconds
        self.end = time.monotonic() + seconds

    def check(self, last_error: BaseException | None) -> None:
        if time.monotonic() > self.end:
            raise TimeoutError(f"{self.what}: not within {self.seconds:g} s") from last_error
