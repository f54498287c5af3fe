"""The command line in process (exporter/cli.py): --version, --check-config's warnings, refusals in one line.

The subprocess tests (tests/test_cli_errors.py) prove that the real command line prints one line
and no traceback; these call :func:`exporter.cli.main` directly, so each case costs no process.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from exporter import __version__, logs
from exporter.cli import main, warnings
from exporter.config import KinesisSettings, Settings, format_duration, format_size, load_config
from exporter.doors.kinesis.api import resolve_region
from exporter.values import Size
from tests.conftest import TOKEN
from tests.helpers import scrub_environment

PROG = "twilio-insights-exporter: "


@pytest.fixture(autouse=True)
def environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    scrub_environment(monkeypatch)
    for name in ("AWS_REGION", "AWS_DEFAULT_REGION", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    # No profile of the machine's may lend a region.
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    # main() configures the process's logging: put back what pytest had.
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:], root.level = handlers, level


def check(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, list[str]]:
    """``--check-config`` with ``argv``: exit status, stdout, stderr lines."""
    status = main(["--check-config", *argv])
    out, err = capsys.readouterr()
    return status, out, err.splitlines()


def test_version_prints_the_package_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--version"]) == 0
    assert capsys.readouterr().out == f"twilio-insights-exporter {__version__}\n"


def test_check_config_warns_on_stderr_without_an_auth_token(capsys: pytest.CaptureFixture[str]) -> None:
    status, out, err = check(capsys)
    assert status == 0 and json.loads(out)["auth_tokens"] == 0
    assert err == [PROG + "warning: no TWILIO_AUTH_TOKEN set: every webhook delivery is answered 503 (Twilio retries it) and /-/ready is 503"]


def test_check_config_warns_on_stderr_in_the_insecure_mode(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TWILIO_AUTH_TOKEN", TOKEN)
    status, _, err = check(capsys, "--webhook.insecure-skip-signature-verification")
    assert status == 0
    assert len(err) == 1 and err[0].startswith(PROG + "warning: INSECURE: webhook signatures are NOT verified")


def test_check_config_is_silent_with_a_token_or_without_the_webhook(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    assert check(capsys, "--no-webhook.enabled", "--kinesis.stream-name=events", "--kinesis.region=eu-west-1")[2] == []
    monkeypatch.setenv("TWILIO_AUTH_TOKEN", TOKEN)
    assert check(capsys)[2] == []


def test_without_the_webhook_in_kinesis_mode_the_token_warning_says_how_to_turn_it_off() -> None:
    config = load_config(["--kinesis.stream-name=events", "--kinesis.region=eu-west-1"])
    assert warnings(config) == [
        "no TWILIO_AUTH_TOKEN set: every webhook delivery is answered 503 (Twilio retries it); without the webhook, pass --no-webhook.enabled"
    ]


def test_kinesis_without_any_region_is_refused_in_one_line_by_check_config(capsys: pytest.CaptureFixture[str]) -> None:
    status, out, err = check(capsys, "--kinesis.stream-name=events", "--no-webhook.enabled")
    assert (status, out) == (1, "")
    assert err == [
        PROG + "invalid configuration: --kinesis.region: no AWS region: set --kinesis.region, AWS_REGION or AWS_DEFAULT_REGION "
        "(or a region in the AWS profile)"
    ]


def test_the_region_is_the_flag_else_aws_region_else_aws_default_region(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    assert resolve_region(KinesisSettings(stream_name="s")) is None
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-central-1")
    assert resolve_region(KinesisSettings(stream_name="s")) == "eu-central-1"
    monkeypatch.setenv("AWS_REGION", "us-east-1")  # what the README's example sets, and EKS too
    assert resolve_region(KinesisSettings(stream_name="s")) == "us-east-1"
    assert resolve_region(KinesisSettings(stream_name="s", region="ap-south-1")) == "ap-south-1"
    assert check(capsys, "--kinesis.stream-name=events", "--no-webhook.enabled")[0] == 0


def test_label_limits_accept_yaml_flow_syntax_as_the_help_shows(monkeypatch: pytest.MonkeyPatch) -> None:
    config = load_config(["--labels.limits={participant_label: {allowlist: [agent, customer]}}"])
    assert config.settings.labels.allowlists() == {"participant_label": frozenset({"agent", "customer"})}
    monkeypatch.setenv("TWILIO_INSIGHTS_EXPORTER_LABELS__LIMITS", '{"country_code": {"max_values": 3}}')  # JSON is YAML too
    assert load_config([]).settings.labels.caps()["country_code"] == 3


def test_a_bad_value_from_a_variable_names_the_variable(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TWILIO_INSIGHTS_EXPORTER_LABELS__LIMITS", "{participant_label: [")
    status, _, err = check(capsys)
    assert status == 1
    assert err == [
        PROG + "invalid configuration: --labels.limits (from TWILIO_INSIGHTS_EXPORTER_LABELS__LIMITS): not a YAML mapping like "
        "{participant_label: {allowlist: [agent, customer]}}: expected the node content, but found '<stream end>'"
    ]
    # The same value as a flag names the flag alone.
    monkeypatch.delenv("TWILIO_INSIGHTS_EXPORTER_LABELS__LIMITS")
    assert check(capsys, "--labels.limits={participant_label: [")[2][0].startswith(PROG + "invalid configuration: --labels.limits: not a YAML")


def test_an_unknown_key_of_the_yaml_file_is_named_with_file_line_and_column(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    path = tmp_path / "exporter.yaml"
    path.write_text("webhook:\n  path: /hooks\n  pth: /typo\n")
    status, _, err = check(capsys, f"--config.file={path}")
    assert (status, err) == (1, [PROG + f"invalid configuration: {path}:3:3: webhook.pth: not a known setting"])


def test_the_text_log_format_leaves_out_fields_without_a_value(capsys: pytest.CaptureFixture[str]) -> None:
    logs.configure("info", "text")
    logging.getLogger("exporter").info("listening", extra={"public_url": None, "webhook_path": "/events"})
    line = capsys.readouterr().err
    assert "public_url" not in line and "webhook_path=/events" in line


def test_a_bad_value_in_the_yaml_file_is_named_with_file_line_and_column(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    path = tmp_path / "exporter.yaml"
    path.write_text(
        "webhook:\n"
        "  path: events\n"
        "  allowed_networks: [10.0.0.0/8, 10.0.0.1/8]\n"
        "labels:\n"
        "  limits:\n"
        "    country_code: {max_values: 0}\n"
        "dedup: {window: 1h}\n"
    )
    status, _, err = check(capsys, f"--config.file={path}")
    assert (status, err) == (
        1,
        [
            PROG + "invalid configuration: "
            f"{path}:2:9: webhook.path: must start with /; "
            f"{path}:3:34: webhook.allowed_networks item 2: 10.0.0.1/8 has host bits set: did you mean 10.0.0.0/8?; "
            f"{path}:7:17: dedup.window: must be at least 4h, Twilio's retry horizon, or retried deliveries would count twice; "
            f"{path}:6:32: labels.limits.country_code.max_values: Input should be greater than or equal to 1"
        ],
    )


def test_a_bad_value_is_named_where_it_was_given_flag_then_variable_then_file(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    path = tmp_path / "exporter.yaml"
    path.write_text("webhook:\n  max_body_size: 16MB\n")
    hint = "16MB is ambiguous: use 16MiB for 16,777,216 bytes, or write 16000000"
    assert check(capsys, f"--config.file={path}")[2] == [PROG + f"invalid configuration: {path}:2:18: webhook.max_body_size: {hint}"]
    # The variable wins over the file, and the flag over the variable: the refused value is theirs.
    monkeypatch.setenv("TWILIO_INSIGHTS_EXPORTER_WEBHOOK__MAX_BODY_SIZE", "16MB")
    assert check(capsys, f"--config.file={path}")[2] == [
        PROG + f"invalid configuration: --webhook.max-body-size (from TWILIO_INSIGHTS_EXPORTER_WEBHOOK__MAX_BODY_SIZE): {hint}"
    ]
    assert check(capsys, f"--config.file={path}", "--webhook.max-body-size=16MB")[2] == [
        PROG + f"invalid configuration: --webhook.max-body-size: {hint}"
    ]


def test_an_unknown_variable_is_a_usage_error_in_one_line(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TWILIO_INSIGHTS_EXPORTER_WEBHOK__PATH", "/hooks")
    assert check(capsys) == (
        2,
        "",
        [
            PROG + "unknown variable TWILIO_INSIGHTS_EXPORTER_WEBHOK__PATH: did you mean TWILIO_INSIGHTS_EXPORTER_WEBHOOK__PATH "
            "(--webhook.path)? (see --help)"
        ],
    )


def _sizes_and_durations(model: type[BaseModel] = Settings, prefix: tuple[str, ...] = ()) -> dict[tuple[str, ...], type]:
    """Every setting holding a size or a duration, from the settings model."""
    found: dict[tuple[str, ...], type] = {}
    for name, info in model.model_fields.items():
        annotation: Any = info.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            found |= _sizes_and_durations(annotation, (*prefix, name))
        elif isinstance(annotation, type) and issubclass(annotation, Size | timedelta):
            found[(*prefix, name)] = annotation
    return found


def test_check_config_prints_sizes_and_durations_as_a_person_writes_them(capsys: pytest.CaptureFixture[str]) -> None:
    fields = _sizes_and_durations()
    assert {("webhook", "max_body_size"), ("webhook", "memory_budget"), ("dedup", "window"), ("pull", "interval")} <= fields.keys()
    # Written in bytes and minutes, printed in the largest exact unit.
    status, out, _ = check(capsys, "--webhook.max-body-size=1048576", "--dedup.window=1440m")
    assert status == 0
    printed = json.loads(out)["settings"]
    assert (printed["webhook"]["max_body_size"], printed["dedup"]["window"]) == ("1MiB", "1d")
    settings = load_config(["--webhook.max-body-size=1048576", "--dedup.window=1440m"]).settings
    for path, kind in fields.items():
        value: Any = settings
        shown: Any = printed
        for part in path:
            value, shown = getattr(value, part), shown[part]
        assert shown == (format_size(value) if kind is Size else format_duration(value)), path
