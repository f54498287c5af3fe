"""The runtime: everything the webhook and metrics applications share, built once from the configuration.

Below the handlers that read it (``request.app[RUNTIME]``, exporter/keys.py) and above the steps
it wires together (intake, verify, pipeline, recorder, state), so that every import points down.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry

from .config import Config
from .dedup import Window
from .intake import Intake
from .labels import LabelPolicy
from .metrics import ExporterMetrics, build_exporter_metrics
from .pipeline import Pipeline
from .recorder import Recorder
from .state import StateStore
from .verify import BasicAuth, SignatureVerifier


@dataclass
class Runtime:
    """Everything both applications share, built once by :meth:`build`.

    Only ``ready`` changes afterwards: it says when the runtime is running rather than what it is.
    ``ready_checks`` are what else /-/ready asks (exporter/app.py), each a reason not to be ready or None.
    """

    config: Config
    registry: CollectorRegistry
    exporter_metrics: ExporterMetrics
    pipeline: Pipeline
    verifier: SignatureVerifier
    basic_auth: BasicAuth
    state: StateStore
    # Admission of deliveries: the in-flight bound and the shutdown switch (exporter/intake.py).
    intake: Intake
    # True from the end of the webhook application's startup until shutdown begins (/-/ready).
    ready: bool = field(default=False)
    ready_checks: list[Callable[[], str | None]] = field(default_factory=list)

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
