"""The committed dashboards: generated from their source, importable, and consistent with the contract."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from dashboards import calls, generate, health, quality, settings
from dashboards.promql import LABEL_VARIABLES, OBJECTIVE, PANEL_DATA_AGE, QUALITY_THRESHOLDS
from exporter import metrics
from exporter.subjects import participant as participant_subject

ROOT = Path(__file__).resolve().parent.parent
FILES = {module.UID: ROOT / "dashboards" / module.FILE for module in (quality, health, calls)}
# Panel types Grafana renders without Angular (graph, singlestat, table-old, ... are Angular-only).
REACT_PANEL_TYPES = {"row", "timeseries", "stat", "heatmap", "table"}
BUILT_IN = {"__rate_interval", "__range", "__interval"}


def load(uid: str) -> dict:
    return json.loads(FILES[uid].read_text(encoding="utf-8"))


def panels(dashboard: dict) -> list[dict]:
    return [panel for panel in dashboard["panels"] if panel["type"] != "row"]


def targets(dashboard: dict) -> list[tuple[dict, dict]]:
    return [(panel, target) for panel in panels(dashboard) for target in panel["targets"]]


@pytest.mark.parametrize("uid", sorted(FILES))
def test_committed_dashboard_is_what_the_generator_writes(uid):
    assert FILES[uid].read_text(encoding="utf-8") == generate.render()[FILES[uid]], "run `python -m dashboards.generate`"


def test_check_mode_fails_and_names_the_file_when_a_generated_file_differs(monkeypatch, capsys):
    assert generate.main(["--check"]) == 0
    fresh = generate.render()
    monkeypatch.setattr(generate, "render", lambda: {**fresh, FILES[quality.UID]: fresh[FILES[quality.UID]].replace("MOS", "M0S")})
    assert generate.main(["--check"]) == 1
    assert f"dashboards/{quality.FILE} differs from a fresh generation" in capsys.readouterr().err


@pytest.mark.parametrize("uid", sorted(FILES))
def test_dashboard_says_it_is_generated_and_keeps_its_uid(uid):
    dashboard = load(uid)
    assert dashboard["__generated"] == generate.NOTICE
    assert dashboard["uid"] == uid
    assert dashboard["schemaVersion"] == 38


@pytest.mark.parametrize("uid", sorted(FILES))
def test_the_schema_is_grafana_10s_and_the_migrations_of_newer_grafanas_change_nothing_in_it(uid):
    """Schema 38 is what Grafana 10.0 writes (table cells as cellOptions, never the legacy
    displayMode); the migrations to 39, 40 and 41 of newer Grafanas rewrite only a timeSeriesTable
    transformation, a non-string refresh and the timepicker's time_options, none of which a
    dashboard here holds."""
    text = FILES[uid].read_text(encoding="utf-8")
    dashboard = json.loads(text)
    assert dashboard["schemaVersion"] == 38
    assert isinstance(dashboard["refresh"], str)
    tables = [panel for panel in panels(dashboard) if panel["type"] == "table"]
    assert all("displayMode" not in panel["fieldConfig"]["defaults"].get("custom", {}) for panel in tables)
    assert '"timeSeriesTable"' not in text
    assert '"time_options"' not in text


def test_uids_are_the_stable_ones_links_and_the_helm_chart_rely_on():
    assert sorted(FILES) == ["twilio-call-quality", "twilio-conference-quality", "twilio-insights-exporter"]


@pytest.mark.parametrize("uid", sorted(FILES))
def test_only_react_panel_types_are_used(uid):
    assert {panel["type"] for panel in load(uid)["panels"]} <= REACT_PANEL_TYPES


@pytest.mark.parametrize("uid", sorted(FILES))
def test_panel_ids_are_unique_and_panels_do_not_overlap(uid):
    dashboard = load(uid)
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    occupied: set[tuple[int, int]] = set()
    for panel in dashboard["panels"]:
        pos = panel["gridPos"]
        assert pos["x"] >= 0 and pos["x"] + pos["w"] <= 24
        cells = {(x, y) for x in range(pos["x"], pos["x"] + pos["w"]) for y in range(pos["y"], pos["y"] + pos["h"])}
        assert not cells & occupied, panel["title"]
        occupied |= cells


@pytest.mark.parametrize("uid", sorted(FILES))
def test_every_query_uses_the_datasource_variable_and_a_unique_ref_id(uid):
    dashboard = load(uid)
    for panel in panels(dashboard):
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        assert [t["refId"] for t in panel["targets"]] == [chr(ord("A") + i) for i in range(len(panel["targets"]))]
        assert all(t["datasource"] == panel["datasource"] for t in panel["targets"])


@pytest.mark.parametrize("uid", sorted(FILES))
def test_every_range_vector_uses_rate_interval_or_the_dashboard_range(uid):
    windows = {w for _, target in targets(load(uid)) for w in re.findall(r"\[([^\]]+)\]", target["expr"])}
    # The error-budget row's budget is over the SLO period, its burn rate over an hour, whatever the time picker.
    assert windows <= {"$__rate_interval", "$__range"} | ({settings.SLO_PERIOD, "1h"} if uid == quality.UID else set())
    assert "$__rate_interval" in windows


@pytest.mark.parametrize("uid", sorted(FILES))
def test_every_variable_a_query_uses_is_defined(uid):
    dashboard = load(uid)
    defined = {variable["name"] for variable in dashboard["templating"]["list"]}
    texts = [t["expr"] for _, t in targets(dashboard)] + [p["title"] for p in dashboard["panels"]]
    texts += [v["definition"] for v in dashboard["templating"]["list"] if v["type"] == "query"]
    # $1 in label_replace is a regex group reference; Grafana leaves a name it has no variable for alone.
    used = {name for text in texts for name in re.findall(r"\$\{?(\w+)", text) if not name.isdigit()} - BUILT_IN
    assert used <= defined
    assert defined - {"datasource"} <= used


def test_quality_dashboard_has_a_variable_for_datasource_target_queue_team_and_each_common_label():
    names = [variable["name"] for variable in load(quality.UID)["templating"]["list"]]
    assert names == ["datasource", "job", "instance", *LABEL_VARIABLES, "stat", "breakdown"]
    assert LABEL_VARIABLES == (
        "task_queue",
        "team",
        "call_type",
        "call_direction",
        "participant_region",
        "conference_region",
        "country_code",
        "participant_label",
    )


def test_every_participant_query_of_the_quality_dashboard_is_filtered_by_queue_and_team():
    """The dashboard a Flex centre opens first: picking a queue or a team narrows every panel of
    participant data (only the TaskRouter join's own counter, which has neither label, is not)."""
    dashboard = load(quality.UID)
    selectors = [
        (panel["title"], found)
        for panel, target in targets(dashboard)
        for found in re.findall(r"(twilio_conference_participant\w*)\{([^}]*)\}", target["expr"])
    ]
    assert len(selectors) > 200
    unfiltered = [
        (title, name) for title, (name, matchers) in selectors if not {'task_queue=~"$task_queue"', 'team=~"$team"'} <= set(matchers.split(", "))
    ]
    assert unfiltered == []
    variables = {variable["name"]: variable for variable in dashboard["templating"]["list"]}
    assert variables["task_queue"]["allValue"] == variables["team"]["allValue"] == ".*"  # All keeps series without a queue


@pytest.mark.parametrize("uid", [quality.UID, calls.UID])
def test_every_panel_of_the_quality_dashboards_says_how_old_its_data_is(uid):
    assert settings.SUMMARY_DELAY == "30m"
    assert PANEL_DATA_AGE.startswith("Data age: Twilio sends a summary up to 30m after its call ends")
    stale = [panel["title"] for panel in panels(load(uid)) if not panel["description"].endswith(f" {PANEL_DATA_AGE}")]
    assert stale == []


def test_every_distribution_of_a_quality_metric_shows_exemplars():
    quality_metrics = (participant_subject.MOS, participant_subject.JITTER, participant_subject.LATENCY, participant_subject.PACKET_LOSS)
    distribution = [
        (panel, target)
        for panel, target in targets(load(quality.UID))
        if any(f"{name}_bucket" in target["expr"] for name in quality_metrics) and "le=" not in target["expr"]
    ]
    assert len(distribution) == 4 * 2 + 3 * 4  # two heatmaps and three percentiles per metric
    assert all(target.get("exemplar") is True for _, target in distribution)
    heatmaps = [panel for panel, _ in distribution if panel["type"] == "heatmap"]
    assert all(panel["options"]["exemplars"]["color"] for panel in heatmaps)
    assert all(target["format"] == "heatmap" for panel, target in distribution if panel["type"] == "heatmap")


def test_threshold_share_panels_turn_red_at_the_alert_share():
    stats = {panel["title"]: panel for panel in panels(load(quality.UID)) if panel["type"] == "stat"}
    for title in ("MOS ≤ 3.5", "Average jitter ≥ 5 ms", "Average latency ≥ 150 ms", "Packet loss ≥ 5 %"):
        steps = stats[title]["fieldConfig"]["defaults"]["thresholds"]["steps"]
        assert steps == [{"color": "green", "value": None}, {"color": "red", "value": settings.QUALITY_ALERT_SHARE}]


def test_health_dashboard_covers_what_an_operator_asks():
    exprs = " ".join(t["expr"] for _, t in targets(load(health.UID)))
    for name in (
        metrics.WEBHOOK_REQUESTS,
        metrics.WEBHOOK_REJECTIONS,
        metrics.WEBHOOK_REQUEST_DURATION,
        metrics.EVENTS,
        metrics.INVALID_EVENTS,
        metrics.SIGNATURE_FAILURES,
        metrics.BASIC_AUTH_FAILURES,
        metrics.LABEL_OVERFLOW,
        metrics.DEDUP_ENTRIES,
        metrics.LAST_SUMMARY,
        "process_cpu_seconds_total",
        "process_resident_memory_bytes",
    ):
        assert name in exprs, name
    assert 'outcome="duplicate"' in exprs


def test_quality_dashboard_covers_every_participant_metric():
    exprs = " ".join(t["expr"] for _, t in targets(load(quality.UID)))
    for name in (
        participant_subject.SUMMARIES, participant_subject.MOS, participant_subject.JITTER, participant_subject.LATENCY, participant_subject.PACKET_LOSS, participant_subject.PACKETS_RECEIVED,
        participant_subject.PACKETS_LOST, participant_subject.TAGS, participant_subject.TAG_SEVERITY, participant_subject.DEGRADATIONS, participant_subject.QUALITY_ISSUES,
        participant_subject.DURATION, participant_subject.QUEUE_TIME, participant_subject.ACTIONS, participant_subject.REGION_MISMATCH,
    ):  # fmt: skip
        assert name in exprs, name


def test_health_dashboard_has_a_pull_mode_row_with_every_pull_metric():
    dashboard = load(health.UID)
    rows = [panel for panel in dashboard["panels"] if panel["type"] == "row"]
    assert [row["title"] for row in rows] == ["Overview", "Webhook", "Events", "Pull mode", "Kinesis", "Process"]
    start = dashboard["panels"].index(rows[3])
    end = dashboard["panels"].index(rows[4])
    pull = dashboard["panels"][start + 1 : end]
    exprs = " ".join(t["expr"] for panel in pull for t in panel["targets"])
    for name in (
        metrics.PULL_API_REQUESTS, metrics.PULL_POLLS, metrics.PULL_DURATION, metrics.PULL_CONFERENCES_SEEN,
        metrics.PULL_PARTICIPANTS_SEEN, metrics.PULL_LAST_SUCCESS, metrics.PULL_WATERMARK, metrics.PULL_PENDING,
        metrics.PULL_EXPIRED,
    ):  # fmt: skip
        assert name in exprs, name
    assert "by (processing_state)" in exprs and "by (endpoint, code)" in exprs and "by (outcome)" in exprs
    since = next(panel for panel in pull if panel["title"] == "Time since the last successful poll")
    assert since["fieldConfig"]["defaults"]["thresholds"]["steps"][-1] == {"color": "red", "value": settings.PULL_FAILING_FOR_SECONDS}


def test_pull_failing_threshold_is_three_default_intervals_or_ten_minutes_whichever_is_longer():
    from exporter.config import PullSettings

    interval = PullSettings().interval.total_seconds()
    assert interval == settings.PULL_INTERVAL_SECONDS
    assert max(3 * interval, 600) == settings.PULL_FAILING_FOR_SECONDS


def rows(dashboard: dict) -> dict[str, list[dict]]:
    """Each row's title and the panels under it."""
    result: dict[str, list[dict]] = {}
    for panel in dashboard["panels"]:
        if panel["type"] == "row":
            current = result.setdefault(panel["title"], [])
        else:
            current.append(panel)
    return result


def test_where_is_it_worse_ranks_every_slice_dimension_of_the_alerts_but_the_queue_for_every_signal():
    dashboard = load(quality.UID)
    assert [row for row in rows(dashboard)][:2] == ["Overview", "Where is it worse"]
    (panel,) = rows(dashboard)["Where is it worse"]
    assert panel["type"] == "table" and panel["gridPos"]["w"] == 24
    (target,) = panel["targets"]
    assert target["instant"] is True and target["format"] == "table"
    expr = target["expr"]
    assert expr.startswith("topk(15, sum by (signal, dimension, slice) (")
    # task_queue has the Queues and teams row of its own (the ConfigMap's size).
    ranked = [dimension for dimension in settings.SLICE_DIMENSIONS if dimension != "task_queue"]
    assert "task_queue" in settings.SLICE_DIMENSIONS and '"dimension", "task_queue"' not in expr
    for threshold in QUALITY_THRESHOLDS:
        for dimension in ranked:
            assert f'"dimension", "{dimension}", "", "")' in expr
            assert f'"signal", "{threshold.tag}", "", "")' in expr
    assert expr.count(f">= {settings.QUALITY_MIN_STREAMS}") == len(QUALITY_THRESHOLDS) * len(ranked)
    assert panel["options"]["sortBy"] == [{"displayName": "above the account", "desc": True}]


def test_error_budget_row_reads_the_objectives_the_rules_record_with_the_settings_as_fallback():
    budget = rows(load(quality.UID))[f"Error budget ({settings.SLO_PERIOD} objectives)"]
    assert [panel["type"] for panel in budget] == ["stat"] * 4 + ["timeseries"] * 4
    for threshold, left, burn in zip(QUALITY_THRESHOLDS, budget[:4], budget[4:], strict=True):
        fallback = f'scalar(max({OBJECTIVE}{{signal="{threshold.tag}"}}) or vector({settings.SLO_OBJECTIVES[threshold.tag]:g}))'
        assert fallback in left["targets"][0]["expr"] and f"[{settings.SLO_PERIOD}]" in left["targets"][0]["expr"]
        assert fallback in burn["targets"][0]["expr"] and "by ($breakdown)" in burn["targets"][0]["expr"]


def test_calls_dashboard_covers_every_call_and_conference_family_and_each_edge_signal_by_edge():
    from prometheus_client import CollectorRegistry

    from exporter.subjects.call import CallRecorder, call_label_policy
    from exporter.subjects.conference import ConferenceRecorder, conference_label_policy

    registry = CollectorRegistry()
    names = [
        f.name for f in CallRecorder(registry, call_label_policy()).families() + ConferenceRecorder(registry, conference_label_policy()).families()
    ]
    exprs = " ".join(t["expr"] for _, t in targets(load(calls.UID)))
    assert [name for name in names if name not in exprs] == []
    by_edge = {panel["title"] for panel in panels(load(calls.UID)) if panel["title"].endswith(" by edge")}
    assert by_edge >= {f"{signal.title} by edge" for signal in calls.call_rules.SIGNALS}
