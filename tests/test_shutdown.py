"""Graceful shutdown of the real exporter process: SIGTERM drops readiness, refuses new deliveries
with 503, lets those in flight finish, flushes the state and exits 0 well within the pod's grace period."""

from __future__ import annotations

import json
import random
import signal
import socket
import time
import urllib.error
import urllib.request
from urllib.parse import urlsplit

from exporter.synthetic import batch_body, cloud_event, generate_summary, sign
from tests.exporter_process import ExporterProcess, get, metric, start_exporter
from tests.helm_chart import render
from tests.helpers import path_and_query, until_blocking

TOKEN = "shutdown-test-token"
ENV = {"TWILIO_AUTH_TOKEN": TOKEN}
BATCH = 4


def delivery_body(seed: int) -> bytes:
    rng = random.Random(seed)
    return batch_body([cloud_event(generate_summary(rng)) for _ in range(BATCH)])


def post(exporter: ExporterProcess, body: bytes) -> tuple[int, dict[str, str], bytes]:
    signed_url, signature = sign(exporter.webhook_url, body, TOKEN)
    request = urllib.request.Request(signed_url, data=body, headers={"X-Twilio-Signature": signature, "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read()


def poll(condition, what: str, deadline: float = 10.0) -> None:
    until_blocking(condition, what, seconds=deadline)


class HeldDelivery:
    """A signed delivery whose body is sent in two parts, on a socket of its own."""

    def __init__(self, exporter: ExporterProcess, body: bytes) -> None:
        signed_url, signature = sign(exporter.webhook_url, body, TOKEN)
        parts = urlsplit(signed_url)
        self.body = body
        self.sock = socket.create_connection((parts.hostname, parts.port), timeout=10)
        head = (
            f"POST {path_and_query(signed_url)} HTTP/1.1\r\nHost: {parts.netloc}\r\nContent-Type: application/json\r\n"
            f"X-Twilio-Signature: {signature}\r\nContent-Length: {len(body)}\r\n\r\n"
        )
        self.sock.sendall(head.encode() + body[:100])

    def finish(self) -> tuple[int, bytes]:
        self.sock.sendall(self.body[100:])
        received = b""
        while b"\r\n\r\n" not in received or len(received.partition(b"\r\n\r\n")[2]) < self._length(received):
            chunk = self.sock.recv(65536)
            if not chunk:
                break
            received += chunk
        self.sock.close()
        head, _, body = received.partition(b"\r\n\r\n")
        return int(head.split()[1]), body

    @staticmethod
    def _length(received: bytes) -> int:
        for line in received.partition(b"\r\n\r\n")[0].split(b"\r\n"):
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                return int(value)
        return 0


def test_sigterm_drains_in_flight_deliveries_refuses_new_ones_flushes_state_and_exits_0(tmp_path) -> None:
    state = tmp_path / "state.sqlite"
    args = (f"--state.path={state}", "--webhook.read-timeout=20s")
    with start_exporter(*args, env=ENV, tmp_path=tmp_path) as exporter:
        held = HeldDelivery(exporter, delivery_body(1))
        poll(lambda: metric(exporter, "twilio_insights_exporter_webhook_memory_reserved_bytes") > 0, "the delivery being read")

        signalled = time.monotonic()
        exporter.proc.send_signal(signal.SIGTERM)

        poll(lambda: get(exporter.metrics_url + "/-/ready")[0] == 503, "readiness dropping")
        assert get(exporter.metrics_url + "/-/healthy")[0] == 200
        status, headers, body = post(exporter, delivery_body(2))
        assert (status, headers["Retry-After"], json.loads(body)) == (503, "5", {"error": "shutting down, retry later"})
        assert headers["Connection"] == "close"
        assert exporter.proc.poll() is None  # still waiting for the delivery in flight

        status, body = held.finish()
        assert (status, json.loads(body)) == (200, {"recorded": BATCH})
        assert exporter.proc.wait(timeout=20) == 0
        took = time.monotonic() - signalled
        log = exporter.log()

    grace = render().one("Deployment")["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    assert took < grace / 3, f"shutdown took {took:.1f}s"
    assert '"msg": "shutting down"' in log and '"msg": "stopped"' in log
    assert "Traceback" not in log

    # The state was flushed: after a restart on the same file, the acknowledged delivery is a
    # duplicate, and the one refused during the shutdown (Twilio retries it) is recorded.
    with start_exporter(*args, env=ENV, tmp_path=tmp_path) as exporter:
        assert post(exporter, delivery_body(1))[::2] == (200, json.dumps({"duplicate": BATCH}).encode())
        assert post(exporter, delivery_body(2))[::2] == (200, json.dumps({"recorded": BATCH}).encode())


def test_sigterm_with_nothing_in_flight_exits_0_at_once(tmp_path) -> None:
    with start_exporter(env=ENV, tmp_path=tmp_path) as exporter:
        assert post(exporter, delivery_body(3))[0] == 200
        signalled = time.monotonic()
        exporter.proc.send_signal(signal.SIGTERM)
        assert exporter.proc.wait(timeout=20) == 0
        took = time.monotonic() - signalled
    assert took < 3, f"shutdown took {took:.1f}s"


def test_a_delivery_outliving_the_shutdown_timeout_is_abandoned_unanswered_and_the_exporter_still_exits_0(tmp_path) -> None:
    with start_exporter("--webhook.read-timeout=30s", "--webhook.shutdown-timeout=1s", env=ENV, tmp_path=tmp_path) as exporter:
        held = HeldDelivery(exporter, delivery_body(4))
        poll(lambda: metric(exporter, "twilio_insights_exporter_webhook_memory_reserved_bytes") > 0, "the delivery being read")
        signalled = time.monotonic()
        exporter.proc.send_signal(signal.SIGTERM)
        assert exporter.proc.wait(timeout=20) == 0
        took = time.monotonic() - signalled
        log = exporter.log()
        # Never acknowledged, so Twilio retries it: the connection closes without an answer.
        answer = held.sock.recv(65536)
        held.sock.close()
    assert answer == b""
    assert 1 <= took < 6, f"shutdown took {took:.1f}s"
    assert "deliveries still in flight after --webhook.shutdown-timeout, abandoned" in log
