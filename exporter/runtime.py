"""The runtime: everything the webhook and metrics applications share, built once from the configuration.

Below the handlers that read it (``request.app[RUNTIME]``, exporter/keys.py) and above the steps
it wires together (intake, verify, pipeline, subjects, durable state), so that every import points down.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry

from exporter.config import Config
from exporter.doors.webhook.intake import Intake, MemoryBudget
from exporter.doors.webhook.network import SourceNetworks
from exporter.doors.webhook.verify import BasicAuth, SignatureVerifier
from exporter.join import build_join
from exporter.metrics import ExporterMetrics, build_exporter_metrics
from exporter.pipeline import Pipeline
from exporter.state.durable import DurableState
from exporter.state.store import StateStore
from exporter.subjects import Subjects
from exporter.subjects.build import build_subjects


@dataclass
class Runtime:
    """Everything both applications share, built once by :meth:`build`.

    Only ``ready`` changes afterwards: it says when the runtime is running rather than what it is.
    ``ready_checks`` are what else /-/ready asks (exporter/app.py), each a reason not to be ready or None.
    """

    config: Config
    registry: CollectorRegistry
    exporter_metrics: ExporterMetrics
    # What is recorded (one entry per kind of summary) and the one path every door delivers through.
    subjects: Subjects
    pipeline: Pipeline
    verifier: SignatureVerifier
    basic_auth: BasicAuth
    state: StateStore
    # The state's load at start, snapshots while running and flush at the end (exporter/state/durable.py).
    durable: DurableState
    # Admission of deliveries: the in-flight bound and the shutdown switch (exporter/doors/webhook/intake.py).
    intake: Intake
    # Where deliveries may come from (exporter/doors/webhook/network.py).
    networks: SourceNetworks
    # True from the end of the webhook application's startup until shutdown begins (/-/ready).
    ready: bool = field(default=False)
    ready_checks: list[Callable[[], str | None]] = field(default_factory=list)

    @classmethod
    def build(cls, config: Config, registry: CollectorRegistry, clock: Callable[[], float] = time.time) -> Runtime:
        settings = config.settings
        em = build_exporter_metrics(registry)
        subjects = build_subjects(config, registry, clock=clock)
        state = StateStore(settings.state.path, settings.dedup.window.total_seconds(), clock=clock, fsync=settings.state.sync == "full")
        join = build_join(config, registry, clock=clock)
        state.join_ttl = join.ttl
        pipeline = Pipeline(subjects, em, state, clock=clock, join=join)
        durable = DurableState(state, subjects, settings.state.snapshot_interval.total_seconds(), settings.state.snapshot_changes, join=join)
        intake = Intake(settings.webhook.max_in_flight, MemoryBudget(settings.webhook.memory_budget))
        em.webhook_in_flight.set_function(lambda: intake.in_flight)
        em.webhook_memory_reserved.set_function(lambda: intake.budget.reserved)
        em.signature_verification_enabled.set(0 if settings.webhook.insecure_skip_signature_verification else 1)
        networks = SourceNetworks.from_settings(settings.webhook)
        return cls(
            config=config,
            registry=registry,
            exporter_metrics=em,
            subjects=subjects,
            pipeline=pipeline,
            verifier=SignatureVerifier(config),
            basic_auth=BasicAuth(config),
            state=state,
            durable=durable,
            intake=intake,
            networks=networks,
        )
