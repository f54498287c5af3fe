"""Configuration and start-up errors through the real command line (a subprocess each).

Every error is one line on stderr naming the setting (or file:line:column) and what is wrong,
exit 1 (2 for a flag or variable the exporter does not know), no traceback, no link;
--check-config refuses everything a start refuses. Every secret variable holds a sentinel in
every case, and no output ever contains one.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from exporter.synthetic import sign
from tests.exporter_process import ROOT, SENTINELS, assert_no_secret, run, start_exporter

PROG = "twilio-insights-exporter: "


def assert_one_line_error(result: subprocess.CompletedProcess[str], expected: str, status: int = 1) -> None:
    assert result.returncode == status, (result.returncode, result.stderr)
    assert_no_secret(result.stdout, result.stderr)
    # Log lines written before the failure (a start logs as it goes) are JSON records, none with a traceback.
    lines = [line for line in result.stderr.splitlines() if not (line.startswith("{") and '"exc"' not in json.loads(line))]
    assert len(lines) == 1, result.stderr
    (line,) = lines
    assert line.startswith(PROG), line
    assert expected in line, line
    for noise in ("Traceback", "pydantic.dev", "input_value", "For further information", "type=value_error"):
        assert noise not in line, line


def bad_yaml(tmp_path: Path) -> list[str]:
    path = tmp_path / "bad.yml"
    path.write_text("labels:\n  account_sid: [true\n")
    return [f"--config.file={path}"]


def yaml_list(tmp_path: Path) -> list[str]:
    path = tmp_path / "list.yml"
    path.write_text("- web\n- webhook\n")
    return [f"--config.file={path}"]


def yaml_typo(tmp_path: Path) -> list[str]:
    path = tmp_path / "typo.yml"
    path.write_text("webhok: {path: /x}\n")
    return [f"--config.file={path}"]


def yaml_duplicate(tmp_path: Path) -> list[str]:
    path = tmp_path / "twice.yml"
    path.write_text("webhook:\n  path: /first\n  path: /second\n")
    return [f"--config.file={path}"]


def yaml_bad_value(tmp_path: Path) -> list[str]:
    path = tmp_path / "value.yml"
    path.write_text("webhook:\n  trusted_proxies: [10.1.2.3/16]\n")
    return [f"--config.file={path}"]


def bad_web_config(tmp_path: Path) -> list[str]:
    path = tmp_path / "web.yml"
    path.write_text("basic_auth_users: {prometheus: plain-text-password}\n")
    return [f"--web.config.file={path}"]


# (case, arguments (or a function of tmp_path), environment changes, what the one line says)
CASES = [
    (
        "basic-auth password without user",
        [],
        {"TWILIO_INSIGHTS_EXPORTER_BASIC_AUTH_USERNAME": None},
        "set both TWILIO_INSIGHTS_EXPORTER_BASIC_AUTH_USERNAME",
    ),
    ("api secret without key", [], {"TWILIO_API_KEY": None}, "set both TWILIO_API_KEY and TWILIO_API_SECRET"),
    (
        "pull without credentials",
        ["--pull.enabled"],
        {"TWILIO_API_KEY": None, "TWILIO_API_SECRET": None, "TWILIO_ACCOUNT_SID": None},
        "--pull.enabled needs",
    ),
    ("malformed yaml", bad_yaml, {}, "bad.yml:3:1: not valid YAML"),
    ("yaml list at the top", yaml_list, {}, "the top level must be a mapping"),
    ("yaml typo", yaml_typo, {}, "typo.yml:1:1: webhok: not a known setting"),
    ("missing yaml", ["--config.file=/nonexistent/x.yml"], {}, "--config.file /nonexistent/x.yml: no such file"),
    ("yaml key twice", yaml_duplicate, {}, "twice.yml:3:3: not valid YAML: duplicate key 'path' (first at line 2, column 3)"),
    (
        "yaml value with host bits",
        yaml_bad_value,
        {},
        "value.yml:2:21: webhook.trusted_proxies item 1: 10.1.2.3/16 has host bits set: did you mean 10.1.0.0/16?",
    ),
    (
        "size in SI units",
        ["--webhook.max-body-size=16MB"],
        {},
        "--webhook.max-body-size: 16MB is ambiguous: use 16MiB for 16,777,216 bytes, or write 16000000",
    ),
    ("listen address without port", ["--web.listen-address=notaport"], {}, "--web.listen-address: must look like host:port"),
    ("webhook port out of range", ["--webhook.listen-address=:70000"], {}, "--webhook.listen-address: must look like host:port"),
    ("public url not a url", ["--webhook.public-url=not-a-url"], {}, "--webhook.public-url: must be the absolute https://"),
    ("public url not http", ["--webhook.public-url=ftp://hooks.example.com/events"], {}, "--webhook.public-url: must be the absolute https://"),
    (
        "public url with credentials",
        ["--webhook.public-url=https://user:pw@hooks.example.com/events"],
        {},
        "--webhook.public-url: must not carry credentials",
    ),
    ("short dedup window", ["--dedup.window=1m"], {}, "--dedup.window: must be at least 4h"),
    (
        "bad size from the environment",
        [],
        {"TWILIO_INSIGHTS_EXPORTER_WEBHOOK__MAX_BODY_SIZE": "lots"},
        "--webhook.max-body-size (from TWILIO_INSIGHTS_EXPORTER_WEBHOOK__MAX_BODY_SIZE): not a size",
    ),
    ("bad web config", bad_web_config, {}, "the password of user 'prometheus' is not a bcrypt hash"),
    ("missing web config", ["--web.config.file=/nonexistent/web.yml"], {}, "--web.config.file /nonexistent/web.yml: No such file"),
    ("state directory missing", ["--state.path=/nonexistent/dir/state.db"], {}, "--state.path=/nonexistent/dir/state.db: the directory"),
    (
        "kinesis without a region",
        ["--kinesis.stream-name=twilio-events"],
        {"AWS_REGION": None, "AWS_DEFAULT_REGION": None, "AWS_PROFILE": None, "AWS_CONFIG_FILE": "/nonexistent"},
        "--kinesis.region: no AWS region: set --kinesis.region, AWS_REGION or AWS_DEFAULT_REGION",
    ),
    (
        "label limits from the environment",
        [],
        {"TWILIO_INSIGHTS_EXPORTER_LABELS__LIMITS": "{participant_label: ["},
        "--labels.limits (from TWILIO_INSIGHTS_EXPORTER_LABELS__LIMITS): not a YAML mapping",
    ),
]


@pytest.mark.parametrize("check", [False, True], ids=["start", "check-config"])
@pytest.mark.parametrize(("case", "args", "env", "expected"), CASES, ids=[c[0] for c in CASES])
def test_a_configuration_error_is_one_line_without_a_secret_and_check_config_refuses_it_too(
    tmp_path: Path, check: bool, case: str, args: object, env: dict[str, str | None], expected: str
) -> None:
    arguments = args(tmp_path) if callable(args) else list(args)  # type: ignore[call-overload]
    result = run(*arguments, *(["--check-config"] if check else []), env=env)
    assert_one_line_error(result, expected)


# Usage errors, exit 2: (case, arguments, environment changes, what the one line says)
USAGE_CASES = [
    ("unknown flag", ["--webhook.pth=/x"], {}, "unrecognized arguments: --webhook.pth=/x (see --help)"),
    (
        "unknown variable",
        [],
        {"TWILIO_INSIGHTS_EXPORTER_WEBHOK__PATH": "/x"},
        "unknown variable TWILIO_INSIGHTS_EXPORTER_WEBHOK__PATH: did you mean TWILIO_INSIGHTS_EXPORTER_WEBHOOK__PATH (--webhook.path)? (see --help)",
    ),
    (
        "misspelt secret variable",  # holding a secret, which is not printed
        [],
        {"TWILIO_INSIGHTS_EXPORTER_BASIC_AUTH_PASSWROD": SENTINELS["TWILIO_INSIGHTS_EXPORTER_BASIC_AUTH_PASSWORD"]},
        "unknown variable TWILIO_INSIGHTS_EXPORTER_BASIC_AUTH_PASSWROD: did you mean TWILIO_INSIGHTS_EXPORTER_BASIC_AUTH_PASSWORD? (see --help)",
    ),
]


@pytest.mark.parametrize("check", [False, True], ids=["start", "check-config"])
@pytest.mark.parametrize(("case", "args", "env", "expected"), USAGE_CASES, ids=[c[0] for c in USAGE_CASES])
def test_a_flag_or_variable_the_exporter_does_not_know_is_one_line_and_exit_2(
    check: bool, case: str, args: list[str], env: dict[str, str | None], expected: str
) -> None:
    result = run(*args, *(["--check-config"] if check else []), env=env)
    assert_one_line_error(result, expected, status=2)


def test_a_listen_address_in_use_is_one_line() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run(f"--web.listen-address=127.0.0.1:{port}")
    assert_one_line_error(result, f"--web.listen-address=127.0.0.1:{port}: cannot listen")


def test_a_state_file_that_is_not_a_database_is_one_line(tmp_path: Path) -> None:
    state = tmp_path / "state.db"
    state.write_text("not a database")
    assert_one_line_error(run(f"--state.path={state}"), f"--state.path={state}: cannot use it: file is not a database")


def test_check_config_prints_no_secret_and_exits_0() -> None:
    result = run("--check-config")
    assert result.returncode == 0, result.stderr
    assert_no_secret(result.stdout, result.stderr)
    assert '"auth_tokens": 2' in result.stdout


def test_a_running_exporter_logs_no_secret(tmp_path: Path) -> None:
    secrets = {**SENTINELS, "TWILIO_INSIGHTS_EXPORTER_BASIC_AUTH_USERNAME": "hook-user"}
    with start_exporter("--log.level=debug", env=secrets, tmp_path=tmp_path) as exporter:
        import urllib.request

        body = (ROOT / "tests/fixtures/reference_event.json").read_bytes()
        # A delivery signed with the wrong token, one without credentials, and a good one.
        for token, auth in (("wrong-token", True), (SENTINELS["TWILIO_AUTH_TOKEN"], False), (SENTINELS["TWILIO_AUTH_TOKEN"], True)):
            url, signature = sign(exporter.webhook_url, body, token)
            headers = {"Content-Type": "application/json", "X-Twilio-Signature": signature}
            if auth:
                import base64

                credentials = f"hook-user:{SENTINELS['TWILIO_INSIGHTS_EXPORTER_BASIC_AUTH_PASSWORD']}"
                headers["Authorization"] = "Basic " + base64.b64encode(credentials.encode()).decode()
            try:
                urllib.request.urlopen(urllib.request.Request(url, data=body, headers=headers), timeout=10).close()
            except urllib.error.HTTPError as exc:
                exc.close()
        log = exporter.log()
    assert '"msg": "listening"' in log
    assert_no_secret(log)


def test_help_shows_real_defaults_and_types() -> None:
    result = subprocess.run([sys.executable, "-m", "exporter", "--help"], cwd=ROOT, capture_output=True, text=True, check=True)
    text = " ".join(result.stdout.split())
    assert "(default: None)" not in text
    assert "default factory" not in text
    assert "--webhook.max-body-size size" in text and "(default: 16MiB)" in text
    assert "--dedup.window duration" in text and "(default: 1d)" in text


def test_without_the_webhook_nothing_listens_on_its_address_and_no_token_is_asked_for(tmp_path: Path) -> None:
    with start_exporter("--no-webhook.enabled", tmp_path=tmp_path) as exporter:  # no TWILIO_AUTH_TOKEN: ready all the same
        port = int(exporter.webhook_url.split(":")[2].split("/")[0])
        with pytest.raises(ConnectionRefusedError), socket.create_connection(("127.0.0.1", port), timeout=5):
            pass
        assert "TWILIO_AUTH_TOKEN" not in exporter.log()
