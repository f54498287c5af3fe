"""Application factory: two aiohttp applications sharing one runtime.

The webhook application is the one exposed to the internet; the metrics application
(``/metrics``, ``/-/healthy``, ``/-/ready``) stays internal. They listen on separate addresses,
so nothing on the public port can read metrics and nothing on the internal port accepts events.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

from aiohttp import web
from aiohttp.typedefs import Handler
from prometheus_client import CollectorRegistry, disable_created_metrics

from exporter.config import Config
from exporter.doors.kinesis.api import KinesisApi
from exporter.doors.kinesis.consumer import KinesisConsumer, kinesis_context
from exporter.doors.pull.poller import Poller, pull_context
from exporter.doors.webhook.handler import handle_webhook
from exporter.doors.webhook.verify import can_verify
from exporter.exposition import make_metrics_handler
from exporter.keys import RUNTIME
from exporter.metrics import build_kinesis_metrics, build_pull_metrics
from exporter.runtime import Runtime
from exporter.state.durable import state_context
from exporter.webconfig import WebConfigHolder, add_headers, load_web_config
from exporter.webconfig import middleware as webconfig_middleware

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Apps:
    """The two applications and the runtime they share."""

    webhook: web.Application
    metrics: web.Application
    runtime: Runtime
    # --web.config.file: TLS for the metrics listener (exporter/listener.py), basic auth and headers here.
    web_config: WebConfigHolder | None = None


def create_apps(config: Config, registry: CollectorRegistry) -> Apps:
    """Build the webhook and metrics applications around one runtime and ``registry``."""
    # No *_created series: one per child would double the series count for a timestamp nobody
    # graphs (rate() does not need it), and families.py writes none for the participant families.
    # prometheus_client offers the switch only for the whole process (a global read at every
    # collect; per registry was left for later, prometheus/client_python#973), so it is thrown
    # here, where every registry of the exporter is built; a process runs one exporter.
    disable_created_metrics()
    runtime = Runtime.build(config, registry)
    settings = config.settings
    file = settings.web.config.file
    web_config = WebConfigHolder(file, load_web_config(file)) if file is not None else None
    poller = Poller.build(config, runtime.pipeline, runtime.state, build_pull_metrics(registry)) if settings.pull.enabled else None
    kinesis = None
    if settings.kinesis.stream_name is not None:
        # The pipeline is the consumer's sink: each page's events and its shard checkpoint in one commit.
        kinesis_api = KinesisApi(settings.kinesis)
        kinesis = KinesisConsumer(settings.kinesis, kinesis_api, runtime.pipeline, build_kinesis_metrics(registry))
        runtime.ready_checks.append(kinesis_listed(kinesis_api))

    # aiohttp refuses bodies past client_max_size with 413 (read() raises): the size limit.
    webhook = web.Application(client_max_size=settings.webhook.max_body_size, middlewares=[json_errors])
    webhook[RUNTIME] = runtime
    webhook.router.add_post(settings.webhook.path, handle_webhook)
    # Cloud load balancers (GKE Ingress, AWS ALB) probe the serving port: answered here too, without
    # credentials and from any network (the allowlist guards the deliveries, not the probes).
    webhook.router.add_get("/-/healthy", healthy)
    webhook.router.add_get("/-/ready", ready)

    metrics = web.Application()
    metrics[RUNTIME] = runtime
    if web_config is not None:
        # Basic auth and headers here; TLS on the listener itself (exporter/listener.py).
        metrics.middlewares.append(webconfig_middleware(web_config))
        metrics.on_response_prepare.append(add_headers(web_config))
    # The state, the poller and the Kinesis consumer live with the webhook application (which
    # starts even with --no-webhook.enabled, only not listening): its cleanup_ctx loads the
    # state before the webhook listener takes a delivery and flushes it after the last one was
    # answered. Readiness last: ready once everything before it started, not ready before any of
    # it stops (contexts stop in reverse order).
    webhook.cleanup_ctx.append(state_context(runtime.durable))
    if poller is not None:
        webhook.cleanup_ctx.append(pull_context(poller))
    if kinesis is not None:
        webhook.cleanup_ctx.append(kinesis_context(kinesis, durable=runtime.state.persistent))
    webhook.cleanup_ctx.append(readiness_context(runtime))
    webhook.on_shutdown.append(not_ready(runtime))  # shutdown (the listener closing) comes before cleanup
    metrics.router.add_get(
        settings.web.telemetry_path, make_metrics_handler(registry, runtime.subjects.families(), runtime.exporter_metrics.metrics_renders)
    )
    metrics.router.add_get("/-/healthy", healthy)
    metrics.router.add_get("/-/ready", ready)
    metrics.router.add_get("/", landing)
    return Apps(webhook=webhook, metrics=metrics, runtime=runtime, web_config=web_config)


@web.middleware
async def json_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """The webhook listener's 404 and 405 as one line of JSON, like every other answer it gives."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status not in (404, 405):
            raise
        response = web.json_response({"error": exc.reason.lower()}, status=exc.status)
        if "Allow" in exc.headers:
            response.headers["Allow"] = exc.headers["Allow"]
        return response


def readiness_context(runtime: Runtime) -> Callable[[web.Application], AsyncIterator[None]]:
    """A ``cleanup_ctx``, the webhook application's last: ready from the end of its startup until its cleanup begins."""

    async def context(_: web.Application) -> AsyncIterator[None]:
        runtime.ready = True
        try:
            yield
        finally:
            runtime.ready = False

    return context


def not_ready(runtime: Runtime) -> Callable[[web.Application], Awaitable[None]]:
    """An ``on_shutdown`` handler: not ready from the moment the application begins to shut down."""

    async def handler(_: web.Application) -> None:
        runtime.ready = False

    return handler


def kinesis_listed(api: KinesisApi) -> Callable[[], str | None]:
    """Kinesis mode's readiness: the last ListShards answered (a stream unreachable, unknown or not allowed reads nothing)."""

    def check() -> str | None:
        if api.listed:
            return None
        if api.listed is None:
            return "the Kinesis stream's shards are not listed yet"
        return "listing the Kinesis stream's shards fails (see kinesis_errors_total and the log)"

    return check


async def healthy(request: web.Request) -> web.Response:
    """The process answers, and its durable state can still be written.

    Nothing outside the process is checked, so a slow dependency never restarts it. A failed state
    write is the exception: the counts in memory are then ahead of the disk, and only a restart
    (which reloads the last committed state) makes them agree again (exporter/state/store.py).
    """
    if request.app[RUNTIME].state.failed is not None:
        return web.Response(status=503, text="Unhealthy: the state could not be written; restart to reload it.\n")
    return web.Response(text="Healthy.\n")


async def ready(request: web.Request) -> web.Response:
    """Ready once every door this process runs can take summaries, until shutdown begins.

    - The webhook (unless ``--no-webhook.enabled``): not before its listener listens (a check
      ``serve`` adds, exporter/listener.py); without an auth token (and not in the
      insecure mode) every delivery is answered 503, so not ready, unless the process also polls
      or reads Kinesis (those need no token).
    - Kinesis (``--kinesis.stream-name``): not ready until the stream's shards were listed, and
      while its last listing fails (no credentials, no permission, no such stream).
    - The REST poller: never looked at; a failing API is counted and alerted on, and readiness
      routes nothing to the poller.
    """
    runtime = request.app[RUNTIME]
    if not runtime.ready or runtime.intake.closing:
        return web.Response(status=503, text="Not ready.\n")
    settings = runtime.config.settings
    if settings.webhook.enabled and not can_verify(runtime.config) and not settings.pull.enabled and settings.kinesis.stream_name is None:
        return web.Response(status=503, text="Not ready: no auth token configured (TWILIO_AUTH_TOKEN), webhook deliveries are answered 503.\n")
    for check in runtime.ready_checks:
        reason = check()
        if reason is not None:
            return web.Response(status=503, text=f"Not ready: {reason}.\n")
    return web.Response(text="Ready.\n")


async def landing(request: web.Request) -> web.Response:
    path = request.app[RUNTIME].config.settings.web.telemetry_path
    return web.Response(
        content_type="text/html",
        text=f"<html><head><title>twilio-insights-exporter</title></head><body><h1>twilio-insights-exporter</h1>"
        f'<p><a href="{path}">Metrics</a></p></body></html>\n',
    )
