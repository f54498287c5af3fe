"""A state file written by an earlier release (schema 4, before the package layout) loads with its counts and its dedup keys.

``tests/fixtures/state_schema4.sqlite`` was written by the exporter of commit b46f037 (the last
release with the flat layout) from ``tests/fixtures/state_schema4_events.json``: a TaskRouter
reservation, four participant summaries, three call summaries and a conference summary, recorded
at the Unix time :data:`WRITTEN_AT` and closed cleanly. Read at that time (dedup keys expire
after ``--dedup.window``), it must give every family exactly what the same events give a fresh
exporter, and take their redelivery as duplicates.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry

from exporter.app import Runtime
from exporter.config import load_config
from exporter.metrics import Source
from tests.conftest import FIXTURES

WRITTEN_AT = 1_800_000_000.0


def measured(registry: CollectorRegistry) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of what Twilio measured (not the exporter's own health)."""
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in registry.collect()
        if family.name.startswith("twilio_") and not family.name.startswith("twilio_insights_exporter_")
        for sample in family.samples
    }


async def runtime_of(*args: str) -> Runtime:
    runtime = Runtime.build(load_config(list(args)), CollectorRegistry(), clock=lambda: WRITTEN_AT + 60)
    await runtime.durable.open()
    return runtime


async def test_a_schema_4_state_file_loads_with_its_counts_and_its_dedup_keys(tmp_path: Path) -> None:
    events: list[dict[str, Any]] = json.loads((FIXTURES / "state_schema4_events.json").read_text())
    shutil.copy(FIXTURES / "state_schema4.sqlite", tmp_path / "state.db")
    reference = await runtime_of()
    assert await reference.pipeline.deliver(events, Source.WEBHOOK) == {"recorded": 9}

    loaded = await runtime_of(f"--state.path={tmp_path / 'state.db'}")
    try:
        expected = measured(reference.registry)
        assert len(expected) > 500 and measured(loaded.registry) == expected
        assert len(loaded.pipeline.join or ()) == 1
        assert any(labels and ("task_queue", "Support") in labels for _, labels in expected)

        assert await loaded.pipeline.deliver(events, Source.WEBHOOK) == {"recorded": 1, "duplicate": 8}  # the TaskRouter event merges again
        assert measured(loaded.registry) == expected
    finally:
        await loaded.durable.close()
        await reference.durable.close()
