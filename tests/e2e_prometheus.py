"""A real Prometheus for end-to-end tests, and what it takes to run a dashboard's queries on it.

Prometheus runs from Debian's ``prometheus`` package on a free loopback port, with its TSDB under
the test's temporary directory, exemplar storage on and a 1 s scrape and evaluation interval.
The fake Voice Insights API (:mod:`tests.fake_insights`) runs beside it for a polling exporter.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import json
import math
import re
import shutil
import subprocess
import threading
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import yaml
from aiohttp import web

from tests.exporter_process import free_port, stop, wait_for
from tests.fake_insights import FakeInsights
from tests.helpers import until_blocking

T = TypeVar("T")

JOB = "twilio-insights-exporter"
# What Grafana would put in place of its built-in variables: the test's traffic is all younger
# than a minute, so a one-minute window sees every sample.
BUILT_INS = {"__rate_interval": "1m", "__range": "1m", "__interval": "1s"}


class PrometheusError(AssertionError):
    pass


# A series selector with braces (``name{label="v", ...}``) and the label names of its matchers.
_SELECTOR = re.compile(r"([a-zA-Z_:][a-zA-Z0-9_:]*)\{([^}]*)\}")
_MATCHER = re.compile(r"([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)")


@dataclass
class Prometheus:
    url: str
    proc: subprocess.Popen

    def api(self, path: str, **params: str) -> Any:
        """GET an HTTP API endpoint; the ``data`` of a successful answer, else PrometheusError."""
        url = f"{self.url}/api/v1/{path}?{urllib.parse.urlencode(params)}"
        try:
            with urllib.request.urlopen(url, timeout=10) as response:
                answer = json.load(response)
        except urllib.error.HTTPError as exc:
            with exc:
                raise PrometheusError(f"{path} {params}: HTTP {exc.code}: {exc.read().decode()}") from None
        if answer.get("status") != "success":
            raise PrometheusError(f"{path} {params}: {answer}")
        return answer["data"]

    def query(self, expr: str, at: float | None = None) -> list[dict[str, Any]]:
        """An instant query's vector at ``at`` (default: now); a scalar answer becomes a one-element vector."""
        data = self.api("query", query=expr, **({} if at is None else {"time": repr(at)}))
        if data["resultType"] == "scalar":
            return [{"metric": {}, "value": data["result"]}]
        return data["result"]

    def value(self, expr: str, at: float | None = None) -> float | None:
        """The first value of ``expr`` (None when it returns nothing).

        Every ``name{matchers}`` in ``expr`` must name series Prometheus has, with those label
        names (else PrometheusError): "nothing" from a misspelt name or label is not an answer.
        """
        self.check_selectors(expr)
        result = self.query(expr, at)
        return float(result[0]["value"][1]) if result else None

    def check_selectors(self, expr: str) -> None:
        for name, matchers in _SELECTOR.findall(expr):
            labels = set(self.api("labels", **{"match[]": name}))
            if not labels:
                raise PrometheusError(f"{expr}: Prometheus has no series called {name}")
            if unknown := sorted(set(_MATCHER.findall(matchers)) - labels):
                raise PrometheusError(f"{expr}: no series called {name} has the labels {unknown} (its labels: {sorted(labels)})")

    def poll(self, what: str, check: Callable[[], bool], deadline_seconds: float = 30.0) -> None:
        """Poll ``check`` until it holds or the deadline passes (then fail naming ``what``).

        A PrometheusError (a series not scraped yet) counts as "not yet"; at the deadline it is the
        cause the failure shows.
        """
        until_blocking(check, f"Prometheus: {what}", seconds=deadline_seconds, step=0.1, ignoring=(PrometheusError,))

    def wait_for_scrapes(self, instance: str, count: int) -> float:
        """Return once ``count`` more scrapes of ``instance`` have been stored, the last of them a
        successful one: its timestamp.

        A target's scrapes are stored one after the other, so every sample of ``instance`` up to
        that instant is stored: a query at it answers the same whenever it is asked (a query at
        "now" may not, as a scrape that started before now can be stored after the query). And it
        is a successful scrape's: at the instant of a failed one (a scrape timeout on a busy
        machine) Prometheus marks every series of the target stale, and a query there finds none.
        """
        up = f'up{{job="{JOB}", instance="{instance}"}}'
        first = self.value(f"timestamp({up})")
        assert first is not None, f"{instance} was never scraped"
        succeeded = f"timestamp({up} == 1)"  # the last scrape's timestamp, if it succeeded
        return float(
            until_blocking(
                lambda: (last := self.value(succeeded)) is not None and last >= first + count - 0.5 and last,
                f"Prometheus: {count} more scrapes of {instance}, the last one successful",
                seconds=30,
                step=0.1,
                ignoring=(PrometheusError,),
            )
        )

    def wait_for_evaluations_after(self, instant: float) -> None:
        """Return once every rule group has been evaluated at a time after ``instant``."""

        def evaluated_after() -> bool:
            groups = self.api("rules")["groups"]
            return bool(groups) and all(_epoch(group["lastEvaluation"]) > instant + group["interval"] for group in groups)

        self.poll(f"every rule group evaluated after {instant}", evaluated_after)


def _epoch(rfc3339: str) -> float:
    """Prometheus' RFC 3339 timestamps (nanoseconds, Z) as seconds since the epoch; 0001-... (never) as 0."""
    if rfc3339.startswith("0001"):
        return 0.0
    return datetime.datetime.fromisoformat(rfc3339).timestamp()


@contextlib.contextmanager
def start_prometheus(tmp_path: Path, targets: list[str], rule_files: list[Path]) -> Iterator[Prometheus]:
    """Run Prometheus scraping ``targets`` (host:port) as job ``twilio-insights-exporter``."""
    binary = shutil.which("prometheus")
    assert binary, "Debian's prometheus package is needed: apt-get install prometheus"
    port = free_port()
    config = tmp_path / "prometheus.yml"
    config.write_text(
        yaml.safe_dump(
            {
                "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
                "rule_files": [str(path) for path in rule_files],
                "scrape_configs": [{"job_name": JOB, "static_configs": [{"targets": targets}]}],
            }
        )
    )
    log_path = tmp_path / "prometheus.log"
    with open(log_path, "w") as log:
        proc = subprocess.Popen(
            [
                binary,
                f"--config.file={config}",
                f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{port}",
                "--enable-feature=exemplar-storage",
                "--log.level=warn",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        url = f"http://127.0.0.1:{port}"
        try:
            wait_for(url + "/-/ready", proc=proc)
        except (RuntimeError, TimeoutError) as exc:
            raise RuntimeError(f"{exc}\n{log_path.read_text()}") from exc
        yield Prometheus(url, proc)
    finally:
        stop(proc)


@dataclass
class FakeInsightsServer:
    """The fake Voice Insights API, served from an event loop of its own in a background thread
    (the tests are synchronous, and the exporter polls it while they block on Prometheus)."""

    fake: FakeInsights
    url: str
    loop: asyncio.AbstractEventLoop

    def call(self, change: Callable[[], T]) -> T:
        """Run ``change`` on the fake's loop, between two of its requests, and return its result."""

        async def run() -> T:
            return change()

        return asyncio.run_coroutine_threadsafe(run(), self.loop).result(10)


@contextlib.contextmanager
def start_fake_insights() -> Iterator[FakeInsightsServer]:
    """Serve a :class:`FakeInsights` on a free loopback port until the block ends."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="fake-insights", daemon=True)
    thread.start()

    async def start() -> tuple[FakeInsights, web.AppRunner]:
        fake = FakeInsights()  # on the loop that serves it: its gate is an asyncio.Event
        runner = web.AppRunner(fake.app())
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        return fake, runner

    fake, runner = asyncio.run_coroutine_threadsafe(start(), loop).result(10)
    try:
        host, port = runner.addresses[0][:2]
        yield FakeInsightsServer(fake, f"http://{host}:{port}", loop)
    finally:
        asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


def substitute(text: str, values: dict[str, str]) -> str:
    """Replace Grafana variables (``$name`` and ``${name}``) by ``values`` and the built-ins.

    >>> substitute('rate(x{a=~"$a"}[$__rate_interval]) by (${b})', {"a": ".*", "b": "call_type"})
    'rate(x{a=~".*"}[1m]) by (call_type)'
    >>> substitute('label_replace(x, "slice", "$1", "a", "(.*)")', {})
    'label_replace(x, "slice", "$1", "a", "(.*)")'
    """
    everything = {**BUILT_INS, **values}

    def replace(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2)
        # $1 is a regex group reference (label_replace): Grafana leaves a name it has no variable for alone.
        return match.group(0) if name.isdigit() else everything[name]

    return re.sub(r"\$\{(\w+)\}|\$(\w+)", replace, text)


def variable_values(dashboard: dict[str, Any]) -> list[dict[str, str]]:
    """Variable assignments to run the panels with: every query variable at All (``.*``), and
    every value of each custom variable in turn (the others at their default)."""
    variables = dashboard["templating"]["list"]
    base = {v["name"]: v.get("allValue", ".*") for v in variables if v["type"] == "query"}
    custom = {v["name"]: v["query"].split(",") for v in variables if v["type"] == "custom"}
    defaults = {name: values[0] for name, values in custom.items()}
    assignments = [{**base, **defaults}]
    for name, values in custom.items():
        assignments += [{**base, **defaults, name: value} for value in values[1:]]
    return assignments


def panel_queries(dashboard: dict[str, Any]) -> list[tuple[str, str]]:
    """``(panel title, PromQL)`` for every query of every panel, under every variable assignment."""
    queries = []
    for values in variable_values(dashboard):
        for panel in dashboard["panels"]:
            for target in panel.get("targets", []):
                queries.append((substitute(panel["title"], values), substitute(target["expr"], values)))
    return sorted(set(queries))


def variable_queries(dashboard: dict[str, Any]) -> list[tuple[str, str, str]]:
    """``(variable, label, series selector)`` of every ``label_values(selector, label)`` variable."""
    found = []
    values = variable_values(dashboard)[0]
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            match = re.fullmatch(r"label_values\((.+), (\w+)\)", variable["definition"])
            assert match, variable["definition"]
            found.append((variable["name"], match.group(2), substitute(match.group(1), values)))
    return found


def has_finite_value(result: list[dict[str, Any]]) -> bool:
    return any(math.isfinite(float(sample["value"][1])) for sample in result)
