"""The calls dashboard and the call rules on a real Prometheus, fed by the call and conference recorders.

Until the pipeline dispatches Call and Conference Summaries, no door records them: this test
records realistic summaries with :class:`~exporter.subjects.call.CallRecorder` and
:class:`~exporter.subjects.conference.ConferenceRecorder` into a registry served over a real socket
(``prometheus_client.start_http_server``), lets a real Prometheus scrape it, and runs every
panel query of the calls dashboard and every call rule there.
"""

from __future__ import annotations

import copy
import json
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import CollectorRegistry, start_http_server

from dashboards import call_rules, calls
from exporter.models import CallSummary, ConferenceSummary
from exporter.subjects import call as call_subject
from exporter.subjects.call import CallRecorder, call_label_policy
from exporter.subjects.conference import ConferenceRecorder, conference_label_policy
from tests.conftest import fixture
from tests.e2e_prometheus import Prometheus, has_finite_value, panel_queries, start_prometheus, variable_queries
from tests.exporter_process import free_port

ROOT = Path(__file__).resolve().parent.parent
DASHBOARD = json.loads((ROOT / "dashboards" / calls.FILE).read_text())
CARRIERS = ("T-Mobile USA, Inc.", "Verizon Wireless", "Vodafone UK")
COUNTRIES = ("US", "US", "GB")
EDGE_LOCATIONS = ("ashburn", "umatilla", "dublin")
STATES = ("completed",) * 7 + ("busy", "noanswer", "fail")
END_REASONS = ("last_participant_left", "conference_ended_via_api", "participant_with_end_conference_on_exit_left")


def call(rng: random.Random, n: int) -> dict[str, Any]:
    """The facts file's realistic call, varied: carrier, country, edge location, status, quality, edges."""
    data: dict[str, Any] = copy.deepcopy(fixture("call_summary_complete.json")["data"])
    i = n % len(CARRIERS)
    data["call_sid"] = f"CA{n:032d}"
    data["call_state"] = rng.choice(STATES)
    data["to"].update(carrier=CARRIERS[i], country_code=COUNTRIES[i])
    data["carrier_edge"]["properties"]["edge_location"] = EDGE_LOCATIONS[i]
    data["properties"].update(pdd_ms=rng.uniform(500, 9000), queue_time=rng.uniform(0, 30_000), last_sip_response_num=rng.choice((200, 486, 503)))
    data["answered_by"] = rng.choice(("human", "machine_start"))
    data["tags"] = rng.choice((None, ["high_pdd"], ["high_jitter", "silence"]))
    sdk = data["sdk_edge"]["metrics"]["inbound"]
    sdk["mos"] = {"avg": rng.uniform(2.5, 4.5), "min": rng.uniform(1.5, 4.0), "max": 4.5}
    sdk["rtt"] = {"avg": rng.uniform(40, 600), "max": 700.0, "min": 20.0}
    sdk["packets_loss_percentage"] = rng.uniform(0, 8)
    for stream in ("inbound", "outbound"):
        data["carrier_edge"]["metrics"][stream]["jitter"] = {"avg": rng.uniform(0, 12), "max": rng.uniform(10, 40)}
        data["carrier_edge"]["metrics"][stream]["packets_loss_percentage"] = rng.uniform(0, 8)
    return data


def conference(rng: random.Random, n: int) -> dict[str, Any]:
    data: dict[str, Any] = copy.deepcopy(fixture("conference_summary_complete.json")["data"])
    data.update(
        conference_sid=f"CF{n:032d}",
        end_reason=rng.choice(END_REASONS),
        processing_state=rng.choice(("complete", "complete", "timeout")),
        duration_seconds=rng.randint(0, 3600),
        max_concurrent_participants=rng.randint(1, 12),
    )
    return data


class Recorded:
    """A registry served over a real socket, with the call and conference recorders writing into it."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.calls = CallRecorder(self.registry, call_label_policy())
        self.conferences = ConferenceRecorder(self.registry, conference_label_policy())
        self.rng = random.Random(20)
        self.n = 0

    def record(self, count: int) -> None:
        for _ in range(count):
            self.n += 1
            self.calls.apply(self.calls.plan(CallSummary.model_validate(call(self.rng, self.n))))
            self.conferences.apply(self.conferences.plan(ConferenceSummary.model_validate(conference(self.rng, self.n))))


def every_second(tmp: Path) -> Path:
    """The call rules with their groups evaluated every second instead of at their fixed minute
    (the first evaluation could otherwise come a minute after the traffic)."""
    document = yaml.safe_load((ROOT / "rules" / call_rules.FILE).read_text())
    for group in document["groups"]:
        group["interval"] = "1s"
    path = tmp / call_rules.FILE
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Prometheus]:
    recorded = Recorded()
    port = free_port()
    server, thread = start_http_server(port, "127.0.0.1", registry=recorded.registry)
    tmp = tmp_path_factory.mktemp("prometheus")
    try:
        with start_prometheus(tmp, [f"127.0.0.1:{port}"], [every_second(tmp)]) as prom:
            instance = f"127.0.0.1:{port}"
            total = f'sum({call_subject.CALL_SUMMARIES}_total{{instance="{instance}"}})'
            # Rounds of traffic, each seen by Prometheus before the next, so every counter grew
            # between scrapes; 90 calls a round put every slice of the ranking past the volume guard.
            for _ in range(4):
                recorded.record(90)
                prom.poll(f"{recorded.n} calls scraped", lambda: prom.value(total) == recorded.n)
            prom.wait_for_scrapes(instance, 2)
            yield prom
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


def test_every_panel_query_of_the_calls_dashboard_returns_data(prometheus: Prometheus) -> None:
    empty, errors = [], []
    queries = panel_queries(DASHBOARD)
    for title, expr in queries:
        try:
            result = prometheus.query(expr)
        except AssertionError as exc:
            errors.append(f"{title}: {exc}")
            continue
        if not has_finite_value(result):
            empty.append(f"{title}: {expr} -> {result}")
    assert errors == []
    assert empty == []
    assert len(queries) > 60


def test_every_template_variable_of_the_calls_dashboard_lists_values(prometheus: Prometheus) -> None:
    for name, label, series in variable_queries(DASHBOARD):
        assert prometheus.api(f"label/{label}/values", **{"match[]": series}), f"${name} is empty"
    assert prometheus.api("label/carrier/values", **{"match[]": f"{call_subject.CALL_SUMMARIES}_total"}) == sorted(CARRIERS)


def test_every_call_rule_evaluates_and_every_recording_rule_and_alert_probe_returns_data(prometheus: Prometheus) -> None:
    def evaluated() -> bool:
        rules = [rule for group in prometheus.api("rules")["groups"] for rule in group["rules"]]
        return bool(rules) and all(not rule["lastEvaluation"].startswith("0001") for rule in rules)

    prometheus.poll("every call rule evaluated", evaluated)
    groups = prometheus.api("rules")["groups"]
    assert sorted(group["name"] for group in groups) == sorted(group["name"] for group in call_rules.build()["groups"])
    assert [rule["name"] for g in groups for rule in g["rules"] if rule.get("health") != "ok"] == []
    no_data = []
    for group in call_rules.build()["groups"]:
        for rule in group["rules"]:
            if "record" in rule and not prometheus.query(rule["record"]):
                no_data.append(rule["record"])
    for alert in call_rules.alerts():
        no_data += [f"{alert.name}: {probe}" for probe in alert.probes if not prometheus.query(probe)]
    assert no_data == []
