"""Load settings, build the apps, run them. Nothing else."""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import signal
import sys
import threading

from aiohttp import web
from prometheus_client import CollectorRegistry
from pydantic import ValidationError

from . import __version__, logs
from .app import create_apps
from .config import Config, load_config

log = logging.getLogger("exporter")
# Seconds aiohttp waits for handlers when a runner stops, after the webhook has drained.
_RUNNER_SHUTDOWN_TIMEOUT = 2.0
_SWITCH_INTERVAL = 0.001


def _split_address(address: str) -> tuple[str | None, int]:
    """``host:port``, ``:port`` or ``[v6]:port`` into aiohttp's host and port."""
    host, _, port = address.rpartition(":")
    host = host.strip("[]") or None
    return host, int(port)


class MetricsListener:
    """The metrics listener (``/metrics``, ``/-/healthy``, ``/-/ready``) on its own loop, in a thread.

    On the webhook's loop a probe waits behind every delivery queued before it: under a flood
    of batches the liveness probe took seconds (issue 10: 4.1 s median, 7.7 s worst), and the
    kubelet restarts a pod whose probe times out. On a loop of its own a probe waits at most a
    few of the interpreter's 5 ms GIL switch intervals, whatever the webhook is doing
    (``bench/overload.py`` measures it). ``/metrics`` is still rendered on the webhook's loop
    (``app.on_runtime_loop``), where the series are written.
    """

    def __init__(self, app: web.Application, address: str) -> None:
        self.app = app
        self.host, self.port = _split_address(address)
        self._thread = threading.Thread(target=self._run, name="metrics-listener", daemon=True)
        self._listening = threading.Event()
        self._error: BaseException | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None

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

    def _run(self) -> None:
        asyncio.run(self._serve())

    async def _serve(self) -> None:
        self._loop, self._stop = asyncio.get_running_loop(), asyncio.Event()
        runner = web.AppRunner(self.app, access_log=None, shutdown_timeout=_RUNNER_SHUTDOWN_TIMEOUT)
        try:
            try:
                await runner.setup()
                await web.TCPSite(runner, self.host, self.port).start()
            except BaseException as exc:
                self._error = exc
                return
            finally:
                self._listening.set()
            await self._stop.wait()
        finally:
            await runner.cleanup()


async def serve(config: Config) -> None:
    """Run both listeners until SIGINT or SIGTERM, then shut down gracefully."""
    settings = config.settings
    apps = create_apps(config, CollectorRegistry())
    runtime = apps.runtime
    # Everything built so far (modules, pydantic schemas, the apps) lives as long as the process:
    # frozen, a full collection no longer walks it. Measured under scrapes of a large registry
    # (bench, docs/performance.md): full collections ~45-415 ms -> ~10-105 ms, webhook p99 with it.
    gc.freeze()
    runtime.loop = asyncio.get_running_loop()  # before the first scrape: /metrics renders here
    # A probe on the metrics listener's thread waits for the GIL at most this long per step
    # while the webhook's loop works (the default is 5 ms); only a thread asking for the GIL
    # makes the other one release it, so an idle metrics listener costs nothing.
    sys.setswitchinterval(_SWITCH_INTERVAL)
    metrics = MetricsListener(apps.metrics, settings.web.listen_address)
    # The deliveries in flight are drained before the runner stops (below); what aiohttp then
    # still finds running has outlived --webhook.shutdown-timeout and is cancelled.
    webhook = web.AppRunner(apps.webhook, access_log=None, shutdown_timeout=_RUNNER_SHUTDOWN_TIMEOUT)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    # Probes answer (not ready) from the start; the webhook's cleanup_ctx opens the state.
    await metrics.start()
    try:
        await webhook.setup()
        host, port = _split_address(settings.webhook.listen_address)
        await web.TCPSite(webhook, host, port).start()
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
        # The webhook first: its listener closes, then its cleanup_ctx stops the poller and closes
        # (flushes) the state store, after the last delivery was answered. The metrics listener last.
        await webhook.cleanup()
        await metrics.stop()
        log.info("stopped")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        config = load_config(argv)
    except (ValidationError, ValueError) as exc:
        print(f"twilio-insights-exporter: invalid configuration: {exc}", file=sys.stderr)
        return 1
    settings = config.settings
    logs.configure(settings.log.level, settings.log.format)
    if settings.check_config:
        summary = {
            "settings": settings.model_dump(mode="json"),
            "auth_tokens": len(config.secrets.auth_tokens()),
            "pull_credentials": config.secrets.api_credentials() is not None,
            "basic_auth": config.secrets.basic_auth_username is not None,
        }
        print(json.dumps(summary, indent=2))
        return 0
    webhook = settings.webhook
    if webhook.insecure_skip_signature_verification:
        log.warning("INSECURE: webhook signatures are NOT verified; anyone who can reach the webhook can write metrics. Use for local trials only.")
    elif not config.secrets.auth_tokens():
        # Legitimate in pull-only mode with an API key; a misconfiguration otherwise.
        level = logging.INFO if settings.pull.enabled else logging.WARNING
        log.log(level, "no TWILIO_AUTH_TOKEN set: every webhook delivery is answered 503 (Twilio retries it) and /-/ready is 503 unless pulling")
    try:
        _split_address(settings.web.listen_address), _split_address(webhook.listen_address)
    except ValueError:
        print("twilio-insights-exporter: listen addresses must look like host:port or :port", file=sys.stderr)
        return 1
    asyncio.run(serve(config))
    return 0


if __name__ == "__main__":
    sys.exit(main())
