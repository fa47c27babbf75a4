"""Tunnel address pools: the server's address and exact allocation (subnets are parsed in `values`).

Addresses are handled as integers offset from the network address; the store keeps a cursor (the next
never-used offset) and a free list of offsets released by removed peers, so allocating is O(log n):
a fresh offset from the cursor, else the smallest freed one. Nothing here matches text.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

# The server takes offset 1 (the first host address); peers start at offset 2.
SERVER_OFFSET = 1
FIRST_PEER_OFFSET = 2


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
