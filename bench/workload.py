"""Signed request files and in-memory summaries, all built with :mod:`exporter.synthetic`.

A request file holds one delivery per line, ``path?query TAB X-Twilio-Signature TAB body``, the
format both ``post.lua`` (wrk) and :mod:`bench.client` read. Every delivery is distinct: fresh
CloudEvent ids and participant SIDs, and so a distinct ``bodySHA256`` and signature.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from exporter import synthetic

AUTH_TOKEN = "b" * 32  # a stand-in: the exporter and the signer only need to agree
# Participant labels that spread summaries over enough label sets to grow a large registry
# (about 200 samples per label set); 40 stays under the default cap of 50.
TEAM_LABELS = tuple(f"team-{i:02d}" for i in range(40))


def events(count: int, seed: int, teams: bool = False) -> Iterator[dict[str, Any]]:
    """``count`` summary CloudEvents; ``teams`` draws participant labels from :data:`TEAM_LABELS`."""
    rng = random.Random(seed)
    for i in range(count):
        overrides = {"label": TEAM_LABELS[rng.randrange(len(TEAM_LABELS))]} if teams else {}
        summary = synthetic.generate_summary(rng, **overrides)
        yield synthetic.cloud_event(summary, event_id=f"EZ{seed:08x}{i:024x}")


def write_requests(path: Path, sink_url: str, deliveries: int, batch: int, seed: int, teams: bool = False) -> Path:
    """Write ``deliveries`` signed deliveries of ``batch`` events each to ``path``."""
    stream = events(deliveries * batch, seed, teams)
    with path.open("wb") as out:
        for _ in range(deliveries):
            body = synthetic.batch_body([next(stream) for _ in range(batch)])
            signed_url, signature = synthetic.sign(sink_url, body, AUTH_TOKEN)
            parts = urlsplit(signed_url)
            out.write(f"{parts.path}?{parts.query}\t{signature}\t".encode() + body + b"\n")
    return path
