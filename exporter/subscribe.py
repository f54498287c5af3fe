"""``twilio-insights-exporter twilio subscribe``: the Event Streams sink and subscriptions the exporter needs.

What a sink must carry follows from the code, never from a list typed again: each summary subject's
event types (exporter/subjects/__init__.py :func:`~exporter.subjects.build.build_subjects`, final or not: a
subject acknowledges its partial events too) and the TaskRouter types the join takes
(exporter/join.py ``TAKEN_TYPES``). Only the schema version each kind is subscribed at is written
here (:data:`SCHEMAS`): it is a fact of the subscription, not of the exporter, which reads every
version of them.

Without ``--apply`` the command prints the Twilio CLI commands that create the webhook sink, its
subscription and the sink test. With ``--apply`` it does the same through the ``twilio`` SDK with
the account's credentials from the environment (TWILIO_ACCOUNT_SID and TWILIO_AUTH_TOKEN, or
TWILIO_API_KEY and TWILIO_API_SECRET), idempotently: a webhook sink with the same destination is
reused, and only the types no subscription of that sink has yet are added, so a second run creates
nothing. It then sends the sink test event and says what to check next. The sink URL's password,
when it has one, is printed as ``***``; no credential is ever printed.

``live`` (the call-metrics and call-event types, live-quality-facts.md) is refused while no subject
records those types: a subscription would send Twilio's 10-second quality samples of every call
leg (hundreds of events a second for a contact centre) to a webhook that only acknowledges them,
spending its memory budget and in-flight slots on nothing. The refusal lifts by itself when a
subject carries them.

How to connect Twilio, per use case: README.md, "Connect Twilio".

Why one module: the printed commands and the API calls are two renderings of one list of types
and one sink configuration; side by side, what an operator reads and what ``--apply`` does cannot
drift apart.
"""

from __future__ import annotations

import argparse
import json
import logging
import shlex
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, TextIO
from urllib.parse import SplitResult, urlsplit

import requests
from prometheus_client import CollectorRegistry
from pydantic import ValidationError
from twilio.base.exceptions import TwilioException, TwilioRestException
from twilio.http.http_client import TwilioHttpClient
from twilio.http.response import Response
from twilio.rest import Client

from exporter.cli import describe
from exporter.config import Config, Secrets, Settings
from exporter.join import JOIN_TOTAL, TAKEN_TYPES
from exporter.metrics import EVENTS, EventType
from exporter.models import PARTICIPANT_SUMMARY_ALIAS
from exporter.subjects import CALL, CONFERENCE, PARTICIPANT, Subjects
from exporter.subjects.build import build_subjects

PROG = "twilio-insights-exporter twilio"
# The description of the sink and of the subscription this command creates: a rerun adds missing
# types to the subscription of that name rather than creating another.
DESCRIPTION = "twilio-insights-exporter"
API_URL = "https://events.twilio.com"
SINK_SID_PLACEHOLDER = "DGxxxxxxxx"
TASKROUTER = "taskrouter"
LIVE = "live"
# Exit statuses: a usage error (argparse's own 2: a bad option, missing credentials) or an API
# call that failed.
USAGE, FAILED = 2, 1

# The SDK logs every request with its headers at INFO: only its warnings come through.
_SDK_LOG = logging.getLogger(__name__ + ".twilio_http")
_SDK_LOG.setLevel(logging.WARNING)


@dataclass(frozen=True)
class Schema:
    """An Event Streams schema and the version a subscription names."""

    id: str
    version: int


# The schema version each kind is subscribed at: the newest of those the exporter reads
# (exporter/models.py: participant summaries 1 and 2, Call Summaries 1 to 7, Conference Summaries
# 1 and 2; TaskRouter any version, 2+ naming milliseconds; taskrouter-join-facts.md §1.1).
SCHEMAS: dict[str, Schema] = {
    PARTICIPANT: Schema("VoiceInsights.ConferenceParticipantSummary", 2),
    CALL: Schema("VoiceInsights.CallSummary", 7),
    CONFERENCE: Schema("VoiceInsights.ConferenceSummary", 2),
    TASKROUTER: Schema("TaskRouter.WDSEvent", 4),
}
# Live quality (live-quality-facts.md §1): 10-second samples per edge, and the SDK's and the
# gateways' call events (CallEvent /2 and /3 both appear in Twilio's pages; /3 is the newest schema).
LIVE_TYPES: dict[str, Schema] = {
    "com.twilio.voice.insights.call-metrics.gateway": Schema("VoiceInsights.CallMetric", 2),
    "com.twilio.voice.insights.call-metrics.sdk": Schema("VoiceInsights.CallMetric", 2),
    "com.twilio.voice.insights.call-event.gateway": Schema("VoiceInsights.CallEvent", 3),
    "com.twilio.voice.insights.call-event.sdk": Schema("VoiceInsights.CallEvent", 3),
}
# Names of a subject's event types that Event Streams does not publish (accepted, never subscribed).
NOT_PUBLISHED = frozenset({PARTICIPANT_SUMMARY_ALIAS})


@dataclass(frozen=True, order=True)
class Subscribed:
    """One event type and the schema version a subscription names for it."""

    type: str
    schema_version: int

    def as_dict(self) -> dict[str, Any]:
        return {"type": self.type, "schema_version": self.schema_version}

    def json(self) -> str:
        """As the CLI's ``--types`` and the API's ``Types`` take it.

        >>> Subscribed("com.twilio.taskrouter.task.updated", 4).json()
        '{"type":"com.twilio.taskrouter.task.updated","schema_version":4}'
        """
        return json.dumps(self.as_dict(), separators=(",", ":"))


class Refused(Exception):
    """A request this command will not carry out; the message is the one line printed."""


def subjects() -> Subjects:
    """The exporter's subjects, built on the default settings.

    The event types a subject carries depend on no setting: the defaults are taken unvalidated
    (``model_construct``), without reading the environment or a configuration file, so that this
    command never refuses an exporter setting it has no use for.
    """
    config = Config.model_construct(settings=Settings.model_construct(), secrets=Secrets.model_construct())
    return build_subjects(config, CollectorRegistry())


def kinds(known: Subjects | None = None) -> list[str]:
    """Every kind ``--kinds`` takes: each subject, then ``taskrouter`` and ``live``."""
    known = subjects() if known is None else known
    return [*(subject.name for subject in known), TASKROUTER, LIVE]


def event_types(chosen: Iterable[str], known: Subjects | None = None) -> list[Subscribed]:
    """The types and schema versions a sink needs for the kinds ``chosen``, in the order of :func:`kinds`.

    Raises :class:`Refused` for ``live`` while no subject records those types.
    """
    known = subjects() if known is None else known
    wanted = set(chosen)
    found: list[Subscribed] = []
    for subject in known:
        if subject.name in wanted:
            schema = SCHEMAS[subject.name]
            found += [Subscribed(t, schema.version) for t in sorted((subject.final_types | subject.not_final_types) - NOT_PUBLISHED)]
    if TASKROUTER in wanted:
        found += [Subscribed(t, SCHEMAS[TASKROUTER].version) for t in sorted(TAKEN_TYPES)]
    if LIVE in wanted:
        if not any(known.carried_by(t) for t in LIVE_TYPES):
            raise Refused(
                f"--kinds {LIVE}: the exporter does not record the live quality types yet ({', '.join(LIVE_TYPES)}); "
                "subscribed, Twilio would send every call's 10-second samples to a webhook that only acknowledges them"
            )
        found += [Subscribed(t, schema.version) for t, schema in LIVE_TYPES.items()]
    return found


def sink_configuration(sink_url: str) -> dict[str, Any]:
    """The webhook sink's configuration: POST, events batched (the webhook takes arrays)."""
    return {"destination": sink_url, "method": "POST", "batch_events": True}


def redacted(url: str) -> str:
    """``url`` with its password, if any, as ``***``.

    >>> redacted("https://user:s3cret@hooks.example.com/events")
    'https://user:***@hooks.example.com/events'
    >>> redacted("https://hooks.example.com/events")
    'https://hooks.example.com/events'
    """
    parts = urlsplit(url)
    if parts.password is None:
        return url
    return _with_password(parts, "***").geturl()


def _with_password(parts: SplitResult, password: str | None) -> SplitResult:
    host = parts.netloc.rpartition("@")[2]
    user = "" if parts.username is None else parts.username + ("" if password is None else ":" + password) + "@"
    return parts._replace(netloc=user + host)


def same_destination(a: str, b: str) -> bool:
    """Whether two sink URLs name the same endpoint and user; passwords are not compared.

    Twilio may not give a sink's password back, so a rerun with the same URL still finds its sink.

    >>> same_destination("https://u:one@h.example.com/events", "https://u:two@h.example.com/events")
    True
    >>> same_destination("https://h.example.com/events", "https://h.example.com/other")
    False
    """
    return _with_password(urlsplit(a), None) == _with_password(urlsplit(b), None)


def commands(sink_url: str, types: Sequence[Subscribed]) -> list[str]:
    """The Twilio CLI commands creating the sink, its subscription and the sink test (shell lines)."""
    q = shlex.quote
    config = json.dumps(sink_configuration(redacted(sink_url)), separators=(",", ":"))
    lines = [
        f"twilio api:events:v1:sinks:create --description {q(DESCRIPTION)} --sink-type webhook \\",
        f"  --sink-configuration {q(config)}",
        f"# {SINK_SID_PLACEHOLDER}: the sink SID the command above prints",
        f"twilio api:events:v1:subscriptions:create --description {q(DESCRIPTION)} --sink-sid {SINK_SID_PLACEHOLDER} \\",
        *(f"  --types {q(t.json())}" + (" \\" if i < len(types) - 1 else "") for i, t in enumerate(types)),
        f"twilio api:events:v1:sinks:test:create --sid {SINK_SID_PLACEHOLDER}",
    ]
    if urlsplit(sink_url).password is not None:
        lines.insert(0, "# the sink URL's password is shown as ***: write it in before running")
    return lines


class _RebasedHttpClient(TwilioHttpClient):  # type: ignore[misc]  # twilio ships no types: its classes are Any
    """The SDK's HTTP client, every request sent to ``--api-url``'s scheme and host.

    The SDK's Events resources are fixed at ``https://events.twilio.com``; a proxy, or the tests'
    fake API, sits elsewhere. The path and query are kept; credentials go only to that host,
    whatever host an answer's ``next_page_url`` names.
    """

    def __init__(self, base_url: str, timeout: float) -> None:
        super().__init__(timeout=timeout, logger=_SDK_LOG)
        self._base = base_url.rstrip("/")

    def request(self, method: str, url: str, *args: Any, **kwargs: Any) -> Response:
        parts = urlsplit(url)
        return super().request(method, self._base + parts.path + (f"?{parts.query}" if parts.query else ""), *args, **kwargs)


def client(credentials: tuple[str, str], api_url: str = API_URL, timeout: float = 30.0) -> Client:
    """A ``twilio`` SDK client with these HTTP Basic credentials, talking to ``api_url``."""
    username, password = credentials
    # An explicit environment: the SDK would otherwise read TWILIO_EDGE/TWILIO_REGION and rewrite the host.
    return Client(username, password, http_client=_RebasedHttpClient(api_url, timeout), environment={"TWILIO_EDGE": "", "TWILIO_REGION": ""})


def apply(twilio: Client, sink_url: str, types: Sequence[Subscribed], out: TextIO) -> None:
    """Create (or reuse) the webhook sink, subscribe it to what it lacks of ``types``, send the sink test."""
    events = twilio.events.v1
    sink = next((s for s in events.sinks.list() if s.sink_type == "webhook" and same_destination(_destination(s), sink_url)), None)
    if sink is None:
        sink = events.sinks.create(description=DESCRIPTION, sink_type="webhook", sink_configuration=sink_configuration(sink_url))
        print(f"sink {sink.sid}: created, webhook to {redacted(sink_url)}", file=out)
    else:
        print(f"sink {sink.sid}: reused (status {sink.status}), webhook to {redacted(sink_url)}", file=out)
    subscriptions = events.subscriptions.list(sink_sid=sink.sid)
    have: dict[str, int] = {}
    for subscription in subscriptions:
        for subscribed in events.subscriptions(subscription.sid).subscribed_events.list():
            have[subscribed.type] = int(subscribed.schema_version)
    missing = [t for t in types if t.type not in have]
    for t in types:
        if t.type in have and have[t.type] != t.schema_version:
            print(f"kept: {t.type} at schema_version {have[t.type]} (the exporter reads it; {t.schema_version} is the newest)", file=out)
    ours = next((s for s in subscriptions if s.description == DESCRIPTION), None)
    if not missing:
        print(f"subscriptions: nothing to add, the {len(types)} types are subscribed", file=out)
    elif ours is None:
        created = events.subscriptions.create(description=DESCRIPTION, sink_sid=sink.sid, types=[t.as_dict() for t in missing])
        print(f"subscription {created.sid}: created with {len(missing)} types", file=out)
    else:
        for t in missing:
            events.subscriptions(ours.sid).subscribed_events.create(type=t.type, schema_version=t.schema_version)
        print(f"subscription {ours.sid}: added {len(missing)} types", file=out)
    for t in missing:
        print(f"  + {t.type} (schema_version {t.schema_version})", file=out)
    result = events.sinks(sink.sid).sink_test.create().result
    print(f"sink test: sent (Twilio says {result})", file=out)
    print(next_steps(types), file=out)


def _destination(sink: Any) -> str:
    config = sink.sink_configuration
    return str(config.get("destination")) if isinstance(config, dict) else ""


def next_steps(types: Sequence[Subscribed]) -> str:
    """What to check once the sink exists: the test event first, then the summaries and the join."""
    lines = [
        "Next:",
        f'  1. within a minute the exporter counts the test event: {EVENTS}_total{{type="{EventType.TEST}"}} goes up by one on its /metrics.',
        "     If not, Twilio's Debugger (Console, Monitor > Logs > Errors) says why; a 403 means the exporter was",
        "     not given this URL (--webhook.public-url) or this account's auth token (TWILIO_AUTH_TOKEN).",
        f'  2. summaries arrive up to 30 minutes after a call ends: {EVENTS}_total{{type="{EventType.SUMMARY}",outcome="recorded"}}.',
    ]
    if any(t.type in TAKEN_TYPES for t in types):
        lines.append(f'  3. Flex calls find their queue and team: {JOIN_TOTAL}_total{{result="hit"}} grows, not result="miss".')
    return "\n".join(lines)


def _kinds_list(known: Sequence[str]) -> Any:
    def parse(value: str) -> list[str]:
        chosen = [part.strip() for part in value.split(",") if part.strip()]
        unknown = [k for k in chosen if k not in known]
        if unknown or not chosen:
            raise argparse.ArgumentTypeError(f"{','.join(unknown) or repr(value)}: not a kind (choose from {','.join(known)})")
        return chosen

    return parse


def _sink_url(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise argparse.ArgumentTypeError("not an http(s) URL with a host, e.g. https://hooks.example.com/events")
    return value


def parser(known: Sequence[str]) -> argparse.ArgumentParser:
    """``twilio subscribe``'s own options (none of the exporter's flags)."""
    top = argparse.ArgumentParser(prog=PROG, description="Connect Twilio to the exporter.")
    commands_ = top.add_subparsers(dest="command", required=True, metavar="subscribe")
    sub = commands_.add_parser(
        "subscribe",
        help="the Event Streams webhook sink and subscriptions the exporter needs",
        description=(
            "Print the Twilio CLI commands creating the Event Streams webhook sink and subscribing it to the event types the "
            "exporter reads for the kinds chosen; with --apply, create them through the Twilio API (a sink with the same "
            "destination is reused, only missing types are added) and send the sink test event. Credentials for --apply: "
            "TWILIO_ACCOUNT_SID and TWILIO_AUTH_TOKEN, or TWILIO_API_KEY and TWILIO_API_SECRET."
        ),
        epilog=(
            "Kinds: participant only (conference participants); participant,call,conference (voice apps); "
            "participant,call,conference,taskrouter (a Flex contact centre: queue and team labels). "
            f"{LIVE} is refused while the exporter does not record live quality events."
        ),
    )
    sub.add_argument("--sink-url", required=True, type=_sink_url, help="the exporter's public webhook URL, as Twilio will call it")
    sub.add_argument(
        "--kinds",
        type=_kinds_list(known),
        default=[PARTICIPANT, CALL, CONFERENCE],
        metavar=",".join(known),
        help=f"comma-separated kinds of events to subscribe to (default: {PARTICIPANT},{CALL},{CONFERENCE})",
    )
    sub.add_argument("--apply", action="store_true", help="create the sink and subscriptions now, and send the sink test event")
    sub.add_argument("--api-url", default=API_URL, type=_sink_url, help=f"the Event Streams API (default: {API_URL}); a proxy's, for instance")
    return top


def credentials() -> tuple[str, str]:
    """HTTP Basic credentials from the environment, as the exporter's pull mode reads them; :class:`Refused` without."""
    try:
        secrets = Secrets()  # the environment's TWILIO_* variables, read as the exporter reads them
    except ValidationError as exc:
        raise Refused(describe(exc)) from None
    found = secrets.api_credentials()
    if found is None:
        raise Refused("--apply needs TWILIO_ACCOUNT_SID with TWILIO_AUTH_TOKEN, or TWILIO_API_KEY with TWILIO_API_SECRET, in the environment")
    return found


def _problem(exc: Exception, api_url: str) -> str:
    """One line for a failed API call: Twilio's status, error code and message, or what the connection did."""
    if isinstance(exc, TwilioRestException):
        return f"Twilio answered {exc.method} {exc.uri}: HTTP {exc.status}, error {exc.code}: {exc.msg}"
    answer = next((arg for arg in exc.args if isinstance(arg, Response)), None)  # a list's page: ("Unable to fetch page", response)
    if answer is not None:
        try:
            body = json.loads(answer.text)
        except ValueError:
            body = None
        if isinstance(body, dict):
            return f"Twilio answered HTTP {answer.status_code}, error {body.get('code')}: {body.get('message')}"
        return f"Twilio answered HTTP {answer.status_code}"
    problem = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return f"the Event Streams API at {api_url} failed: {problem}"


def run(argv: Sequence[str], out: TextIO = sys.stdout, err: TextIO = sys.stderr) -> int:
    """The command: 0 when done, 2 for a usage error or missing credentials, 1 when an API call failed."""
    known = subjects()
    try:
        args = parser(kinds(known)).parse_args(list(argv))
    except SystemExit as exc:  # argparse has printed its usage and the error, or --help
        return int(exc.code or 0)
    try:
        types = event_types(args.kinds, known)
        if urlsplit(args.sink_url).scheme == "http":
            print(f"{PROG} subscribe: warning: {redacted(args.sink_url)} is plain http; Twilio should deliver over HTTPS", file=err)
        if not args.apply:
            print("\n".join(commands(args.sink_url, types)), file=out)
            return 0
        found = credentials()
    except Refused as exc:
        print(f"{PROG} subscribe: {exc}", file=err)
        return USAGE
    try:
        apply(client(found, args.api_url), args.sink_url, types, out)
    except (TwilioException, requests.RequestException) as exc:
        # No credential is in these messages: the SDK sends them in a header, never in the URL.
        print(f"{PROG} subscribe: {_problem(exc, args.api_url)}", file=err)
        return FAILED
    return 0
