"""Load settings, build the apps, run them. Nothing else.

Why one module: the command line, both listeners and the shutdown order are one start-to-stop
sequence, and the metrics listener's thread (:class:`MetricsListener`) is a step of it.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import io
import json
import logging
import os
import signal
import sqlite3
import sys
import threading
from collections.abc import Coroutine

from aiohttp import web
from prometheus_client import CollectorRegistry
from pydantic import ValidationError

from . import __version__, logs, network
from .app import create_apps
from .config import Config, load_config
from .webconfig import WATCH_INTERVAL, WebConfigError, WebConfigHolder, load_web_config

PROG = "twilio-insights-exporter"

log = logging.getLogger("exporter")
# Seconds aiohttp waits for handlers when a runner stops, after the webhook has drained.
_RUNNER_SHUTDOWN_TIMEOUT = 2.0
_SWITCH_INTERVAL = 0.001


class StartupError(Exception):
    """A start-up failure an operator fixes (a port in use, an unreadable file): one line, no traceback."""


def describe(exc: ValidationError | ValueError) -> str:
    """One line naming each setting (as its flag) and what is wrong; never the value, which may be a secret."""
    if not isinstance(exc, ValidationError):
        return str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    problems = []
    for error in exc.errors(include_input=False, include_url=False, include_context=False):
        message = str(error["msg"]).removeprefix("Value error, ").removeprefix("Assertion failed, ")
        loc = [str(part) for part in error["loc"]]
        if error["type"] == "extra_forbidden":
            # Only a file or the environment can name an unknown setting (argparse refuses unknown flags).
            problems.append(f"{'.'.join(loc)}: not a known setting")
            continue
        # Settings' fields are flags; Secrets' and Config's errors name their variables themselves.
        if exc.title == "Settings" and loc:
            setting = "--" + ".".join(part.replace("_", "-") for part in loc)
            problems.append(f"{setting}: {message}")
        else:
            problems.append(message)
    return "; ".join(problems)


def _fail(message: str) -> int:
    print(f"{PROG}: {message}", file=sys.stderr)
    return 1


def _split_address(address: str) -> tuple[str | None, int]:
    """``host:port``, ``:port`` or ``[v6]:port`` into aiohttp's host and port."""
    host, _, port = address.rpartition(":")
    return host.strip("[]") or None, int(port)


class MetricsListener:
    """The metrics listener (``/metrics``, ``/-/healthy``, ``/-/ready``) on its own loop, in a thread.

    On the webhook's loop a probe waits behind every delivery queued before it: under a flood
    of batches the liveness probe took seconds, and the kubelet restarts a pod whose probe times
    out. On a loop of its own a probe waits at most a few GIL switch intervals, whatever the
    webhook is doing (``bench/overload.py`` measures it; figures in docs/performance.md, "Overload").
    ``/metrics`` is still rendered on the webhook's loop (``app.on_runtime_loop``), where the
    series are written.

    With ``--web.config.file`` the listener speaks TLS, and re-reads the file (and the
    certificates it names) on SIGHUP and when they change: a new listener takes over the port
    (``reuse_port``) before the old one stops, so no scrape sees a refused connection.
    """

    def __init__(self, app: web.Application, address: str, holder: WebConfigHolder | None) -> None:
        self.app = app
        self.address = address
        self.host, self.port = _split_address(address)
        self.holder = holder
        self._thread = threading.Thread(target=self._run, name="metrics-listener", daemon=True)
        self._listening = threading.Event()
        self._error: BaseException | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._tasks: set[asyncio.Future[None]] = set()

    async def start(self) -> None:
        """Start the thread; return once it listens (or raise what kept it from listening)."""
        self._thread.start()
        await asyncio.to_thread(self._listening.wait)
        if self._error is not None:
            raise self._error

    async def stop(self) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        await asyncio.to_thread(self._thread.join)

    def request_reload(self) -> None:
        """SIGHUP (handled on the main loop): re-read the web configuration on the listener's loop."""
        if self._loop is not None:
            self._loop.call_soon_threadsafe(lambda: self._spawn(self._reload()))

    def _run(self) -> None:
        asyncio.run(self._serve())

    def _spawn(self, coroutine: Coroutine[None, None, None]) -> None:
        task = asyncio.ensure_future(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _serve(self) -> None:
        self._loop, self._stop = asyncio.get_running_loop(), asyncio.Event()
        self._runner = runner = web.AppRunner(self.app, access_log=None, shutdown_timeout=_RUNNER_SHUTDOWN_TIMEOUT)
        try:
            try:
                await runner.setup()
                context = self.holder.loaded.ssl_context if self.holder else None
                self._site = web.TCPSite(runner, self.host, self.port, ssl_context=context, reuse_port=context is not None)
                try:
                    await self._site.start()
                except OSError as exc:
                    raise StartupError(f"--web.listen-address={self.address}: cannot listen: {exc.strerror or exc}") from None
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
        finally:
            await runner.cleanup()

    async def _reload(self) -> None:
        holder = self.holder
        if holder is None:
            return
        old_context = holder.loaded.ssl_context
        if holder.reload() and holder.loaded.ssl_context is not old_context:
            # A new certificate, key, CA or TLS policy: a new listener on the same port first, then the old one goes.
            fresh = web.TCPSite(self._runner, self.host, self.port, ssl_context=holder.loaded.ssl_context, reuse_port=True)
            try:
                await fresh.start()
            except OSError as exc:
                log.error("metrics listener kept its previous TLS configuration", extra={"error": str(exc)})
                return
            await self._site.stop()
            self._site = fresh
            log.info("metrics listener serving the reloaded TLS configuration")

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(WATCH_INTERVAL)
            if self.holder is not None and self.holder.changed():
                await self._reload()


async def serve(config: Config) -> None:
    """Run both listeners until SIGINT or SIGTERM, then shut down gracefully."""
    settings = config.settings
    apps = create_apps(config, CollectorRegistry())
    runtime = apps.runtime
    # Everything built so far (modules, pydantic schemas, the apps) lives as long as the process:
    # frozen, a full collection no longer walks it, which shortened the collections that stall
    # the webhook under scrapes of a large registry (figures: docs/performance.md, "gc.freeze()").
    gc.freeze()
    # Not in Runtime.build, which may run outside any loop (the tests build apps so); set again at
    # the webhook application's startup, and here because the metrics listener starts first and
    # a scrape must already render on this loop.
    runtime.loop = asyncio.get_running_loop()
    # A probe on the metrics listener's thread waits for the GIL at most this long per step
    # while the webhook's loop works (the default is 5 ms); only a thread asking for the GIL
    # makes the other one release it, so an idle metrics listener costs nothing.
    sys.setswitchinterval(_SWITCH_INTERVAL)
    metrics = MetricsListener(apps.metrics, settings.web.listen_address, apps.web_config)
    # The deliveries in flight are drained before the runner stops (below); what aiohttp then
    # still finds running has outlived --webhook.shutdown-timeout and is cancelled.
    webhook = web.AppRunner(apps.webhook, access_log=None, shutdown_timeout=_RUNNER_SHUTDOWN_TIMEOUT)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    # Probes answer (not ready) from the start; the webhook's cleanup_ctx opens the state.
    await metrics.start()
    if apps.web_config is not None:
        loop.add_signal_handler(signal.SIGHUP, metrics.request_reload)
    try:
        try:
            await webhook.setup()
        except sqlite3.Error as exc:
            # The only database is the state file (opened by the webhook application).
            raise StartupError(f"--state.path={settings.state.path}: cannot use it: {exc}") from None
        except OSError as exc:
            raise StartupError(f"cannot start: {exc}") from None
        host, port = _split_address(settings.webhook.listen_address)
        try:
            await web.TCPSite(webhook, host, port).start()
        except OSError as exc:
            raise StartupError(f"--webhook.listen-address={settings.webhook.listen_address}: cannot listen: {exc.strerror or exc}") from None
        log.info(
            "listening",
            extra={
                "version": __version__,
                "metrics_address": settings.web.listen_address,
                "webhook_address": settings.webhook.listen_address,
                "webhook_path": settings.webhook.path,
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


def main(argv: list[str] | None = None) -> int:
    """The command line: exit 0 after a clean stop (or a good --check-config), 1 on a configuration or start-up error."""
    argv = sys.argv[1:] if argv is None else argv
    usage = io.StringIO()
    try:
        with contextlib.redirect_stderr(usage):
            config = load_config(argv)
    except SystemExit as exc:
        # argparse's usage block is a screenful for one misspelt flag: keep its last line, the error.
        lines = usage.getvalue().strip().splitlines()
        if exc.code:
            return _fail(f"{lines[-1].removeprefix(PROG + ': ').removeprefix('error: ') if lines else 'invalid command line'} (see --help)")
        raise
    except (ValidationError, ValueError) as exc:
        return _fail(f"invalid configuration: {describe(exc)}")
    settings = config.settings
    web_config = None
    if settings.web.config.file is not None:
        try:
            web_config = load_web_config(settings.web.config.file).config
        except WebConfigError as exc:
            return _fail(f"invalid configuration: {exc}")
    if settings.state.path is not None and not os.path.isdir(settings.state.path.parent or "."):
        return _fail(f"invalid configuration: --state.path={settings.state.path}: the directory {settings.state.path.parent} does not exist")
    logs.configure(settings.log.level, settings.log.format)
    if settings.check_config:
        summary = {
            "settings": settings.model_dump(mode="json"),
            "auth_tokens": len(config.secrets.auth_tokens()),
            "pull_credentials": config.secrets.api_credentials() is not None,
            "basic_auth": config.secrets.basic_auth_username is not None,
        }
        if web_config is not None:
            tls = web_config.tls_server_config
            summary["web_config"] = {
                "tls": tls is not None,
                "client_auth_type": tls.client_auth_type if tls else None,
                "basic_auth_users": sorted(web_config.basic_auth_users),
                "headers": sorted(web_config.http_server_config.headers),
            }
        print(json.dumps(summary, indent=2))
        for warning in network.config_warnings(settings.webhook):
            print(f"warning: {warning}", file=sys.stderr)
        return 0
    webhook = settings.webhook
    if webhook.insecure_skip_signature_verification:
        log.warning("INSECURE: webhook signatures are NOT verified; anyone who can reach the webhook can write metrics. Use for local trials only.")
    elif not config.secrets.auth_tokens():
        # Legitimate in pull-only mode with an API key; a misconfiguration otherwise.
        level = logging.INFO if settings.pull.enabled else logging.WARNING
        log.log(level, "no TWILIO_AUTH_TOKEN set: every webhook delivery is answered 503 (Twilio retries it) and /-/ready is 503 unless pulling")
    try:
        asyncio.run(serve(config))
    except (StartupError, WebConfigError) as exc:
        return _fail(str(exc))
    return 0


if __name__ == "__main__":
    sys.exit(main())
