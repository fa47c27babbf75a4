"""WireGuard keys: X25519 private/public keys and preshared keys, as their own types.

Secrets never show in a repr or a log line; comparison is constant-time. Keys are read from files or
stdin, never from the command line.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import os
import re
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from bulwark_vpn.errors import InputError

KEY_LEN = 32


_BASE64_KEY = re.compile(r"[A-Za-z0-9+/]{43}=")


def _decode(text: object, what: str) -> bytes:
    """32 bytes from their canonical base64 form (44 characters); surrounding whitespace (a key file's final
    newline) is ignored. A secret is never shown in the error."""
    stripped = text.strip(" \t\r\n") if isinstance(text, str) else ""
    raw = b""
    if _BASE64_KEY.fullmatch(stripped):
        try:
            raw = base64.b64decode(stripped, validate=True)
        except (binascii.Error, ValueError):
            raw = b""
        if base64.b64encode(raw).decode("ascii") != stripped:
            raw = b""  # non-canonical padding bits: wg refuses it too
    if len(raw) != KEY_LEN:
        shown = "(hidden)" if what != "public key" else text
        raise InputError(f"invalid {what}", shown,
                         "expected 44 base64 characters encoding 32 bytes (generate one with 'wg genkey')")
    return raw


class _Key:
    """32 raw bytes with base64 text form; equality is constant-time."""

    __slots__ = ("_raw",)
    kind = "key"

    def __init__(self, raw: bytes) -> None:
        if len(raw) != KEY_LEN:
            raise InputError(f"invalid {self.kind}", f"{len(raw)} bytes", f"a key is {KEY_LEN} bytes")
        self._raw = bytes(raw)

    @classmethod
    def from_base64(cls, text: str):
        return cls(_decode(text, cls.kind))

    def to_base64(self) -> str:
        return base64.b64encode(self._raw).decode("ascii")

    @property
    def raw(self) -> bytes:
        return self._raw

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        return hmac.compare_digest(self._raw, other._raw)  # type: ignore[attr-defined]

    def __hash__(self) -> int:
        return hash((type(self).__name__, self._raw))


class PublicKey(_Key):
    """A peer's or server's public key: safe to show."""

    kind = "public key"

    def __repr__(self) -> str:
        return f"PublicKey({self.to_base64()})"

    def __str__(self) -> str:
        return self.to_base64()

    @classmethod
    def parse(cls, text: object) -> PublicKey:
        """A public key from untrusted text: canonical base64, and not a low-order point (all-zero or one of the
        few points that make every shared secret zero, which WireGuard refuses at handshake time)."""
        key = cls(_decode(text, cls.kind))
        if not key.is_usable():
            raise InputError("invalid public key", key.to_base64(),
                             "it is a low-order (all-zero or weak) point: give the client's real public key")
        return key

    def is_usable(self) -> bool:
        """False for the low-order points of Curve25519: any exchange with them yields zero."""
        from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PublicKey

        try:
            _probe_private().exchange(X25519PublicKey.from_public_bytes(self._raw))
        except ValueError:
            return False
        return True


class _SecretKey(_Key):
    def __repr__(self) -> str:
        return f"{type(self).__name__}(hidden)"

    def __str__(self) -> str:
        return "(hidden)"


class PrivateKey(_SecretKey):
    """An X25519 private key; `str`/`repr` never reveal it, use `to_base64()` deliberately."""

    kind = "private key"

    @classmethod
    def generate(cls) -> PrivateKey:
        # cryptography loads in ~20 ms: only when a key is made or derived, not for every command.
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

        key = X25519PrivateKey.generate()
        raw = key.private_bytes(
            serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
        )
        return cls(raw)

    def public_key(self) -> PublicKey:
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

        key = X25519PrivateKey.from_private_bytes(self._raw)
        return PublicKey(key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw))


def _probe_private() -> X25519PrivateKey:
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

    global _PROBE
    if _PROBE is None:
        _PROBE = X25519PrivateKey.generate()
    return _PROBE


_PROBE: X25519PrivateKey | None = None


class PresharedKey(_SecretKey):
    """A symmetric preshared key (32 random bytes)."""

    kind = "preshared key"

    @classmethod
    def generate(cls) -> PresharedKey:
        return cls(os.urandom(KEY_LEN))
