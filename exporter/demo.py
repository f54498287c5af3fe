"""Send signed synthetic deliveries to a running exporter, so that its dashboards fill.

    python -m exporter.demo --url https://twilio-hooks.example.com/events --token-env TWILIO_AUTH_TOKEN
    make demo ARGS="--url http://127.0.0.1:8080/events"

For a trial, and for checking an ingress: each delivery is a batch of CloudEvents signed exactly as
Event Streams signs it (:func:`exporter.synthetic.sign`, the ``twilio`` SDK's validator, with
``bodySHA256`` in the URL), so a 2xx here means Twilio's deliveries to the same URL will verify
too. It plays a Flex contact centre's calls from :mod:`exporter.synthetic`, in Twilio's
vocabulary (most clean, a degraded tail): first each call's TaskRouter events
(``reservation.accepted``, ``reservation.wrapup``, ``task.completed``: the queue, workflow and
team that handled it), then the summaries of its legs and conference, which the exporter joins
to them: participant summaries under both event types the exporter takes for them
(:data:`exporter.models.SUMMARY_TYPES`, in turn); one ``partial`` Call Summary of a call still in
progress (acknowledged, counted ``not_final``, never recorded), then ``complete`` Call Summaries;
final Conference Summaries; and one sink test event. The auth token is read from an environment
variable, never from the command line (where ``ps`` and shell history would keep it). Exit
status 0 when every delivery was answered 2xx, 1 otherwise; each answer that is not is printed
with its status and body.

A separate module entry rather than a subcommand, so that ``python -m exporter`` stays the
exporter and nothing else.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from exporter import synthetic
from exporter.models import CALL_SUMMARY_PARTIAL, SUMMARY_TYPES


@dataclass(frozen=True, slots=True)
class Delivery:
    """One signed delivery: the URL Twilio would call (with ``bodySHA256``), its body and signature."""

    url: str
    body: bytes
    signature: str
    types: Counter[str]


def events(*, count: int, calls: int, conferences: int, seed: int, taskrouter: bool = True) -> list[dict[str, Any]]:
    """The CloudEvents of one run, in the order sent.

    The run is a Flex centre's day: Flex calls (:class:`exporter.synthetic.FlexCall`), as many as
    the summaries asked for need (each has two legs and one conference). First every call's
    TaskRouter events (unless ``taskrouter`` is false), as Twilio sends them while the call goes
    on; then ``count`` participant summaries (the legs of the calls in turn, under both event
    types the exporter takes for them), one partial and ``calls`` complete Call Summaries (no
    partial without calls), ``conferences`` Conference Summaries: each summary belongs to a call
    whose TaskRouter events came before it, so each carries a queue and a team.

    Each kind draws from a generator of its own seeded by ``seed``, so that one seed always gives
    the same SIDs (a second run of it counts duplicates only).
    """
    legs = max(count, calls)
    flex_rng = random.Random(f"flex-{seed}")
    flex = [synthetic.generate_flex_call(flex_rng) for _ in range(max((legs + 1) // 2, conferences))]
    sent: list[dict[str, Any]] = [event for call in flex for event in synthetic.taskrouter_events(call)] if taskrouter else []
    kinds = sorted(SUMMARY_TYPES)
    participant_rng = random.Random(seed)
    for i in range(count):
        summary = synthetic.flex_participant_summary(participant_rng, flex[i // 2], synthetic.LEGS[i % 2])
        sent.append(synthetic.cloud_event(summary, event_type=kinds[i % len(kinds)]))
    call_rng = random.Random(f"calls-{seed}")
    if calls:
        # A call of its own: a partial of a call that also completes here would be deduplicated
        # away if it were (wrongly) recorded, and no count would show it.
        partial = synthetic.generate_call_summary(call_rng, processing_state="partial")
        sent.append(synthetic.call_event(partial, event_type=CALL_SUMMARY_PARTIAL))
    sent += [synthetic.call_event(synthetic.flex_call_summary(call_rng, flex[i // 2], synthetic.LEGS[i % 2])) for i in range(calls)]
    conference_rng = random.Random(f"conferences-{seed}")
    sent += [synthetic.conference_event(synthetic.flex_conference_summary(conference_rng, flex[i])) for i in range(conferences)]
    return sent


def deliveries(
    url: str, auth_token: str, *, count: int, calls: int, conferences: int, batch_size: int, seed: int, taskrouter: bool = True
) -> list[Delivery]:
    """The :func:`events` of a run in batches of ``batch_size`` (a sink carries every kind, so a batch
    may mix them), then one sink test event; each batch signed for ``url``."""
    sent = events(count=count, calls=calls, conferences=conferences, seed=seed, taskrouter=taskrouter)
    batches = [sent[i : i + batch_size] for i in range(0, len(sent), batch_size)]
    batches.append([synthetic.sink_test_event()])
    signed = []
    for batch in batches:
        body = synthetic.batch_body(batch)
        signed_url, signature = synthetic.sign(url, body, auth_token)
        signed.append(Delivery(signed_url, body, signature, Counter(str(event["type"]) for event in batch)))
    return signed


def send(delivery: Delivery, timeout: float) -> tuple[int, str]:
    """POST one delivery as Event Streams does; the status and (for a refusal) the body of the answer."""
    request = urllib.request.Request(
        delivery.url,
        data=delivery.body,
        method="POST",
        headers={"Content-Type": "application/json", "X-Twilio-Signature": delivery.signature, "User-Agent": "twilio-insights-exporter-demo"},
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, ""
    except urllib.error.HTTPError as error:
        return error.code, error.read(500).decode(errors="replace").strip()


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m exporter.demo", description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", required=True, help="the webhook URL, exactly as Twilio would call it (e.g. http://127.0.0.1:8080/events)")
    parser.add_argument("--token-env", default="TWILIO_AUTH_TOKEN", help="environment variable holding the auth token (default: %(default)s)")
    parser.add_argument("--count", type=int, default=200, help="participant summaries to send (default: %(default)s)")
    parser.add_argument(
        "--calls", type=int, default=50, help="complete Call Summaries to send, after one partial (default: %(default)s; 0: no calls)"
    )
    parser.add_argument("--conferences", type=int, default=20, help="final Conference Summaries to send (default: %(default)s)")
    parser.add_argument(
        "--taskrouter",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="send each call's TaskRouter events first, so that its summaries carry a task queue, workflow and team "
        "(--no-taskrouter: the summaries of a centre without Flex; default: on)",
    )
    parser.add_argument("--batch-size", type=int, default=20, help="events per delivery (default: %(default)s)")
    parser.add_argument(
        "--seed",
        type=int,
        default=0,
        help="seed of the synthetic summaries; another seed, other participants, calls and conferences (default: %(default)s)",
    )
    parser.add_argument("--timeout", type=float, default=10.0, help="seconds to wait for each answer (default: %(default)s)")
    args = parser.parse_args(argv)
    if min(args.count, args.calls, args.conferences) < 0 or args.batch_size < 1:
        parser.error("--count, --calls and --conferences must be 0 or more and --batch-size 1 or more")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    token = os.environ.get(args.token_env, "")
    if not token:
        print(f"python -m exporter.demo: the environment variable {args.token_env} (--token-env) holds no auth token", file=sys.stderr)
        return 2
    sent: Counter[str] = Counter()
    refused = 0
    plan = deliveries(
        args.url,
        token,
        count=args.count,
        calls=args.calls,
        conferences=args.conferences,
        batch_size=args.batch_size,
        seed=args.seed,
        taskrouter=args.taskrouter,
    )
    for delivery in plan:
        try:
            status, text = send(delivery, args.timeout)
        except (urllib.error.URLError, OSError) as error:
            print(f"python -m exporter.demo: {args.url}: {getattr(error, 'reason', error)}", file=sys.stderr)
            return 1
        if 200 <= status < 300:
            sent.update(delivery.types)
        else:
            refused += 1
            print(f"answered {status}: {text}", file=sys.stderr)
    kinds = ", ".join(f"{sent[kind]} {kind}" for kind in sorted(sent))
    print(f"{len(plan) - refused} of {len(plan)} deliveries answered 2xx: {kinds or 'nothing'}")
    return 1 if refused else 0


if __name__ == "__main__":
    sys.exit(main())
