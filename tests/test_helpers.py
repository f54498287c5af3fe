"""The tests' own helpers fail loudly: a misspelt name, a created series, a wait that never ends."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, Counter, Histogram

from exporter.app import create_apps
from exporter.config import load_config
from tests.conftest import Harness, sample_sum, snapshot
from tests.e2e_prometheus import Prometheus, PrometheusError
from tests.helpers import until, until_blocking

E = "twilio_insights_exporter_"


@pytest.fixture
def registry() -> CollectorRegistry:
    """A counter with one child, a histogram with one child, and a labelled counter with none."""
    registry = CollectorRegistry()
    create_apps(load_config([]), CollectorRegistry())  # turns created series off, as the exporter does
    Counter("outcomes", "by outcome", ["outcome"], registry=registry).labels("recorded").inc(2)
    Histogram("seconds", "by stat", ["stat"], buckets=(1.0,), registry=registry).labels("avg").observe(0.5)
    Counter("overflow", "by label", ["label"], registry=registry)
    return registry


def test_sample_sum_adds_the_samples_whose_labels_match(registry: CollectorRegistry) -> None:
    assert sample_sum(registry, "outcomes_total") == 2
    assert sample_sum(registry, "outcomes_total", outcome="recorded") == 2
    assert sample_sum(registry, "outcomes_total", outcome="duplicate") == 0
    assert sample_sum(registry, "seconds_bucket", stat="avg", le="1.0") == 1
    assert sample_sum(registry, "seconds_count", stat="avg") == 1
    assert sample_sum(registry, "overflow_total") == 0


def test_sample_sum_refuses_a_metric_name_no_family_has(registry: CollectorRegistry) -> None:
    with pytest.raises(KeyError, match="no metric of this registry is called 'outcome_total'"):
        sample_sum(registry, "outcome_total")


def test_sample_sum_refuses_a_label_name_no_sample_carries(registry: CollectorRegistry) -> None:
    with pytest.raises(KeyError, match=r"no sample of 'outcomes_total' has the label names \['outcom'\] \(its labels: \['outcome'\]\)"):
        sample_sum(registry, "outcomes_total", outcom="recorded")
    with pytest.raises(KeyError, match=r"the label names \['le'\]"):
        sample_sum(registry, "seconds_count", le="1.0")  # le belongs to _bucket only


def test_sample_sum_refuses_labels_it_cannot_check_on_a_family_without_samples(registry: CollectorRegistry) -> None:
    with pytest.raises(KeyError, match="'overflow_total' has no sample yet"):
        sample_sum(registry, "overflow_total", label="participant_label")


def test_sample_sum_refuses_created_series_which_the_exporter_turns_off(registry: CollectorRegistry) -> None:
    with pytest.raises(KeyError, match="outcomes_created"):
        sample_sum(registry, "outcomes_created")
    with pytest.raises(KeyError, match="seconds_created"):
        sample_sum(registry, "seconds_created")


def test_snapshot_refuses_a_prefix_no_metric_has(registry: CollectorRegistry) -> None:
    assert snapshot(registry, "outcomes") == {("outcomes_total", (("outcome", "recorded"),)): 2.0}
    assert snapshot(registry, "overflow") == {}  # a family without samples yet: nothing to compare, but it exists
    with pytest.raises(KeyError, match="no metric of this registry is called 'outcome_'"):
        snapshot(registry, "outcome_")


async def test_the_harness_value_is_as_strict_on_the_exporters_own_registry(harness: Harness) -> None:
    assert (await harness.post([])).status == 200

    assert harness.value(E + "webhook_requests_total", code="200") == 1
    with pytest.raises(KeyError, match="outcom"):
        harness.value(E + "events_total", outcom="recorded")
    with pytest.raises(KeyError, match="events_created"):
        harness.value(E + "events_created")


def test_until_blocking_returns_the_first_true_value_of_the_condition() -> None:
    answers = iter([0, None, "", 7, 8])

    assert until_blocking(lambda: next(answers), "a true value", step=0) == 7
    assert next(answers) == 8  # not called again once true


def test_until_blocking_fails_after_its_bound_naming_what_it_waited_for() -> None:
    started = time.monotonic()

    with pytest.raises(TimeoutError, match=r"the door opening: not within 0\.2 s"):
        until_blocking(lambda: False, "the door opening", seconds=0.2)
    assert time.monotonic() - started >= 0.2


def test_until_blocking_takes_the_exceptions_it_ignores_as_not_yet_and_chains_the_last() -> None:
    calls = []

    def flaky() -> bool:
        calls.append(1)
        if len(calls) < 3:
            raise ConnectionError("still starting")
        return True

    assert until_blocking(flaky, "a server", step=0, ignoring=(ConnectionError,)) is True
    with pytest.raises(TimeoutError) as timeout:
        until_blocking(lambda: 1 / 0, "a division", seconds=0.05, ignoring=(ZeroDivisionError,))
    assert isinstance(timeout.value.__cause__, ZeroDivisionError)
    with pytest.raises(ZeroDivisionError):  # what it does not ignore fails at once
        until_blocking(lambda: 1 / 0, "a division", seconds=10)


async def test_until_lets_the_loop_run_what_it_waits_for() -> None:
    done = asyncio.Event()
    asyncio.get_running_loop().call_later(0.05, done.set)  # only the loop can set it

    assert await until(done.is_set, "the timer") is True


async def test_until_awaits_an_async_condition_and_is_bounded() -> None:
    checks = []

    async def condition() -> int:
        await asyncio.sleep(0)
        checks.append(1)
        return len(checks) if len(checks) == 3 else 0

    assert await until(condition, "three checks", step=0) == 3
    with pytest.raises(TimeoutError, match=r"never: not within 0\.05 s"):
        await until(lambda: False, "never", seconds=0.05)


async def test_until_ignores_what_it_is_told_to_and_chains_the_last() -> None:
    with pytest.raises(TimeoutError) as timeout:
        await until(lambda: 1 / 0, "a division", seconds=0.05, ignoring=(ZeroDivisionError,))
    assert isinstance(timeout.value.__cause__, ZeroDivisionError)


class CannedPrometheus(Prometheus):
    """The e2e helper over canned API answers: the series ``x_total{instance, job, code}`` only."""

    def api(self, path: str, **params: str) -> Any:
        if path == "labels":
            return ["__name__", "code", "instance", "job"] if params["match[]"] == "x_total" else []
        assert path == "query"
        return {"resultType": "vector", "result": [{"metric": {}, "value": [params.get("time", "0"), "3"]}]}


def test_the_prometheus_value_refuses_a_metric_or_label_name_prometheus_has_no_series_of() -> None:
    prometheus = CannedPrometheus("http://unused", None)  # type: ignore[arg-type]

    assert prometheus.value('sum(x_total{instance="a", code=~"5.."})') == 3
    assert prometheus.value('sum(x_total{code="500"})', at=12.5) == 3
    with pytest.raises(PrometheusError, match=r"no series called x_total has the labels \['instanc'\]"):
        prometheus.value('sum(x_total{instanc="a"})')
    with pytest.raises(PrometheusError, match="Prometheus has no series called y_total"):
        prometheus.value('sum(rate(y_total{job="j"}[1m]))')
