"""Configuration from flags, environment and YAML; the command line the chart and scripts rely on."""

from __future__ import annotations

import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest
from pydantic import ValidationError

from exporter.__main__ import main
from exporter.config import load_config


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for name in list(os.environ):
        if name.startswith("TWILIO_"):
            monkeypatch.delenv(name)


def test_defaults_listen_on_separate_ports() -> None:
    s = load_config([]).settings

    assert (s.web.listen_address, s.webhook.listen_address, s.webhook.path) == (":9802", ":8080", "/events")
    assert s.dedup.window == timedelta(hours=24)
    assert s.webhook.insecure_skip_signature_verification is False


def test_flags_in_prometheus_style_with_durations_sizes_and_bare_booleans() -> None:
    s = load_config(
        [
            "--web.listen-address=127.0.0.1:9999",
            "--webhook.listen-address",
            "0.0.0.0:8081",
            "--webhook.path=/twilio",
            "--webhook.public-url=https://hooks.example.com/twilio",
            "--webhook.trust-forwarded-headers",
            "--webhook.max-body-size=2MiB",
            "--dedup.window=1h30m",
            "--dedup.window=6h",
        ]
    ).settings

    assert s.web.listen_address == "127.0.0.1:9999"
    assert s.webhook.listen_address == "0.0.0.0:8081"
    assert s.webhook.path == "/twilio"
    assert s.webhook.public_url == "https://hooks.example.com/twilio"
    assert s.webhook.trust_forwarded_headers is True
    assert s.webhook.max_body_size == 2 * 1024 * 1024
    assert s.dedup.window == timedelta(hours=6)


def test_no_prefix_turns_a_boolean_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TWILIO_INSIGHTS_EXPORTER_WEBHOOK__TRUST_FORWARDED_HEADERS", "true")

    assert load_config([]).settings.webhook.trust_forwarded_headers is True
    assert load_config(["--no-webhook.trust-forwarded-headers"]).settings.webhook.trust_forwarded_headers is False


def test_every_flag_has_an_environment_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TWILIO_INSIGHTS_EXPORTER_WEB__LISTEN_ADDRESS", ":1111")
    monkeypatch.setenv("TWILIO_INSIGHTS_EXPORTER_WEBHOOK__PUBLIC_URL", "https://x.example/e")
    monkeypatch.setenv("TWILIO_INSIGHTS_EXPORTER_DEDUP__WINDOW", "5h")
    monkeypatch.setenv("TWILIO_INSIGHTS_EXPORTER_LOG__FORMAT", "text")

    s = load_config([]).settings

    assert (s.web.listen_address, s.webhook.public_url, s.dedup.window, s.log.format) == (":1111", "https://x.example/e", timedelta(hours=5), "text")


def test_precedence_is_flag_then_environment_then_yaml(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text(
        "web: {listen_address: ':7000'}\n"
        "webhook: {path: /from-yaml, listen_address: ':7001'}\n"
        "labels:\n  jitter_buffer_size: true\n  limits: {country_code: {max_values: 3}}\n"
        "buckets:\n  mos: [1, 2, 3, 3.5, 4, 4.5]\n"
    )
    monkeypatch.setenv("TWILIO_INSIGHTS_EXPORTER_WEBHOOK__LISTEN_ADDRESS", ":7002")

    s = load_config([f"--config.file={config}", "--web.listen-address=:7003"]).settings

    assert s.web.listen_address == ":7003"
    assert s.webhook.listen_address == ":7002"
    assert s.webhook.path == "/from-yaml"
    assert s.labels.jitter_buffer_size is True
    assert s.labels.max_values("country_code") == 3
    assert s.labels.max_values("participant_label") == 50
    assert s.buckets.resolved()["mos"] == (1, 2, 3, 3.5, 4, 4.5)


def test_auth_tokens_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TWILIO_AUTH_TOKEN", "tok-one-0123")
    monkeypatch.setenv("TWILIO_AUTH_TOKEN_SECONDARY", "tok-two-4567")

    config = load_config([])

    assert config.secrets.auth_tokens() == ["tok-one-0123", "tok-two-4567"]
    assert "tok-one" not in repr(config) and "tok-two" not in repr(config)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--dedup.window=1h"], "at least 4h"),
        (["--dedup.window=soon"], "not a duration"),
        (["--webhook.max-body-size=big"], "not a size"),
        (["--webhook.path=events"], "must start with /"),
    ],
)
def test_bad_values_are_refused_with_a_reason(argv: list[str], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        load_config(argv)


def test_bucket_override_must_keep_the_threshold_edges(tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text("buckets:\n  latency: [0.05, 0.1, 0.2]\n")

    with pytest.raises(ValidationError, match=r"keep the edges \[0.15\]"):
        load_config([f"--config.file={config}"])


def test_unknown_yaml_keys_and_labels_are_refused(tmp_path: Path) -> None:
    typo = tmp_path / "typo.yaml"
    typo.write_text("webhok: {path: /x}\n")
    label = tmp_path / "label.yaml"
    label.write_text("labels: {limits: {caller_name: {max_values: 3}}}\n")

    with pytest.raises(ValidationError, match="webhok"):
        load_config([f"--config.file={typo}"])
    with pytest.raises(ValidationError, match="caller_name"):
        load_config([f"--config.file={label}"])


def test_missing_config_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="no such file"):
        load_config([f"--config.file={tmp_path / 'absent.yaml'}"])


def test_basic_credentials_come_in_pairs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TWILIO_INSIGHTS_EXPORTER_BASIC_AUTH_USERNAME", "twilio")

    with pytest.raises(ValidationError, match="set both"):
        load_config([])


def test_check_config_prints_the_settings_without_secrets_and_exits_0(monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    monkeypatch.setenv("TWILIO_AUTH_TOKEN", "very-secret-token")

    assert main(["--check-config", "--webhook.path=/hooks"]) == 0
    out = capsys.readouterr().out
    assert '"path": "/hooks"' in out
    assert '"auth_tokens": 1' in out
    assert "very-secret-token" not in out


def test_check_config_exits_1_on_a_bad_value(capsys) -> None:
    assert main(["--check-config", "--dedup.window=1m"]) == 1
    assert "at least 4h" in capsys.readouterr().err


def test_help_documents_every_flag() -> None:
    result = subprocess.run([sys.executable, "-m", "exporter", "--help"], capture_output=True, text=True, check=True)

    for flag in (
        "--web.listen-address",
        "--webhook.listen-address",
        "--webhook.path",
        "--webhook.public-url",
        "--webhook.trust-forwarded-headers",
        "--no-webhook.trust-forwarded-headers",
        "--webhook.max-body-size",
        "--webhook.insecure-skip-signature-verification",
        "--dedup.window",
        "--config.file",
        "--check-config",
        "TWILIO_AUTH_TOKEN",
    ):
        assert flag in result.stdout, flag
