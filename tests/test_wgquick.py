"""wg-quick render/parse: round trip (Hypothesis), tolerance of real files, one-line errors."""

import ipaddress

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bulwark_vpn.errors import InputError
from bulwark_vpn.keys import PresharedKey, PrivateKey, PublicKey
from bulwark_vpn.model import WgConfig, WgInterfaceSection, WgPeerSection
from bulwark_vpn.render.wgquick import parse_config, render_config
from bulwark_vpn.values import format_endpoint, parse_endpoint

keys32 = st.binary(min_size=32, max_size=32)
v4_iface = st.builds(
    lambda a, p: ipaddress.IPv4Interface((a, p)), st.integers(0, 2**32 - 1), st.integers(0, 32)
)
v6_iface = st.builds(
    lambda a, p: ipaddress.IPv6Interface((a, p)), st.integers(0, 2**128 - 1), st.integers(0, 128)
)
v4_net = st.builds(lambda i: i.network, v4_iface)
v6_net = st.builds(lambda i: i.network, v6_iface)
hosts = st.one_of(
    st.from_regex(r"[a-z]([a-z0-9-]{0,20}[a-z0-9])?(\.[a-z]([a-z0-9-]{0,10}[a-z0-9])?){0,3}", fullmatch=True),
    st.builds(lambda i: str(i.ip), v4_iface),
)
endpoints = st.one_of(
    st.none(),
    st.builds(format_endpoint, hosts, st.integers(1, 65535)),
    st.builds(lambda i, p: format_endpoint(str(i.ip), p), v6_iface, st.integers(1, 65535)),
)
comments = st.one_of(st.none(), st.from_regex(r"peer_[a-z0-9_]{1,10}", fullmatch=True))

peers = st.builds(
    WgPeerSection,
    # Low-order points (all-zero bytes, which Hypothesis likes) are refused by the parser on purpose.
    public_key=st.builds(PublicKey, keys32).filter(lambda key: key.is_usable()),
    allowed_ips=st.lists(st.one_of(v4_net, v6_net), max_size=4).map(tuple),
    preshared_key=st.one_of(st.none(), st.builds(PresharedKey, keys32)),
    endpoint=endpoints,
    keepalive=st.one_of(st.none(), st.integers(1, 65535)),
    comment=comments,
)
configs = st.builds(
    WgConfig,
    interface=st.builds(
        WgInterfaceSection,
        private_key=st.builds(PrivateKey, keys32),
        addresses=st.lists(st.one_of(v4_iface, v6_iface), max_size=3).map(tuple),
        listen_port=st.one_of(st.none(), st.integers(0, 65535)),
        mtu=st.one_of(st.none(), st.integers(1280, 9000)),
        dns=st.lists(
            st.builds(lambda i: i.ip, v4_iface).filter(lambda a: not (a.is_unspecified or a.is_multicast)).map(str),
            max_size=2, unique=True,
        ).map(tuple),
    ),
    peers=st.lists(peers, max_size=5).map(tuple),
)


@pytest.mark.slow
@settings(max_examples=300, deadline=None)
@given(configs)
def test_render_then_parse_gives_the_same_model(config):
    assert parse_config(render_config(config)) == config


def test_parse_accepts_hand_written_files():
    key = PrivateKey.generate()
    peer = PrivateKey.generate().public_key()
    text = f"""
    # a comment
    [interface]
    address = 10.0.0.1/24
    Address = fd00::1/64
    privatekey = {key.to_base64()}   # trailing comment
    ListenPort = 51820
    PostUp = iptables -A FORWARD -i %i -j ACCEPT

    [Peer]
    PublicKey = {peer}
    AllowedIPs = 10.0.0.2/32,  fd00::2/128
    AllowedIPs = 192.168.7.0/24
    PersistentKeepalive = off
    """
    config = parse_config(text)
    assert [str(a) for a in config.interface.addresses] == ["10.0.0.1/24", "fd00::1/64"]
    assert [str(n) for n in config.peers[0].allowed_ips] == ["10.0.0.2/32", "fd00::2/128", "192.168.7.0/24"]
    assert config.peers[0].keepalive is None


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[Peer]\nPublicKey = x\n", "exactly one \\[Interface\\]"),
        ("[Interface]\nAddress = 10.0.0.1/24\n", "no PrivateKey"),
        ("[Interface]\nPrivateKey = abc\n", "invalid private key"),
        ("[Bogus]\n", "unknown section"),
        ("[Interface]\nnot a key value\n", "cannot parse"),
    ],
)
def test_parse_errors_are_one_line(text, message):
    with pytest.raises(InputError, match=message) as info:
        parse_config(text, "x.conf")
    assert "\n" not in str(info.value)


def test_endpoints():
    assert format_endpoint("2001:db8::1", 51820) == "[2001:db8::1]:51820"
    assert format_endpoint("vpn.example.com", 51821) == "vpn.example.com:51821"
    assert parse_endpoint("[2001:db8::1]:51820") == ("2001:db8::1", 51820)
    assert parse_endpoint("0.0.0.0:51821") == ("0.0.0.0", 51821)
    for bad in ("host", "host:0", "host:70000", "2001:db8::1:51820", ":51820", "host:port"):
        with pytest.raises(InputError, match="invalid endpoint"):
            parse_endpoint(bad)


@pytest.mark.parametrize(
    "good",
    ["vpn.example.com:51820", "vpn.example.com.:1", "a:65535", "x-1.y2:51820", "203.0.113.5:51821",
     "[2001:db8::1]:51820", "[::ffff:192.0.2.1]:5", f"{'a' * 63}.example:51820"],
)
def test_endpoint_accepts_ip_addresses_and_dns_names(good):
    host, port = parse_endpoint(good)
    # Addresses come back in canonical form (::ffff:192.0.2.1 is ::ffff:c000:201); names as given.
    assert parse_endpoint(format_endpoint(host, port)) == (host, port)
    assert str(parse_endpoint(good)) == format_endpoint(host, port)


@pytest.mark.parametrize(
    "injection",
    [
        "x\nPostUp = touch /tmp/pwn\n#:51820",  # a new line in the rendered config, run as root by wg-quick
        "x\rPostUp = touch /tmp/pwn\r#:51820",
        "vpn.example.com:51820\nPostUp = touch /tmp/pwn",
        "vpn.example.com:51820\n",
        " vpn.example.com:51820",
        "vpn example.com:51820",
        "vpn.example.com\t:51820",
        "vpn.example.com\x00:51820",
        "vpn.example.com;touch /tmp/pwn:51820",
        "$(touch /tmp/pwn):51820",
        "[2001:db8::1\nPostUp = x]:51820",
        "[fe80::1%eth0\nPostUp = x]:51820",
        "[fe80::1%eth0]:51820",
        "vpn.exämple.com:51820",
    ],
)
def test_endpoint_refuses_injection_attempts_in_one_line(injection):
    with pytest.raises(InputError, match="invalid endpoint") as info:
        parse_endpoint(injection)
    message = str(info.value)
    assert "\n" not in message and "\r" not in message and "\x00" not in message
    assert "IP address" in message or "HOST:PORT" in message  # the fix


@pytest.mark.parametrize(
    "bad",
    ["-vpn.example.com:1", "vpn-.example.com:1", "vpn..example.com:1", ".vpn:1", f"{'a' * 64}.example:1",
     ".".join(["a" * 50] * 5) + ":1", "999.1.1.1:51820", "10.0.0:51820", "[1.2.3.4]:51820", "[vpn.example.com]:1",
     "under_score.example:1", "host:+5", "host:٣"],
)
def test_endpoint_refuses_what_is_not_an_address_or_a_dns_name(bad):
    with pytest.raises(InputError, match="invalid endpoint"):
        parse_endpoint(bad)


def test_endpoint_error_names_the_value_escaped():
    with pytest.raises(InputError) as info:
        parse_endpoint("x\nPostUp = touch /tmp/pwn\n#:51820")
    assert "'x\\nPostUp = touch /tmp/pwn\\n#:51820'" in str(info.value)
    assert "vpn.example.com:51820" in str(info.value)
