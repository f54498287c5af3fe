"""Start the servers under test as pinned subprocesses on free loopback ports."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from .workload import AUTH_TOKEN

ROOT = Path(__file__).resolve().parent.parent
SERVER_CPU = "0"
CLIENT_CPU = "1"
# The URL the exporter is told Twilio calls: deliveries are signed once for it, whatever port
# each run's exporter listens on (as behind a proxy).
PUBLIC_SINK_URL = "http://exporter.bench.invalid/events"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def pinned(cpu: str, argv: list[str]) -> list[str]:
    """``argv`` under ``taskset -c cpu`` when there is more than one core to separate."""
    if shutil.which("taskset") and (os.cpu_count() or 1) > 1:
        return ["taskset", "-c", cpu, *argv]
    return argv


def wait_ready(url: str, proc: subprocess.Popen[bytes], deadline: float = 30.0) -> None:
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=1) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.05)  # polling until ready, bounded by the deadline
    raise TimeoutError(f"{url} not ready after {deadline}s")


@dataclass
class Server:
    proc: subprocess.Popen[bytes]
    base: str  # webhook listener, e.g. http://127.0.0.1:PORT
    metrics: str | None  # metrics listener base, exporter only

    def cpu_ns(self) -> int:
        """CPU time the server has run so far, all its threads, in ns (/proc/PID/task/*/schedstat).

        Beside throughput because it stays put when the machine is busy: a server that waits
        for the core runs slower but spends the same CPU on each request.
        """
        total = 0
        for task in Path(f"/proc/{self.proc.pid}/task").iterdir():
            try:
                total += int((task / "schedstat").read_text().split()[0])
            except (FileNotFoundError, ProcessLookupError):
                continue  # a thread that ended between the listing and the read
        return total

    def rss_kib(self) -> int:
        """Peak resident set size so far (VmHWM), from /proc."""
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
        return 0


@contextlib.contextmanager
def _run(argv: list[str], ready_url: str, server: Server, env: dict[str, str], cwd: Path = ROOT) -> Iterator[Server]:
    # stderr to a file, not a pipe: nobody reads a pipe during the run, and a full one would stall
    # the server mid-benchmark. The file is shown if the server fails to start.
    errors = tempfile.TemporaryFile()
    proc = subprocess.Popen(pinned(SERVER_CPU, argv), cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=errors)
    server.proc = proc
    try:
        try:
            wait_ready(ready_url, proc)
        except (RuntimeError, TimeoutError) as exc:
            errors.seek(0)
            raise RuntimeError(f"{exc}\n{errors.read().decode(errors='replace')}") from exc
        yield server
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        errors.close()


def exporter(*extra: str, source: Path = ROOT, module: Sequence[str] = ("exporter",)) -> contextlib.AbstractContextManager[Server]:
    """The real exporter (``python -m exporter``), signatures verified with :data:`AUTH_TOKEN`;
    ``source``: the tree to run it from (``--baseline``: another commit's exporter)."""
    webhook_port, metrics_port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("TWILIO_")}
    env.update(TWILIO_AUTH_TOKEN=AUTH_TOKEN, TWILIO_INSIGHTS_EXPORTER_LOG__LEVEL="error")
    argv = [
        sys.executable,
        "-m",
        *module,
        f"--web.listen-address=127.0.0.1:{metrics_port}",
        f"--webhook.listen-address=127.0.0.1:{webhook_port}",
        "--webhook.path=/events",
        f"--webhook.public-url={PUBLIC_SINK_URL}",
        *extra,
    ]
    metrics = f"http://127.0.0.1:{metrics_port}"
    server = Server(None, f"http://127.0.0.1:{webhook_port}", metrics)  # type: ignore[arg-type]
    return _run(argv, metrics + "/-/ready", server, env, cwd=source)


def bare() -> contextlib.AbstractContextManager[Server]:
    """The bare aiohttp handler of :mod:`bench.bare`."""
    port = free_port()
    server = Server(None, f"http://127.0.0.1:{port}", None)  # type: ignore[arg-type]
    return _run([sys.executable, "-m", "bench.bare", str(port)], server.base + "/-/ready", server, dict(os.environ))


def peer() -> contextlib.AbstractContextManager[Server]:
    """The naive peer of :mod:`bench.peer`, verifying signatures with :data:`AUTH_TOKEN` for :data:`PUBLIC_SINK_URL`."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("TWILIO_")}
    env["TWILIO_AUTH_TOKEN"] = AUTH_TOKEN
    server = Server(None, f"http://127.0.0.1:{port}", None)  # type: ignore[arg-type]
    return _run([sys.executable, "-m", "bench.peer", str(port), PUBLIC_SINK_URL], server.base + "/metrics", server, env)
