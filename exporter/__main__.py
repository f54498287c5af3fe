"""Load settings, build the apps, run them. Nothing else."""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import signal
import sys

from aiohttp import web
from prometheus_client import CollectorRegistry
from pydantic import ValidationError

from . import __version__, logs
from .app import create_apps
from .config import Config, load_config

log = logging.getLogger("exporter")


def _split_address(address: str) -> tuple[str | None, int]:
    """``host:port``, ``:port`` or ``[v6]:port`` into aiohttp's host and port."""
    host, _, port = address.rpartition(":")
    host = host.strip("[]") or None
    return host, int(port)


async def serve(config: Config) -> None:
    """Run both listeners until SIGINT or SIGTERM."""
    settings = config.settings
    apps = create_apps(config, CollectorRegistry())
    # Everything built so far (modules, pydantic schemas, the apps) lives as long as the process:
    # frozen, a full collection no longer walks it. Measured under scrapes of a large registry
    # (bench, docs/performance.md): full collections ~45-415 ms -> ~10-105 ms, webhook p99 with it.
    gc.freeze()
    runners = [web.AppRunner(apps.metrics, access_log=None), web.AppRunner(apps.webhook, access_log=None)]
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        for runner, address in zip(runners, (settings.web.listen_address, settings.webhook.listen_address), strict=True):
            await runner.setup()
            host, port = _split_address(address)
            await web.TCPSite(runner, host, port).start()
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
        log.info("shutting down")
    finally:
        # Webhook first: stop taking deliveries (Twilio retries them elsewhere or later).
        for runner in reversed(runners):
            await runner.cleanup()


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
        log.log(level, "no TWILIO_AUTH_TOKEN set: every webhook delivery will be refused with 403")
    try:
        _split_address(settings.web.listen_address), _split_address(webhook.listen_address)
    except ValueError:
        print("twilio-insights-exporter: listen addresses must look like host:port or :port", file=sys.stderr)
        return 1
    asyncio.run(serve(config))
    return 0


if __name__ == "__main__":
    sys.exit(main())
