"""Image references: the parser (whole-value match, hostile strings), the round trip, and how `deploy`
combines `--image`, `--tag` and `--digest` into the reference the rendered files carry."""

from __future__ import annotations

import pytest
import yaml
from hypothesis import assume, given
from hypothesis import strategies as st

from bulwark_vpn import __version__
from bulwark_vpn.deploy import DeployOptions, render_docker, render_kubernetes
from bulwark_vpn.errors import InputError
from bulwark_vpn.values.image import ImageReference, parse_image_digest, parse_image_reference, parse_image_tag

SHA = "sha256:" + "0123456789abcdef" * 4


@pytest.mark.parametrize(
    ("text", "registry", "repository", "tag", "digest"),
    [
        ("bulwark-vpn", None, "bulwark-vpn", None, None),
        ("bulwark-vpn:0.1.0", None, "bulwark-vpn", "0.1.0", None),
        ("localhost/bulwark-vpn:test", "localhost", "bulwark-vpn", "test", None),
        ("localhost:5000/team/bulwark-vpn", "localhost:5000", "team/bulwark-vpn", None, None),
        ("registry.example.org/net/bulwark-vpn:1.2_rc-3", "registry.example.org", "net/bulwark-vpn", "1.2_rc-3", None),
        ("10.0.0.5:443/bulwark", "10.0.0.5:443", "bulwark", None, None),
        ("[fd00::1]:5000/bulwark:v1", "[fd00::1]:5000", "bulwark", "v1", None),
        ("Registry/bulwark", "Registry", "bulwark", None, None),
        ("docker.io/library/debian:bookworm-slim", "docker.io", "library/debian", "bookworm-slim", None),
        ("team/bulwark__vpn.x--y", None, "team/bulwark__vpn.x--y", None, None),
        (f"bulwark-vpn@{SHA}", None, "bulwark-vpn", None, SHA),
        (f"r.example:5000/bulwark-vpn:0.1.0@{SHA}", "r.example:5000", "bulwark-vpn", "0.1.0", SHA),
        ("bulwark@sha512:" + "ab" * 64, None, "bulwark", None, "sha512:" + "ab" * 64),
    ],
)
def test_references_split_into_their_parts(text: str, registry: str | None, repository: str, tag: str | None,
                                           digest: str | None) -> None:
    reference = parse_image_reference(text)
    assert (reference.registry, reference.repository, reference.tag, reference.digest) == (
        registry, repository, tag, digest)
    assert str(reference) == text
    assert parse_image_reference(str(reference)) == reference


@pytest.mark.parametrize(
    "text",
    [
        "",
        " bulwark",
        "bulwark ",
        "bulwark vpn",
        "bulwark\n",
        "bulwark\nkind: Secret",
        "bulwark\r",
        "bul\x00wark",
        "bulwark\u2028x",
        "bulwark\x85",
        "Bulwark-VPN",  # upper case in the repository
        "localhost/Bulwark",
        "bulwark::1",
        "bulwark:",
        ":1",
        "/bulwark",
        "bulwark/",
        "a//b",
        "registry.example.org/",
        "registry.example.org:/bulwark",
        "registry.example.org:99999/bulwark",
        "registry.example.org:5000:1/bulwark",
        "-registry.example.org/bulwark",
        "[fd00::1%eth0]:5000/bulwark",
        "[fd00:::1::]/bulwark",
        "bulwark:-tag",
        "bulwark:" + "t" * 129,
        "bulwark@",
        "bulwark@sha256:abc",
        "bulwark@sha256:" + "AB" * 32,
        "bulwark@md5:" + "ab" * 16,
        f"bulwark@{SHA}@{SHA}",
        "bulwark-.vpn",
        "bulwark_",
        "x" * 256,
        "a.b/" + "c" * 252,
    ],
)
def test_hostile_and_malformed_references_are_refused_in_one_line(text: str) -> None:
    with pytest.raises(InputError) as info:
        parse_image_reference(text)
    message = str(info.value)
    assert message.startswith("invalid image")
    assert "\n" not in message and "\r" not in message and "\u2028" not in message and "\x00" not in message


@given(st.text(max_size=80))
def test_any_text_parses_to_a_reference_that_renders_back_or_is_refused_in_one_line(text: str) -> None:
    try:
        reference = parse_image_reference(text)
    except InputError as exc:
        assert len(str(exc).splitlines()) == 1
        return
    assert str(reference) == text
    assert not any(c.isspace() or ord(c) < 32 for c in text)


_COMPONENT = st.from_regex(r"[a-z0-9]{1,6}([._-][a-z0-9]{1,6}){0,2}", fullmatch=True)


@given(
    registry=st.none() | st.sampled_from(["localhost", "localhost:5000", "r.example.org", "10.1.2.3:443", "[::1]"]),
    path=st.lists(_COMPONENT, min_size=1, max_size=3),
    tag=st.none() | st.from_regex(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,20}", fullmatch=True),
    digest=st.none() | st.just(SHA),
)
def test_built_references_round_trip(registry: str | None, path: list[str], tag: str | None,
                                     digest: str | None) -> None:
    # Without a registry, a first part holding a '.' (or `localhost`) would be read as one: the grammar's rule.
    assume(registry is not None or len(path) == 1 or ("." not in path[0] and path[0] != "localhost"))
    reference = ImageReference("/".join(path), registry, tag, digest)
    assert parse_image_reference(str(reference)) == reference


def test_tags_and_digests_alone() -> None:
    assert parse_image_tag("0.1.0") == "0.1.0"
    assert parse_image_digest(SHA) == SHA
    for bad in ("", "a b", ".x", "x\n", "t" * 129):
        with pytest.raises(InputError, match="invalid image tag"):
            parse_image_tag(bad)
    for bad in ("", "sha256:", SHA + "\n", SHA.upper(), "sha256:" + "a" * 63):
        with pytest.raises(InputError, match="invalid image digest"):
            parse_image_digest(bad)


# --- deploy: --image, --tag and --digest ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        ({}, f"bulwark-vpn:{__version__}"),
        ({"image": "localhost/bulwark-vpn:test"}, "localhost/bulwark-vpn:test"),
        ({"image": "localhost:5000/bulwark-vpn"}, f"localhost:5000/bulwark-vpn:{__version__}"),
        ({"image": "localhost:5000/bulwark-vpn", "image_tag": "2"}, "localhost:5000/bulwark-vpn:2"),
        ({"image": f"r.example.org/bulwark@{SHA}"}, f"r.example.org/bulwark@{SHA}"),
        ({"image": "r.example.org/bulwark", "image_digest": SHA}, f"r.example.org/bulwark@{SHA}"),
        ({"image": "r.example.org/bulwark:1", "image_digest": SHA}, f"r.example.org/bulwark:1@{SHA}"),
        ({"image": "r.example.org/bulwark", "image_tag": "1", "image_digest": SHA}, f"r.example.org/bulwark:1@{SHA}"),
    ],
)
def test_deploy_combines_image_tag_and_digest(options: dict[str, str], expected: str) -> None:
    opts = DeployOptions(peers=("leo_mac",), **options)
    assert opts.image_ref == expected
    assert opts.with_changes(peers=("bob",)).image_ref == expected  # validated again: still the same
    compose = yaml.safe_load(render_docker(opts)["compose.yaml"])
    assert compose["services"]["bulwark"]["image"] == expected
    manifests = list(yaml.safe_load_all(render_kubernetes(opts)["bulwark.yaml"]))
    deployment = next(m for m in manifests if m["kind"] == "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    images = {c["image"] for c in pod["containers"] + pod["initContainers"]}
    assert images == {expected}
    assert parse_image_reference(expected) == opts.image_reference


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"image": "localhost/bulwark-vpn:test", "image_tag": "0.1.0"},
         "invalid image reference: 'localhost/bulwark-vpn:test': it already has the tag 'test'"),
        ({"image": f"bulwark@{SHA}", "image_digest": SHA}, f"invalid image reference: 'bulwark@{SHA}': it already"),
        ({"image": "localhost/bulwark-vpn:test:0.1.0"}, "invalid image reference: 'localhost/bulwark-vpn:test:0.1.0'"),
        ({"image": "bulwark\nvpn"}, "invalid image reference: 'bulwark\\nvpn'"),
        ({"image_tag": "bad tag"}, "invalid image tag: 'bad tag'"),
        ({"image_digest": "sha256:xyz"}, "invalid image digest: 'sha256:xyz'"),
    ],
)
def test_deploy_refuses_conflicting_or_bad_image_parts(options: dict[str, str], message: str) -> None:
    with pytest.raises(InputError) as info:
        DeployOptions(**options)
    assert str(info.value).startswith(message)
    assert "\n" not in str(info.value)
