"""make try-pull and make try-kinesis: tests/try_locally.py starts its fake and a real exporter that records from it, and stops both."""

from __future__ import annotations

import signal
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from exporter import metrics
from exporter.join import JOIN_TOTAL
from tests.exporter_process import ROOT, free_port
from tests.helpers import clean_environ, until_blocking

CALLS = 3
# Each Flex call: two legs' participant and Call Summaries and one Conference Summary.
SUMMARIES = {"participant": 2 * CALLS, "call": 2 * CALLS, "conference": CALLS}


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(scraped: dict, name: str, **labels: str) -> float:
    """A sample's value; fails loudly for a sample the exporter did not expose."""
    key = (name, tuple(sorted(labels.items())))
    assert key in scraped, f"{name}{labels} not exposed"
    return scraped[key]


@contextmanager
def try_locally(mode: str, tmp_path: Path, *args: str) -> Iterator[tuple[int, Path]]:
    """Run ``python -m tests.try_locally <mode>`` until its exporter is ready; SIGTERM at the end, which must stop it cleanly."""
    port = free_port()
    log = tmp_path / f"try-{mode}.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "tests.try_locally", mode, f"--metrics-port={port}", *args],
            cwd=ROOT,
            env=clean_environ(),
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        banner = f"the exporter is ready: metrics at http://127.0.0.1:{port}/metrics"
        until_blocking(lambda: banner in log.read_text() or proc.poll() is not None, "the runner's banner", seconds=90, step=0.1)
        assert proc.poll() is None, log.read_text()
        yield port, log
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            returncode = proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
    assert returncode == 0, log.read_text()
    assert '"msg": "stopped"' in log.read_text()  # the exporter shut down gracefully, not killed


def recorded(port: int, source: str, total: float) -> dict | None:
    """The scrape once ``total`` summaries were recorded from ``source``, else None."""
    try:
        scraped = scrape(port)
    except (urllib.error.URLError, ConnectionError):
        return None
    done = scraped.get((f"{metrics.EVENTS}_total", (("outcome", "recorded"), ("source", source), ("type", "summary"))), 0) >= total
    return scraped if done else None


def test_try_pull_serves_the_fake_api_and_the_exporter_records_every_summary_it_lists(tmp_path):
    with try_locally("pull", tmp_path, f"--calls={CALLS}", "--every=0") as (port, log):
        scraped = until_blocking(lambda: recorded(port, "pull", sum(SUMMARIES.values())), "the summaries pulled", seconds=60, step=0.1)
        assert value(scraped, f"{metrics.EVENTS}_total", source="pull", type="summary", outcome="recorded") == sum(SUMMARIES.values())
        assert value(scraped, f"{metrics.PULL_POLLS}_total", outcome="failure") == 0
        # REST carries no TaskRouter events: every summary is a miss of the join.
        for kind, count in SUMMARIES.items():
            assert value(scraped, f"{JOIN_TOTAL}_total", kind=kind, result="miss") == count
        assert f"lists {CALLS} Flex calls" in log.read_text()


def test_try_pull_adds_a_call_every_so_often(tmp_path):
    with try_locally("pull", tmp_path, "--calls=0", "--every=0.2", "--pull.interval=200ms") as (port, _):
        until_blocking(lambda: recorded(port, "pull", 2 * 5), "two more calls pulled", seconds=60, step=0.1)


def test_try_kinesis_fills_a_stream_and_the_exporter_joins_every_summary_to_its_taskrouter_events(tmp_path):
    with try_locally("kinesis", tmp_path, f"--calls={CALLS}", "--every=0") as (port, log):
        scraped = until_blocking(lambda: recorded(port, "kinesis", sum(SUMMARIES.values())), "the stream consumed", seconds=60, step=0.1)
        events = f"{metrics.EVENTS}_total"
        assert value(scraped, events, source="kinesis", type="summary", outcome="recorded") == sum(SUMMARIES.values())
        assert value(scraped, events, source="kinesis", type="taskrouter", outcome="recorded") == 3 * CALLS
        assert value(scraped, events, source="kinesis", type="test", outcome="test") == 1
        assert value(scraped, events, source="kinesis", type="summary", outcome="invalid") == 0
        for kind, count in SUMMARIES.items():
            assert value(scraped, f"{JOIN_TOTAL}_total", kind=kind, result="hit") == count
        assert f"and {CALLS} Flex calls" in log.read_text()
