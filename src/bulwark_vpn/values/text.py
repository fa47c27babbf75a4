"""Text checks shared by every parser: the type of a value (TOML and JSON give ints, floats and booleans),
and the characters no single-line value may hold."""

from __future__ import annotations

import re
import unicodedata

from bulwark_vpn.errors import InputError

# Line and paragraph separators, NUL and every other control or format character (C0, C1, DEL, zero-width and
# bidirectional marks): any of them in a value could end a line in some reader, or hide what a line says.
_UNSAFE_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"})
_ASCII_SAFE = re.compile(r"[\x20-\x7e]*")


def has_unsafe_char(text: str) -> bool:
    """True if `text` holds a control, format or separator character (or a lone surrogate)."""
    if _ASCII_SAFE.fullmatch(text):
        return False
    return any(unicodedata.category(char) in _UNSAFE_CATEGORIES for char in text)


def require_text(value: object, what: str, hint: str) -> str:
    """`value` as a str: refuse other types (a TOML number where a name was meant) and unsafe characters."""
    if not isinstance(value, str):
        raise InputError(f"invalid {what}", value, f"{hint} (a text value, not {type(value).__name__})")
    if has_unsafe_char(value):
        raise InputError(f"invalid {what}", value, f"{hint} (no control characters or line breaks)")
    return value


def require_ascii_token(value: object, what: str, hint: str, pattern: re.Pattern[str]) -> str:
    """A text value that must match `pattern` whole (fullmatch: `$` would let a trailing newline through)."""
    text = require_text(value, what, hint)
    if not pattern.fullmatch(text):
        raise InputError(f"invalid {what}", value, hint)
    return text


def parse_choice(value: object, choices: tuple[str, ...], what: str) -> str:
    """One of a fixed set of words, spelled exactly (`LoadBalancer`, not `loadbalancer`)."""
    hint = f"use {', '.join(choices[:-1])} or {choices[-1]}" if len(choices) > 1 else f"use {choices[0]}"
    text = require_text(value, what, hint)
    if text not in choices:
        raise InputError(f"invalid {what}", value, hint)
    return text
