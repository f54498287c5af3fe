"""python -m exporter.demo against a real exporter process: every delivery verifies and is counted exactly,
in Twilio's vocabulary (no label overflows) and joined to its TaskRouter events (a queue and a team on every summary)."""

from __future__ import annotations

import subprocess
import sys
import urllib.request

from prometheus_client.parser import text_string_to_metric_families

from exporter import metrics, synthetic
from exporter.join import JOIN_TOTAL
from exporter.models import CALL_SUMMARY_COMPLETE, CALL_SUMMARY_PARTIAL, CONFERENCE_SUMMARY_COMPLETE, SUMMARY_TYPES
from exporter.record.labels import OTHER, UNKNOWN
from exporter.subjects import call as call_subject
from exporter.subjects import conference as conference_subject
from exporter.subjects import participant as participant_subject
from exporter.subjects.common import JOIN_LABELS
from tests.exporter_process import ROOT, start_exporter
from tests.helpers import clean_environ

TOKEN = "demo-auth-token"


def scrape(metrics_url: str) -> str:
    with urllib.request.urlopen(metrics_url + "/metrics", timeout=10) as response:
        return response.read().decode()


def samples(metrics_url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(scrape(metrics_url))
        for sample in family.samples
    }


def value(scraped: dict, name: str, **labels: str) -> float:
    """A sample's value; fails loudly for a sample the exporter did not expose."""
    key = (name, tuple(sorted(labels.items())))
    assert key in scraped, f"{name}{labels} not exposed"
    return scraped[key]


def demo(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "exporter.demo", *args], capture_output=True, text=True, timeout=120, cwd=ROOT, env=clean_environ() | env
    )


def total(scraped: dict, name: str) -> float:
    """The sum of a family's samples over all its label sets; fails loudly for a family not exposed."""
    found = [v for (sample, _), v in scraped.items() if sample == name]
    assert found, f"{name} not exposed"
    return sum(found)


def test_the_demo_sends_signed_deliveries_of_every_summary_kind_that_are_each_counted_once(tmp_path):
    with start_exporter(env={"TWILIO_AUTH_TOKEN": TOKEN}, tmp_path=tmp_path) as exporter:
        shape = ("--count", "25", "--calls", "7", "--conferences", "4", "--batch-size", "10")
        sent = demo("--url", exporter.webhook_url, "--token-env", "DEMO_TOKEN", *shape, env={"DEMO_TOKEN": TOKEN})
        assert sent.returncode == 0, sent.stdout + sent.stderr
        kinds = sorted(SUMMARY_TYPES)
        assert kinds == [
            "com.twilio.voice.insights.conference-participant-summary.complete",
            "com.twilio.voice.insights.participant-summary.complete",
        ]
        # 25 participant legs need 13 Flex calls, whose 3 TaskRouter events each come first; then 25
        # participant summaries alternating between the two type names (13 and 12), one partial and
        # 7 complete calls, 4 conferences: 76 events in 8 batches, then the test event.
        assert sent.stdout == (
            "9 of 9 deliveries answered 2xx: 1 com.twilio.eventstreams.test-event, "
            "13 com.twilio.taskrouter.reservation.accepted, 13 com.twilio.taskrouter.reservation.wrapup, 13 com.twilio.taskrouter.task.completed, "
            f"7 {CALL_SUMMARY_COMPLETE}, 1 {CALL_SUMMARY_PARTIAL}, 13 {kinds[0]}, 4 {CONFERENCE_SUMMARY_COMPLETE}, 12 {kinds[1]}\n"
        )
        scraped = samples(exporter.metrics_url)
        events = f"{metrics.EVENTS}_total"
        assert value(scraped, events, source="webhook", type="summary", outcome="recorded") == 25 + 7 + 4
        assert value(scraped, events, source="webhook", type="summary", outcome="not_final") == 1
        assert value(scraped, events, source="webhook", type="test", outcome="test") == 1
        assert value(scraped, events, source="webhook", type="summary", outcome="duplicate") == 0
        assert value(scraped, events, source="webhook", type="taskrouter", outcome="recorded") == 3 * 13
        assert value(scraped, events, source="webhook", type="taskrouter", outcome="ignored") == 0
        assert not any(name == f"{metrics.INVALID_EVENTS}_total" and v for (name, _), v in scraped.items())
        assert sum(v for (name, _), v in scraped.items() if name == f"{metrics.SIGNATURE_FAILURES}_total") == 0
        # Both streams of every participant reach the quality histograms.
        assert total(scraped, f"{participant_subject.MOS}_count") == 2 * 25
        # Each complete call once, the partial one not at all; each final conference once.
        assert total(scraped, f"{call_subject.CALL_SUMMARIES}_total") == 7
        assert total(scraped, f"{conference_subject.CONFERENCE_SUMMARIES}_total") == 4

        # Run again with the same seed: the same participants, calls and conferences, acknowledged
        # and not counted twice; the partial is not_final again.
        again = demo("--url", exporter.webhook_url, *shape, env={"TWILIO_AUTH_TOKEN": TOKEN})
        assert again.returncode == 0, again.stdout + again.stderr
        scraped = samples(exporter.metrics_url)
        assert value(scraped, events, source="webhook", type="summary", outcome="recorded") == 25 + 7 + 4
        assert value(scraped, events, source="webhook", type="summary", outcome="duplicate") == 25 + 7 + 4
        assert value(scraped, events, source="webhook", type="summary", outcome="not_final") == 2
        assert value(scraped, events, source="webhook", type="taskrouter", outcome="recorded") == 2 * 3 * 13
        assert total(scraped, f"{call_subject.CALL_SUMMARIES}_total") == 7
        assert total(scraped, f"{conference_subject.CONFERENCE_SUMMARIES}_total") == 4


def test_a_demo_run_overflows_no_label_and_gives_every_summary_a_task_queue_and_a_team(tmp_path):
    with start_exporter(env={"TWILIO_AUTH_TOKEN": TOKEN}, tmp_path=tmp_path) as exporter:
        # The defaults, as make demo sends them: 200 participant summaries, 50 calls, 20 conferences.
        sent = demo("--url", exporter.webhook_url, env={"TWILIO_AUTH_TOKEN": TOKEN})
        assert sent.returncode == 0, sent.stdout + sent.stderr
        families = {family.name: family.samples for family in text_string_to_metric_families(scrape(exporter.metrics_url))}

        # Every value the demo sends is in Twilio's vocabulary and within the caps: the overflow
        # counter is exposed and has no child at all (a child is made by the first overflow).
        assert families[metrics.LABEL_OVERFLOW] == []

        # Every recorded summary found its call's TaskRouter events: hits only, one per summary.
        joins = {(s.labels["kind"], s.labels["result"]): s.value for s in families[JOIN_TOTAL] if s.name == f"{JOIN_TOTAL}_total"}
        assert joins == {
            ("participant", "hit"): 200,
            ("participant", "miss"): 0,
            ("call", "hit"): 50,
            ("call", "miss"): 0,
            ("conference", "hit"): 20,
            ("conference", "miss"): 0,
        }

        # No series of any summary family says unknown (or other) for a join label, and the
        # participant, call and conference families all show the demo's handful of queues and teams.
        joined = [s for family in families.values() for s in family if "task_queue" in s.labels]
        assert not [s for s in joined if {s.labels[name] for name in JOIN_LABELS} & {UNKNOWN, OTHER}]
        queues = {queue for queue, _, _ in synthetic.QUEUES}
        teams = {team for _, _, answering in synthetic.QUEUES for team in answering}
        for prefix in (participant_subject.PREFIX + "_", call_subject.PREFIX + "_", conference_subject.PREFIX + "_summaries"):
            kind = [s for s in joined if s.name.startswith(prefix)]
            assert {s.labels["task_queue"] for s in kind} == queues, prefix
            assert {s.labels["team"] for s in kind} == teams, prefix


def test_a_wrong_token_is_refused_by_the_exporter_and_the_demo_says_so(tmp_path):
    with start_exporter(env={"TWILIO_AUTH_TOKEN": TOKEN}, tmp_path=tmp_path) as exporter:
        sent = demo("--url", exporter.webhook_url, "--count", "3", "--calls", "0", "--conferences", "0", env={"TWILIO_AUTH_TOKEN": "not-the-token"})
        assert sent.returncode == 1
        assert sent.stdout == "0 of 2 deliveries answered 2xx: nothing\n"
        assert sent.stderr.count("answered 403") == 2
        scraped = samples(exporter.metrics_url)
        assert value(scraped, f"{metrics.SIGNATURE_FAILURES}_total", reason="invalid_signature") == 2


def test_without_a_token_in_the_named_variable_nothing_is_sent():
    sent = demo("--url", "http://127.0.0.1:9/events", "--token-env", "NO_SUCH_TOKEN", env={})
    assert sent.returncode == 2
    assert sent.stderr == "python -m exporter.demo: the environment variable NO_SUCH_TOKEN (--token-env) holds no auth token\n"
