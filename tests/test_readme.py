"""The shell blocks of the README and of the pages under docs/, run as written in a copy of the repository (what a fresh clone holds).

Every ``sh`` block is either run or named here with the reason it is not (a Twilio account, a
cluster, a registry, or the test suite itself); a new block that is neither fails the test. A
block followed by a ``text`` block must print exactly that. Blocks run in one copy, as a reader
would type them: the README's first (its first block makes ``.venv``), then each page of docs/
in name order; the server blocks run until ready and are then stopped.
"""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from exporter.webconfig import WebConfig
from tests.exporter_process import free_port
from tests.helpers import clean_environ, until_blocking

ROOT = Path(__file__).resolve().parent.parent
# The README, then every page of docs/, each with its text.
PAGES = {path.relative_to(ROOT).as_posix(): path.read_text() for path in [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]}

# How each block is used, by its first line: "output" runs it to the end (and compares the text
# block after it), "server" runs it until the exporter is ready, anything else is the reason it is
# not run here.
BLOCKS = {
    "TWILIO_AUTH_TOKEN=your_auth_token make run": "server",
    "make test": "the test suite itself",
    'make run ARGS="--webhook.insecure-skip-signature-verification" 2>exporter.log &': "output",
    "twilio api:events:v1:sinks:create --description": "needs a Twilio account",
    "twilio-insights-exporter twilio subscribe --sink-url": "needs a Twilio account; tests/test_subscribe.py runs it against a fake of the Events API",
    "TWILIO_ACCOUNT_SID=ACxxxxxxxx TWILIO_AUTH_TOKEN=your_auth_token \\": "server",
    "make generate": "output",
    'make test ARGS="tests/test_dashboards.py': "the test suite runs these tests itself",
    "make release REGISTRY=registry.example.com/monitoring": "needs a registry to push to; tests/test_release.py releases to a local one",
    "kubectl create namespace monitoring": "needs a Kubernetes cluster; tests/test_helm_*.py render and lint the chart",
    "make bench": "the benchmarks run for minutes: make bench",
    "make mutants": "mutation testing runs for hours: make mutants",
    "twilio-insights-exporter --pull.enabled --pull.lookback": "needs a Twilio account; tests/test_pull.py runs the poller against a fake of the API",
    'AWS_REGION=us-east-1 make run ARGS="--kinesis.stream-name': "needs an AWS Kinesis stream; tests/test_kinesis.py runs the consumer against kinesalite",
}
DEFAULT_PORTS = {"web": 9802, "webhook": 8080}


@dataclass
class Block:
    first_line: str
    code: str
    expected: str | None


def shell_blocks(text: str) -> list[Block]:
    """The ``sh`` blocks, each with the ``text`` block right after it (its output), if any."""
    blocks = []
    for match in re.finditer(r"^( *)```sh\n(.*?)^\1```\n", text, re.M | re.S):
        indent = match.group(1)
        code = "\n".join(line.removeprefix(indent) for line in match.group(2).splitlines()) + "\n"
        after = text[match.end() :]
        output = re.match(r"(?:\n|[^`\n][^\n]*\n)*?```text\n(.*?)^```\n", after, re.S | re.M)
        expected = output.group(1) if output and "```sh" not in after[: output.start(1)] else None
        blocks.append(Block(code.splitlines()[0].strip(), code, expected))
    return blocks


def use_of(block: Block) -> str:
    """What BLOCKS says of a block, found by the longest start of its first line; fails for an unknown block."""
    starts = [start for start in BLOCKS if block.first_line.startswith(start)]
    assert starts, f"classify this shell block in tests/test_readme.py:BLOCKS: {block.first_line!r}"
    return BLOCKS[max(starts, key=len)]


def all_blocks() -> list[Block]:
    """Every page's shell blocks, pages in the order the blocks are run."""
    return [block for text in PAGES.values() for block in shell_blocks(text)]


def test_every_shell_block_is_run_or_says_why_not():
    blocks = all_blocks()
    for block in blocks:
        use_of(block)
    gone = [start for start in BLOCKS if not any(block.first_line.startswith(start) for block in blocks)]
    assert gone == [], "blocks named in BLOCKS are gone from the README and docs/"


@pytest.mark.parametrize("page", list(PAGES))
def test_every_test_command_of_a_page_installs_what_the_tests_need_and_names_files_that_exist(page: str):
    """`.venv/bin/python -m pytest` after `make run` fails (no pytest, no kinesalite): a test command
    of a page goes through `make test`, or says that `make test-deps` comes first."""
    text = PAGES[page]
    commands = [line for block in shell_blocks(text) for line in block.code.splitlines() if "pytest" in line or line.startswith("make test")]
    for command in commands:
        assert command.startswith("make test"), f"{page}: {command!r}: run the tests through make test (it installs their tools)"
        for name in re.findall(r"tests/\S+?\.py", command):
            assert (ROOT / name).is_file(), f"{page}: {command!r}: {name} does not exist"
    for line in [line for line in text.splitlines() if ".venv/bin/python -m pytest" in line]:
        context = text[max(0, text.index(line) - 400) : text.index(line)]
        assert "make test-deps" in context, f"{page}: a bare pytest command must say that make test-deps comes first"


def test_the_readme_shows_how_to_run_the_tests():
    assert any(block.first_line == "make test" for block in shell_blocks(PAGES["README.md"]))


def fresh_copy(destination: Path) -> Path:
    """The files a clone of this checkout holds (tracked, or new and not ignored), symlinks kept."""
    listed = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"], cwd=ROOT, capture_output=True, check=True)
    for name in listed.stdout.decode().split("\0"):
        source = ROOT / name
        if not name or not (source.is_file() or source.is_symlink()):
            continue
        target = destination / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, target, follow_symlinks=False)
    return destination


def port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("0.0.0.0", port))
        except OSError:
            return False
        return True


def ready(metrics_port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://localhost:{metrics_port}/-/ready", timeout=1) as response:
            return response.status == 200
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return False


def stop_group(proc: subprocess.Popen[str], ports: dict[str, int]) -> None:
    """The block's whole process group: make, and the exporter make started."""
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        proc.wait(15)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    # The exporter may outlive make by a moment: wait until the ports are released.
    with contextlib.suppress(TimeoutError):  # a port still held is the next block's failure to report
        until_blocking(lambda: all(port_free(port) for port in ports.values()), "the ports released", seconds=15, step=0.1)


def test_the_shell_blocks_work_as_written_in_a_fresh_copy(tmp_path: Path):
    copy = fresh_copy(tmp_path / "clone")
    # As a reader's shell has it: no exporter settings, no venv, and not inside `make test` (a nested
    # make inherits MAKELEVEL and MAKEFLAGS and then prints "Entering directory" lines).
    env = {k: v for k, v in clean_environ().items() if not k.startswith(("VIRTUAL_ENV", "PYTEST", "MAKE", "MFLAGS")) and k != "ARGS"}
    # The blocks use the default ports. On a machine where something else holds one (another
    # checkout's exporter), the only change to the blocks: other ports, in the curl URLs and in
    # the exporter's listen-address variables.
    ports = dict(DEFAULT_PORTS)
    if not all(port_free(port) for port in ports.values()):
        ports = {name: free_port() for name in ports}
        env |= {f"TWILIO_INSIGHTS_EXPORTER_{name.upper()}__LISTEN_ADDRESS": f":{port}" for name, port in ports.items()}
    for block in all_blocks():
        use = use_of(block)
        if use not in ("output", "server"):
            continue
        code = block.code
        for name, port in ports.items():
            code = code.replace(f"localhost:{DEFAULT_PORTS[name]}", f"localhost:{port}")
        proc = subprocess.Popen(
            ["bash", "-e", "-c", code], cwd=copy, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
        )
        try:
            if use == "server":
                # The first block installs into .venv first: minutes on a cold pip cache.
                def served() -> bool:
                    assert proc.poll() is None, f"{block.first_line!r} exited {proc.returncode}: {proc.stderr.read()[-3000:] if proc.stderr else ''}"
                    return ready(ports["web"])

                until_blocking(served, f"{block.first_line!r} ready", seconds=600, step=0.5)
            else:
                out, err = proc.communicate(timeout=900)
                assert proc.returncode == 0, f"{block.first_line!r} exited {proc.returncode}:\n{err[-3000:]}"
                if block.expected is not None:
                    assert out == block.expected, f"{block.first_line!r} printed:\n{out}"
        finally:
            stop_group(proc, ports)
            for stream in (proc.stdout, proc.stderr):
                if stream:
                    stream.close()


@pytest.mark.parametrize("text", ["```sh\nmake x\n```\n\nIt prints:\n\n```text\nhello\n```\n", "   ```sh\n   a\n   b\n   ```\n"])
def test_blocks_are_read_with_their_expected_output(text: str):
    (block,) = shell_blocks(text)
    assert block.first_line in ("make x", "a")
    assert block.expected == ("hello\n" if block.first_line == "make x" else None)


def test_the_documented_web_config_example_is_one_the_exporter_accepts():
    (section,) = [text.split("## Protect /metrics", 1)[1] for text in PAGES.values() if "## Protect /metrics" in text]
    example = yaml.safe_load(section.split("```yaml\n", 1)[1].split("```", 1)[0])
    config = WebConfig.model_validate(example)
    assert config.tls_server_config is not None and config.tls_server_config.client_auth_type == "RequireAndVerifyClientCert"
    assert set(config.basic_auth_users) == {"prometheus"}


def test_the_documented_command_line_examples_print_what_they_show():
    examples = [
        found for text in PAGES.values() for found in re.findall(r"^```text\n\$ twilio-insights-exporter (.*?)\n(.*?)^```\n", text, re.M | re.S)
    ]
    assert examples
    for arguments, shown in examples:
        env = clean_environ()
        result = subprocess.run(
            [sys.executable, "-m", "exporter", *shlex.split(arguments)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
        )
        assert result.stdout + result.stderr == shown, arguments
