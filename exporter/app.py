"""Application factory: two aiohttp applications sharing one runtime.

The webhook application is the one exposed to the internet; the metrics application
(``/metrics``, ``/-/healthy``, ``/-/ready``) stays internal. They listen on separate addresses,
so nothing on the public port can read metrics and nothing on the internal port accepts events.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from aiohttp import web
from aiohttp.typedefs import Handler
from prometheus_client import CollectorRegistry, disable_created_metrics

from .config import Config
from .durable import state_context
from .exposition import make_metrics_handler
from .keys import RUNTIME
from .kinesis import KinesisConsumer, kinesis_context
from .kinesis_api import KinesisApi
from .metrics import build_kinesis_metrics, build_pull_metrics
from .pull import Poller, pull_context
from .runtime import Runtime
from .verify import can_verify
from .webconfig import WebConfigHolder, add_headers, load_web_config
from .webconfig import middleware as webconfig_middleware
from .webhook import handle_webhook

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Apps:
    """The two applications and the runtime they share."""

    webhook: web.Application
    metrics: web.Application
    runtime: Runtime
    # --web.config.file: TLS for the metrics listener (__main__), basic auth and headers here.
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
        kinesis = KinesisConsumer(settings.kinesis, KinesisApi(settings.kinesis), runtime.pipeline, build_kinesis_metrics(registry))

    # aiohttp refuses bodies past client_max_size with 413 (read() raises): the size limit.
    webhook = web.Application(client_max_size=settings.webhook.max_body_size, middlewares=[json_errors])
    webhook[RUNTIME] = runtime
    webhook.router.add_post(settings.webhook.path, handle_webhook)
    # Cloud load balancers (GKE Ingress, AWS ALB) probe the serving port: answered here too, without
    # credentials and from any network (the allowlist guards the deliveries, not the probes).
    webhook.router.add_get("/-/healthy", healthy)
    webhook.router.add_get("/-/ready", ready)

    async def mark_ready(_: web.Application) -> None:
        runtime.loop = asyncio.get_running_loop()
        runtime.ready = True

    async def mark_not_ready(_: web.Application) -> None:
        runtime.ready = False

    webhook.on_startup.append(mark_ready)
    webhook.on_shutdown.append(mark_not_ready)

    metrics = web.Application()
    metrics[RUNTIME] = runtime
    if web_config is not None:
        # Basic auth and headers here; TLS on the listener itself (__main__.MetricsListener).
        metrics.middlewares.append(webconfig_middleware(web_config))
        metrics.on_response_prepare.append(add_headers(web_config))
    # The state, the poller and the Kinesis consumer live with the webhook application, on the
    # loop that owns the pipeline: its cleanup_ctx loads the state before the webhook listener
    # takes a delivery and flushes it after the last one was answered (__main__ runs the metrics
    # listener on a loop of its own).
    webhook.cleanup_ctx.append(state_context(runtime.durable))
    if poller is not None:
        webhook.cleanup_ctx.append(pull_context(poller))
    if kinesis is not None:
        webhook.cleanup_ctx.append(kinesis_context(kinesis, durable=runtime.state.persistent))
    metrics_handler = make_metrics_handler(registry, runtime.subjects.families())
    metrics.router.add_get(settings.web.telemetry_path, on_runtime_loop(runtime, metrics_handler))
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


def on_runtime_loop(runtime: Runtime, handler: Handler) -> Handler:
    """``handler`` run on the loop that owns the registry and the pipeline, whichever loop serves the request.

    __main__ runs the metrics listener on a loop of its own, so that the health probes answer
    at once however much webhook work is queued; a scrape still renders where the series are
    written, between deliveries (exporter/exposition.py), never from another thread.
    """

    async def delegated(request: web.Request) -> web.StreamResponse:
        owner = runtime.loop
        if owner is None or owner is asyncio.get_running_loop():
            return await handler(request)

        async def on_owner() -> web.StreamResponse:
            return await handler(request)

        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(on_owner(), owner))

    return delegated


async def healthy(request: web.Request) -> web.Response:
    """The process answers, and its durable state can still be written.

    Nothing outside the process is checked, so a slow dependency never restarts it. A failed state
    write is the exception: the counts in memory are then ahead of the disk, and only a restart
    (which reloads the last committed state) makes them agree again (exporter/state.py).
    """
    if request.app[RUNTIME].state.failed is not None:
        return web.Response(status=503, text="Unhealthy: the state could not be written; restart to reload it.\n")
    return web.Response(text="Healthy.\n")


async def ready(request: web.Request) -> web.Response:
    """Ready once the webhook listener accepts deliveries, until shutdown begins.

    Without an auth token (and not in the insecure mode) every delivery is answered 503, so the
    exporter is not ready either, unless it polls or consumes Kinesis (those need no webhook).
    """
    runtime = request.app[RUNTIME]
    if not runtime.ready or runtime.intake.closing:
        return web.Response(status=503, text="Not ready.\n")
    settings = runtime.config.settings
    if not can_verify(runtime.config) and not settings.pull.enabled and settings.kinesis.stream_name is None:
        return web.Response(status=503, text="Not ready: no auth token configured (TWILIO_AUTH_TOKEN), webhook deliveries are answered 503.\n")
    return web.Response(text="Ready.\n")


async def landing(request: web.Request) -> web.Response:
    path = request.app[RUNTIME].config.settings.web.telemetry_path
    return web.Response(
        content_type="text/html",
        text=f"<html><head><title>twilio-insights-exporter</title></head><body><h1>twilio-insights-exporter</h1>"
        f'<p><a href="{path}">Metrics</a></p></body></html>\n',
    )
