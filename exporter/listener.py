"""The listeners: both applications served from start to graceful stop, and the metrics listener's TLS reload.

With ``--web.config.file`` the metrics listener speaks TLS, and re-reads the file (and the
certificates it names) on SIGHUP and when they change (exporter/webconfig.py): a new listener
takes over the port (``reuse_port``) before the old one stops, so no scrape sees a refused
connection.

Both listeners run on the one event loop that owns the pipeline and the registry. A probe is not
stuck behind a flood of deliveries because the webhook admits at most ``--webhook.max-in-flight``
at once and their work takes turns (exporter/intake.py): measured in ``bench/overload.py``
(figures in docs/performance.md, "Overload").
"""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
import sqlite3
import ssl
from collections.abc import Coroutine

from aiohttp import web
from prometheus_client import CollectorRegistry

from . import __version__
from .app import create_apps
from .config import Config
from .webconfig import WATCH_INTERVAL, WebConfigHolder

log = logging.getLogger("exporter")

# Seconds aiohttp waits for handlers when a runner stops, after the webhook has drained.
RUNNER_SHUTDOWN_TIMEOUT = 2.0


class StartupError(Exception):
    """A start-up failure an operator fixes (a port in use, an unreadable file): one line, no traceback."""


def split_address(address: str) -> tuple[str | None, int]:
    """``host:port``, ``:port`` or ``[v6]:port`` into aiohttp's host and port.

    >>> split_address(":9802"), split_address("[::1]:80")
    ((None, 9802), ('::1', 80))
    """
    host, _, port = address.rpartition(":")
    return host.strip("[]") or None, int(port)


async def listen(runner: web.AppRunner, address: str, flag: str, context: ssl.SSLContext | None = None) -> web.TCPSite:
    """A site of ``runner`` listening on ``address``; a port in use is a :class:`StartupError` naming ``flag``."""
    host, port = split_address(address)
    site = web.TCPSite(runner, host, port, ssl_context=context, reuse_port=context is not None)
    try:
        await site.start()
    except OSError as exc:
        raise StartupError(f"{flag}={address}: cannot listen: {exc.strerror or exc}") from None
    return site


class MetricsListener:
    """The metrics application (``/metrics``, ``/-/healthy``, ``/-/ready``) on its address, TLS if configured."""

    def __init__(self, app: web.Application, address: str, holder: WebConfigHolder | None) -> None:
        self.address = address
        self.holder = holder
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=RUNNER_SHUTDOWN_TIMEOUT)
        self._site: web.TCPSite | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        """Listen (or raise :class:`StartupError`); with a web configuration, watch its files."""
        await self._runner.setup()
        context = self.holder.loaded.ssl_context if self.holder else None
        self._site = await listen(self._runner, self.address, "--web.listen-address", context)
        if self.holder is not None:
            self._spawn(self._watch())

    def request_reload(self) -> None:
        """SIGHUP: re-read the web configuration."""
        self._spawn(self.reload())

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._runner.cleanup()

    def _spawn(self, coroutine: Coroutine[None, None, None]) -> None:
        task = asyncio.create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def reload(self) -> None:
        """Re-read the web configuration; a new certificate, key, CA or TLS policy takes over the port."""
        holder = self.holder
        if holder is None or self._site is None:
            return
        old_context = holder.loaded.ssl_context
        if holder.reload() and holder.loaded.ssl_context is not old_context:
            # A new listener on the same port first, then the old one goes.
            try:
                fresh = await listen(self._runner, self.address, "--web.listen-address", holder.loaded.ssl_context)
            except StartupError as exc:
                log.error("metrics listener kept its previous TLS configuration", extra={"error": str(exc)})
                return
            await self._site.stop()
            self._site = fresh
            log.info("metrics listener serving the reloaded TLS configuration")

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(WATCH_INTERVAL)
            if self.holder is not None and self.holder.changed():
                await self.reload()


async def serve(config: Config) -> None:
    """Run both listeners until SIGINT or SIGTERM, then shut down gracefully."""
    settings = config.settings
    apps = create_apps(config, CollectorRegistry())
    runtime = apps.runtime
    # Everything built so far (modules, pydantic schemas, the apps) lives as long as the process:
    # frozen, a full collection no longer walks it, which shortened the collections that stall
    # the webhook under scrapes of a large registry (figures: docs/performance.md, "gc.freeze()").
    gc.freeze()
    metrics = MetricsListener(apps.metrics, settings.web.listen_address, apps.web_config)
    # The deliveries in flight are drained before the runner stops (below); what aiohttp then
    # still finds running has outlived --webhook.shutdown-timeout and is cancelled.
    webhook = web.AppRunner(apps.webhook, access_log=None, shutdown_timeout=RUNNER_SHUTDOWN_TIMEOUT)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    # Probes answer (not ready) from the start; the webhook's cleanup_ctx opens the state, reading
    # it on this loop before anything else is served (the only SQLite on the loop, exporter/state.py).
    await metrics.start()
    if apps.web_config is not None:
        loop.add_signal_handler(signal.SIGHUP, metrics.request_reload)
    try:
        try:
            await webhook.setup()
        except sqlite3.Error as exc:
            # The only database is the state file (opened by the webhook application).
            raise StartupError(f"--state.path={settings.state.path}: cannot use it: {exc}") from None
        except Exception as exc:  # a source that cannot start (Kinesis, the REST API): one line, never a traceback
            raise StartupError(f"cannot start: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}".rstrip(": ")) from None
        if settings.webhook.enabled:
            await listen(webhook, settings.webhook.listen_address, "--webhook.listen-address")
        log.info(
            "listening",
            extra={
                "version": __version__,
                "metrics_address": settings.web.listen_address,
                "webhook_address": settings.webhook.listen_address if settings.webhook.enabled else None,
                "webhook_path": settings.webhook.path if settings.webhook.enabled else None,
                "public_url": settings.webhook.public_url,
                "auth_tokens": len(config.secrets.auth_tokens()),
            },
        )
        await stop.wait()
        # Graceful shutdown: readiness drops (the Service stops routing here), new deliveries get
        # 503 (Twilio retries them elsewhere or later), those in flight finish and are answered.
        intake = runtime.intake
        runtime.ready = False
        intake.close()
        log.info("shutting down", extra={"in_flight": intake.in_flight})
        try:
            async with asyncio.timeout(settings.webhook.shutdown_timeout.total_seconds()):
                await intake.idle()
        except TimeoutError:
            log.warning("deliveries still in flight after --webhook.shutdown-timeout, abandoned", extra={"in_flight": intake.in_flight})
    finally:
        # The webhook first: its listener closes, then its cleanup_ctx stops the poller and the
        # Kinesis consumer and closes (flushes) the state store, after the last delivery was
        # answered. The metrics listener last.
        await webhook.cleanup()
        await metrics.stop()
        log.info("stopped")
