"""/metrics as a scraper and an operator see it: promtool-clean, documented in the README."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from exporter.synthetic import cloud_event, sink_test_event, summaries
from tests.conftest import Harness, fixture

ROOT = Path(__file__).resolve().parent.parent


async def _populated(harness: Harness) -> None:
    """Every family with samples: recorded summaries, a test event, rejections of each kind."""
    await harness.post([fixture("reference_event.json"), *(cloud_event(s) for s in summaries(30, seed=3)), sink_test_event()])
    await harness.post([{"id": "EZ1", "type": "other"}, {"id": "EZ2", "type": fixture("reference_event.json")["type"], "data": []}])
    await harness.post(b"not json")
    await harness.post([fixture("reference_event.json")], token=None)


async def test_promtool_check_metrics_finds_nothing_to_complain_about(harness: Harness) -> None:
    await _populated(harness)
    text = await (await harness.metrics.get("/metrics")).text()

    result = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True, text=True)

    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == "" and result.stderr.strip() == ""


async def test_every_exported_family_is_in_the_readme_metrics_table_and_back(harness: Harness) -> None:
    await _populated(harness)
    text = await (await harness.metrics.get("/metrics")).text()
    # In the text format a counter's TYPE line already names it with _total, an Info's with _info.
    exported = {m.group(1) for m in re.finditer(r"^# TYPE (twilio_\w+) \w+", text, re.M)}
    readme = (ROOT / "README.md").read_text()
    metrics_section = readme[readme.index("<!-- METRICS-START -->") : readme.index("<!-- METRICS-END -->")]
    documented = set(re.findall(r"^\| `(twilio_[a-z_]+)`", metrics_section, re.M))

    exported_core = {name for name in exported if not name.startswith("twilio_insights_exporter_pull_")}
    assert exported_core - documented == set(), "exported but not in the README"
    assert documented - exported == set(), "in the README but not exported"


def test_readme_configuration_table_is_generated_from_the_settings() -> None:
    result = subprocess.run([sys.executable, "scripts/readme_tables.py", "--check"], cwd=ROOT, capture_output=True, text=True)

    assert result.returncode == 0, result.stderr
