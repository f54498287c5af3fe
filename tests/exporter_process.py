"""Start the real exporter as a subprocess on free loopback ports, for end-to-end tests."""

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

from tests.helpers import clean_environ, until_blocking

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
