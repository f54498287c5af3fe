"""Start the real exporter as a subprocess on free loopback ports, for end-to-end tests; run its
command line once with a sentinel in every secret variable; read what a running one answers."""

from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from tests.helpers import clean_environ, secret_variables, until_blocking

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(url: str, deadline_seconds: float = 20.0, proc: subprocess.Popen | None = None) -> None:
    """Poll ``url`` until it answers 200, the process dies, or the deadline passes."""

    def answers() -> bool:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"exporter exited with {proc.returncode}")
        with urllib.request.urlopen(url, timeout=1) as response:
            return response.status == 200

    until_blocking(
        answers, f"{url} answering 200", seconds=deadline_seconds, step=0.05, ignoring=(urllib.error.URLError, ConnectionError, TimeoutError)
    )


def stop(proc: subprocess.Popen) -> None:
    """SIGTERM, then SIGKILL if the process is still there after 10 s."""
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@dataclass
class ExporterProcess:
    proc: subprocess.Popen
    metrics_url: str  # base, e.g. http://127.0.0.1:PORT
    webhook_url: str  # full sink URL, e.g. http://127.0.0.1:PORT/events
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text()


@contextlib.contextmanager
def start_exporter(*args: str, env: dict[str, str] | None = None, tmp_path: Path, webhook_path: str = "/events") -> Iterator[ExporterProcess]:
    """Run ``python -m exporter`` with both listeners on free loopback ports; wait for ready.

    ``args`` come after the listen-address flags, so a test may override them.
    """
    metrics_port, webhook_port = free_port(), free_port()
    while webhook_port == metrics_port:  # each socket closed before the next bind: the same port may come twice
        webhook_port = free_port()
    log_path = tmp_path / f"exporter-{metrics_port}.log"
    full_env = clean_environ() | (env or {})
    with open(log_path, "w") as log:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "exporter",
                f"--web.listen-address=127.0.0.1:{metrics_port}",
                f"--webhook.listen-address=127.0.0.1:{webhook_port}",
                f"--webhook.path={webhook_path}",
                *args,
            ],
            cwd=ROOT,
            env=full_env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        metrics_url = f"http://127.0.0.1:{metrics_port}"
        wait_for(metrics_url + "/-/ready", proc=proc)
        yield ExporterProcess(proc, metrics_url, f"http://127.0.0.1:{webhook_port}{webhook_path}", log_path)
    finally:
        stop(proc)


def get(url: str) -> tuple[int, dict[str, str], bytes]:
    """Status, headers and body of a GET (an error status is an answer, not an exception)."""
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read()


def metric(exporter: ExporterProcess, name: str) -> float:
    """The unlabelled sample ``name`` of the exporter's /metrics; fails if it is not exposed."""
    _, _, text = get(exporter.metrics_url + "/metrics")
    for family in text_string_to_metric_families(text.decode()):
        for sample in family.samples:
            if sample.name == name and not sample.labels:
                return sample.value
    raise AssertionError(f"{name} not exposed")


# A sentinel for every secret the exporter reads, derived from the model (never typed out).
SENTINELS = {name: f"SENTINEL-{name}-value" for name in secret_variables()}


def run(*args: str, env: dict[str, str | None] | None = None, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    """The exporter's command line with the sentinels (``env`` may drop one with None); listeners on free ports."""
    full = clean_environ() | SENTINELS
    for name, value in (env or {}).items():
        if value is None:
            full.pop(name, None)
        else:
            full[name] = value
    ports = [f"--web.listen-address=127.0.0.1:{free_port()}", f"--webhook.listen-address=127.0.0.1:{free_port()}"]
    return subprocess.run([sys.executable, "-m", "exporter", *ports, *args], cwd=ROOT, env=full, capture_output=True, text=True, timeout=timeout)


def assert_no_secret(*outputs: str) -> None:
    """No sentinel of :data:`SENTINELS` in any of ``outputs``."""
    for output in outputs:
        for name, sentinel in SENTINELS.items():
            assert sentinel not in output, f"{name}'s value printed"
