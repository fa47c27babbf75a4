"""File-system paths that Bulwark writes into other programs' files (systemd units, scripts, manifests).

Only a conservative character set is accepted (letters, digits and `_.+=@-` in each component): such a path
needs no quoting in a unit file, a shell word, a compose volume or a Kubernetes manifest, and holds no
systemd specifier (`%`), no space, no quote, no `:` (the separator of compose volumes) and no line break.
"""

from __future__ import annotations

import re

from bulwark_vpn.errors import InputError
from bulwark_vpn.values.text import require_text

MAX_PATH = 1024
_COMPONENT = re.compile(r"[A-Za-z0-9_+=@-][A-Za-z0-9_.+=@-]*|\.[A-Za-z0-9_.+=@-]*[A-Za-z0-9_+=@-][A-Za-z0-9_.+=@-]*")


def _components(text: str) -> list[str]:
    parts = text.split("/")
    return parts[1:] if text.startswith("/") else parts


def parse_absolute_path(value: object, what: str = "path") -> str:
    """An absolute, normalised path below `/`: `/usr/local/bin/bulwark`; no `.`/`..` components, no `//`, no
    trailing `/`."""
    hint = "give an absolute path of letters, digits and _.+=@- such as /etc/bulwark"
    text = require_text(value, what, hint)
    parts = _components(text)
    if not text.startswith("/") or len(text) > MAX_PATH or not all(_COMPONENT.fullmatch(p) for p in parts):
        raise InputError(f"invalid {what}", value, hint)
    return text


def parse_relative_path(value: object, what: str = "relative path") -> str:
    """A relative path that stays where it starts: `wg_confs/wg0.conf`, `./config`, `.`; no `..`, no `//`."""
    hint = "give a relative path of letters, digits and _.+=@- such as ./config, without '..'"
    text = require_text(value, what, hint)
    if text == ".":
        return text
    parts = _components(text)
    if parts and parts[0] == ".":
        parts = parts[1:]
    if (text.startswith("/") or len(text) > MAX_PATH or not parts
            or not all(_COMPONENT.fullmatch(p) for p in parts)):
        raise InputError(f"invalid {what}", value, hint)
    return text
