"""Tunnel address pools: parsing and validating subnets, the server's address, and exact allocation.

Addresses are handled as integers offset from the network address; the store keeps a cursor (the next
never-used offset) and a free list of offsets released by removed peers, so allocating is O(log n):
a fresh offset from the cursor, else the smallest freed one. Nothing here matches text.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from bulwark_vpn.errors import InputError

MIN_PREFIX4 = 8
MAX_PREFIX4 = 30
MAX_PREFIX6 = 126
# The server takes offset 1 (the first host address); peers start at offset 2.
SERVER_OFFSET = 1
FIRST_PEER_OFFSET = 2


def parse_subnet4(text: str) -> ipaddress.IPv4Network:
    """Parse INTERNAL_SUBNET: `10.13.13.0` (means /24, as linuxserver/wireguard) or `10.20.0.0/16`."""
    value = text.strip()
    if "/" not in value:
        value = f"{value}/24"
    try:
        net = ipaddress.IPv4Network(value, strict=False)
    except ValueError:
        raise InputError(
            f"invalid IPv4 subnet: '{text}': use a network like 10.13.13.0/24 (a bare address means /24)"
        ) from None
    if not MIN_PREFIX4 <= net.prefixlen <= MAX_PREFIX4:
        raise InputError(
            f"invalid IPv4 subnet: '{text}': the prefix must be between /{MIN_PREFIX4} and /{MAX_PREFIX4} "
            f"(a /30 holds the server and one peer)"
        )
    return net


def parse_subnet6(text: str) -> ipaddress.IPv6Network:
    """Parse the optional IPv6 tunnel subnet, e.g. `fd13:13:13::/64`."""
    try:
        net = ipaddress.IPv6Network(text.strip(), strict=False)
    except ValueError:
        raise InputError(f"invalid IPv6 subnet: '{text}': use a network like fd13:13:13::/64") from None
    if net.prefixlen > MAX_PREFIX6:
        raise InputError(f"invalid IPv6 subnet: '{text}': the prefix must be /{MAX_PREFIX6} or shorter")
    return net


def parse_networks(text: str, what: str = "AllowedIPs") -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    """Parse a comma-separated CIDR list (host bits allowed and cleared, like wg)."""
    nets = []
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        try:
            nets.append(ipaddress.ip_network(item, strict=False))
        except ValueError:
            raise InputError(
                f"invalid {what} entry: '{item}': use CIDRs separated by commas, e.g. 10.0.0.0/16,::/0"
            ) from None
    if not nets:
        raise InputError(f"invalid {what}: '{text}': give at least one CIDR, e.g. 0.0.0.0/0")
    return tuple(nets)


@dataclass(frozen=True)
class Pool:
    """The host offsets of a subnet that peers may use."""

    network: ipaddress.IPv4Network | ipaddress.IPv6Network

    @property
    def first_offset(self) -> int:
        return FIRST_PEER_OFFSET

    @property
    def last_offset(self) -> int:
        """The highest usable offset: IPv4 excludes the broadcast address."""
        size = self.network.num_addresses
        return size - 2 if self.network.version == 4 else size - 1

    @property
    def capacity(self) -> int:
        return max(0, self.last_offset - self.first_offset + 1)

    def address(self, offset: int) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
        if not self.first_offset <= offset <= self.last_offset:
            raise ValueError(f"offset {offset} outside {self.network}")
        return self.network.network_address + offset

    def offset(self, address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> int:
        return int(address) - int(self.network.network_address)

    def contains_peer_address(self, address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
        return address.version == self.network.version and (
            self.first_offset <= self.offset(address) <= self.last_offset
        )
