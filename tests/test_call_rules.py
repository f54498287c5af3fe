"""The call rules file: generated, valid for promtool, grouped by edge, and each call alert unit-tested."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import yaml

from dashboards import call_rules, generate, rules, settings

ROOT = Path(__file__).resolve().parent.parent
CALLS_FILE = ROOT / "rules" / call_rules.FILE
CALLS_TESTS = ROOT / "rules" / "tests" / "calls.test.yml"
PROMTOOL = shutil.which("promtool") or "promtool"


def promtool(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run([PROMTOOL, *args], capture_output=True, text=True, timeout=300, cwd=cwd)


def groups() -> dict[str, dict]:
    return {group["name"]: group for group in yaml.safe_load(CALLS_FILE.read_text())["groups"]}


def against(rules_text: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    """The call unit tests run against ``rules_text`` instead of the committed file."""
    (tmp_path / "rules" / "tests").mkdir(parents=True)
    (tmp_path / "rules" / call_rules.FILE).write_text(rules_text)
    shutil.copy(CALLS_TESTS, tmp_path / "rules" / "tests" / CALLS_TESTS.name)
    return promtool("test", "rules", f"rules/tests/{CALLS_TESTS.name}", cwd=tmp_path)


def test_committed_call_rules_are_what_the_generator_writes_and_promtool_accepts_them() -> None:
    assert CALLS_FILE.read_text(encoding="utf-8") == generate.render()[CALLS_FILE], "run `python -m dashboards.generate`"
    result = promtool("check", "rules", str(CALLS_FILE))
    assert result.returncode == 0, result.stdout + result.stderr
    # 6 thresholds; per dimension (3) and signal (4), 14 recording rules and 3 alerts.
    assert f"SUCCESS: {6 + 3 * 4 * (14 + 3)} rules found" in result.stdout


def test_group_names_carry_the_kind_and_every_call_slice_groups_by_job_edge_and_its_dimension() -> None:
    found = groups()

    assert list(found) == [call_rules.THRESHOLDS_GROUP] + [f"twilio-insights-exporter.call.slice.{d}" for d in settings.CALL_SLICE_DIMENSIONS]
    for dimension in settings.CALL_SLICE_DIMENSIONS:
        group = found[f"{call_rules.SLICE_GROUP_PREFIX}{dimension}"]
        raw = [rule["expr"] for rule in group["rules"] if "record" in rule and "rate(" in rule["expr"]]
        assert len(raw) == 2 * len(call_rules.SIGNALS)  # the raw histograms, read once per signal
        assert all(f"sum by (job, edge, {dimension}) (" in expr for expr in raw)
        assert all(rule["record"].startswith(f"job_edge_{dimension}:twilio_call") for rule in group["rules"] if "record" in rule)
        assert group["interval"] == settings.SLICE_EVALUATION_INTERVAL


def test_call_unit_tests_pass_and_expect_every_call_alert_both_to_fire_and_to_stay_silent() -> None:
    result = promtool("test", "rules", str(CALLS_TESTS))
    assert result.returncode == 0, result.stdout + result.stderr
    cases = [case for test in yaml.safe_load(CALLS_TESTS.read_text())["tests"] for case in test["alert_rule_test"]]
    assert {case["alertname"] for case in cases if case["exp_alerts"]} == set(call_rules.alert_names())
    assert {case["alertname"] for case in cases if not case["exp_alerts"]} == set(call_rules.alert_names())
    fired = [alert for case in cases for alert in case["exp_alerts"]]
    assert {alert["exp_labels"]["carrier"] for alert in fired} == {"Carrier B"}


def test_call_unit_tests_fail_without_the_volume_guard(tmp_path: Path) -> None:
    text = CALLS_FILE.read_text()
    guard = " and job_edge_carrier:twilio_call_mos_avg_count:increase30m >= scalar(twilio_call:alert_min_streams:threshold)"
    assert guard in text

    result = against(text.replace(guard, ""), tmp_path)

    assert result.returncode != 0
    assert "low volume never fires" in result.stdout + result.stderr


def test_call_unit_tests_fail_when_the_slices_are_not_grouped_by_edge(tmp_path: Path) -> None:
    result = against(CALLS_FILE.read_text().replace("sum by (job, edge, carrier)", "sum by (job, carrier)"), tmp_path)

    assert result.returncode != 0
    assert "one carrier degrades" in result.stdout + result.stderr


def test_every_call_alert_names_its_runbook_and_links_the_calls_dashboard_filtered_to_its_slice() -> None:
    for alert in call_rules.alerts():
        rule = alert.rule(rules.Links(runbook_base="https://wiki.example.org/runbooks", grafana="https://grafana.example.org"))
        assert (ROOT / "docs" / "runbooks" / f"{alert.name}.md").read_text() == call_rules.runbook_pages()[f"{alert.name}.md"]
        assert rule["annotations"]["runbook_url"].endswith(f"/{alert.name}.md")
        dimension = rule["labels"]["dimension"]
        assert f"/d/{call_rules.UID}?var-job=" in rule["annotations"]["dashboard_url"]
        assert f"&var-{dimension}={{{{ $labels.{dimension} | urlquery }}}}" in rule["annotations"]["dashboard_url"]
