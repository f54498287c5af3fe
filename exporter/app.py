"""Application factory: two aiohttp applications sharing one runtime.

The webhook application is the one exposed to the internet; the metrics application
(``/metrics``, ``/-/healthy``, ``/-/ready``) stays internal. They listen on separate addresses,
so nothing on the public port can read metrics and nothing on the internal port accepts events.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from aiohttp import web
from aiohttp.typedefs import Handler
from prometheus_client import CollectorRegistry, disable_created_metrics

from .config import Config
from .dedup import Window
from .exposition import make_metrics_handler
from .keys import RUNTIME
from .kinesis import KinesisApi, KinesisConsumer, kinesis_context
from .labels import LabelPolicy
from .metrics import ExporterMetrics, build_exporter_metrics, build_kinesis_metrics, build_pull_metrics
from .pipeline import Pipeline, state_context
from .pull import Poller, pull_context
from .recorder import Recorder
from .state import StateStore
from .webconfig import WebConfigHolder, add_headers, load_web_config
from .webconfig import middleware as webconfig_middleware
from .webhook import BasicAuth, Intake, SignatureVerifier, can_verify, handle_webhook

log = logging.getLogger(__name__)


@dataclass
class Runtime:
    """Everything both applications share, built once from the configuration."""

    config: Config
    registry: CollectorRegistry
    exporter_metrics: ExporterMetrics
    pipeline: Pipeline
    verifier: SignatureVerifier
    basic_auth: BasicAuth
    state: StateStore
    # Admission of deliveries: the in-flight bound and the shutdown switch (exporter/webhook.py).
    intake: Intake
    ready: bool = field(default=False)
    # Set when --pull.enabled; runs as a background task of the webhook application.
    poller: Poller | None = None
    # Set when --web.config.file names a file: TLS for the metrics listener, basic auth, headers.
    web_config: WebConfigHolder | None = None
    # Set when --kinesis.stream-name; runs as a background task of the metrics application.
    kinesis: KinesisConsumer | None = None
    # The loop that owns everything above; the metrics listener may run on another (__main__).
    loop: asyncio.AbstractEventLoop | None = None

    @classmethod
    def build(cls, config: Config, registry: CollectorRegistry, clock: Callable[[], float] = time.time) -> Runtime:
        settings = config.settings
        em = build_exporter_metrics(registry)
        policy = LabelPolicy(settings.labels.common_labels(), settings.labels.caps(), settings.labels.allowlists(), settings.labels.max_label_sets)
        recorder = Recorder(registry, policy, settings.buckets.resolved())
        dedup = settings.dedup
        window = dedup.window.total_seconds()
        state = StateStore(settings.state.path, window, clock=clock, fsync=settings.state.sync == "full")
        pipeline = Pipeline(
            recorder,
            em,
            Window(window, dedup.max_entries, clock=clock),
            state,
            clock=clock,
            snapshot_interval=settings.state.snapshot_interval.total_seconds(),
            snapshot_changes=settings.state.snapshot_changes,
        )
        intake = Intake(settings.webhook.max_in_flight)
        em.webhook_in_flight.set_function(lambda: intake.in_flight)
        return cls(config, registry, em, pipeline, SignatureVerifier(config), BasicAuth(config), state, intake)


@dataclass(frozen=True)
class Apps:
    webhook: web.Application
    metrics: web.Application
    runtime: Runtime


def create_apps(config: Config, registry: CollectorRegistry) -> Apps:
    """Build the webhook and metrics applications around one runtime and ``registry``."""
    # A *_created sample per child would double the series count for a timestamp nobody graphs
    # (rate() does not need it). The switch is process-wide, as prometheus_client offers it.
    disable_created_metrics()
    runtime = Runtime.build(config, registry)
    settings = config.settings

    # aiohttp refuses bodies past client_max_size with 413 (read() raises): the size limit.
    webhook = web.Application(client_max_size=settings.webhook.max_body_size)
    webhook[RUNTIME] = runtime
    webhook.router.add_post(settings.webhook.path, handle_webhook)

    async def mark_ready(_: web.Application) -> None:
        runtime.loop = asyncio.get_running_loop()
        runtime.ready = True

    async def mark_not_ready(_: web.Application) -> None:
        runtime.ready = False

    webhook.on_startup.append(mark_ready)
    webhook.on_shutdown.append(mark_not_ready)

    metrics = web.Application()
    metrics[RUNTIME] = runtime
    if settings.web.config.file is not None:
        # Basic auth and headers here; TLS on the listener itself (__main__.MetricsListener).
        runtime.web_config = WebConfigHolder(settings.web.config.file, load_web_config(settings.web.config.file))
        metrics.middlewares.append(webconfig_middleware(runtime.web_config))
        metrics.on_response_prepare.append(add_headers(runtime.web_config))
    # The state, the poller and the Kinesis consumer live with the webhook application, on the
    # loop that owns the pipeline: its cleanup_ctx loads the state before the webhook listener
    # takes a delivery and flushes it after the last one was answered (__main__ runs the metrics
    # listener on a loop of its own).
    webhook.cleanup_ctx.append(state_context(runtime.pipeline))
    if settings.pull.enabled:
        runtime.poller = Poller.build(config, runtime.pipeline, runtime.state, build_pull_metrics(registry))
        webhook.cleanup_ctx.append(pull_context(runtime.poller))
    if settings.kinesis.stream_name is not None:
        # The pipeline is the consumer's sink: each page's events and its shard checkpoint in one commit.
        runtime.kinesis = KinesisConsumer(
            settings.kinesis, KinesisApi(settings.kinesis), runtime.pipeline, runtime.exporter_metrics, build_kinesis_metrics(registry)
        )
        webhook.cleanup_ctx.append(kinesis_context(runtime.kinesis, durable=runtime.state.persistent))
    metrics_handler = make_metrics_handler(registry, runtime.pipeline.recorder.families())
    metrics.router.add_get(settings.web.telemetry_path, on_runtime_loop(runtime, metrics_handler))
    metrics.router.add_get("/-/healthy", healthy)
    metrics.router.add_get("/-/ready", ready)
    metrics.router.add_get("/", landing)
    return Apps(webhook=webhook, metrics=metrics, runtime=runtime)


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
