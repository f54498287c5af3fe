"""The chart's memory from one source: helm/sizing.py's measured figures give values.yaml's defaults,
the Flex profile (values-flex.yaml) and the chart README's table, and the README says the same figures."""

from __future__ import annotations

import re

import pytest
import yaml

from tests.helm_chart import CHART_DIR, ROOT, render, sizing

# The worst case of the defaults and of a Flex centre, with its figures (the README links it).
MEMORY = (ROOT / "docs" / "security.md").read_text(encoding="utf-8")
PERFORMANCE = (ROOT / "docs" / "performance.md").read_text(encoding="utf-8")


def values_resources(name: str) -> dict:
    return yaml.safe_load((CHART_DIR / name).read_text())["resources"]


@pytest.mark.parametrize("profile", ["DEFAULT", "FLEX"])
def test_each_profiles_values_file_holds_the_resources_its_measured_worst_case_gives(profile):
    chosen = getattr(sizing(), profile)
    assert values_resources(chosen.values_file) == chosen.resources()
    overrides = None if chosen.values_file == "values.yaml" else yaml.safe_load((CHART_DIR / chosen.values_file).read_text())
    assert render(overrides).deployment_container()["resources"] == chosen.resources()


def test_the_limits_hold_each_worst_case_and_the_request_is_near_the_idle_figure():
    s = sizing()
    assert (s.DEFAULT.worst_case_mib, s.FLEX.worst_case_mib) == (794, 1053)
    assert [(profile.limit_mib, s.quantity(profile.limit_mib)) for profile in s.PROFILES] == [(1024, "1Gi"), (1280, "1280Mi")]
    for profile in s.PROFILES:
        assert profile.worst_case_mib * 1.2 <= profile.limit_mib < profile.worst_case_mib * 1.2 + s.LIMIT_STEP_MIB
        assert s.IDLE_MIB <= profile.request_mib < s.IDLE_MIB + s.REQUEST_STEP_MIB


def test_the_readme_and_the_performance_doc_state_the_figures_the_chart_is_sized_from():
    """The one source's figures are the measured ones the documents give: a remeasurement changes
    both, or this fails."""
    s = sizing()
    readme = re.sub(r"\s+", " ", MEMORY)
    for said in (
        f"a fresh exporter idles at {s.IDLE_MIB} MiB",
        f"{s.SCRAPE_PEAK_MIB} MiB at the peak of a scrape",
        f"deduplication at its cap (1,000,000 keys at about 40 bytes: {s.DEDUP_MIB} MiB)",
        f"the memory budget ({s.MEMORY_BUDGET_MIB} MiB)",
        f"at most `--taskrouter.max-join-memory` ({s.FLEX_JOINS_MIB} MiB;",
        f"the call label sets grow to 2,300 (about {s.FLEX_CALL_LABEL_SETS_MIB} MiB)",
        f"`resources.limits.memory` ({s.quantity(s.DEFAULT.limit_mib)})",
        f"`resources.limits.memory` to {s.quantity(s.FLEX.limit_mib)}",
    ):
        assert said in readme, said
    assert f"| idle RSS | {s.IDLE_MIB} MiB | {s.IDLE_MIB} MiB |" in PERFORMANCE
    assert f"**{s.SCRAPE_PEAK_MIB} MiB** |" in PERFORMANCE


def test_values_and_notes_point_a_flex_centre_at_its_profile():
    values = (CHART_DIR / "values.yaml").read_text()
    assert "1280Mi: install with the chart's\n# `values-flex.yaml`" in values
    notes = render().notes
    assert "4. Memory: the exporter may use 1Gi (resources.limits.memory)." in notes
    assert "the chart's values-flex.yaml" in notes
    assert "may use 1280Mi" in render(yaml.safe_load((CHART_DIR / "values-flex.yaml").read_text())).notes
