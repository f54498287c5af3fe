"""The rules file: generated from its source, valid for promtool, and each alert unit-tested."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import yaml

from dashboards import generate, rules

ROOT = Path(__file__).resolve().parent.parent
RULES_FILE = ROOT / "rules" / "twilio-insights-exporter.rules.yml"
UNIT_TESTS = sorted((ROOT / "rules" / "tests").glob("*.test.yml"))
PROMTOOL = shutil.which("promtool") or "promtool"


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([PROMTOOL, *args], capture_output=True, text=True, timeout=60, cwd=ROOT)


def test_committed_rules_file_is_what_the_generator_writes():
    assert RULES_FILE.read_text(encoding="utf-8") == generate.render()[RULES_FILE], "run `python -m dashboards.generate`"


def test_rules_file_says_it_is_generated():
    assert RULES_FILE.read_text(encoding="utf-8").splitlines()[0] == f"# {generate.NOTICE}"


def test_promtool_check_rules_passes():
    result = promtool("check", "rules", str(RULES_FILE))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 21 rules found" in result.stdout


def test_promtool_unit_tests_pass():
    result = promtool("test", "rules", *map(str, UNIT_TESTS))
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("SUCCESS") == len(UNIT_TESTS)


def unit_tests_against(rules_text: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    """The promtool unit tests, run against ``rules_text`` instead of the committed rules file."""
    (tmp_path / "rules").mkdir()
    (tmp_path / "rules" / RULES_FILE.name).write_text(rules_text, encoding="utf-8")
    (tmp_path / "rules" / "tests").mkdir()
    for test in UNIT_TESTS:
        shutil.copy(test, tmp_path / "rules" / "tests" / test.name)
    return subprocess.run(
        [PROMTOOL, "test", "rules", *(str(tmp_path / "rules" / "tests" / t.name) for t in UNIT_TESTS)],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_promtool_unit_tests_fail_when_a_threshold_is_broken(tmp_path):
    """The unit tests are not vacuous: loosening the MOS alert's share makes them fail."""
    broken = RULES_FILE.read_text(encoding="utf-8").replace("ratio_rate30m > 0.1 and", "ratio_rate30m > 0.5 and")
    assert broken != RULES_FILE.read_text(encoding="utf-8")
    result = unit_tests_against(broken, tmp_path)
    assert result.returncode != 0
    assert "TwilioConferenceLowMOS" in result.stdout + result.stderr


def test_promtool_unit_tests_fail_when_the_pull_alert_watches_webhook_only_exporters(tmp_path):
    """Without its "targets that poll" guard the pull-failing alert would page for every
    webhook-only exporter (and any other process) started more than 10 minutes ago; the unit
    tests catch that."""
    guard = "(process_start_time_seconds and on (job, instance) twilio_insights_exporter_pull_polls_total)"
    text = RULES_FILE.read_text(encoding="utf-8")
    assert text.count(guard) == 2
    result = unit_tests_against(text.replace(guard, "process_start_time_seconds"), tmp_path)
    assert result.returncode != 0
    output = result.stdout + result.stderr
    assert "webhook-only exporters never fire the pull alerts" in output
    assert 'instance="w"' in output


def test_every_alert_has_a_unit_test_that_expects_it_to_fire():
    fired = {
        case["alertname"]
        for test in UNIT_TESTS
        for group in yaml.safe_load(test.read_text())["tests"]
        for case in group.get("alert_rule_test", [])
        if case.get("exp_alerts")
    }
    assert fired == {alert.name for alert in rules.alerts()}


def test_every_alert_has_a_unit_test_that_expects_it_silent():
    silent = {
        case["alertname"]
        for test in UNIT_TESTS
        for group in yaml.safe_load(test.read_text())["tests"]
        for case in group.get("alert_rule_test", [])
        if not case.get("exp_alerts")
    }
    assert silent == {alert.name for alert in rules.alerts()}


def test_every_alert_has_summary_description_and_an_existing_runbook():
    alerts = yaml.safe_load(RULES_FILE.read_text())["groups"][1]["rules"]
    assert [rule["alert"] for rule in alerts] == [alert.name for alert in rules.alerts()]
    for rule in alerts:
        annotations = rule["annotations"]
        assert set(annotations) == {"summary", "description", "runbook_url"}
        runbook = annotations["runbook_url"].removeprefix(rules.settings.RUNBOOK_BASE_URL + "/")
        assert (ROOT / "docs" / "runbooks" / runbook).is_file(), rule["alert"]
        assert rule["labels"]["severity"] in {"critical", "warning", "info"}


def test_quality_shares_use_the_bucket_at_twilios_threshold():
    """Exact ``le`` strings, as prometheus_client writes them (the e2e test checks the live output)."""
    recording = yaml.safe_load(RULES_FILE.read_text())["groups"][0]["rules"]
    edges = {rule["record"]: re.findall(r'le="([^"]+)"', rule["expr"]) for rule in recording if ":ratio_rate" in rule["record"]}
    assert edges == {
        "job_stream:twilio_conference_participant_low_mos:ratio_rate30m": ["3.5"],
        "job_stream:twilio_conference_participant_high_jitter:ratio_rate30m": ["0.005"],
        "job_stream:twilio_conference_participant_high_latency:ratio_rate30m": ["0.15"],
        "job_stream:twilio_conference_participant_high_packet_loss:ratio_rate30m": ["0.05"],
    }
