"""The runtime: everything the webhook and metrics applications share, built once from the configuration.

Below the handlers that read it (``request.app[RUNTIME]``, exporter/keys.py) and above the steps
it wires together (intake, verify, pipeline, recorder, state), so that every import points down.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry

from .config import Config
from .dedup import Window
from .intake import Intake, MemoryBudget
from .labels import LabelPolicy
from .metrics import ExporterMetrics, build_exporter_metrics
from .network import SourceNetworks
from .pipeline import Pipeline
from .recorder import Recorder
from .state import StateStore
from .verify import BasicAuth, SignatureVerifier


@dataclass
class Runtime:
    """Everything both applications share, built once by :meth:`build`.

    Only two fields change afterwards, and both say when the runtime is running rather than what
    it is: ``ready`` and ``loop``.
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
    # Where deliveries may come from (exporter/network.py).
    networks: SourceNetworks
    # True from the webhook application's startup until shutdown begins (/-/ready).
    ready: bool = field(default=False)
    # The loop that owns everything above; the metrics listener may run on another (__main__).
    # Known only once a loop runs (build may run outside one): set at the webhook application's
    # startup, and by __main__ before the metrics listener starts (a scrape may come first).
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
        intake = Intake(settings.webhook.max_in_flight, MemoryBudget(settings.webhook.memory_budget))
        em.webhook_in_flight.set_function(lambda: intake.in_flight)
        em.webhook_memory_reserved.set_function(lambda: intake.budget.reserved)
        em.signature_verification_enabled.set(0 if settings.webhook.insecure_skip_signature_verification else 1)
        networks = SourceNetworks.from_settings(settings.webhook)
        return cls(config, registry, em, pipeline, SignatureVerifier(config), BasicAuth(config), state, intake, networks)
