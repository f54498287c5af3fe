"""The chart's memory requests and limits, derived from the measured figures: the one source.

The figures are the measurements of docs/performance.md ("The public door", "/metrics memory")
and of the README's "The public door" and "Queues and teams" sections, which state them again in
prose (tests/test_helm_sizing.py checks that both say the same). From them come the defaults in
values.yaml, the Flex profile in values-flex.yaml and the chart README's "Sizing" table
(helm/generate_readme.py); the tests fail when either file drifts from what is derived here.

    python helm/sizing.py   # the figures, and the resources each profile gets
"""

from __future__ import annotations

import math
from dataclasses import dataclass

# A fresh exporter's resident set (bench/edge.py, docs/performance.md "The public door").
IDLE_MIB = 67
# The peak of a scrape once the participant label-set budget (5,000 sets) is full: 982,797 lines on
# /metrics (bench/scrape_memory.py, docs/performance.md "/metrics memory").
SCRAPE_PEAK_MIB = 558
# Deduplication at its cap: 1,000,000 keys at about 40 bytes (tracemalloc).
DEDUP_MIB = 40
# --webhook.memory-budget's default: 11 times the largest delivery, held by deliveries being read.
MEMORY_BUDGET_MIB = 176
# About 0.2 MiB per open connection (aiohttp's read buffer pauses at 128 KiB), a hundred of them.
CONNECTIONS_MIB = 20
# A Flex contact centre adds the TaskRouter join map at its bound in bytes (50,000 plain tasks take
# about 100 MiB, tracemalloc), and the call label sets grown to 2,300.
FLEX_JOINS_MIB = 192  # --taskrouter.max-join-memory: the join map's bound in bytes (exporter/join.py)
FLEX_CALL_LABEL_SETS_MIB = 67

# A limit leaves a fifth above the measured worst case (the allocator's fragmentation, another
# machine's figures) and is a whole number of 256 MiB steps; a request is the idle figure rounded up
# to 16 MiB: what a pod needs most of the time, so the scheduler neither wastes nor overcommits.
HEADROOM = 1.2
LIMIT_STEP_MIB = 256
REQUEST_STEP_MIB = 16
CPU_REQUEST = "50m"


def quantity(mib: int) -> str:
    """A Kubernetes memory quantity in the largest whole binary unit.

    >>> quantity(1024), quantity(1280), quantity(80)
    ('1Gi', '1280Mi', '80Mi')
    """
    return f"{mib // 1024}Gi" if mib % 1024 == 0 else f"{mib}Mi"


@dataclass(frozen=True)
class Profile:
    """One way to run the chart, its worst case of memory, and the resources that holds it."""

    name: str
    values_file: str
    worst_case_mib: int

    @property
    def limit_mib(self) -> int:
        return math.ceil(self.worst_case_mib * HEADROOM / LIMIT_STEP_MIB) * LIMIT_STEP_MIB

    @property
    def request_mib(self) -> int:
        return math.ceil(IDLE_MIB / REQUEST_STEP_MIB) * REQUEST_STEP_MIB

    def resources(self) -> dict[str, dict[str, str]]:
        """The ``resources`` value of the profile's values file."""
        return {"requests": {"cpu": CPU_REQUEST, "memory": quantity(self.request_mib)}, "limits": {"memory": quantity(self.limit_mib)}}


DEFAULT = Profile("defaults", "values.yaml", SCRAPE_PEAK_MIB + DEDUP_MIB + MEMORY_BUDGET_MIB + CONNECTIONS_MIB)
FLEX = Profile("Flex contact centre", "values-flex.yaml", DEFAULT.worst_case_mib + FLEX_JOINS_MIB + FLEX_CALL_LABEL_SETS_MIB)
PROFILES = (DEFAULT, FLEX)


def table() -> str:
    """The chart README's "Sizing" table."""
    lines = [
        "| profile | values file | worst case (measured) | `resources.limits.memory` | `resources.requests.memory` |",
        "|---|---|---|---|---|",
    ]
    for profile in PROFILES:
        lines.append(
            f"| {profile.name} | `{profile.values_file}` | {profile.worst_case_mib} MiB | {quantity(profile.limit_mib)} "
            f"| {quantity(profile.request_mib)} (idle: {IDLE_MIB} MiB) |"
        )
    parts = (
        f"the peak of a scrape at the full participant label-set budget ({SCRAPE_PEAK_MIB} MiB), deduplication at its cap ({DEDUP_MIB} MiB), "
        f"the webhook memory budget ({MEMORY_BUDGET_MIB} MiB) and a hundred connections ({CONNECTIONS_MIB} MiB)"
    )
    flex = f"the TaskRouter join map at its cap ({FLEX_JOINS_MIB} MiB) and the call label sets at 2,300 ({FLEX_CALL_LABEL_SETS_MIB} MiB)"
    rule = (
        f"a limit is the worst case plus a fifth, in steps of {LIMIT_STEP_MIB} MiB; a request is the idle figure rounded up to {REQUEST_STEP_MIB} MiB"
    )
    return "\n".join(lines) + f"\n\nThe defaults' worst case is {parts}; a Flex contact centre adds {flex}; {rule}.\n"


if __name__ == "__main__":
    print(table())
    for profile in PROFILES:
        print(profile.values_file, profile.resources())
