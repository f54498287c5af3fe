"""End to end: signed summaries -> exporter -> a real Prometheus -> every dashboard query and rule.

One exporter receives a realistic synthetic set of signed summaries (plus the traffic the health
dashboard watches: a sink test event, a duplicate delivery, an invalid event, a forged signature,
a body that is not JSON, and more countries than the country_code cap). It also polls a fake Voice
Insights API every second, which lists the same summaries (so both paths see each participant,
and it is counted once) and one summary that stays in_progress until the poller gives it up. A
second exporter, webhook-only and idle, is there to be stopped. Prometheus scrapes both every
second with exemplar storage on and evaluates the generated rules file; the tests then ask it
what Grafana and Alertmanager would.

The questions about the data are asked at one instant, ``Stack.settled``: the last scrape of the
busy exporter once all traffic was seen, so every sample up to it is stored. Asked at "now", two
queries of one test could see different data (a scrape that started before the first query's
instant is stored after it), and a test run later would see less traffic inside a one-minute window.
"""

from __future__ import annotations

import contextlib
import json
import random
import shutil
import statistics
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from dashboards import health, quality, rules, settings
from exporter import metrics, synthetic
from exporter.metrics import Outcome
from exporter.subjects import participant as participant_subject
from tests import fake_insights
from tests.e2e_prometheus import (
    JOB,
    FakeInsightsServer,
    Prometheus,
    has_finite_value,
    panel_queries,
    start_fake_insights,
    start_prometheus,
    substitute,
    variable_queries,
    variable_values,
)
from tests.exporter_process import ExporterProcess, start_exporter
from tests.helpers import signed_query
from tests.kinesis_server import AWS_ENV, create_stream, start_kinesalite

ROOT = Path(__file__).resolve().parent.parent
RULES_FILE = ROOT / "rules" / "twilio-insights-exporter.rules.yml"
SLICES_FILE = ROOT / "rules" / "twilio-insights-exporter-slices.rules.yml"
DASHBOARDS = {uid: json.loads((ROOT / "dashboards" / module.FILE).read_text()) for uid, module in ((quality.UID, quality), (health.UID, health))}
TOKEN = "e2e0123456789abcdef0123456789abcd"
PUBLIC_URL = "https://hooks.example.com/events"
COUNTRY_CAP = 3
BATCH = 20
# Polls every second, and gives up an in_progress summary on the first poll after a second.
# Participants only: the counts below are the participants' (events_total does not say which
# summary an event carried), and tests/test_pull_summaries.py covers the calls and conferences.
PULL_FLAGS = ("--pull.enabled", "--pull.summaries=participant", "--pull.interval=1s", "--pull.pending-max-age=1s")
PULL_ENV = {"TWILIO_API_KEY": fake_insights.API_KEY, "TWILIO_API_SECRET": fake_insights.API_SECRET}


@dataclass
class Stack:
    prometheus: Prometheus
    exporter: ExporterProcess
    idle: ExporterProcess
    insights: FakeInsightsServer
    summaries: list[dict[str, Any]]
    started: float
    settled: float  # the instant the data questions are asked at (module docstring)

    @property
    def instance(self) -> str:
        return urllib.parse.urlsplit(self.exporter.metrics_url).netloc


def post(exporter: ExporterProcess, body: bytes, *, token: str = TOKEN) -> int:
    """Deliver ``body`` as Event Streams does; Twilio signs the public URL, the proxy forwards it."""
    signed_url, signature = synthetic.sign(PUBLIC_URL, body, token)
    url = exporter.webhook_url + "?" + signed_query(signed_url)
    request = urllib.request.Request(url, body, {"Content-Type": "application/json", "X-Twilio-Signature": signature})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code


def deliver(exporter: ExporterProcess, summaries: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    batches = [[synthetic.cloud_event(s) for s in summaries[i : i + BATCH]] for i in range(0, len(summaries), BATCH)]
    for batch in batches:
        assert post(exporter, synthetic.batch_body(batch)) == 200
    return batches


def side_traffic(exporter: ExporterProcess, batch: list[dict[str, Any]]) -> None:
    """What the exporter health dashboard watches, besides summaries."""
    assert post(exporter, synthetic.batch_body([synthetic.sink_test_event()])) == 200
    assert post(exporter, synthetic.batch_body(batch[:2])) == 200  # a redelivery: duplicates
    invalid = synthetic.cloud_event(synthetic.generate_summary(random.Random(99)))
    invalid["data"] = "not a summary"
    assert post(exporter, synthetic.batch_body([invalid])) == 200
    assert post(exporter, synthetic.batch_body(batch[:1]), token="a-forged-token") == 403
    assert post(exporter, b"this is not JSON") == 400


def total_summaries(prometheus: Prometheus, instance: str, at: float | None = None) -> float:
    return prometheus.value(f'sum({participant_subject.SUMMARIES}_total{{instance="{instance}"}})', at) or 0.0


def pulled(prometheus: Prometheus, instance: str, at: float | None = None) -> float:
    """Summaries the poller handed to the pipeline: recorded, or already pushed by the webhook."""
    events = f'{metrics.EVENTS}_total{{instance="{instance}", source="pull", outcome=~"{Outcome.RECORDED}|{Outcome.DUPLICATE}"}}'
    return prometheus.value(f"sum({events})", at) or 0.0


def publish(insights: FakeInsightsServer, summaries: list[dict[str, Any]]) -> None:
    """List ``summaries`` in the fake API, each conference with all its participants at once (a
    conference read while still empty would be finished with, and its participants never read)."""

    def add() -> None:
        for summary in summaries:
            conference = summary["conference_sid"]
            if conference not in insights.fake.conferences:
                insights.fake.add_conference(conference, time.time() - 120)
            insights.fake.add_participant(conference, summary)

    insights.call(add)


def same_labels_new_participants(summaries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Copies of ``summaries`` as other participants of other conferences: new SIDs, same labels."""
    rng = random.Random(3)
    return [
        {
            **summary,
            **{
                key: f"{prefix}{rng.getrandbits(128):032x}"
                for key, prefix in (("participant_sid", "CP"), ("conference_sid", "CF"), ("call_sid", "CA"))
            },
        }
        for summary in summaries
    ]


def publish_one_that_never_completes(insights: FakeInsightsServer) -> None:
    summary = synthetic.generate_summary(random.Random(7), processing_state="in_progress")

    def add() -> None:
        insights.fake.add_conference(summary["conference_sid"], time.time() - 120, processing_state="in_progress")
        insights.fake.add_participant(summary["conference_sid"], summary)

    insights.call(add)


def every_second(rules_file: Path, tmp: Path) -> Path:
    """``rules_file`` with its groups evaluated every second like the others, instead of their
    fixed interval (a minute: the first evaluation could come a minute after the traffic). Only
    the counts' multiplier then means something else; every rule is evaluated as written."""
    document = yaml.safe_load(rules_file.read_text())
    for group in document["groups"]:
        group["interval"] = "1s"
    copy = tmp / rules_file.name
    copy.write_text(yaml.safe_dump(document, sort_keys=False))
    return copy


def rule_groups() -> list[dict[str, Any]]:
    return [group for path in (RULES_FILE, SLICES_FILE) for group in yaml.safe_load(path.read_text())["groups"]]


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory):
    tmp = tmp_path_factory.mktemp("e2e")
    env = {"TWILIO_AUTH_TOKEN": TOKEN}
    flags = (f"--webhook.public-url={PUBLIC_URL}", f'--labels.limits={{"country_code": {{"max_values": {COUNTRY_CAP}}}}}', "--log.level=warning")
    with contextlib.ExitStack() as cleanup:
        insights = cleanup.enter_context(start_fake_insights())
        pull = (*PULL_FLAGS, f"--pull.api-url={insights.url}")
        exporter = cleanup.enter_context(start_exporter(*flags, *pull, env={**env, **PULL_ENV}, tmp_path=tmp))
        idle = cleanup.enter_context(start_exporter(*flags, env=env, tmp_path=tmp))
        # A third exporter consumes a Kinesis stream (kinesalite) holding a sink test event and a
        # record that is not JSON, so the Kinesis row has data; it records no summary.
        kinesalite = start_kinesalite(tmp)
        cleanup.callback(kinesalite.proc.wait, 10)
        cleanup.callback(kinesalite.proc.terminate)
        create_stream(kinesalite.url, "twilio-events", [json.dumps(synthetic.sink_test_event()).encode(), b"not json"])
        kinesis_flags = ("--kinesis.stream-name=twilio-events", "--kinesis.region=us-east-1", f"--kinesis.endpoint-url={kinesalite.url}")
        consumer = cleanup.enter_context(start_exporter(*flags, *kinesis_flags, env={**env, **AWS_ENV}, tmp_path=tmp))
        targets = [urllib.parse.urlsplit(e.metrics_url).netloc for e in (exporter, idle, consumer)]
        started = time.time()
        prometheus = cleanup.enter_context(start_prometheus(tmp, targets, [RULES_FILE, every_second(SLICES_FILE, tmp)]))
        instance = targets[0]
        prometheus.poll("first scrape of the exporter", lambda: prometheus.value(f'up{{instance="{instance}"}}') == 1)
        # Only now, so that Prometheus has seen the expired counter at 0 before it moves (increase()
        # cannot see a rise that happened before a counter's first scrape).
        publish_one_that_never_completes(insights)

        # Two deliveries of realistic traffic, each seen by Prometheus before the next, so that
        # every counter has grown between scrapes and every rate is a real number.
        # 2 x 50 summaries: enough for every label and tag to occur, few enough series that a scrape
        # fits in the 1 s scrape timeout on a busy CI machine.
        first, second = list(synthetic.summaries(50, seed=1)), list(synthetic.summaries(50, seed=2))
        # Then the first part's participants again, under new SIDs: the same label sets, so the
        # counters Prometheus has already seen grow, and every slice the "where is it worse" ranking
        # shows has more streams within a minute than the alerts' volume guard.
        parts = (first, second, same_labels_new_participants(first))
        # The fake API lists each part as it is pushed: whichever path comes first records it.
        expected = 0
        for part in parts:
            publish(insights, part)
            batches = deliver(exporter, part)
            side_traffic(exporter, batches[0])
            expected += len(part)
            prometheus.poll(f"{expected} summaries scraped", lambda: total_summaries(prometheus, instance) == expected)
        everything = expected
        prometheus.poll(f"{everything} summaries pulled", lambda: pulled(prometheus, instance) == everything)
        expired = f'{metrics.PULL_EXPIRED}_total{{instance="{instance}"}}'
        prometheus.poll("the in_progress summary given up", lambda: (prometheus.value(expired) or 0) >= 1)
        settled = prometheus.wait_for_scrapes(instance, 2)
        # Recording rules and alerts read what the rules before them recorded: once every group has
        # been evaluated after the settled instant, each has seen all the traffic.
        prometheus.wait_for_evaluations_after(settled)
        yield Stack(prometheus, exporter, idle, insights, [summary for part in parts for summary in part], started, settled)


@pytest.mark.parametrize("uid", sorted(DASHBOARDS))
def test_every_panel_query_of_the_dashboard_returns_data(stack, uid):
    empty, errors = [], []
    queries = panel_queries(DASHBOARDS[uid])
    for title, expr in queries:
        try:
            result = stack.prometheus.query(expr, stack.settled)
        except AssertionError as exc:
            errors.append(f"{title}: {exc}")
            continue
        if not has_finite_value(result):
            empty.append(f"{title}: {expr} -> {result}")
    assert errors == []
    assert empty == []
    assert len(queries) > (60 if uid == quality.UID else 20)


@pytest.mark.parametrize("uid", sorted(DASHBOARDS))
def test_every_template_variable_lists_values(stack, uid):
    for name, label, series in variable_queries(DASHBOARDS[uid]):
        values = stack.prometheus.api(f"label/{label}/values", **{"match[]": series})
        assert values, f"${name}: label_values({series}, {label}) is empty"
    if uid == quality.UID:
        call_types = stack.prometheus.api("label/call_type/values", **{"match[]": f"{participant_subject.SUMMARIES}_total"})
        assert call_types == sorted({s["call_type"] for s in stack.summaries})


def test_prometheus_loaded_and_evaluates_every_rule_without_error(stack):
    def all_evaluated() -> bool:
        groups = stack.prometheus.api("rules")["groups"]
        return all(
            rule.get("lastEvaluation", "").startswith("2") and not rule["lastEvaluation"].startswith("0001") for g in groups for rule in g["rules"]
        )

    stack.prometheus.poll("every rule evaluated", all_evaluated)
    loaded = [rule for group in stack.prometheus.api("rules")["groups"] for rule in group["rules"]]
    assert len(loaded) == sum(len(group["rules"]) for group in rule_groups()) == 38 + 408
    assert [(rule["name"], rule["health"], rule.get("lastError", "")) for rule in loaded] == [(rule["name"], "ok", "") for rule in loaded]


def test_every_rule_expression_runs_and_recording_rules_return_data(stack):
    records = [rule for group in rule_groups() for rule in group["rules"] if "record" in rule]
    # Rules read what rules before them record (thresholds, per-slice base rates): wait for each.
    for rule in records:
        stack.prometheus.poll(f"{rule['record']} recorded", lambda name=rule["record"]: bool(stack.prometheus.query(name)))
    for rule in (rule for group in rule_groups() for rule in group["rules"]):
        result = stack.prometheus.query(rule["expr"])  # raises on a PromQL error
        if "record" in rule:
            assert has_finite_value(result), f"{rule['record']}: {result}"


@pytest.mark.parametrize("alert", rules.alerts(), ids=lambda alert: "-".join((alert.name, *alert.labels.values())))
def test_every_alert_probe_returns_data(stack, alert):
    """The parts of each alert that hold data whenever the exporter runs (the alert itself only
    returns data while it fires), so a misspelt metric or label in an alert is caught here."""
    for probe in alert.probes:
        assert has_finite_value(stack.prometheus.query(probe)), probe


def test_each_slice_group_records_every_value_the_exporter_exposes_and_the_series_the_docs_count(stack):
    values = {}
    for dimension in settings.SLICE_DIMENSIONS:
        exposed = {s["metric"][dimension] for s in stack.prometheus.query(f'{participant_subject.MOS}_count{{instance="{stack.instance}"}}')}
        recorded = stack.prometheus.query(f"job_{dimension}:{participant_subject.PREFIX}_low_mos:ratio_rate{settings.QUALITY_WINDOW}")
        assert sorted(s["metric"][dimension] for s in recorded) == sorted(exposed), dimension
        assert {s["metric"]["job"] for s in recorded} == {JOB}
        values[dimension] = len(exposed)
    dimensions = "|".join(settings.SLICE_DIMENSIONS)
    recorded_series = stack.prometheus.value(f'count({{__name__=~"job_({dimensions}):.+"}})')
    assert recorded_series == rules.slice_series(values)
    print(f"\nslice series for {values}: {recorded_series:g}")


def test_every_rule_group_is_evaluated_and_timed_by_prometheus(stack):
    """Prometheus' own measure of each group's evaluation, over ten evaluations (docs/alerts.md
    quotes it). Printed, not asserted: the machine is shared, timing is noisy, and performance is
    for `make bench`; what is asserted is that every group of both files runs and is timed."""
    samples: dict[str, dict[str, float]] = {group["name"]: {} for group in rule_groups()}

    def ten_each() -> bool:
        for group in stack.prometheus.api("rules")["groups"]:
            samples[group["name"]][group["lastEvaluation"]] = group["evaluationTime"]
        return all(len(timings) >= 10 for timings in samples.values())

    stack.prometheus.poll("ten evaluations of every rule group", ten_each, 60)
    medians = {name: statistics.median(timings.values()) for name, timings in samples.items()}
    assert all(median > 0 for median in medians.values()), medians
    raw = stack.prometheus.value(f'count({{__name__=~"{participant_subject.PREFIX}_.+", instance="{stack.instance}"}})')
    recording = medians["twilio-insights-exporter.recording"]
    print(
        f"\nmedian evaluation of each rule group over ten evaluations, {raw:g} raw series of the exporter:\n"
        + "\n".join(
            f"  {name}: {median * 1000:.1f} ms ({median / recording:.2f}x the account-wide recording group)" for name, median in medians.items()
        )
    )


def test_exporter_down_alert_expression_fires_when_a_target_stops(stack):
    down = next(alert for alert in rules.alerts() if alert.name == "TwilioInsightsExporterDown")
    idle = urllib.parse.urlsplit(stack.idle.metrics_url).netloc
    stack.idle.proc.terminate()
    stack.idle.proc.wait(10)
    stack.prometheus.poll("the idle exporter reported down", lambda: bool(stack.prometheus.query(down.expr)), 15)
    # Only the idle target is down (the busy one could miss a scrape on a loaded machine: not asserted).
    assert {"__name__": "up", "job": JOB, "instance": idle} in [sample["metric"] for sample in stack.prometheus.query(down.expr)]


def test_no_summaries_alert_counts_from_the_last_summary(stack):
    no_summaries = next(alert for alert in rules.alerts() if alert.name == "TwilioInsightsNoSummaries")
    since_last, since_start = no_summaries.probes
    ages = {(s["metric"]["instance"], s["metric"]["subject"]): float(s["value"][1]) for s in stack.prometheus.query(since_last, stack.settled)}
    # Both exporters started moments before; the busy one had just recorded participant summaries
    # (the subject it recorded: a subject never recorded has no series and is not watched).
    assert 0 <= ages[(stack.instance, "participant")] < 60
    assert {subject for instance, subject in ages if instance == stack.instance} == {"participant"}
    started = {s["metric"]["instance"]: float(s["value"][1]) for s in stack.prometheus.query(since_start, stack.settled)}
    assert 0 <= started[stack.instance] < 600
    assert stack.prometheus.query(no_summaries.expr, stack.settled) == []


def test_participants_both_pushed_and_pulled_are_counted_once(stack):
    assert pulled(stack.prometheus, stack.instance, stack.settled) == len(stack.summaries)
    assert total_summaries(stack.prometheus, stack.instance, stack.settled) == len(stack.summaries)
    requests = stack.prometheus.query(f'{metrics.PULL_API_REQUESTS}_total{{instance="{stack.instance}", code="200"}} > 0', stack.settled)
    # The lists a participant pull reads; the others (call_summaries, conference_summary) stay at 0.
    assert {sample["metric"]["endpoint"] for sample in requests} == {"conferences", "participants"}


def test_pull_failing_alert_watches_only_the_exporter_that_polls(stack):
    failing = next(alert for alert in rules.alerts() if alert.name == "TwilioInsightsPullFailing")
    (since_success,) = failing.probes
    ages = {s["metric"]["instance"]: float(s["value"][1]) for s in stack.prometheus.query(since_success, stack.settled)}
    # The polling exporter had succeeded a moment before; the webhook-only one is not watched at all.
    assert list(ages) == [stack.instance]
    assert 0 <= ages[stack.instance] < 60
    assert stack.prometheus.query(failing.expr, stack.settled) == []


def test_summaries_expired_alert_fires_for_the_summary_given_up(stack):
    expired = next(alert for alert in rules.alerts() if alert.name == "TwilioInsightsPullSummariesExpired")
    firing = stack.prometheus.query(expired.expr, stack.settled)
    assert [sample["metric"] for sample in firing] == [{"job": JOB, "instance": stack.instance}]
    assert float(firing[0]["value"][1]) >= 1


def test_threshold_buckets_count_exactly_the_streams_past_twilios_thresholds(stack):
    """The dashboards' and rules' le="..." edges exist in the live output and mean Twilio's thresholds."""
    streams = [s["metrics"][direction] for s in stack.summaries for direction in participant_subject.STREAMS]
    expected = {
        f'{participant_subject.MOS}_bucket{{le="3.5"}}': sum(st["mos"] <= 3.5 for st in streams),
        f'{participant_subject.JITTER}_bucket{{stat="avg", le="0.005"}}': sum(st["jitter"]["avg"] <= 5 for st in streams),
        f'{participant_subject.LATENCY}_bucket{{stat="avg", le="0.15"}}': sum(st["latency"]["avg"] <= 150 for st in streams),
        f'{participant_subject.PACKET_LOSS}_bucket{{le="0.05"}}': sum(st["packet_loss_percentage"] <= 5 for st in streams),
    }
    got = {selector: stack.prometheus.value(f'sum({selector[:-1]}, instance="{stack.instance}"}})', stack.settled) for selector in expected}
    assert got == {selector: float(count) for selector, count in expected.items()}
    assert 0 < expected[f'{participant_subject.MOS}_bucket{{le="3.5"}}'] < len(streams)


def test_distribution_panels_lead_to_calls_through_exemplars(stack):
    call_sids = {s["call_sid"] for s in stack.summaries}
    conference_sids = {s["conference_sid"] for s in stack.summaries}
    dashboard = DASHBOARDS[quality.UID]
    exemplar_queries = sorted({t["expr"] for panel in dashboard["panels"] for t in panel.get("targets", []) if t.get("exemplar")})
    values = variable_values(dashboard)[0]
    assert len(exemplar_queries) == 20
    for expr in exemplar_queries:
        data = stack.prometheus.api("query_exemplars", query=substitute(expr, values), start=str(stack.started - 5), end=str(time.time() + 5))
        exemplars = [e for series in data for e in series["exemplars"]]
        assert exemplars, expr
        assert all(e["labels"]["call_sid"] in call_sids and e["labels"]["conference_sid"] in conference_sids for e in exemplars)


def test_promtool_check_metrics_is_clean_on_the_exporter_output(stack):
    with urllib.request.urlopen(stack.exporter.metrics_url + "/metrics", timeout=10) as response:
        exposition = response.read()
    assert f"{participant_subject.SUMMARIES}_total".encode() in exposition
    promtool = shutil.which("promtool") or "promtool"
    result = subprocess.run([promtool, "check", "metrics"], input=exposition, capture_output=True, timeout=60)
    assert (result.returncode, result.stdout.decode() + result.stderr.decode()) == (0, "")


def test_where_is_it_worse_ranks_slices_of_every_dimension_by_their_excess_over_the_account(stack):
    dashboard = DASHBOARDS[quality.UID]
    (panel,) = [p for p in dashboard["panels"] if p["title"] == "Slices furthest above the account"]
    ranking = stack.prometheus.query(substitute(panel["targets"][0]["expr"], variable_values(dashboard)[0]), stack.settled)
    assert 0 < len(ranking) <= 15
    assert all(set(row["metric"]) == {"signal", "dimension", "slice"} for row in ranking)
    assert {row["metric"]["dimension"] for row in ranking} <= set(settings.SLICE_DIMENSIONS)
    # One row, recomputed from its own slice and the account: the excess is the difference of the two shares.
    top = max(ranking, key=lambda row: float(row["value"][1]))
    threshold = next(t for t in rules.QUALITY_THRESHOLDS if t.tag == top["metric"]["signal"])
    dimension, value = top["metric"]["dimension"], top["metric"]["slice"]
    window = substitute("$__range", {})
    # The same instant as the ranking, at which every sample is stored already: the same data.
    slice_share = stack.prometheus.query(threshold.share(window, (f'{dimension}="{value}"',)), stack.settled)
    account_share = stack.prometheus.query(threshold.share(window), stack.settled)
    assert top["value"][0] == pytest.approx(stack.settled, abs=0.001)
    assert float(top["value"][1]) == pytest.approx(float(slice_share[0]["value"][1]) - float(account_share[0]["value"][1]))
