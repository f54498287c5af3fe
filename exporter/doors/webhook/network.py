"""Where a webhook request comes from: the client address behind trusted proxies, and the allowed networks.

The first check of a delivery's path (exporter/doors/webhook/handler.py asks it before anything else is read):
``--webhook.allowed-networks`` lists the networks deliveries may come from (Twilio delivers from
35.90.102.128/25, twilio-facts.md). Behind an ingress the TCP peer is the proxy, so the client is
read from ``X-Forwarded-For`` right to left, past the addresses of ``--webhook.trusted-proxies``:
each trusted proxy appends the address it received from, and the first value is whatever the
client itself wrote, so only values appended by a trusted hop are believed.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from exporter.config import WebhookSettings

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

FORWARDED_FOR = "X-Forwarded-For"


def parse_address(text: str | None) -> IPAddress | None:
    """An address as a peer or a proxy writes it, or ``None`` when it is none.

    >>> parse_address("35.90.102.130"), parse_address("[2001:db8::1]"), parse_address("unknown")
    (IPv4Address('35.90.102.130'), IPv6Address('2001:db8::1'), None)
    >>> parse_address("::ffff:35.90.102.130")  # an IPv4 peer on a dual-stack socket
    IPv4Address('35.90.102.130')
    """
    if not text:
        return None
    text = text.strip()
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1]
    try:
        address = ipaddress.ip_address(text.partition("%")[0])  # a zone id names an interface, not a host
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _within(address: IPAddress, networks: Iterable[IPNetwork]) -> bool:
    return any(address.version == network.version and address in network for network in networks)


@dataclass(frozen=True)
class SourceNetworks:
    """The allowed networks and the trusted proxies of the webhook listener."""

    allowed: tuple[IPNetwork, ...] = ()
    trusted_proxies: tuple[IPNetwork, ...] = ()

    @classmethod
    def from_settings(cls, webhook: WebhookSettings) -> SourceNetworks:
        return cls(tuple(webhook.allowed_networks), tuple(webhook.trusted_proxies))

    def client(self, peer: str | None, forwarded_for: Sequence[str] = ()) -> IPAddress | None:
        """The client's address: the peer, or past every trusted proxy the value that hop received from.

        ``forwarded_for`` holds every ``X-Forwarded-For`` header in order (several are one list).
        A value that is not an address, met before the last trusted hop, ends the walk with ``None``:
        nobody can say where the request came from.

        >>> nets = SourceNetworks(trusted_proxies=(ipaddress.ip_network("10.0.0.0/8"),))
        >>> nets.client("10.0.0.5", ["1.2.3.4, 35.90.102.130, 10.0.0.7"])
        IPv4Address('35.90.102.130')
        >>> nets.client("203.0.113.9", ["35.90.102.130"])  # an untrusted peer's header is the client's own
        IPv4Address('203.0.113.9')
        """
        address = parse_address(peer)
        if address is None or not _within(address, self.trusted_proxies):
            return address
        hops = [value for header in forwarded_for for value in header.split(",")]
        for value in reversed(hops):
            hop = parse_address(value)
            if hop is None or not _within(hop, self.trusted_proxies):
                return hop
            address = hop
        # Every hop was a trusted proxy: the request started at the leftmost one.
        return address

    def allows(self, peer: str | None, forwarded_for: Sequence[str] = ()) -> bool:
        """Whether a request from this peer (with these forwarded headers) may be read at all."""
        if not self.allowed:
            return True
        address = self.client(peer, forwarded_for)
        return address is not None and _within(address, self.allowed)


def config_warnings(webhook: WebhookSettings) -> list[str]:
    """What ``--check-config`` warns about in the webhook's network settings (exporter/cli.py collects them), one sentence each (no secret in any)."""
    warnings = []
    if webhook.allowed_networks and webhook.trust_forwarded_headers and not webhook.trusted_proxies:
        warnings.append(
            "--webhook.allowed-networks is set and forwarded headers are trusted (behind a proxy), but "
            "--webhook.trusted-proxies is empty: the client address is the proxy's, so every delivery from "
            "outside the allowed networks (Twilio's included) gets 403, which Twilio discards for good. "
            "Set --webhook.trusted-proxies to the proxies' networks."
        )
    return warnings
