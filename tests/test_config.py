"""Configuration from flags, environment and YAML; the command line the chart and scripts rely on."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import timedelta
from pathlib import Path
from typing import Literal, get_args, get_origin

import pytest
from pydantic import BaseModel, ValidationError
from pydantic.fields import FieldInfo

from exporter import subjects
from exporter.__main__ import main
from exporter.config import Settings, UnknownVariableError, check_environment, format_duration, load_config
from exporter.subjects import participant as participant_subject
from exporter.subjects.participant import DEFAULT_MAX_VALUES
from tests.helpers import scrub_environment, secret_variables


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    scrub_environment(monkeypatch)


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


def test_every_flag_has_an_environment_variable(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Each flag's variable, named as pydantic-settings names it, really sets what the flag sets."""
    monkeypatch.setenv("TWILIO_ACCOUNT_SID", "AC" + "0" * 32)  # --pull.enabled needs credentials
    monkeypatch.setenv("TWILIO_AUTH_TOKEN", "tok-0123")
    for path, (argv, value) in every_flag_set(tmp_path).items():
        name = environment_variable(path)
        # A bare boolean flag (--x or --no-x): the variable says true or false.
        monkeypatch.setenv(name, argv[1] if len(argv) == 2 else str(not argv[0].startswith("--no-")).lower())

        assert leaves(load_config([]).settings)[path] == value, name
        monkeypatch.delenv(name)


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


@pytest.mark.parametrize(
    ("name", "message"),
    [
        (
            "TWILIO_INSIGHTS_EXPORTER_WEBHOK__PATH",
            "unknown variable TWILIO_INSIGHTS_EXPORTER_WEBHOK__PATH: did you mean TWILIO_INSIGHTS_EXPORTER_WEBHOOK__PATH (--webhook.path)? (see --help)",
        ),
        # Named as given; pydantic-settings reads names without case, so the check does too.
        (
            "twilio_insights_exporter_dedup_window",
            "unknown variable twilio_insights_exporter_dedup_window: did you mean TWILIO_INSIGHTS_EXPORTER_DEDUP__WINDOW (--dedup.window)? (see --help)",
        ),
        (
            "TWILIO_INSIGHTS_EXPORTER_BASIC_AUTH_PASSWROD",
            "unknown variable TWILIO_INSIGHTS_EXPORTER_BASIC_AUTH_PASSWROD: did you mean TWILIO_INSIGHTS_EXPORTER_BASIC_AUTH_PASSWORD? (see --help)",
        ),
        ("TWILIO_INSIGHTS_EXPORTER_COLOUR", "unknown variable TWILIO_INSIGHTS_EXPORTER_COLOUR: no setting is named like it (see --help)"),
    ],
)
def test_an_unknown_variable_is_refused_naming_it_and_the_closest_setting(monkeypatch: pytest.MonkeyPatch, name: str, message: str) -> None:
    monkeypatch.setenv(name, "s3cret-value")

    with pytest.raises(UnknownVariableError) as refused:
        load_config([])
    assert str(refused.value) == message  # the value, perhaps a misplaced secret, is never repeated


def test_every_variable_the_exporter_reads_is_known(tmp_path: Path) -> None:
    """Each setting's and section's variable (from the model) and each secret's: none is refused as unknown."""
    sections = {environment_variable(path[:depth]) for path in leaf_fields() for depth in range(1, len(path))}
    names = {*map(environment_variable, leaf_fields()), *sections, *secret_variables()}
    assert "TWILIO_INSIGHTS_EXPORTER_BASIC_AUTH_PASSWORD" in names and "TWILIO_INSIGHTS_EXPORTER_WEB__CONFIG" in names
    check_environment(dict.fromkeys(names, "x"))


def test_a_nested_variable_of_a_mapping_setting_is_read_not_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TWILIO_INSIGHTS_EXPORTER_LABELS__LIMITS__COUNTRY_CODE__MAX_VALUES", "3")

    assert load_config([]).settings.labels.caps()["country_code"] == 3


def test_kubernetes_service_link_variables_are_not_taken_for_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    """A Service named twilio-insights-exporter(-webhook) puts these in every pod of the namespace that keeps service links."""
    links = {
        "TWILIO_INSIGHTS_EXPORTER_SERVICE_HOST": "10.96.0.10",
        "TWILIO_INSIGHTS_EXPORTER_SERVICE_PORT": "9802",
        "TWILIO_INSIGHTS_EXPORTER_SERVICE_PORT_METRICS": "9802",
        "TWILIO_INSIGHTS_EXPORTER_PORT": "tcp://10.96.0.10:9802",
        "TWILIO_INSIGHTS_EXPORTER_PORT_9802_TCP": "tcp://10.96.0.10:9802",
        "TWILIO_INSIGHTS_EXPORTER_PORT_9802_TCP_PROTO": "tcp",
        "TWILIO_INSIGHTS_EXPORTER_PORT_9802_TCP_PORT": "9802",
        "TWILIO_INSIGHTS_EXPORTER_PORT_9802_TCP_ADDR": "10.96.0.10",
        "TWILIO_INSIGHTS_EXPORTER_WEBHOOK_SERVICE_HOST": "10.96.0.11",
        "TWILIO_INSIGHTS_EXPORTER_WEBHOOK_PORT_8080_TCP_ADDR": "10.96.0.11",
    }
    for name, value in links.items():
        monkeypatch.setenv(name, value)

    assert load_config([]).settings.webhook.listen_address == ":8080"


@pytest.mark.parametrize(
    ("written", "size"), [("512KiB", 512 * 1024), ("16MiB", 16 * 1024**2), ("1GiB", 1024**3), ("1000B", 1000), ("16000000", 16_000_000)]
)
def test_sizes_are_bytes_or_iec_units(written: str, size: int) -> None:
    assert load_config([f"--webhook.max-body-size={written}", "--webhook.memory-budget=12GiB"]).settings.webhook.max_body_size == size


@pytest.mark.parametrize(
    ("written", "message"),
    [
        ("16MB", "16MB is ambiguous: use 16MiB for 16,777,216 bytes, or write 16000000"),
        ("512kB", "512kB is ambiguous: use 512KiB for 524,288 bytes, or write 512000"),
        ("1G", "1G is ambiguous: use 1GiB for 1,073,741,824 bytes, or write 1000000000"),
        ("16Mi", "not a size: write 16MiB (16,777,216 bytes)"),  # Kubernetes' spelling
        ("16mib", "not a size: write 16MiB (16,777,216 bytes)"),
        ("lots", "not a size like 1048576 or 16MiB"),
    ],
)
def test_si_and_other_size_spellings_are_refused_with_the_figure_each_would_mean(written: str, message: str) -> None:
    with pytest.raises(ValidationError) as refused:
        load_config([f"--webhook.max-body-size={written}"])
    assert message in str(refused.value)


@pytest.mark.parametrize(
    ("written", "meant"), [("10.0.0.1/8", "10.0.0.0/8"), ("35.90.102.130/25", "35.90.102.128/25"), ("2001:db8::1/32", "2001:db8::/32")]
)
@pytest.mark.parametrize("setting", ["allowed-networks", "trusted-proxies"])
def test_a_network_with_host_bits_set_is_refused_with_the_network_it_probably_means(setting: str, written: str, meant: str) -> None:
    with pytest.raises(ValidationError) as refused:
        load_config([f"--webhook.{setting}", json.dumps(["192.168.0.0/16", written])])
    assert f"{written} has host bits set: did you mean {meant}?" in str(refused.value)
    assert load_config([f"--webhook.{setting}", json.dumps([meant])]).settings.webhook.model_dump(mode="json")[setting.replace("-", "_")] == [meant]


def test_a_key_written_twice_in_the_yaml_file_is_refused_at_the_second(tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text("webhook:\n  path: /first\n  max_in_flight: 4\n  path: /second\n")

    with pytest.raises(ValueError, match=rf"^--config.file {config}:4:3: not valid YAML: duplicate key 'path' \(first at line 2, column 3\)$"):
        load_config([f"--config.file={config}"])

    config.write_text("labels: {account_sid: true}\nwebhook: {path: /x}\nlabels: {jitter_buffer_size: true}\n")
    with pytest.raises(ValueError, match=rf"{config}:3:1: not valid YAML: duplicate key 'labels' \(first at line 1, column 1\)"):
        load_config([f"--config.file={config}"])


def test_a_yaml_merge_key_may_still_be_overridden(tmp_path: Path) -> None:
    """YAML's ``<<`` merges defaults that the mapping's own keys override: no duplicate."""
    config = tmp_path / "c.yaml"
    config.write_text("labels:\n  limits:\n    country_code: &limit {max_values: 5}\n    team:\n      <<: *limit\n      max_values: 7\n")

    assert load_config([f"--config.file={config}"]).settings.labels.caps()["team"] == 7


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


def test_help_documents_every_flag(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Every field of the settings is a flag in --help, with its description, that really sets it."""
    monkeypatch.setenv("TWILIO_ACCOUNT_SID", "AC" + "0" * 32)
    monkeypatch.setenv("TWILIO_AUTH_TOKEN", "tok-0123")
    result = subprocess.run([sys.executable, "-m", "exporter", "--help"], capture_output=True, text=True, check=True)
    # argparse wraps lines (and breaks words at hyphens): compare without whitespace.
    help_text = "".join(result.stdout.split())
    assert "TWILIO_AUTH_TOKEN" in help_text
    assert "--version" in help_text and "--version" in result.stdout.split("\n\n")[0]  # in the usage line too
    # What the exporter takes: every summary subject and the TaskRouter events, in the first paragraph.
    takes = " ".join(result.stdout.split("\n\n")[1].split())
    for subject in (subjects.PARTICIPANT, subjects.CALL, subjects.CONFERENCE):
        assert subject in takes, takes
    assert "summaries and TaskRouter events" in takes

    for path, info in leaf_fields().items():
        flag = "--" + ".".join(part.replace("_", "-") for part in path)
        assert flag in help_text, flag
        assert "".join((info.description or "").split()) in help_text, f"{flag}: description missing from --help"
        if info.annotation is bool:
            assert "--no-" + flag.removeprefix("--") in help_text, flag
    assert every_flag_set(tmp_path).keys() == leaf_fields().keys()  # and each really sets its field


# --- every flag, derived from the settings model ---------------------------------------------------

# Shapes of string values tried in turn until one validates (a listen address, a path, a URL, a name).
STRING_CANDIDATES = (":1234", "/elsewhere", "https://example.com/elsewhere", "eu-west-1")


def leaf_fields(model: type[BaseModel] = Settings, prefix: tuple[str, ...] = ()) -> dict[tuple[str, ...], FieldInfo]:
    """Every field that is a flag: the fields of the settings, nested sections walked into."""
    fields: dict[tuple[str, ...], FieldInfo] = {}
    for name, info in model.model_fields.items():
        if isinstance(info.annotation, type) and issubclass(info.annotation, BaseModel):
            fields.update(leaf_fields(info.annotation, (*prefix, name)))
        else:
            fields[(*prefix, name)] = info
    return fields


def leaves(settings: Settings) -> dict[tuple[str, ...], object]:
    """The value of every flag's field in ``settings``."""
    values = {}
    for path in leaf_fields():
        value: object = settings
        for part in path:
            value = getattr(value, part)
        values[path] = value
    return values


def environment_variable(path: tuple[str, ...]) -> str:
    """The variable pydantic-settings reads for a field: prefix, then the path joined by the nested delimiter."""
    config = Settings.model_config
    return (str(config["env_prefix"]) + str(config["env_nested_delimiter"]).join(path)).upper()


def candidates(path: tuple[str, ...], info: FieldInfo, default: object, tmp_path: Path) -> list[str]:
    """Values other than the default for one field, as the command line and the environment write them."""
    annotation = info.annotation
    if isinstance(default, timedelta):
        return [format_duration(default * 2), format_duration(default / 2)]
    if isinstance(default, int):
        return [str(default - 1), str(default + 1)]
    if get_origin(annotation) is Literal:
        return [choice for choice in get_args(annotation) if choice != default]
    if path[-1] in participant_subject.DEFAULT_BUCKETS:  # a bucket list: the default edges and one more
        edges = list(participant_subject.DEFAULT_BUCKETS[path[-1]])
        return [json.dumps([*edges, edges[-1] * 2])]
    if isinstance(default, list) and default and set(default) <= set(subjects.NAMES):  # subject names (--pull.summaries)
        return [json.dumps([subjects.NAMES[0]])]
    if isinstance(default, list):  # networks (CIDRs), as JSON: the one list form flags and variables share
        return [json.dumps(["10.0.0.0/8"])]
    if isinstance(default, dict):  # per-label limits: a label of that section's subject
        section = Settings.model_fields[path[0]].annotation
        known = getattr(section, "KNOWN", None) or DEFAULT_MAX_VALUES
        return [json.dumps({next(iter(known)): {"max_values": 3}})]
    if Path in get_args(annotation):
        (tmp_path / "empty.yaml").touch()
        return [str(tmp_path / "empty.yaml")]
    return list(STRING_CANDIDATES)


def every_flag_set(tmp_path: Path) -> dict[tuple[str, ...], tuple[list[str], object]]:
    """For every flag, a command line setting it to another value than its default, and that value.

    Each is checked here: the one field changes, every other stays at its default.
    """
    defaults = leaves(load_config([]).settings)
    found = {}
    for path, info in leaf_fields().items():
        flag = "--" + ".".join(part.replace("_", "-") for part in path)
        default = defaults[path]
        if info.annotation is bool:
            tries = [[f"--no-{flag[2:]}"] if default else [flag]]
        else:
            tries = [[flag, value] for value in candidates(path, info, default, tmp_path)]
        for argv in tries:
            try:
                values = leaves(load_config(argv).settings)
            except (ValueError, SystemExit):
                continue
            changed = {p for p in values if values[p] != defaults[p]}
            assert changed == {path}, f"{argv} changed {changed}"
            found[path] = (argv, values[path])
            break
        else:
            raise AssertionError(f"no value tried for {flag} was accepted: {tries}")
    return found
