"""Application factory: two aiohttp applications sharing one runtime.

The webhook application is the one exposed to the internet; the metrics application
(``/metrics``, ``/-/healthy``, ``/-/ready``) stays internal. They listen on separate addresses,
so nothing on the public port can read metrics and nothing on the internal port accepts events.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from aiohttp import web
from prometheus_client import CollectorRegistry, disable_created_metrics

from .config import Config
from .dedup import Window
from .exposition import make_metrics_handler
from .keys import RUNTIME
from .labels import LabelPolicy
from .metrics import ExporterMetrics, build_exporter_metrics, build_pull_metrics
from .pipeline import Pipeline, state_context
from .pull import Poller, pull_context
from .recorder import Recorder
from .state import StateStore
from .webhook import BasicAuth, SignatureVerifier, handle_webhook

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
    ready: bool = field(default=False)
    # Set when --pull.enabled; runs as a background task of the metrics application.
    poller: Poller | None = None

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
        return cls(config, registry, em, pipeline, SignatureVerifier(config), BasicAuth(config), state)


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
        runtime.ready = True

    async def mark_not_ready(_: web.Application) -> None:
        runtime.ready = False

    webhook.on_startup.append(mark_ready)
    webhook.on_shutdown.append(mark_not_ready)

    metrics = web.Application()
    metrics[RUNTIME] = runtime
    # The metrics application starts first and stops last (__main__), so the state is loaded
    # before the first delivery and flushed after the last.
    metrics.cleanup_ctx.append(state_context(runtime.pipeline))
    if settings.pull.enabled:
        runtime.poller = Poller.build(config, runtime.pipeline, runtime.state, build_pull_metrics(registry))
        metrics.cleanup_ctx.append(pull_context(runtime.poller))
    metrics.router.add_get(settings.web.telemetry_path, make_metrics_handler(registry, runtime.pipeline.recorder.families()))
    metrics.router.add_get("/-/healthy", healthy)
    metrics.router.add_get("/-/ready", ready)
    metrics.router.add_get("/", landing)
    return Apps(webhook=webhook, metrics=metrics, runtime=runtime)


async def healthy(request: web.Request) -> web.Response:
    """The process answers: nothing else is checked, so a slow dependency never restarts it."""
    return web.Response(text="Healthy.\n")


async def ready(request: web.Request) -> web.Response:
    """Ready once the webhook listener accepts deliveries, until shutdown begins."""
    if request.app[RUNTIME].ready:
        return web.Response(text="Ready.\n")
    return web.Response(status=503, text="Not ready.\n")


async def landing(request: web.Request) -> web.Response:
    path = request.app[RUNTIME].config.settings.web.telemetry_path
    return web.Response(
        content_type="text/html",
        text=f"<html><head><title>twilio-insights-exporter</title></head><body><h1>twilio-insights-exporter</h1>"
        f'<p><a href="{path}">Metrics</a></p></body></html>\n',
    )
