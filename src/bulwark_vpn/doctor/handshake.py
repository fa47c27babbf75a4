"""A real WireGuard handshake from Python: Noise_IKpsk2 initiation, response validation, keepalive.

This module owns speaking the WireGuard handshake protocol (https://www.wireguard.com/protocol/) with a
peer's own keys, so `doctor --peer-config` can prove that a server knows a peer instead of guessing:

* `initiation` builds a type-1 message (ephemeral key, encrypted static key, TAI64N timestamp, mac1 keyed from
  the responder's public key);
* `consume_response` validates a type-2 message (mac1 keyed from our public key, receiver index) and decrypts
  its empty payload with the keys derived from both DH results and the preshared key: only a server holding
  this peer's public key *and* the same preshared key produces a response that decrypts;
* `probe` sends initiations over UDP and classifies what comes back (`HandshakeOutcome`);
* `keepalive` (with `probe(confirm=True)`) sends the first transport message, which completes the handshake
  on the server side (its "latest handshake" is set), as a real client's first packet would.

Pure protocol code plus one UDP socket; it never prints.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import socket
import struct
import time
from dataclasses import dataclass
from typing import Literal

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

from bulwark_vpn.keys import PresharedKey, PrivateKey, PublicKey

CONSTRUCTION = b"Noise_IKpsk2_25519_ChaChaPoly_BLAKE2s"
IDENTIFIER = b"WireGuard v1 zx2c4 Jason@zx2c4.com"
LABEL_MAC1 = b"mac1----"

TYPE_INITIATION, TYPE_RESPONSE, TYPE_COOKIE, TYPE_TRANSPORT = 1, 2, 3, 4
INITIATION_SIZE, RESPONSE_SIZE, COOKIE_SIZE = 148, 92, 64
# TAI64 labels seconds from 1970 TAI as 2^62 + seconds; WireGuard adds the 10 s TAI-UTC offset of 1970.
_TAI64_BASE = (1 << 62) + 10
_ZERO_KEY = bytes(32)


def _hash(*parts: bytes) -> bytes:
    return hashlib.blake2s(b"".join(parts), digest_size=32).digest()


def _mac(key: bytes, data: bytes) -> bytes:
    return hashlib.blake2s(data, digest_size=16, key=key).digest()


def _hmac(key: bytes, data: bytes) -> bytes:
    return hmac.new(key, data, hashlib.blake2s).digest()


def _kdf(key: bytes, data: bytes, count: int) -> list[bytes]:
    """HKDF with HMAC-BLAKE2s, as the Noise spec and WireGuard define it: `count` 32-byte outputs."""
    prk = _hmac(key, data)
    outputs: list[bytes] = []
    previous = b""
    for index in range(1, count + 1):
        previous = _hmac(prk, previous + bytes([index]))
        outputs.append(previous)
    return outputs


def _aead_nonce(counter: int) -> bytes:
    return b"\x00" * 4 + struct.pack("<Q", counter)


def _encrypt(key: bytes, counter: int, plain: bytes, auth: bytes) -> bytes:
    return ChaCha20Poly1305(key).encrypt(_aead_nonce(counter), plain, auth)


def _decrypt(key: bytes, counter: int, sealed: bytes, auth: bytes) -> bytes:
    return ChaCha20Poly1305(key).decrypt(_aead_nonce(counter), sealed, auth)


def _dh(private: X25519PrivateKey, public: bytes) -> bytes:
    return private.exchange(X25519PublicKey.from_public_bytes(public))


def _raw_public(private: X25519PrivateKey) -> bytes:
    return private.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def tai64n(moment_ns: int | None = None) -> bytes:
    """The 12-byte TAI64N timestamp WireGuard puts in an initiation (the server rejects replays by it)."""
    now = time.time_ns() if moment_ns is None else moment_ns
    seconds, nanos = divmod(now, 1_000_000_000)
    return struct.pack(">QI", _TAI64_BASE + seconds, nanos)


def mac1_key(public: bytes) -> bytes:
    """The key of mac1 for messages sent *to* the owner of `public`."""
    return _hash(LABEL_MAC1, public)


@dataclass
class InitiatorState:
    """What the initiator keeps between its initiation and the response."""

    sender_index: int
    chaining_key: bytes
    hash: bytes
    ephemeral: X25519PrivateKey
    static_private: X25519PrivateKey
    static_public: bytes
    preshared: bytes


@dataclass(frozen=True)
class Session:
    """Transport keys after a completed handshake (initiator side)."""

    sending_key: bytes
    receiving_key: bytes
    receiver_index: int  # the responder's index, put in every transport message we send


def initiation(
    private_key: PrivateKey,
    server_public: PublicKey,
    preshared_key: PresharedKey | None = None,
    *,
    sender_index: int | None = None,
    timestamp: bytes | None = None,
) -> tuple[bytes, InitiatorState]:
    """A handshake initiation message (148 bytes) and the state needed to read the response."""
    static_private = X25519PrivateKey.from_private_bytes(private_key.raw)
    static_public = _raw_public(static_private)
    responder = server_public.raw
    index = sender_index if sender_index is not None else struct.unpack("<I", os.urandom(4))[0]

    chaining = _hash(CONSTRUCTION)
    running = _hash(chaining, IDENTIFIER)
    running = _hash(running, responder)

    ephemeral = X25519PrivateKey.generate()
    ephemeral_public = _raw_public(ephemeral)
    chaining = _kdf(chaining, ephemeral_public, 1)[0]
    running = _hash(running, ephemeral_public)

    chaining, key = _kdf(chaining, _dh(ephemeral, responder), 2)
    encrypted_static = _encrypt(key, 0, static_public, running)
    running = _hash(running, encrypted_static)

    chaining, key = _kdf(chaining, _dh(static_private, responder), 2)
    encrypted_time = _encrypt(key, 0, timestamp if timestamp is not None else tai64n(), running)
    running = _hash(running, encrypted_time)

    body = struct.pack("<B3xI", TYPE_INITIATION, index) + ephemeral_public + encrypted_static + encrypted_time
    mac1 = _mac(mac1_key(responder), body)
    message = body + mac1 + bytes(16)  # mac2 stays zero: we hold no cookie
    state = InitiatorState(
        sender_index=index,
        chaining_key=chaining,
        hash=running,
        ephemeral=ephemeral,
        static_private=static_private,
        static_public=static_public,
        preshared=preshared_key.raw if preshared_key is not None else _ZERO_KEY,
    )
    return message, state


class ResponseError(Exception):
    """A type-2 message that does not complete our handshake; `reason` says which step failed."""

    def __init__(self, reason: Literal["size", "index", "mac1", "decrypt"], message: str) -> None:
        super().__init__(message)
        self.reason = reason


def consume_response(state: InitiatorState, message: bytes) -> Session:
    """Validate a handshake response and derive the transport keys; raise ResponseError on any mismatch.

    mac1 proves the responder addressed *our* public key; decrypting the empty payload proves it derived the
    same keys: it holds the private key matching the config's server PublicKey, knows our public key, and
    mixed in the same preshared key (the preshared key enters only here, so a mismatch fails exactly this step).
    """
    if len(message) != RESPONSE_SIZE or message[0] != TYPE_RESPONSE:
        raise ResponseError("size", f"not a handshake response ({len(message)} bytes, type {message[:1].hex()})")
    sender, receiver = struct.unpack_from("<II", message, 4)
    if receiver != state.sender_index:
        raise ResponseError("index", "the response answers another initiation")
    if not hmac.compare_digest(_mac(mac1_key(state.static_public), message[:60]), message[60:76]):
        raise ResponseError("mac1", "the response's mac1 is not keyed from this peer's public key")
    ephemeral = message[12:44]
    encrypted_nothing = message[44:60]

    chaining = _kdf(state.chaining_key, ephemeral, 1)[0]
    running = _hash(state.hash, ephemeral)
    chaining = _kdf(chaining, _dh(state.ephemeral, ephemeral), 1)[0]
    chaining = _kdf(chaining, _dh(state.static_private, ephemeral), 1)[0]
    chaining, tau, key = _kdf(chaining, state.preshared, 3)
    running = _hash(running, tau)
    try:
        _decrypt(key, 0, encrypted_nothing, running)
    except InvalidTag:
        raise ResponseError("decrypt", "the response's empty payload does not decrypt") from None
    sending, receiving = _kdf(chaining, b"", 2)
    return Session(sending_key=sending, receiving_key=receiving, receiver_index=sender)


def keepalive(session: Session, counter: int = 0) -> bytes:
    """A transport message with an empty payload: completes the handshake on the responder's side."""
    header = struct.pack("<B3xIQ", TYPE_TRANSPORT, session.receiver_index, counter)
    return header + _encrypt(session.sending_key, counter, b"", b"")


HandshakeVerdict = Literal["ok", "psk_mismatch", "bad_response", "cookie", "refused", "unreachable", "no_answer"]


@dataclass(frozen=True)
class HandshakeOutcome:
    """What happened when we tried: `verdict` names the cause, `detail` is one line of evidence."""

    verdict: HandshakeVerdict
    detail: str
    attempts: int
    rtt_ms: float | None = None
    session: Session | None = None


def probe(
    address: tuple[str, int],
    private_key: PrivateKey,
    server_public: PublicKey,
    preshared_key: PresharedKey | None = None,
    *,
    attempts: int = 3,
    timeout: float = 1.0,
    confirm: bool = False,
    fwmark: int | None = None,
) -> HandshakeOutcome:
    """Send up to `attempts` initiations to `address` (an IP and port), each waiting `timeout` s for a response.

    `confirm=True` also sends a keepalive so that the server records the handshake. `fwmark` marks our socket
    like WireGuard's own (so a full-tunnel wg-quick on this host does not route the probe into its tunnel).
    """
    family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        if fwmark:
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_MARK, fwmark)
            except OSError:
                pass  # without CAP_NET_ADMIN: the probe still works unless a full tunnel captures it
        # connect(): the kernel then reports ICMP errors (nothing listening, no route) on this socket.
        try:
            sock.connect(address)
        except OSError as exc:
            return HandshakeOutcome("unreachable", f"cannot send to {_show(address)}: {exc.strerror}", 0)
        last_error: HandshakeOutcome | None = None
        for attempt in range(1, attempts + 1):
            message, state = initiation(private_key, server_public, preshared_key)
            started = time.monotonic()
            try:
                sock.send(message)
            except OSError as exc:
                return _socket_error(address, exc, attempt)
            outcome = _await_response(sock, state, started, timeout, attempt)
            if outcome is None:
                continue
            if outcome.verdict in ("refused", "unreachable"):
                return outcome
            if outcome.verdict == "ok" and confirm and outcome.session is not None:
                sock.send(keepalive(outcome.session))
            if outcome.verdict != "bad_response":
                return outcome
            last_error = outcome
    if last_error is not None:
        return last_error
    return HandshakeOutcome("no_answer", f"no answer from {_show(address)} to {attempts} initiations "
                            f"in {attempts * timeout:g} s", attempts)


def _await_response(
    sock: socket.socket, state: InitiatorState, started: float, timeout: float, attempt: int
) -> HandshakeOutcome | None:
    deadline = started + timeout
    while (left := deadline - time.monotonic()) > 0:
        sock.settimeout(left)
        try:
            data = sock.recv(2048)
        except TimeoutError:
            return None
        except OSError as exc:
            return _socket_error(sock.getpeername(), exc, attempt)
        rtt = (time.monotonic() - started) * 1000
        if data[:1] == bytes([TYPE_COOKIE]) and len(data) == COOKIE_SIZE:
            return HandshakeOutcome("cookie", "the server is under load and answered with a cookie reply",
                                    attempt, rtt)
        if data[:1] != bytes([TYPE_RESPONSE]):
            continue
        try:
            session = consume_response(state, data)
        except ResponseError as exc:
            if exc.reason == "index":
                continue  # a late answer to an earlier attempt
            verdict: HandshakeVerdict = "psk_mismatch" if exc.reason == "decrypt" else "bad_response"
            return HandshakeOutcome(verdict, str(exc), attempt, rtt)
        return HandshakeOutcome("ok", f"handshake response verified in {rtt:.1f} ms", attempt, rtt, session)
    return None


def _socket_error(address: tuple[str, int], exc: OSError, attempt: int) -> HandshakeOutcome:
    if isinstance(exc, ConnectionRefusedError):
        return HandshakeOutcome("refused", f"{_show(address)} refused it (ICMP port unreachable): "
                                "nothing listens on that UDP port", attempt)
    return HandshakeOutcome("unreachable", f"cannot reach {_show(address)}: {exc.strerror or exc}", attempt)


def _show(address: tuple[str, int]) -> str:
    host, port = address[0], address[1]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
