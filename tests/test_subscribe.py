"""``twilio-insights-exporter twilio subscribe`` (exporter/subscribe.py) with the real twilio SDK against a fake Events API.

The fake (tests/fake_events_api.py) listens on loopback and knows Twilio's catalogue of event
types on its own, so a type subscribed by a wrong name or schema version is refused as Twilio
would refuse it. Runs through the real command line are subprocesses; the others call
:func:`exporter.subscribe.run` in a thread while the fake answers on the test's loop.
"""

from __future__ import annotations

import asyncio
import io
import re
import shlex
import sys
from typing import Any

import pytest
from aiohttp.test_utils import TestServer

from exporter import subscribe
from exporter.subjects import PARTICIPANT
from tests import fake_events_api as fe
from tests.exporter_process import ROOT, free_port
from tests.helm_chart import render
from tests.helpers import clean_environ, scrub_environment

SINK_URL = "https://hooks.example.com/events"
FLEX = "participant,call,conference,taskrouter"
ACCOUNT = {"TWILIO_ACCOUNT_SID": fe.ACCOUNT_SID, "TWILIO_AUTH_TOKEN": fe.AUTH_TOKEN}
API_KEY = {"TWILIO_API_KEY": fe.API_KEY, "TWILIO_API_SECRET": fe.API_SECRET}
SECRETS = (fe.AUTH_TOKEN, fe.API_SECRET)

# What a Flex contact centre's sink carries: written out here, as the statement the code is held to.
FLEX_TYPES = {
    "com.twilio.voice.insights.conference-participant-summary.complete": 2,
    "com.twilio.voice.insights.call-summary.complete": 7,
    "com.twilio.voice.insights.call-summary.partial": 7,
    "com.twilio.voice.insights.call-summary.predicted-complete": 7,
    "com.twilio.voice.insights.conference-summary.complete": 2,
    "com.twilio.voice.insights.conference-summary.partial": 2,
    "com.twilio.taskrouter.reservation.accepted": 4,
    "com.twilio.taskrouter.reservation.wrapup": 4,
    "com.twilio.taskrouter.reservation.completed": 4,
    "com.twilio.taskrouter.task.updated": 4,
    "com.twilio.taskrouter.task.wrapup": 4,
    "com.twilio.taskrouter.task.completed": 4,
    "com.twilio.taskrouter.task.canceled": 4,
    "com.twilio.taskrouter.task.transfer-initiated": 4,
    "com.twilio.taskrouter.task.transfer-completed": 4,
    "com.twilio.taskrouter.task.transfer-failed": 4,
    "com.twilio.taskrouter.task.transfer-canceled": 4,
    "com.twilio.taskrouter.task.transfer-attempt-failed": 4,
}
CALL_TYPES = {t: v for t, v in FLEX_TYPES.items() if ".call-summary." in t}


@pytest.fixture
async def fake() -> fe.FakeEvents:
    return fe.FakeEvents()


@pytest.fixture
async def api(aiohttp_server: Any, fake: fe.FakeEvents) -> str:
    server: TestServer = await aiohttp_server(fake.app())
    return str(server.make_url("")).rstrip("/")


class Result:
    def __init__(self, status: int, out: str, err: str) -> None:
        self.status, self.out, self.err = status, out, err

    def assert_no_secret(self) -> None:
        for secret in (*SECRETS, "s3cret-sink-password"):
            assert secret not in self.out and secret not in self.err


async def run(monkeypatch: pytest.MonkeyPatch, *argv: str, env: dict[str, str] | None = None) -> Result:
    """The command in process (in a thread: the SDK is synchronous, the fake answers on this loop)."""
    scrub_environment(monkeypatch)
    for name, value in (env or {}).items():
        monkeypatch.setenv(name, value)
    out, err = io.StringIO(), io.StringIO()
    status = await asyncio.to_thread(subscribe.run, list(argv), out, err)
    result = Result(status, out.getvalue(), err.getvalue())
    result.assert_no_secret()
    return result


async def command_line(*argv: str, env: dict[str, str] | None = None) -> Result:
    """The real command line, ``python -m exporter twilio ...``, in a subprocess."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "exporter",
        "twilio",
        *argv,
        cwd=ROOT,
        env=clean_environ() | (env or {}),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), timeout=60)
    assert process.returncode is not None
    result = Result(process.returncode, out.decode(), err.decode())
    result.assert_no_secret()
    return result


def our_sink(fake: fe.FakeEvents) -> str:
    (sid,) = [sid for sid, sink in fake.sinks.items() if sink["sink_configuration"].get("destination") == SINK_URL]
    return sid


async def test_applied_twice_it_creates_one_sink_and_each_type_once_and_tests_the_sink_each_time(api: str, fake: fe.FakeEvents) -> None:
    first = await command_line("subscribe", "--sink-url", SINK_URL, "--kinds", FLEX, "--apply", "--api-url", api, env=ACCOUNT)
    assert first.status == 0, first.err
    sink = our_sink(fake)
    assert fake.sinks[sink]["sink_type"] == "webhook"
    assert fake.sinks[sink]["sink_configuration"] == {"destination": SINK_URL, "method": "POST", "batch_events": True}
    (subscription,) = fake.subscriptions
    assert fake.subscriptions[subscription]["description"] == subscribe.DESCRIPTION
    assert fake.subscribed[subscription] == FLEX_TYPES
    assert fake.tests == [sink]
    assert f"sink {sink}: created" in first.out
    assert f"subscription {subscription}: created with 18 types" in first.out
    assert 'twilio_insights_exporter_events_total{type="test"}' in first.out
    assert 'twilio_insights_exporter_taskrouter_join_total{result="hit"}' in first.out
    before = len(fake.seen)

    second = await command_line("subscribe", "--sink-url", SINK_URL, "--kinds", FLEX, "--apply", "--api-url", api, env=ACCOUNT)
    assert second.status == 0, second.err
    assert len(fake.sinks) == 1 and list(fake.subscriptions) == [subscription]
    assert fake.subscribed[subscription] == FLEX_TYPES
    # The only write of the second run is the sink test.
    assert [(s.method, s.path) for s in fake.seen[before:] if s.method == "POST"] == [("POST", f"/v1/Sinks/{sink}/Test")]
    assert fake.tests == [sink, sink]
    assert f"sink {sink}: reused (status active)" in second.out
    assert "subscriptions: nothing to add, the 18 types are subscribed" in second.out


async def test_a_later_run_with_more_kinds_adds_only_the_missing_types_to_its_subscription(
    api: str, fake: fe.FakeEvents, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = await run(monkeypatch, "subscribe", "--sink-url", SINK_URL, "--kinds", "participant", "--apply", "--api-url", api, env=ACCOUNT)
    assert first.status == 0, first.err
    (subscription,) = fake.subscriptions
    assert fake.subscribed[subscription] == {"com.twilio.voice.insights.conference-participant-summary.complete": 2}
    before = len(fake.seen)

    second = await run(monkeypatch, "subscribe", "--sink-url", SINK_URL, "--kinds", "participant,call", "--apply", "--api-url", api, env=ACCOUNT)
    assert second.status == 0, second.err
    assert list(fake.subscriptions) == [subscription] and len(fake.sinks) == 1
    assert fake.subscribed[subscription] == {"com.twilio.voice.insights.conference-participant-summary.complete": 2, **CALL_TYPES}
    added = [s.path for s in fake.seen[before:] if s.method == "POST" and s.path.endswith("/SubscribedEvents")]
    assert added == [f"/v1/Subscriptions/{subscription}/SubscribedEvents"] * 3
    assert f"subscription {subscription}: added 3 types" in second.out


async def test_a_sink_of_the_same_destination_is_found_among_many_and_its_other_subscriptions_are_left_alone(
    api: str, fake: fe.FakeEvents, monkeypatch: pytest.MonkeyPatch
) -> None:
    for n in range(fe.DEFAULT_PAGE_SIZE + 5):  # ours on the second page of the list
        fake.add_sink(f"https://other-{n}.example.com/events")
    fake.add_sink("arn:aws:kinesis:us-east-1:111111111111:stream/x", sink_type="kinesis")
    # The same endpoint and user, another password: Twilio may not give a sink's password back.
    sink = fake.add_sink("https://user:old-password@hooks.example.com/events")
    theirs = fake.add_subscription(sink, {"com.twilio.voice.insights.call-summary.complete": 1})

    result = await run(
        monkeypatch,
        "subscribe",
        "--sink-url",
        "https://user:s3cret-sink-password@hooks.example.com/events",
        "--kinds",
        "participant,call",
        "--apply",
        "--api-url",
        api,
        env=ACCOUNT,
    )
    assert result.status == 0, result.err
    assert len(fake.sinks) == fe.DEFAULT_PAGE_SIZE + 7  # none created
    assert fake.subscribed[theirs] == {"com.twilio.voice.insights.call-summary.complete": 1}  # kept at its version
    (ours,) = set(fake.subscriptions) - {theirs}
    assert fake.subscriptions[ours]["sink_sid"] == sink
    assert fake.subscribed[ours] == {
        "com.twilio.voice.insights.conference-participant-summary.complete": 2,
        "com.twilio.voice.insights.call-summary.partial": 7,
        "com.twilio.voice.insights.call-summary.predicted-complete": 7,
    }
    assert fake.tests == [sink]
    assert "kept: com.twilio.voice.insights.call-summary.complete at schema_version 1" in result.out
    assert "https://user:***@hooks.example.com/events" in result.out


async def test_an_api_key_is_enough(api: str, fake: fe.FakeEvents, monkeypatch: pytest.MonkeyPatch) -> None:
    result = await run(monkeypatch, "subscribe", "--sink-url", SINK_URL, "--kinds", "conference", "--apply", "--api-url", api, env=API_KEY)
    assert result.status == 0, result.err
    (subscription,) = fake.subscriptions
    assert fake.subscribed[subscription] == {t: v for t, v in FLEX_TYPES.items() if ".conference-summary." in t}


def test_without_apply_it_prints_the_twilio_cli_commands() -> None:
    out, err = io.StringIO(), io.StringIO()
    assert subscribe.run(["subscribe", "--sink-url", SINK_URL, "--kinds", "participant,conference"], out, err) == 0
    assert err.getvalue() == ""
    assert out.getvalue() == (
        "twilio api:events:v1:sinks:create --description twilio-insights-exporter --sink-type webhook \\\n"
        """  --sink-configuration '{"destination":"https://hooks.example.com/events","method":"POST","batch_events":true}'\n"""
        "# DGxxxxxxxx: the sink SID the command above prints\n"
        "twilio api:events:v1:subscriptions:create --description twilio-insights-exporter --sink-sid DGxxxxxxxx \\\n"
        """  --types '{"type":"com.twilio.voice.insights.conference-participant-summary.complete","schema_version":2}' \\\n"""
        """  --types '{"type":"com.twilio.voice.insights.conference-summary.complete","schema_version":2}' \\\n"""
        """  --types '{"type":"com.twilio.voice.insights.conference-summary.partial","schema_version":2}'\n"""
        "twilio api:events:v1:sinks:test:create --sid DGxxxxxxxx\n"
    )


async def test_the_printed_commands_subscribe_what_apply_subscribes(api: str, fake: fe.FakeEvents, monkeypatch: pytest.MonkeyPatch) -> None:
    printed = await run(monkeypatch, "subscribe", "--sink-url", SINK_URL, "--kinds", FLEX)
    words = shlex.split(printed.out, comments=True)
    types = [words[i + 1] for i, word in enumerate(words) if word == "--types"]
    applied = await run(monkeypatch, "subscribe", "--sink-url", SINK_URL, "--kinds", FLEX, "--apply", "--api-url", api, env=ACCOUNT)
    assert applied.status == 0, applied.err
    (subscription,) = fake.subscriptions
    assert types == [subscribe.Subscribed(t, v).json() for t, v in fake.subscribed[subscription].items()]


def test_a_password_in_the_sink_url_is_never_printed() -> None:
    out, err = io.StringIO(), io.StringIO()
    assert subscribe.run(["subscribe", "--sink-url", "https://user:s3cret-sink-password@hooks.example.com/events"], out, err) == 0
    assert "s3cret-sink-password" not in out.getvalue() + err.getvalue()
    assert '"destination":"https://user:***@hooks.example.com/events"' in out.getvalue()
    assert out.getvalue().startswith("# the sink URL's password is shown as ***")


async def test_help_lists_its_own_options_and_none_of_the_exporters() -> None:
    result = await command_line("subscribe", "--help")
    assert result.status == 0, result.err
    assert result.out.startswith("usage: twilio-insights-exporter twilio subscribe ")
    options = set(re.findall(r"--[a-z][a-z0-9.-]*[a-z0-9]", result.out))
    assert options == {"--help", "--sink-url", "--kinds", "--apply", "--api-url"}, options


async def test_without_credentials_apply_says_so_in_one_line_and_exits_2(api: str, fake: fe.FakeEvents, monkeypatch: pytest.MonkeyPatch) -> None:
    result = await run(monkeypatch, "subscribe", "--sink-url", SINK_URL, "--apply", "--api-url", api, env={"TWILIO_ACCOUNT_SID": fe.ACCOUNT_SID})
    assert result.status == 2
    assert result.out == ""
    assert result.err == (
        "twilio-insights-exporter twilio subscribe: --apply needs TWILIO_ACCOUNT_SID with TWILIO_AUTH_TOKEN, "
        "or TWILIO_API_KEY with TWILIO_API_SECRET, in the environment\n"
    )
    assert fake.seen == []


async def test_a_key_without_its_secret_is_refused_in_one_line(api: str, fake: fe.FakeEvents, monkeypatch: pytest.MonkeyPatch) -> None:
    result = await run(monkeypatch, "subscribe", "--sink-url", SINK_URL, "--apply", "--api-url", api, env={**ACCOUNT, "TWILIO_API_KEY": fe.API_KEY})
    assert result.status == 2
    assert result.err == "twilio-insights-exporter twilio subscribe: set both TWILIO_API_KEY and TWILIO_API_SECRET, or neither\n"
    assert fake.seen == []


async def test_credentials_twilio_refuses_fail_in_one_line_without_the_secret(api: str, fake: fe.FakeEvents, monkeypatch: pytest.MonkeyPatch) -> None:
    env = {"TWILIO_ACCOUNT_SID": fe.ACCOUNT_SID, "TWILIO_AUTH_TOKEN": "s3cret-sink-password"}
    result = await run(monkeypatch, "subscribe", "--sink-url", SINK_URL, "--apply", "--api-url", api, env=env)
    assert result.status == 1
    assert result.err == "twilio-insights-exporter twilio subscribe: Twilio answered HTTP 401, error 20003: Authenticate\n"
    assert fake.sinks == {}


async def test_live_is_refused_in_one_line_naming_the_types(api: str, fake: fe.FakeEvents, monkeypatch: pytest.MonkeyPatch) -> None:
    result = await run(monkeypatch, "subscribe", "--sink-url", SINK_URL, "--kinds", "participant,live", "--apply", "--api-url", api, env=ACCOUNT)
    assert result.status == 2
    (line,) = result.err.splitlines()
    assert line.startswith("twilio-insights-exporter twilio subscribe: --kinds live: the exporter does not record the live quality types yet")
    for live in ("call-metrics.gateway", "call-metrics.sdk", "call-event.gateway", "call-event.sdk"):
        assert f"com.twilio.voice.insights.{live}" in line
    assert fake.seen == []


def test_every_subject_is_a_kind_with_a_schema_version() -> None:
    known = subscribe.subjects()
    assert subscribe.kinds(known) == [*(s.name for s in known), "taskrouter", "live"]
    assert set(subscribe.SCHEMAS) == {s.name for s in known} | {"taskrouter"}


def test_an_unknown_kind_is_refused_naming_the_known_ones(capsys: pytest.CaptureFixture[str]) -> None:
    assert subscribe.run(["subscribe", "--sink-url", SINK_URL, "--kinds", "participant,queues"], io.StringIO(), io.StringIO()) == 2
    err = capsys.readouterr().err
    assert f"argument --kinds: queues: not a kind (choose from {PARTICIPANT},call,conference,taskrouter,live)" in err


def test_the_charts_notes_show_exactly_the_flex_commands() -> None:
    url = "https://twilio-hooks.example.com/events"
    notes = render({"webhook": {"publicUrl": url}}).notes
    printed = subscribe.commands(url, subscribe.event_types(FLEX.split(",")))
    assert "\n".join("     " + line for line in printed) in notes
    assert f"--sink-url '{url}' \\\n       --kinds {FLEX}\n" in notes


async def test_a_sink_twilio_holds_failed_stops_the_run_with_twilios_reason(api: str, fake: fe.FakeEvents, monkeypatch: pytest.MonkeyPatch) -> None:
    fake.add_sink(SINK_URL, status="failed")
    result = await run(monkeypatch, "subscribe", "--sink-url", SINK_URL, "--apply", "--api-url", api, env=ACCOUNT)
    assert result.status == 1
    assert result.err == (
        "twilio-insights-exporter twilio subscribe: Twilio answered POST /Subscriptions: HTTP 400, error 20001: "
        "Unable to create record: Sink must be active for the subscription to be created\n"
    )
    assert fake.subscriptions == {}


async def test_an_api_that_does_not_answer_fails_in_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    api = f"http://127.0.0.1:{free_port()}"
    result = await run(monkeypatch, "subscribe", "--sink-url", SINK_URL, "--apply", "--api-url", api, env=ACCOUNT)
    assert result.status == 1
    (line,) = result.err.splitlines()
    assert line.startswith(f"twilio-insights-exporter twilio subscribe: the Event Streams API at {api} failed: "), line
