"""Integers and booleans from text or from typed sources (TOML, JSON): ports, MTU, keepalive, counts, flags.

A boolean is never a number here (`listen_port = true` is refused) and a float never an integer
(`mtu = inf` is refused), whatever Python's `int()` would make of them.
"""

from __future__ import annotations

import re

from bulwark_vpn.errors import InputError
from bulwark_vpn.values.text import require_text

_DIGITS = re.compile(r"[0-9]{1,10}")
_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})


def parse_int(value: object, low: int, high: int, what: str, hint: str) -> int:
    """An integer in [low, high], from an int (not a bool) or a string of ASCII digits."""
    number: int | None = None
    if isinstance(value, int) and not isinstance(value, bool):
        number = value
    elif isinstance(value, str) and not isinstance(value, bool):
        text = require_text(value, what, f"use a number from {low} to {high}").strip(" \t")
        if _DIGITS.fullmatch(text):
            number = int(text)
    if number is None or not low <= number <= high:
        raise InputError(f"invalid {what}", value, f"use a number from {low} to {high} ({hint})")
    return number


def parse_port(value: object, what: str = "port") -> int:
    return parse_int(value, 1, 65535, what, "WireGuard's default is 51820")


def parse_mtu(value: object) -> int:
    return parse_int(value, 1280, 9000, "MTU", "1420 suits most paths")


def parse_keepalive(value: object) -> int:
    return parse_int(value, 0, 65535, "keepalive", "seconds; 25 keeps NAT mappings open, 0 turns it off")


def parse_bool(value: object, what: str) -> bool:
    """Exactly one of true/false, yes/no, on/off, 1/0 (any case), or a real boolean (TOML, JSON)."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str):
        text = require_text(value, what, "use true or false").lower()
        if text in _TRUE:
            return True
        if text in _FALSE:
            return False
    raise InputError(f"invalid {what}", value, "use true or false")
