"""Secrets of the control plane: passwords (argon2id), random tokens and their hashes, TOTP, recovery codes, and the
password policy. A secret is shown once when made and never stored, logged or put in a URL path as given.

Random tokens (API tokens, session ids, share and setup links) carry 256 bits, so a plain SHA-256 is the right
stored form for them: there is nothing to guess. Passwords are low-entropy and get argon2id.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
from importlib import resources

from bulwark_vpn.errors import InputError
from bulwark_vpn.values import require_text

TOKEN_PREFIX = "bwk_"  # noqa: S105 - the visible prefix of API tokens, not a secret
MIN_PASSWORD = 12
MAX_PASSWORD = 256
TOTP_STEP = 30
RECOVERY_CODES = 10


class Secret(str):
    """A secret string: repr and str of the wrapper never show it (the value is used through `reveal()`)."""

    def __repr__(self) -> str:
        return "Secret(hidden)"

    def reveal(self) -> str:
        return str.__str__(self)


def random_token(prefix: str = "") -> str:
    """256 random bits, URL-safe text."""
    return prefix + base64.urlsafe_b64encode(secrets.token_bytes(32)).decode().rstrip("=")


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def same(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode(), b.encode())


# -- passwords ------------------------------------------------------------------------------------------

def _hasher():
    from argon2 import PasswordHasher

    return PasswordHasher()  # argon2id, the library's current recommended cost


def hash_password(password: str) -> str:
    return str(_hasher().hash(password))


def verify_password(stored: str | None, password: str) -> bool:
    """Constant work whether the user exists or not: a missing hash is checked against a dummy."""
    from argon2.exceptions import Argon2Error, InvalidHashError

    target = stored or _DUMMY_HASH()
    try:
        ok = bool(_hasher().verify(target, password))
    except (Argon2Error, InvalidHashError):
        ok = False
    return ok and stored is not None


_dummy: list[str] = []


def _DUMMY_HASH() -> str:  # noqa: N802 - a constant made on first use
    if not _dummy:
        _dummy.append(hash_password(secrets.token_hex(16)))
    return _dummy[0]


def _common_passwords() -> frozenset[str]:
    text = resources.files("bulwark_vpn").joinpath("data/common-passwords.txt").read_text()
    return frozenset(line.strip().lower() for line in text.splitlines() if line.strip() and not line.startswith("#"))


def check_password_policy(password: object, user: str) -> str:
    """A password a person chose: 12 to 256 characters, not a well-known one, not the user name."""
    text = require_text(password, "password", "use 12 or more characters")
    if len(text) < MIN_PASSWORD:
        raise InputError("the password is too short", None, f"use at least {MIN_PASSWORD} characters")
    if len(text) > MAX_PASSWORD:
        raise InputError("the password is too long", None, f"use at most {MAX_PASSWORD} characters")
    lowered = text.lower()
    if lowered in _common_passwords() or user.lower() in lowered or len(set(text)) < 4:
        raise InputError("the password is too easy to guess", None,
                         "avoid common passwords, repeated characters and the user name: a few unrelated words work")
    return text


# -- TOTP ------------------------------------------------------------------------------------------------

def new_totp_secret() -> str:
    import pyotp

    return str(pyotp.random_base32(32))


def totp_uri(secret: str, user: str, issuer: str = "Bulwark") -> str:
    import pyotp

    return str(pyotp.TOTP(secret).provisioning_uri(name=user, issuer_name=issuer))


def totp_step(secret: str, code: object, last_step: int, now: float | None = None) -> int | None:
    """The time step a 6-digit code matches (this one or the one before or after, for clock drift), if newer than
    `last_step`: a code is accepted once only. None when it does not match."""
    import pyotp

    if not isinstance(code, str) or len(code) != 6 or not code.isascii() or not code.isdigit():
        return None
    moment = time.time() if now is None else now
    totp = pyotp.TOTP(secret)
    current = int(moment // TOTP_STEP)
    for step in (current - 1, current, current + 1):
        if step > last_step and hmac.compare_digest(totp.at(step * TOTP_STEP), code):
            return step
    return None


def new_recovery_codes() -> list[str]:
    """Ten single-use codes of 10 base32 characters (50 bits each), shown as XXXXX-XXXXX."""
    alphabet = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"
    codes = []
    for _ in range(RECOVERY_CODES):
        raw = "".join(secrets.choice(alphabet) for _ in range(10))
        codes.append(f"{raw[:5]}-{raw[5:]}")
    return codes


def recovery_hash(user: str, code: str) -> str:
    normalized = code.strip().upper().replace("-", "").replace(" ", "")
    return hashlib.sha256(f"{user}\0{normalized}".encode()).hexdigest()
