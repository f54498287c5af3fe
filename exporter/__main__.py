"""Load settings, build the apps, run them. Nothing else."""

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
from collections.abc import Coroutine

from aiohttp import web
from prometheus_client import CollectorRegistry
from pydantic import ValidationError

from . import __version__, logs
from .app import create_apps
from .config import Config, load_config
from .webconfig import WATCH_INTERVAL, WebConfigError, load_web_config

PROG = "twilio-insights-exporter"

log = logging.getLogger("exporter")


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
    holder = apps.runtime.web_config
    # The file watch and SIGHUP reloads of --web.config.file, cancelled at shutdown.
    reloads: set[asyncio.Future[None]] = set()
    try:
        sites = []
        for runner, address, flag in zip(runners, (settings.web.listen_address, settings.webhook.listen_address), ("web", "webhook"), strict=True):
            try:
                await runner.setup()
            except sqlite3.Error as exc:
                # The only database is the state file (opened by the metrics application).
                raise StartupError(f"--state.path={settings.state.path}: cannot use it: {exc}") from None
            except OSError as exc:
                raise StartupError(f"cannot start: {exc}") from None
            host, port = _split_address(address)
            # The metrics listener speaks TLS when --web.config.file says so; reuse_port lets a
            # reloaded certificate take over the port without a moment of refused connections.
            context = holder.loaded.ssl_context if holder and runner is runners[0] else None
            site = web.TCPSite(runner, host, port, ssl_context=context, reuse_port=context is not None)
            try:
                await site.start()
            except OSError as exc:
                raise StartupError(f"--{flag}.listen-address={address}: cannot listen: {exc.strerror or exc}") from None
            sites.append(site)
        if holder is not None:
            metrics_site = sites[0]

            async def reload() -> None:
                nonlocal metrics_site
                old_context = holder.loaded.ssl_context
                if holder.reload() and holder.loaded.ssl_context is not old_context:
                    # A new certificate, key, CA or TLS policy: a new listener on the same port first, then the old one goes.
                    host, port = _split_address(settings.web.listen_address)
                    fresh = web.TCPSite(runners[0], host, port, ssl_context=holder.loaded.ssl_context, reuse_port=True)
                    try:
                        await fresh.start()
                    except OSError as exc:
                        log.error("metrics listener kept its previous TLS configuration", extra={"error": str(exc)})
                        return
                    await metrics_site.stop()
                    metrics_site = fresh
                    log.info("metrics listener serving the reloaded TLS configuration")

            async def watch() -> None:
                while True:
                    await asyncio.sleep(WATCH_INTERVAL)
                    if holder.changed():
                        await reload()

            def start(coroutine: Coroutine[None, None, None]) -> None:
                task = asyncio.ensure_future(coroutine)
                reloads.add(task)
                task.add_done_callback(reloads.discard)

            start(watch())
            loop.add_signal_handler(signal.SIGHUP, lambda: start(reload()))
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
        for task in list(reloads):
            task.cancel()
    finally:
        # Webhook first: stop taking deliveries (Twilio retries them elsewhere or later).
        for runner in reversed(runners):
            await runner.cleanup()


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
        return 0
    webhook = settings.webhook
    if webhook.insecure_skip_signature_verification:
        log.warning("INSECURE: webhook signatures are NOT verified; anyone who can reach the webhook can write metrics. Use for local trials only.")
    elif not config.secrets.auth_tokens():
        # Legitimate in pull-only mode with an API key; a misconfiguration otherwise.
        level = logging.INFO if settings.pull.enabled else logging.WARNING
        log.log(level, "no TWILIO_AUTH_TOKEN set: every webhook delivery will be refused with 403")
    try:
        asyncio.run(serve(config))
    except (StartupError, WebConfigError) as exc:
        return _fail(str(exc))
    return 0


if __name__ == "__main__":
    sys.exit(main())
