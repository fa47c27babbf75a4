"""Names: interface names and peer names, the peer's linuxserver folder and a config file name for wg-quick.

The peer-folder rule lives here and nowhere else: numbered peers (`peer7`) keep their name as folder,
every other peer lives in `peer_NAME`.
"""

from __future__ import annotations

import hashlib
import re

from bulwark_vpn.errors import InputError
from bulwark_vpn.values.text import require_text

IFNAMSIZ = 15
MAX_PEER_NAME = 63
MAX_NUMBERED_PEERS = 65534

# wg-quick derives the interface name from the file name and requires exactly this; a leading '-' would read as
# an option to ip, wg and nft.
_IFNAME = re.compile(r"[a-zA-Z0-9_=+.][a-zA-Z0-9_=+.-]{0,14}")
_PEER_NAME = re.compile(r"[a-zA-Z0-9_=+][a-zA-Z0-9_=+.-]{0,62}")
_NUMBERED = re.compile(r"peer([1-9][0-9]{0,4})")
_RESERVED_IFNAMES = frozenset({"all", "default"})


def parse_interface_name(value: object, what: str = "interface name") -> str:
    hint = f"use 1-{IFNAMSIZ} letters, digits or _=+.- not starting with '-' nor ending with '+' (e.g. wg0)"
    text = require_text(value, what, hint)
    if not _IFNAME.fullmatch(text) or text in (".", ".."):
        raise InputError(f"invalid {what}", value, hint)
    if text in _RESERVED_IFNAMES:
        # The kernel keeps these for the settings of every interface (/proc/sys/net/ipv6/conf/all, .../default): no
        # interface can be called so, and a sysctl written for one would change the whole host.
        raise InputError(f"invalid {what}", value, f"'{text}' is not an interface name the kernel allows: " + hint)
    if text.endswith("+"):
        # iptables reads `-i wg+` as "every interface whose name starts with wg": the fallback firewall's rules
        # would forward and masquerade other tunnels (and `-o +` every interface), unlike the nftables rendering.
        raise InputError(f"invalid {what}", value, "a trailing '+' is a wildcard to iptables: " + hint)
    return text


def parse_egress_interface(value: object) -> str:
    """The interface NAT goes out of: an interface name other than the loopback."""
    name = parse_interface_name(value, "egress interface")
    if name == "lo":
        raise InputError("invalid egress interface", name,
                         "NAT goes out of a network interface; leave it unset for every interface but the tunnel")
    return name


def parse_peer_name(value: object) -> str:
    """A peer name, 1-63 letters, digits or _=+.-, not starting with '-' or '.'; a bare number N is linuxserver's
    numbered peer `peerN`."""
    hint = f"use 1-{MAX_PEER_NAME} letters, digits or _=+.- not starting with '-' or '.' (e.g. leo_mac)"
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    text = require_text(value, "peer name", hint).strip(" \t")
    if text.isascii() and text.isdigit():
        number = int(text)
        if not 1 <= number <= MAX_NUMBERED_PEERS:
            raise InputError("invalid peer name", value, f"a peer number runs from 1 to {MAX_NUMBERED_PEERS}")
        return f"peer{number}"
    if not _PEER_NAME.fullmatch(text):
        raise InputError("invalid peer name", value, hint)
    return text


_USER_NAME = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9_.-]{0,31}")
_TOKEN_NAME = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9 _.:/-]{0,63}")


def parse_user_name(value: object) -> str:
    """A user name: 1-32 letters, digits or _.- starting with a letter or digit."""
    hint = "use 1-32 letters, digits or _.- starting with a letter or digit (e.g. alice)"
    text = require_text(value, "user name", hint)
    if not _USER_NAME.fullmatch(text):
        raise InputError("invalid user name", value, hint)
    return text


def parse_token_name(value: object) -> str:
    """An API token's label (e.g. "CI deploy"): 1-64 letters, digits, spaces or _.:/- ."""
    hint = "use 1-64 letters, digits, spaces or _.:/- (e.g. CI)"
    text = require_text(value, "token name", hint)
    if not _TOKEN_NAME.fullmatch(text) or text != text.strip():
        raise InputError("invalid token name", value, hint)
    return text


def is_numbered_peer(name: str) -> bool:
    return _NUMBERED.fullmatch(name) is not None


def peer_folder(name: str) -> str:
    """The linuxserver folder (and file stem) of a peer: `peerN` for numbered peers, else `peer_NAME`."""
    return name if is_numbered_peer(name) else f"peer_{name}"


def config_filename(name: str) -> str:
    """A file name for a peer's downloaded config that `wg-quick up FILE` accepts: its stem becomes the client's
    interface name, so it must be a valid one of at most 15 characters. Long names are shortened and made
    unique with a few characters of a hash."""
    stem = peer_folder(name)
    if len(stem) <= IFNAMSIZ:
        return f"{stem}.conf"
    digest = hashlib.sha256(name.encode()).hexdigest()[:4]
    head = name[: IFNAMSIZ - 5].rstrip("-.") or "peer"
    return f"{head}-{digest}.conf"
