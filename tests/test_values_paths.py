"""The parsers deploy options added to `bulwark_vpn.values`: paths, https URLs, a word from a fixed set."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bulwark_vpn.errors import InputError
from bulwark_vpn.values import parse_absolute_path, parse_choice, parse_https_url, parse_relative_path

BREAKS = ["\n", "\r", "\x85", "\u2028", "\u2029", "\x00", "\t", "\x1b"]


@pytest.mark.parametrize("good", ["/etc/bulwark", "/usr/local/bin/bulwark", "/opt/a.b/c-d/e_f", "/srv/x+y=z@1",
                                  "/etc/.hidden"])
def test_absolute_paths(good: str) -> None:
    assert parse_absolute_path(good) == good


@pytest.mark.parametrize("bad", ["", "/", "etc/bulwark", "/etc//bulwark", "/etc/bulwark/", "/etc/../root",
                                 "/etc/./x", "/etc/bul wark", "/etc/%i", "/etc/a:b", "/etc/a'b", '/etc/a"b',
                                 "/etc/a\\b", "/etc/$x", "/etc/a`b`", "/etc/bulwark\n", "/etc/\u00e9t\u00e9"])
def test_absolute_paths_refused(bad: str) -> None:
    with pytest.raises(InputError, match="invalid path") as info:
        parse_absolute_path(bad)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("good", [".", "config", "./config", "wg_confs/wg0.conf", "peer_a+b=c/peer_a+b=c.conf"])
def test_relative_paths(good: str) -> None:
    assert parse_relative_path(good) == good


@pytest.mark.parametrize("bad", ["", "./", "..", "../x", "a/../b", "/abs", "a//b", "a/", "a:b", "a b", "a\n"])
def test_relative_paths_refused(bad: str) -> None:
    with pytest.raises(InputError, match="invalid relative path"):
        parse_relative_path(bad)


@pytest.mark.parametrize("good", [
    "https://files.example.org/bulwark_vpn-0.1.0-py3-none-any.whl",
    "https://203.0.113.5:8443/w.whl",
    "https://[2001:db8::1]/w.whl?sig=a%2Fb&x=1",
    "https://files.example.org",
])
def test_https_urls(good: str) -> None:
    assert parse_https_url(good) == good


@pytest.mark.parametrize("bad", [
    "http://files.example.org/w.whl", "https://", "https:///w.whl", "https://user:pw@host/w.whl",
    "https://host/w.whl#frag", "https://host/a b.whl", "https://host/a'b", 'https://host/a"b', "https://host/$x",
    "https://host/${x}", "https://host/%{x}", "https://host/a`b`", "https://host/a\\b", "https://host:0/w",
    "https://host:99999/w", "https://fe80::1%eth0/w", "https://[fe80::1%eth0]/w", "https://host/w\n",
    "https://999.1.1.1/w",
])
def test_https_urls_refused(bad: str) -> None:
    with pytest.raises(InputError, match="invalid URL") as info:
        parse_https_url(bad)
    assert "\n" not in str(info.value)


def test_choice_is_exact() -> None:
    assert parse_choice("NodePort", ("LoadBalancer", "NodePort"), "service type") == "NodePort"
    for bad in ("nodeport", " NodePort", "NodePort\n", 5, None):
        with pytest.raises(InputError, match="invalid service type"):
            parse_choice(bad, ("LoadBalancer", "NodePort"), "service type")


@settings(max_examples=200)
@given(st.sampled_from(["/etc/bulwark", "./config", "https://h.example/w.whl", "pvc"]), st.sampled_from(BREAKS),
       st.integers(min_value=0, max_value=30))
def test_a_line_break_anywhere_is_refused(clean: str, brk: str, at: int) -> None:
    hostile = clean[:at] + brk + clean[at:]
    for parse in (parse_absolute_path, parse_relative_path, parse_https_url,
                  lambda v: parse_choice(v, ("pvc",), "storage")):
        with pytest.raises(InputError):
            parse(hostile)
