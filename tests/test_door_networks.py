"""Source networks and the --check-config warnings of the door's settings (exporter/doors/webhook/network.py)."""

from __future__ import annotations

import ipaddress

import pytest

from exporter import cli
from exporter.config import load_config
from exporter.doors.webhook.network import SourceNetworks, config_warnings
from tests.exporter_process import assert_no_secret, run


def networks(*args: str) -> SourceNetworks:
    return SourceNetworks.from_settings(load_config(list(args)).settings.webhook)


def test_without_allowed_networks_every_source_is_allowed() -> None:
    assert networks().allows("203.0.113.7") and networks().allows(None)


@pytest.mark.parametrize(
    "peer, forwarded_for, client",
    [
        ("10.1.2.3", ["35.90.102.200"], "35.90.102.200"),
        ("10.1.2.3", ["35.90.102.200", "10.9.9.9"], "35.90.102.200"),  # two headers are one list
        ("10.1.2.3", ["1.1.1.1, 35.90.102.200,10.9.9.9"], "35.90.102.200"),
        ("10.1.2.3", ["10.4.4.4, 10.9.9.9"], "10.4.4.4"),  # every hop trusted: the leftmost
        ("10.1.2.3", [], "10.1.2.3"),
        ("10.1.2.3", ["35.90.102.200, garbage"], None),  # an unreadable hop ends the walk: nobody knows
        ("::ffff:10.1.2.3", ["35.90.102.200"], "35.90.102.200"),  # an IPv4 peer on a dual-stack socket
        ("192.0.2.1", ["35.90.102.200"], "192.0.2.1"),  # an untrusted peer: its header is its own word
    ],
)
def test_the_client_is_the_first_untrusted_hop_read_right_to_left(peer, forwarded_for, client) -> None:
    found = networks("--webhook.trusted-proxies=10.0.0.0/8").client(peer, forwarded_for)

    assert found == (ipaddress.ip_address(client) if client else None)


def test_an_ipv6_client_is_matched_against_ipv6_networks_only() -> None:
    allowed = networks("--webhook.allowed-networks=35.90.102.128/25,2001:db8::/32")

    assert allowed.allows("2001:db8::1") and not allowed.allows("2001:db9::1") and not allowed.allows("::ffff:1.2.3.4")


def test_check_config_warns_about_allowed_networks_behind_a_proxy_without_trusted_proxies_and_the_insecure_mode() -> None:
    # Both warnings reach --check-config through cli.warnings, the one place they are collected.
    config = load_config(
        ["--webhook.allowed-networks=35.90.102.128/25", "--webhook.trust-forwarded-headers", "--webhook.insecure-skip-signature-verification"]
    )

    warnings = cli.warnings(config)

    assert [w.split(":", 1)[0] for w in warnings] == [
        "INSECURE",
        "--webhook.allowed-networks is set and forwarded headers are trusted (behind a proxy), but --webhook.trusted-proxies is empty",
    ]


@pytest.mark.parametrize(
    "args",
    [
        ("--webhook.allowed-networks=35.90.102.128/25",),  # not behind a proxy: the peer is the client
        ("--webhook.allowed-networks=35.90.102.128/25", "--webhook.trust-forwarded-headers", "--webhook.trusted-proxies=10.0.0.0/8"),
        ("--webhook.trust-forwarded-headers",),
    ],
)
def test_check_config_has_nothing_to_say_about_a_coherent_door(args) -> None:
    assert config_warnings(load_config(list(args)).settings.webhook) == []


def test_check_config_prints_the_warnings_on_stderr_and_still_exits_0() -> None:
    result = run("--check-config", "--webhook.insecure-skip-signature-verification")

    assert result.returncode == 0, result.stderr
    assert result.stderr.startswith("twilio-insights-exporter: warning: INSECURE: webhook signatures are NOT verified")
    assert_no_secret(result.stdout, result.stderr)


def test_a_memory_budget_too_small_for_the_largest_delivery_is_a_configuration_error() -> None:
    with pytest.raises(ValueError, match=r"webhook.memory_budget must be at least 11 x webhook.max_body_size \(184549376 bytes\)"):
        load_config(["--webhook.memory-budget=128MiB"])
