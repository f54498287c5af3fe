"""The rules file: generated from its source, valid for promtool, and each alert unit-tested."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from dashboards import call_rules, docs, generate, rules, runbooks, settings
from dashboards.promql import seconds

ROOT = Path(__file__).resolve().parent.parent
RULES_FILE = ROOT / "rules" / "twilio-insights-exporter.rules.yml"
SLICES_FILE = ROOT / "rules" / "twilio-insights-exporter-slices.rules.yml"
CALLS_FILE = ROOT / "rules" / call_rules.FILE
RULES_FILES = (RULES_FILE, SLICES_FILE, CALLS_FILE)
UNIT_TESTS = sorted((ROOT / "rules" / "tests").glob("*.test.yml"))
SLICE_TESTS = ROOT / "rules" / "tests" / "slices.test.yml"
LINKS_FILE = ROOT / "dashboards" / "alert-links.yml"
PROMTOOL = shutil.which("promtool") or "promtool"


# A guard against a hung promtool, not a timing assertion: the slice tests alone took ~4 minutes
# on the loaded 2-core VM (load average ~9), close to the 300 s this was before.
PROMTOOL_TIMEOUT = 900


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([PROMTOOL, *args], capture_output=True, text=True, timeout=PROMTOOL_TIMEOUT, cwd=ROOT)


def groups(path: Path = RULES_FILE) -> dict[str, list[dict]]:
    return {group["name"]: group["rules"] for group in yaml.safe_load(path.read_text())["groups"]}


@pytest.mark.parametrize("path", RULES_FILES, ids=lambda path: path.name)
def test_committed_rules_file_is_what_the_generator_writes(path):
    assert path.read_text(encoding="utf-8") == generate.render()[path], "run `python -m dashboards.generate`"


@pytest.mark.parametrize("path", RULES_FILES, ids=lambda path: path.name)
def test_rules_file_says_it_is_generated(path):
    assert path.read_text(encoding="utf-8").splitlines()[0] == f"# {generate.NOTICE}"


def test_promtool_check_rules_passes():
    result = promtool("check", "rules", *map(str, RULES_FILES))
    assert result.returncode == 0, result.stdout + result.stderr
    # 16 thresholds (6 of quality, 10 of exporter health), 8 account-wide recording rules, 14 alerts (2 of Kinesis mode);
    # per dimension (6) and signal (4), 14 recording rules (2 base rates, 7 shares, 5 counts) and 3 alerts.
    assert "SUCCESS: 38 rules found" in result.stdout
    assert f"SUCCESS: {6 * 4 * (14 + 3)} rules found" in result.stdout


def test_promtool_unit_tests_pass():
    result = promtool("test", "rules", *map(str, UNIT_TESTS))
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("SUCCESS") == len(UNIT_TESTS)


def unit_tests_against(
    rules_text: str, tmp_path: Path, *, path: Path = RULES_FILE, tests: list[Path] | None = None, scenarios: tuple[str, ...] = ()
) -> subprocess.CompletedProcess[str]:
    """The promtool unit tests, run against ``rules_text`` instead of the committed ``path``.

    ``tests`` narrows the run to some test files, ``scenarios`` to the tests whose name starts
    with one of them (the slice tests evaluate hundreds of rules over hours: run only what matters).
    """
    (tmp_path / "rules" / "tests").mkdir(parents=True)
    for rules_file in RULES_FILES:
        text = rules_text if rules_file == path else rules_file.read_text(encoding="utf-8")
        (tmp_path / "rules" / rules_file.name).write_text(text, encoding="utf-8")
    chosen = tests or UNIT_TESTS
    for test in chosen:
        document = yaml.safe_load(test.read_text())
        if scenarios:
            document["tests"] = [t for t in document["tests"] if t["name"].startswith(scenarios)]
            assert document["tests"], scenarios
        (tmp_path / "rules" / "tests" / test.name).write_text(yaml.safe_dump(document, sort_keys=False))
    return subprocess.run(
        [PROMTOOL, "test", "rules", *(str(tmp_path / "rules" / "tests" / t.name) for t in chosen)],
        capture_output=True,
        text=True,
        timeout=PROMTOOL_TIMEOUT,
    )


def test_promtool_unit_tests_fail_when_a_threshold_is_broken(tmp_path):
    """The unit tests are not vacuous: a looser alert share (the one threshold series every quality
    alert reads) silences the account-wide MOS alert."""
    text = RULES_FILE.read_text(encoding="utf-8")
    broken = text.replace(f"expr: vector({settings.QUALITY_ALERT_SHARE:g})", "expr: vector(0.5)")
    assert broken != text
    result = unit_tests_against(broken, tmp_path, tests=[ROOT / "rules" / "tests" / "quality.test.yml"])
    assert result.returncode != 0
    assert "TwilioConferenceLowMOS" in result.stdout + result.stderr


def test_promtool_unit_tests_fail_when_the_pull_alert_watches_webhook_only_exporters(tmp_path):
    """Without its "targets that poll" guard the pull-failing alert would page for every
    webhook-only exporter (and any other process) started more than 10 minutes ago; the unit
    tests catch that."""
    guard = "(process_start_time_seconds and on (job, instance) twilio_insights_exporter_pull_polls_total)"
    text = RULES_FILE.read_text(encoding="utf-8")
    assert text.count(guard) == 2
    result = unit_tests_against(text.replace(guard, "process_start_time_seconds"), tmp_path, tests=[ROOT / "rules" / "tests" / "pull.test.yml"])
    assert result.returncode != 0
    output = result.stdout + result.stderr
    assert "webhook-only exporters never fire the pull alerts" in output
    assert 'instance="w"' in output


def test_promtool_unit_tests_fail_when_the_no_summaries_alert_forgets_the_week_before(tmp_path):
    """Without the comparison with the same hour a week ago, the business-hours contact centre's
    quiet night pages: the unit test of that night catches it."""
    text = RULES_FILE.read_text(encoding="utf-8")
    comparison = re.search(r" unless on \(job, subject\) \(label_replace\([^\n]+?\"conference\", \"\", \"\"\)\) < scalar\([^)]+\)", text)
    assert comparison
    result = unit_tests_against(text.replace(comparison.group(0), ""), tmp_path, tests=[ROOT / "rules" / "tests" / "exporter.test.yml"])
    assert result.returncode != 0
    output = result.stdout + result.stderr
    assert "a business-hours contact centre's quiet night does not fire" in output
    assert 'job="office"' in output


def test_every_alert_has_a_unit_test_that_expects_it_to_fire():
    fired = {
        case["alertname"]
        for test in UNIT_TESTS
        for group in yaml.safe_load(test.read_text())["tests"]
        for case in group.get("alert_rule_test", [])
        if case.get("exp_alerts")
    }
    assert fired == set(rules.alert_names() + call_rules.alert_names())


def test_every_alert_has_a_unit_test_that_expects_it_silent():
    silent = {
        case["alertname"]
        for test in UNIT_TESTS
        for group in yaml.safe_load(test.read_text())["tests"]
        for case in group.get("alert_rule_test", [])
        if not case.get("exp_alerts")
    }
    assert silent == set(rules.alert_names() + call_rules.alert_names())


def all_alert_rules() -> list[dict]:
    return [rule for path in RULES_FILES for group in groups(path).values() for rule in group if "alert" in rule]


def test_every_alert_has_summary_description_and_an_existing_runbook_and_no_link_by_default():
    """The project serves neither its runbooks nor a Grafana: with no base set (the default), an alert
    carries no runbook_url and no dashboard_url, never a link to an address that does not exist."""
    alerts = all_alert_rules()
    assert [rule["alert"] for rule in alerts] == [alert.name for alert in rules.alerts() + call_rules.alerts()]
    assert (settings.RUNBOOK_BASE_URL, settings.GRAFANA_URL) == ("", "")
    for rule in alerts:
        assert set(rule["annotations"]) == {"summary", "description"}, rule["alert"]
        assert (ROOT / "docs" / "runbooks" / f"{rule['alert']}.md").is_file(), rule["alert"]
        assert rule["labels"]["severity"] in {"critical", "warning", "info"}


def test_with_their_bases_set_every_alert_links_its_runbook_and_every_quality_alert_its_dashboard():
    links = rules.Links(runbook_base="https://wiki.example.org/runbooks/", grafana="https://grafana.example.org/")
    for alert in rules.alerts() + call_rules.alerts():
        annotations = alert.rule(links)["annotations"]
        assert annotations["runbook_url"] == f"https://wiki.example.org/runbooks/{alert.name}.md"
        quality = alert.name.startswith(("TwilioConference", "TwilioCall"))
        assert ("dashboard_url" in annotations) is quality, alert.name
        if quality:
            uid = call_rules.UID if alert.name.startswith("TwilioCall") else "twilio-conference-quality"
            assert annotations["dashboard_url"].startswith(f"https://grafana.example.org/d/{uid}?var-job={{{{ $labels.job | urlquery }}}}")


def test_the_alert_links_file_lists_each_quality_alerts_dashboard_view_by_group():
    """What the Helm chart prefixes with prometheusRule.grafanaUrl: generated, and one entry for
    each alert that has a dashboard, under the group that holds it."""
    assert LINKS_FILE.read_text(encoding="utf-8") == generate.render()[LINKS_FILE], "run `python -m dashboards.generate`"
    views = yaml.safe_load(LINKS_FILE.read_text())["groups"]
    expected = {
        (name, rule["alert"])
        for path in RULES_FILES
        for name, group in groups(path).items()
        for rule in group
        if rule.get("alert", "").startswith(("TwilioConference", "TwilioCall"))
    }
    assert {(group, alert) for group, alerts in views.items() for alert in alerts} == expected
    assert all(view.startswith("/d/") for alerts in views.values() for view in alerts.values())


def test_every_quality_alert_says_how_old_its_data_is_from_the_windows_it_reads():
    """The description's last line: Twilio's delay, the windows the expression reads, and their sum."""
    delay = seconds(settings.SUMMARY_DELAY)
    quality = [rule for rule in all_alert_rules() if rule["alert"].startswith(("TwilioConference", "TwilioCall"))]
    assert len(quality) == len(rules.alerts()) + len(call_rules.alerts()) - len(rules.health_alerts())
    for rule in quality:
        line = rule["annotations"]["description"].split("\n")[-1]
        match = re.fullmatch(
            rf"Data age: Twilio sends a summary up to {settings.SUMMARY_DELAY} after its call ends and this alert reads the last (.+): "
            r"each evaluation speaks of calls that ended up to (\w+) earlier, and it fires once that held its `for`\.",
            line,
        )
        assert match, (rule["alert"], line)
        said = set(re.findall(r"\d+[smhd]", match.group(1)))
        read = set(re.findall(r":(?:ratio_rate|increase)(\d+[smhd])", rule["expr"]))
        assert said == read, rule["alert"]
        assert match.group(2) == rules.compact(delay + max(seconds(w) for w in read)), rule["alert"]
    assert not any("Data age" in rule["annotations"]["description"] for rule in all_alert_rules() if rule not in quality)


def test_quality_shares_use_the_bucket_at_twilios_threshold():
    """Exact ``le`` strings, as prometheus_client writes them (the e2e test checks the live output)."""
    recording = groups()["twilio-insights-exporter.recording"]
    edges = {rule["record"]: re.findall(r'le="([^"]+)"', rule["expr"]) for rule in recording if ":ratio_rate" in rule["record"]}
    assert edges == {
        "job_stream:twilio_conference_participant_low_mos:ratio_rate30m": ["3.5"],
        "job_stream:twilio_conference_participant_high_jitter:ratio_rate30m": ["0.005"],
        "job_stream:twilio_conference_participant_high_latency:ratio_rate30m": ["0.15"],
        "job_stream:twilio_conference_participant_high_packet_loss:ratio_rate30m": ["0.05"],
    }


# --- thresholds, slices and SLOs -------------------------------------------------------------


def test_every_threshold_is_a_series_recorded_from_the_settings():
    thresholds = groups()[rules.THRESHOLDS_GROUP]
    assert thresholds[:2] == [
        {"record": rules.ALERT_SHARE, "expr": f"vector({settings.QUALITY_ALERT_SHARE:g})"},
        {"record": rules.MIN_STREAMS, "expr": f"vector({settings.QUALITY_MIN_STREAMS:g})"},
    ]
    objectives = {rule["labels"]["signal"]: rule["expr"] for rule in thresholds[2:] if rule["record"] == rules.OBJECTIVE}
    assert objectives == {tag: f"vector({value:g})" for tag, value in settings.SLO_OBJECTIVES.items()}
    health = {rule["record"]: rule["expr"] for rule in thresholds[2 + len(settings.SLO_OBJECTIVES) :]}
    assert health == {
        "twilio_insights_exporter:no_summaries_after_seconds:threshold": "vector(7200)",
        "twilio_insights_exporter:no_summaries_week_ago_min:threshold": "vector(10)",
        "twilio_insights_exporter:signature_failure_share:threshold": "vector(0.1)",
        "twilio_insights_exporter:signature_failure_min:threshold": "vector(5)",
        "twilio_insights_exporter:invalid_event_share:threshold": "vector(0.05)",
        "twilio_insights_exporter:invalid_event_min:threshold": "vector(5)",
        "twilio_insights_exporter:pull_failing_after_seconds:threshold": "vector(600)",
        "twilio_insights_exporter:pull_expired_min:threshold": "vector(1)",
        "twilio_insights_exporter:kinesis_lag_seconds:threshold": "vector(600)",
        "twilio_insights_exporter:kinesis_failing_after_seconds:threshold": "vector(600)",
    }
    assert len(thresholds) == 2 + len(settings.SLO_OBJECTIVES) + len(rules.HEALTH_THRESHOLDS)


def test_no_health_alert_writes_a_threshold_of_its_own():
    """Each number a health alert compares with is a threshold series, so the chart's
    prometheusRule.health values change it; only window lengths (15m, 1h, 1w) and zeros stay in the text."""
    health = [rule for rule in all_alert_rules() if rule["alert"].startswith("TwilioInsights")]
    for rule in health:
        numbers = re.findall(r"(?<![\w.:\[])\d+(?:\.\d+)?(?![\w\]])", rule["expr"])
        assert set(numbers) <= {"0"}, rule["alert"]  # `up == 0`, `> 0`: no tunable there
    reads = {rule["alert"]: sorted(set(re.findall(r"twilio_insights_exporter:(\w+):threshold", rule["expr"]))) for rule in health}
    assert sorted(key for keys in reads.values() for key in keys) == sorted(rules.HEALTH_THRESHOLDS)


def test_no_quality_alert_writes_a_threshold_of_its_own():
    """The share, the volume guard and the objectives are read from the threshold series, so the
    chart's values (or one edit of the thresholds group) change every alert at once."""
    for rule in all_alert_rules():
        if rule["alert"].startswith("TwilioConference"):
            expr = rule["expr"]
            assert f"scalar({rules.MIN_STREAMS})" in expr, rule["alert"]
            assert f"{settings.QUALITY_ALERT_SHARE:g}" not in expr and f">= {settings.QUALITY_MIN_STREAMS}" not in expr, rule["alert"]
            if "Burn" in rule["alert"]:
                assert f"scalar({rules.OBJECTIVE}{{signal=" in expr
            else:
                assert f"> scalar({rules.ALERT_SHARE})" in expr


def test_one_slice_group_per_configured_dimension_evaluated_at_the_fixed_interval():
    document = yaml.safe_load(SLICES_FILE.read_text())
    assert [group["name"] for group in document["groups"]] == [f"{rules.SLICE_GROUP_PREFIX}{d}" for d in settings.SLICE_DIMENSIONS]
    assert {group["interval"] for group in document["groups"]} == {settings.SLICE_EVALUATION_INTERVAL}
    assert settings.SLICE_DIMENSIONS == ("participant_region", "conference_region", "call_type", "country_code", "participant_label", "task_queue")


@pytest.mark.parametrize("dimension", settings.SLICE_DIMENSIONS)
def test_each_slice_alert_carries_names_and_links_its_slice(dimension):
    alerts = [rule for rule in groups(SLICES_FILE)[f"{rules.SLICE_GROUP_PREFIX}{dimension}"] if "alert" in rule]
    assert len(alerts) == 3 * 4
    for rule in alerts:
        assert rule["labels"]["dimension"] == dimension
        # The dimension's label comes from the expression: every series it reads is grouped by it.
        assert f"by (job, {dimension})" not in rule["expr"] and rule["expr"].count(f"job_{dimension}:") >= 2
        assert f"{dimension} {{{{ $labels.{dimension} }}}}" in rule["annotations"]["summary"]
    for alert in rules.slice_alerts(dimension):
        url = alert.dashboard
        assert url.startswith("/d/twilio-conference-quality?")
        assert f"var-{dimension}={{{{ $labels.{dimension} | urlquery }}}}" in url and f"var-breakdown={dimension}" in url


def test_slice_shares_read_the_raw_histograms_once_per_signal_and_dimension():
    """Only the base rates read raw series; every window is computed from those recorded rates."""
    raw = [rule for group in groups(SLICES_FILE).values() for rule in group if "record" in rule and "rate(twilio_" in rule["expr"]]
    assert len(raw) == len(settings.SLICE_DIMENSIONS) * 4 * 2
    assert all(rule["record"].endswith(f":rate{rules.BASE_WINDOW}") for rule in raw)
    assert {re.search(r"\[(\w+)\]", rule["expr"]).group(1) for rule in raw} == {rules.BASE_WINDOW}


def test_burn_rates_are_the_sre_workbooks_for_a_30_day_objective():
    assert settings.SLO_PERIOD == "30d"
    assert [(w.long, w.short, round(rules.burn_factor(w), 6)) for w in settings.FAST_BURN + settings.SLOW_BURN] == [
        ("1h", "5m", 14.4),
        ("6h", "30m", 6.0),
        ("1d", "2h", 3.0),
        ("3d", "6h", 1.0),
    ]


def test_slice_unit_tests_fail_without_the_volume_guard(tmp_path):
    text = SLICES_FILE.read_text(encoding="utf-8")
    guard = f">= scalar({rules.MIN_STREAMS})"
    assert text.count(guard) == len(settings.SLICE_DIMENSIONS) * 4 * 5
    result = unit_tests_against(
        text.replace(guard, ">= 1"), tmp_path, path=SLICES_FILE, tests=[SLICE_TESTS], scenarios=("slices under the volume guard",)
    )
    assert result.returncode != 0
    output = result.stdout + result.stderr
    assert 'participant_region="jp1"' in output and 'participant_region="sg1"' in output


def test_slice_unit_tests_fail_when_the_fast_burn_factor_is_too_eager(tmp_path):
    """Paging at a burn rate of 10 instead of 14.4 would page before the test's "not before"."""
    text = SLICES_FILE.read_text(encoding="utf-8")
    assert "> 14.4 and" in text
    result = unit_tests_against(text.replace("> 14.4", "> 10"), tmp_path, path=SLICES_FILE, tests=[SLICE_TESTS], scenarios=("fast burn",))
    assert result.returncode != 0
    assert "FastBurn, time: 2h40m" in result.stdout + result.stderr


def test_slice_unit_tests_fail_when_a_slice_alert_ignores_its_dimension(tmp_path):
    """Aggregated over the whole account, the degraded region no longer shows: the test catches it."""
    text = SLICES_FILE.read_text(encoding="utf-8")
    broken = text.replace("sum by (job, participant_region) (rate(", "sum by (job) (rate(")
    assert broken != text
    result = unit_tests_against(broken, tmp_path, path=SLICES_FILE, tests=[SLICE_TESTS], scenarios=("one participant region degrades",))
    assert result.returncode != 0
    assert "InSlice" in result.stdout + result.stderr


def test_runbooks_of_the_slice_and_burn_alerts_and_the_index_are_generated():
    for name, text in runbooks.pages().items():
        assert (ROOT / "docs" / "runbooks" / name).read_text(encoding="utf-8") == text, f"{name}: run `python -m dashboards.generate`"
    index = (ROOT / "docs" / "runbooks" / "README.md").read_text(encoding="utf-8")
    assert [
        line.split(" | ")[0].removeprefix("| ") for line in index.splitlines() if line.startswith("| Twilio")
    ] == rules.alert_names() + call_rules.alert_names()


# --- the Helm chart's PrometheusRule: dimensions and thresholds from its values ----------------


def chart_values() -> dict:
    from tests.helm_chart import CHART_DIR

    return yaml.safe_load((CHART_DIR / "values.yaml").read_text())["prometheusRule"]


def rendered_groups(**values) -> dict[str, dict]:
    """The rule groups of every PrometheusRule the chart renders with these prometheusRule values."""
    from tests.helm_chart import render

    return {group["name"]: group for group in render({"prometheusRule": {"enabled": True, **values}}).rule_groups()}


def camel(key: str) -> str:
    """The chart's name of a health threshold: ``no_summaries_after_seconds`` is ``noSummariesAfterSeconds``."""
    first, *rest = key.split("_")
    return first + "".join(word.title() for word in rest)


def test_chart_values_default_to_the_generators_settings():
    """values.yaml states the defaults for `helm show values`; they must be the generated ones."""
    values = chart_values()
    assert values["health"] == {camel(key): value for key, value in rules.HEALTH_THRESHOLDS.items()}
    assert values["runbookBaseUrl"] == settings.RUNBOOK_BASE_URL == ""
    assert values["for"] == {alert.name: alert.duration for alert in rules.main_alerts() if alert.name.startswith("TwilioInsights")}
    assert tuple(values["sliceDimensions"]) == settings.SLICE_DIMENSIONS
    assert values["thresholds"] == {
        "alertShare": settings.QUALITY_ALERT_SHARE,
        "minStreams": settings.QUALITY_MIN_STREAMS,
        "sloObjectives": settings.SLO_OBJECTIVES,
    }
    assert values["grafanaUrl"] == settings.GRAFANA_URL == ""
    assert tuple(values["callSliceDimensions"]) == settings.CALL_SLICE_DIMENSIONS
    assert values["callThresholds"] == {
        "alertShare": settings.QUALITY_ALERT_SHARE,
        "minStreams": settings.QUALITY_MIN_STREAMS,
        "sloObjectives": settings.CALL_SLO_OBJECTIVES,
    }


def test_chart_sets_the_call_threshold_series_and_keeps_only_the_chosen_call_slice_groups():
    objectives = {"low_mos": 0.99, "high_jitter": 0.9, "high_packet_loss": 0.995, "high_rtt": 0.98}
    rendered = rendered_groups(callThresholds={"alertShare": 0.3, "minStreams": 40, "sloObjectives": objectives}, callSliceDimensions=["carrier"])
    recorded = {(rule["record"], rule.get("labels", {}).get("signal")): rule["expr"] for rule in rendered[call_rules.THRESHOLDS_GROUP]["rules"]}
    assert recorded == {
        (call_rules.ALERT_SHARE, None): "vector(0.3)",
        (call_rules.MIN_OBSERVATIONS, None): "vector(40)",
        **{(call_rules.OBJECTIVE, signal): f"vector({value:g})" for signal, value in objectives.items()},
    }
    assert {name for name in rendered if name.startswith(call_rules.SLICE_GROUP_PREFIX)} == {f"{call_rules.SLICE_GROUP_PREFIX}carrier"}
    # The participant slice groups do not follow the call list, nor the other way round.
    assert {name for name in rendered if name.startswith(rules.SLICE_GROUP_PREFIX)} == {
        f"{rules.SLICE_GROUP_PREFIX}{d}" for d in settings.SLICE_DIMENSIONS
    }
    assert not {name for name in rendered_groups(callSliceDimensions=[]) if name.startswith(call_rules.SLICE_GROUP_PREFIX)}


def test_chart_renders_the_rules_files_unchanged_with_its_default_values():
    expected = [group for path in RULES_FILES for group in yaml.safe_load(path.read_text())["groups"]]
    assert sorted(rendered_groups().values(), key=lambda g: g["name"]) == sorted(expected, key=lambda g: g["name"])


def test_chart_renders_no_link_by_default_and_exactly_the_generators_links_once_their_bases_are_set():
    def annotations(rendered: dict[str, dict]) -> dict[tuple[str, str], dict]:
        return {(name, rule["alert"]): rule["annotations"] for name, group in rendered.items() for rule in group["rules"] if "alert" in rule}

    default = annotations(rendered_groups())
    assert len(default) == len(rules.alerts() + call_rules.alerts())
    assert [key for key, found in default.items() if {"runbook_url", "dashboard_url"} & set(found)] == []
    links = rules.Links(runbook_base="https://wiki.example.org/runbooks", grafana="https://grafana.example.org")
    by_group = rules.alert_groups() | call_rules.alert_groups()
    for values, expected in (
        ({"runbookBaseUrl": links.runbook_base, "grafanaUrl": links.grafana}, links),
        ({"grafanaUrl": links.grafana + "/"}, rules.Links(runbook_base="", grafana=links.grafana)),
    ):
        assert annotations(rendered_groups(**values)) == {
            (name, alert.name): alert.rule(expected)["annotations"] for name, alerts in by_group.items() for alert in alerts
        }, values


def test_chart_keeps_only_the_slice_groups_of_the_chosen_dimensions():
    names = set(rendered_groups(sliceDimensions=["country_code", "call_type"]))
    slices = {name for name in names if name.startswith(rules.SLICE_GROUP_PREFIX)}
    assert slices == {f"{rules.SLICE_GROUP_PREFIX}country_code", f"{rules.SLICE_GROUP_PREFIX}call_type"}
    assert set(groups()) <= names
    assert not {name for name in rendered_groups(sliceDimensions=[]) if name.startswith(rules.SLICE_GROUP_PREFIX)}


def test_chart_sets_every_threshold_series_and_the_grafana_url_from_its_values(tmp_path):
    thresholds = {
        "alertShare": 0.25,
        "minStreams": 50,
        "sloObjectives": {"low_mos": 0.99, "high_jitter": 0.9, "high_latency": 0.98, "high_packet_loss": 0.995},
    }
    # Every health threshold a value of its own, none the default (each is its index plus 0.5, times 1000 for seconds).
    health = {camel(key): (i + 0.5) * (1000 if key.endswith("seconds") else 1) for i, key in enumerate(rules.HEALTH_THRESHOLDS)}
    health["signatureFailureShare"], health["invalidEventShare"] = 0.3, 0.07
    rendered = rendered_groups(thresholds=thresholds, health=health, grafanaUrl="https://grafana.voice.example.org/")
    recorded = {(rule["record"], rule.get("labels", {}).get("signal")): rule["expr"] for rule in rendered[rules.THRESHOLDS_GROUP]["rules"]}
    assert recorded == {
        (rules.ALERT_SHARE, None): "vector(0.25)",
        (rules.MIN_STREAMS, None): "vector(50)",
        **{(rules.OBJECTIVE, signal): f"vector({value:g})" for signal, value in thresholds["sloObjectives"].items()},
        **{(rules.health_threshold(key), None): f"vector({health[camel(key)]:g})" for key in rules.HEALTH_THRESHOLDS},
    }
    urls = [
        rule["annotations"]["dashboard_url"]
        for group in rendered.values()
        for rule in group["rules"]
        if "dashboard_url" in rule.get("annotations", {})
    ]
    assert len(urls) == 4 + len(settings.SLICE_DIMENSIONS) * 12 + len(call_rules.alerts())
    assert all(
        url.startswith(f"https://grafana.voice.example.org/d/{uid}?var-job={{{{ $labels.job | urlquery }}}}")
        for url in urls
        for uid in ["twilio-call-quality" if "var-edge=" in url else "twilio-conference-quality"]
    )

    # Everything else is the generated rules, as they are; and promtool accepts the result.
    def without_urls(group: dict) -> dict:
        return {
            **group,
            "rules": [{**r, "annotations": {k: v for k, v in r.get("annotations", {}).items() if k != "dashboard_url"}} for r in group["rules"]],
        }

    files = {group["name"]: group for path in RULES_FILES for group in yaml.safe_load(path.read_text())["groups"]}
    del files[rules.THRESHOLDS_GROUP]
    assert {name: without_urls(group) for name, group in rendered.items() if name != rules.THRESHOLDS_GROUP} == {
        name: without_urls(group) for name, group in files.items()
    }
    path = tmp_path / "rendered.rules.yml"
    path.write_text(yaml.safe_dump({"groups": list(rendered.values())}))
    checked = promtool("check", "rules", str(path))
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_chart_sets_each_alerts_for_and_the_runbook_base_url_from_its_values(tmp_path):
    durations = {"TwilioInsightsNoSummaries": "30m", "TwilioInsightsExporterDown": "0m", "TwilioConferenceLowMOSInSlice": "1h"}
    rendered = rendered_groups(**{"for": durations}, runbookBaseUrl="https://wiki.voice.example.org/runbooks/")
    alerts = [rule for group in rendered.values() for rule in group["rules"] if "alert" in rule]
    generated = {(rule["alert"], rule["expr"]): rule for rule in all_alert_rules()}
    assert len(alerts) == len(generated)
    for rule in alerts:
        assert rule["annotations"]["runbook_url"] == f"https://wiki.voice.example.org/runbooks/{rule['alert']}.md"
        expected = generated[rule["alert"], rule["expr"]].get("for")
        if rule["alert"] in durations:
            expected = None if durations[rule["alert"]] == "0m" else durations[rule["alert"]]
        assert rule.get("for") == expected, rule["alert"]
    assert sum(rule["alert"] == "TwilioConferenceLowMOSInSlice" and rule.get("for") == "1h" for rule in alerts) == len(settings.SLICE_DIMENSIONS)
    path = tmp_path / "rendered.rules.yml"
    path.write_text(yaml.safe_dump({"groups": list(rendered.values())}))
    checked = promtool("check", "rules", str(path))
    assert checked.returncode == 0, checked.stdout + checked.stderr


@pytest.mark.parametrize(
    "values",
    [
        {"sliceDimensions": ["call_direction"]},
        {"thresholds": {"alertShare": 1.5, "minStreams": 20, "sloObjectives": settings.SLO_OBJECTIVES}},
        {"for": {"TwilioInsightsNoSummaries": "half an hour"}},
        {"health": {"noSummariesAfterHours": 2}},
    ],
    ids=["a-dimension-the-rules-have-no-group-for", "a-share-above-one", "a-for-promql-cannot-read", "an-unknown-health-threshold"],
)
def test_chart_schema_refuses_what_the_rules_cannot_do(values):
    import helm_python as helm

    with pytest.raises(helm.HelmValuesError, match="prometheusRule"):
        rendered_groups(**values)


def test_alerts_doc_tables_are_generated():
    for path, text in docs.render(ROOT).items():
        assert path.read_text(encoding="utf-8") == text, f"{path.name}: run `python -m dashboards.generate`"
    page = (ROOT / "docs" / "alerts.md").read_text(encoding="utf-8")
    for name in rules.alert_names() + call_rules.alert_names():
        assert f"| [{name}](runbooks/{name}.md) |" in page


def test_the_documented_cost_is_the_formula_at_the_default_caps():
    """1 value per dimension is 56 series; the caps are the exporter's, plus unknown and other."""
    assert docs.at_caps() == {
        "participant_region": 22,
        "conference_region": 22,
        "call_type": 12,
        "country_code": 102,
        "participant_label": 52,
        "task_queue": 102,
    }
    assert rules.slice_series(docs.at_caps()) == 312 * 56 == 17_472
    assert rules.slice_series(docs.CONTACT_CENTRE) == 76 * 56
