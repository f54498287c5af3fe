"""Signed request files and in-memory summaries, all built with :mod:`exporter.synthetic`.

A request file holds one delivery per line, ``path?query TAB X-Twilio-Signature TAB body``, the
format both ``post.lua`` (wrk) and :mod:`bench.client` read. Every delivery is distinct: fresh
CloudEvent ids and participant SIDs, and so a distinct ``bodySHA256`` and signature.

Two regimes, measured side by side (docs/performance.md):

* **cold**: every field drawn from the synthetic distribution, whose common labels (4 call
  types x 2 directions x 11 regions x ~11 conference regions x 12 countries x 5 labels) keep
  producing label sets the registry has never seen, each costing ~200 new series. This is an
  exporter's first hours, or a registry that keeps growing.
* **warm**: the common labels drawn from a fixed pool of label sets (:func:`label_pool`, a few
  hundred, a contact centre's steady cardinality) that the registry was seeded with before the
  measurement; SIDs, event ids and measurements stay fresh per summary. This is an exporter in
  its steady state: series exist, observations land in them.
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from exporter import synthetic

AUTH_TOKEN = "b" * 32  # a stand-in: the exporter and the signer only need to agree
# Participant labels that spread summaries over enough label sets to grow a large registry
# (about 200 samples per label set); 40 stays under the default cap of 50.
TEAM_LABELS = tuple(f"team-{i:02d}" for i in range(40))
# The summary fields the default common labels are read from (exporter/config.py COMMON_LABELS).
COMMON_FIELDS = ("call_type", "call_direction", "participant_region", "conference_region", "country_code", "label")
# The warm regime's label sets: a few hundred, as a contact centre's steady cardinality.
WARM_LABEL_SETS = 300

LabelSet = dict[str, Any]


def label_pool(size: int, seed: int, teams: bool = False) -> list[LabelSet]:
    """``size`` distinct combinations of the common-label fields, drawn from the synthetic distribution."""
    rng = random.Random(seed)
    pool: dict[tuple[Any, ...], LabelSet] = {}
    for _ in range(size * 1000):  # bounded: the distribution has far more than size combinations
        overrides = {"label": TEAM_LABELS[rng.randrange(len(TEAM_LABELS))]} if teams else {}
        summary = synthetic.generate_summary(rng, **overrides)
        labels = {name: summary[name] for name in COMMON_FIELDS}
        pool.setdefault(tuple(labels.values()), labels)
        if len(pool) == size:
            return list(pool.values())
    raise ValueError(f"only {len(pool)} distinct label sets found")


def events(count: int, seed: int, teams: bool = False, pool: Sequence[LabelSet] | None = None) -> Iterator[dict[str, Any]]:
    """``count`` summary CloudEvents; ``teams`` draws participant labels from :data:`TEAM_LABELS`;
    ``pool`` draws the common labels from these label sets (the warm regime), in turn."""
    rng = random.Random(seed)
    for i in range(count):
        if pool is not None:
            overrides = pool[(i + seed) % len(pool)]
        elif teams:
            overrides = {"label": TEAM_LABELS[rng.randrange(len(TEAM_LABELS))]}
        else:
            overrides = {}
        summary = synthetic.generate_summary(rng, **overrides)
        yield synthetic.cloud_event(summary, event_id=f"EZ{seed:08x}{i:024x}")


def write_requests(
    path: Path, sink_url: str, deliveries: int, batch: int, seed: int, teams: bool = False, pool: Sequence[LabelSet] | None = None
) -> Path:
    """Write ``deliveries`` signed deliveries of ``batch`` events each to ``path``."""
    stream = events(deliveries * batch, seed, teams, pool)
    with path.open("wb") as out:
        for _ in range(deliveries):
            body = synthetic.batch_body([next(stream) for _ in range(batch)])
            signed_url, signature = synthetic.sign(sink_url, body, AUTH_TOKEN)
            parts = urlsplit(signed_url)
            out.write(f"{parts.path}?{parts.query}\t{signature}\t".encode() + body + b"\n")
    return path
