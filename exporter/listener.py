"""The listeners: both applications served from start to graceful stop, and the metrics listener's TLS reload.

With ``--web.config.file`` the metrics listener speaks TLS, and re-reads the file (and the
certificates it names) on SIGHUP and when they change (exporter/webconfig.py): a new listener
takes over the port (``reuse_port``) before the old one stops, so no scrape sees a refused
connection.

The webhook listens on the loop that owns the pipeline and the registry; the metrics listener on
a loop of its own, in a thread (:class:`MetricsListener` says why, with the measurement).
"""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
import sqlite3
import ssl
import sys
import threading
from collections.abc import Coroutine

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware
from prometheus_client import CollectorRegistry

from exporter import __version__
from exporter.app import create_apps
from exporter.config import Config
from exporter.keys import RUNTIME
from exporter.webconfig import WATCH_INTERVAL, WebConfigHolder

log = logging.getLogger("exporter")

# Seconds aiohttp waits for handlers when a runner stops, after the webhook has drained.
RUNNER_SHUTDOWN_TIMEOUT = 2.0
SWITCH_INTERVAL = 0.001


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
    """The metrics application (``/metrics``, ``/-/healthy``, ``/-/ready``) on a loop of its own, in a thread.

    On the webhook's loop a probe waits behind the work of every connection: with 400 connections
    flooding the webhook, even with the in-flight bound and turns (exporter/doors/webhook/intake.py), probes took
    hundreds of milliseconds to seconds, and the kubelet restarts a pod whose liveness probe times
    out (``bench/overload.py``; figures in docs/performance.md, "Overload"). On a loop of its own a
    probe waits at most a few GIL switch intervals. ``/metrics`` is still rendered on the loop that
    owns the registry (``owner``), where the series are written, between deliveries: the one hop
    across loops, :meth:`_on_owner`.
    """

    def __init__(self, app: web.Application, address: str, holder: WebConfigHolder | None, owner: asyncio.AbstractEventLoop) -> None:
        self.address = address
        self.holder = holder
        self._owner = owner
        app.middlewares.append(self._on_owner(app[RUNTIME].config.settings.web.telemetry_path))
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=RUNNER_SHUTDOWN_TIMEOUT)
        self._site: web.TCPSite | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._thread = threading.Thread(target=self._run, name="metrics-listener", daemon=True)
        self._listening = threading.Event()
        self._error: BaseException | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None

    async def start(self) -> None:
        """Start the thread; return once it listens (or raise what kept it from listening)."""
        # A probe on the listener's thread waits for the GIL at most this long per step while the
        # webhook's loop works (the default is 5 ms); only a thread asking for the GIL makes the
        # other one release it, so an idle metrics listener costs nothing.
        sys.setswitchinterval(SWITCH_INTERVAL)
        self._thread.start()
        await asyncio.to_thread(self._listening.wait)
        if self._error is not None:
            raise self._error

    def request_reload(self) -> None:
        """SIGHUP (handled on the owner's loop): re-read the web configuration on the listener's loop."""
        if self._loop is not None:
            self._loop.call_soon_threadsafe(lambda: self._spawn(self.reload()))

    async def stop(self) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        await asyncio.to_thread(self._thread.join)

    def _on_owner(self, telemetry_path: str) -> Middleware:
        owner = self._owner

        @web.middleware
        async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
            if request.path != telemetry_path:
                return await handler(request)  # probes and the landing page answer here

            async def on_owner() -> web.StreamResponse:
                return await handler(request)

            return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(on_owner(), owner))

        return middleware

    def _run(self) -> None:
        asyncio.run(self._serve())

    async def _serve(self) -> None:
        self._loop, self._stop = asyncio.get_running_loop(), asyncio.Event()
        try:
            try:
                await self._runner.setup()
                context = self.holder.loaded.ssl_context if self.holder else None
                self._site = await listen(self._runner, self.address, "--web.listen-address", context)
            except BaseException as exc:
                self._error = exc
                return
            finally:
                self._listening.set()
            if self.holder is not None:
                self._spawn(self._watch())
            await self._stop.wait()
            for task in list(self._tasks):
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
        finally:
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
    loop = asyncio.get_running_loop()
    metrics = MetricsListener(apps.metrics, settings.web.listen_address, apps.web_config, owner=loop)
    # The deliveries in flight are drained before the runner stops (below); what aiohttp then
    # still finds running has outlived --webhook.shutdown-timeout and is cancelled.
    webhook = web.AppRunner(apps.webhook, access_log=None, shutdown_timeout=RUNNER_SHUTDOWN_TIMEOUT)
    stop = asyncio.Event()
    # The webhook's readiness context marks the state and the doors started at the end of
    # setup(), before its site listens; until then the probe (answered from the metrics thread)
    # says so, or a Service would route deliveries to a port still refusing them.
    listening = threading.Event()
    if settings.webhook.enabled:
        runtime.ready_checks.append(lambda: None if listening.is_set() else "the webhook listener is not listening yet")
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    # Probes answer (not ready) from the start; the webhook's cleanup_ctx opens the state, reading
    # it on this loop before anything else is served (the only SQLite on the loop, exporter/state/store.py).
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
            listening.set()
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
