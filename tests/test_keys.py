"""Key types: generation, parsing, hidden secrets, constant-time equality, agreement with `wg pubkey`."""

import subprocess

import pytest

from bulwark_vpn.errors import InputError
from bulwark_vpn.keys import PresharedKey, PrivateKey, PublicKey


def test_private_key_repr_and_str_hide_the_secret():
    key = PrivateKey.generate()
    secret = key.to_base64()
    assert secret not in repr(key) and secret not in str(key) and secret not in f"{key}"
    assert repr(key) == "PrivateKey(hidden)"
    psk = PresharedKey.generate()
    assert psk.to_base64() not in repr(psk)


def test_public_key_matches_wg_pubkey():
    key = PrivateKey.generate()
    out = subprocess.run(["wg", "pubkey"], input=key.to_base64().encode(), capture_output=True, check=True)
    assert out.stdout.decode().strip() == str(key.public_key())


def test_round_trip_and_equality():
    key = PrivateKey.generate()
    assert PrivateKey.from_base64(key.to_base64()) == key
    assert PrivateKey.generate() != key
    assert PublicKey.from_base64(str(key.public_key())) == key.public_key()


@pytest.mark.parametrize("bad", ["", "abc", "A" * 44, "not base64!" * 4, "AAAA" * 11 + "===="])
def test_malformed_keys_are_rejected_with_a_clear_message(bad):
    with pytest.raises(InputError, match="invalid public key") as info:
        PublicKey.from_base64(bad)
    assert "wg genkey" in str(info.value)


def test_malformed_private_key_message_does_not_echo_it():
    secret_like = "x" * 43
    with pytest.raises(InputError) as info:
        PrivateKey.from_base64(secret_like)
    assert secret_like not in str(info.value)
