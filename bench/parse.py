"""The parse lever, measured for the lead (issue 11): pydantic's JSON mode into the narrowest
model that holds what is recorded, against today's python mode. Not used by the exporter.

* **python mode** (today): ``models.loads`` (``pydantic_core.from_json``) builds Python dicts and
  lists, then ``CloudEvent.model_validate`` and ``ParticipantSummary.model_validate`` walk them.
* **JSON mode, full model**: ``TypeAdapter(list[Event]).validate_json(body)`` with ``Event`` the
  envelope whose ``data`` is the full ``ParticipantSummary``: one pass from bytes, no
  intermediate Python objects.
* **JSON mode, narrow model**: the same, with ``data`` a model derived from
  ``ParticipantSummary`` (``pydantic.create_model`` over its own field definitions, so no
  hand-kept copy) keeping only the fields the recorder reads (:data:`RECORDED_FIELDS`); the
  others are skipped as unknown keys are.

Since the strict-parsing work of issue 9, ``ParticipantSummary`` itself holds exactly
:data:`RECORDED_FIELDS` (the narrow model is then the model), so the lever left is JSON mode.

Run alone: ``python -m bench.parse``. Medians over ``repeats`` passes, CPU µs per summary
(``process_time``: a pass that waits for the shared core is not counted as parsing).
"""

from __future__ import annotations

import random
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

from pydantic import BaseModel, TypeAdapter, create_model

from exporter import synthetic
from exporter.models import CloudEvent, ParticipantSummary, loads

# What exporter/record/recorder.py reads of a summary (labels, observations, exemplars).
RECORDED_FIELDS = (
    "participant_sid",
    "label",
    "conference_sid",
    "call_sid",
    "account_sid",
    "call_direction",
    "call_state",
    "call_status",
    "country_code",
    "duration_seconds",
    "outbound_time_in_queue",
    "jitter_buffer_size",
    "participant_region",
    "conference_region",
    "call_type",
    "quality_issues",
    "processing_state",
    "events",
    "metrics",
)


def narrow_summary() -> type[BaseModel]:
    """``ParticipantSummary`` cut down to :data:`RECORDED_FIELDS`, derived from its own fields."""
    fields: dict[str, Any] = {name: (info.annotation, info) for name, info in ParticipantSummary.model_fields.items() if name in RECORDED_FIELDS}
    return create_model("NarrowSummary", __config__=ParticipantSummary.model_config, **fields)


def event_model(summary: type[BaseModel]) -> type[BaseModel]:
    """The envelope with ``data`` validated as ``summary`` in the same pass."""
    fields: dict[str, Any] = {name: (info.annotation, info) for name, info in CloudEvent.model_fields.items() if name != "data"}
    return create_model(f"EventOf{summary.__name__}", __config__=CloudEvent.model_config, data=(summary, ...), **fields)


def bodies(batch: int, count: int, seed: int) -> list[bytes]:
    rng = random.Random(seed)
    return [synthetic.batch_body([synthetic.cloud_event(synthetic.generate_summary(rng)) for _ in range(batch)]) for _ in range(count)]


def python_mode(body: bytes) -> list[Any]:
    return [ParticipantSummary.model_validate(CloudEvent.model_validate(raw).data) for raw in loads(body)]


def parse_costs(repeats: int = 9) -> dict[str, dict[str, float]]:
    """``{"single event" | "batch of 50": {method: µs per summary}}``, medians of ``repeats`` passes."""
    # A model built at run time is no type mypy can check: the adapters validate lists of its events.
    full: TypeAdapter[list[Any]] = TypeAdapter(list[event_model(ParticipantSummary)])  # type: ignore[misc,arg-type]
    narrow: TypeAdapter[list[Any]] = TypeAdapter(list[event_model(narrow_summary())])  # type: ignore[misc,arg-type]
    methods: dict[str, Callable[[bytes], Any]] = {
        "python mode (today)": python_mode,
        "JSON mode, full model": full.validate_json,
        "JSON mode, narrow model": narrow.validate_json,
    }
    out: dict[str, dict[str, float]] = {}
    for shape, batch, count in (("single event", 1, 2000), ("batch of 50", 50, 40)):
        data = bodies(batch, count, seed=batch)
        # The same summaries whichever way: the narrow model keeps what is recorded, unchanged.
        for a, b in zip(python_mode(data[0]), narrow.validate_json(data[0]), strict=True):
            assert all(getattr(a, name) == getattr(b.data, name) for name in RECORDED_FIELDS)
        timings: dict[str, list[float]] = {name: [] for name in methods}
        for _ in range(repeats):
            for name, method in methods.items():  # alternated, pass by pass
                started = time.process_time()
                for body in data:
                    method(body)
                timings[name].append((time.process_time() - started) / (batch * count) * 1e6)
        out[shape] = {name: statistics.median(values) for name, values in timings.items()}
    return out


if __name__ == "__main__":
    for shape, figures in parse_costs(int(sys.argv[1]) if len(sys.argv) > 1 else 9).items():
        print(f"{shape}: " + ", ".join(f"{k} {v:.1f} µs" for k, v in figures.items()))
