"""Container image references (`[registry[:port]/]repository[:tag][@digest]`), parsed whole.

The grammar is the one registries and runtimes share (the OCI distribution reference):

- registry: the first path part when it holds a '.' or a ':', is `localhost`, or has upper-case
  letters; a host name, an IPv4 address or a bracketed IPv6 address, then an optional `:port`;
- repository: path parts of lower-case letters and digits, joined inside a part by '.', '_', '__'
  or dashes, and by '/' between parts; at most 255 characters with the registry;
- tag: a letter, digit or '_', then up to 127 letters, digits, '_', '.' or '-';
- digest: `sha256:` and 64, or `sha512:` and 128, lower-case hex digits.

A reference with no registry is left as written (`bulwark-vpn:0.1.0`), not expanded to
`docker.io/library/...`: each runtime applies its own search rules to short names.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, replace

from bulwark_vpn.errors import InputError

_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_REPOSITORY = re.compile(rf"{_COMPONENT}(?:/{_COMPONENT})*")
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?"
_REGISTRY = re.compile(
    rf"(?:(?P<name>{_LABEL}(?:\.{_LABEL})*)|\[(?P<ipv6>[0-9A-Fa-f:.]+)\])(?::(?P<port>[0-9]{{1,5}}))?"
)
_TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")
_DIGEST = re.compile(r"sha256:[0-9a-f]{64}|sha512:[0-9a-f]{128}")
# Anything below a space, DEL, the C1 controls and the Unicode line and paragraph separators.
_UNPRINTABLE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u0085]")
NAME_MAX = 255

REFERENCE_HINT = "give [registry[:port]/]repository[:tag][@sha256:digest], e.g. registry.example.org/bulwark-vpn:0.1.0"
TAG_HINT = "use letters, digits, '_', '.' or '-', starting with a letter, digit or '_' (at most 128)"
DIGEST_HINT = "expected sha256: and 64 (or sha512: and 128) lower-case hex digits"


@dataclass(frozen=True)
class ImageReference:
    """One image reference; `str()` gives it back in canonical form."""

    repository: str
    registry: str | None = None
    tag: str | None = None
    digest: str | None = None

    @property
    def name(self) -> str:
        """The image name: registry (when given) and repository, without tag or digest."""
        return f"{self.registry}/{self.repository}" if self.registry else self.repository

    def __str__(self) -> str:
        tag = f":{self.tag}" if self.tag else ""
        digest = f"@{self.digest}" if self.digest else ""
        return f"{self.name}{tag}{digest}"

    def with_tag(self, tag: str) -> ImageReference:
        """This reference with `tag` (parsed); a reference that already has one is an error."""
        if self.tag is not None:
            raise InputError(
                f"invalid image reference: '{self}': it already has the tag '{self.tag}'; "
                "give the tag in the reference or separately, not both"
            )
        return replace(self, tag=parse_image_tag(tag))

    def with_digest(self, digest: str) -> ImageReference:
        """This reference pinned to `digest` (parsed); a reference that already has one is an error."""
        if self.digest is not None:
            raise InputError(
                f"invalid image reference: '{self}': it already has a digest; "
                "give the digest in the reference or separately, not both"
            )
        return replace(self, digest=parse_image_digest(digest))


def shown(value: str) -> str:
    """`value` for a one-line message: control characters and line separators escaped."""
    return _UNPRINTABLE.sub(lambda m: m.group().encode("unicode_escape").decode("ascii"), value)


def _refuse(what: str, value: str, hint: str) -> InputError:
    return InputError(f"invalid {what}: '{shown(value)}': {hint}")


def parse_image_tag(text: str) -> str:
    """A tag such as `0.1.0` or `latest`, matched whole."""
    if not isinstance(text, str) or not _TAG.fullmatch(text):
        raise _refuse("image tag", str(text), TAG_HINT)
    return text


def parse_image_digest(text: str) -> str:
    """A content digest such as `sha256:` + 64 hex digits, matched whole."""
    if not isinstance(text, str) or not _DIGEST.fullmatch(text):
        raise _refuse("image digest", str(text), DIGEST_HINT)
    return text


def _split_registry(name: str) -> tuple[str | None, str]:
    first, slash, rest = name.partition("/")
    is_registry = slash and ("." in first or ":" in first or first == "localhost" or first.lower() != first)
    return (first, rest) if is_registry else (None, name)


def _valid_registry(registry: str) -> bool:
    match = _REGISTRY.fullmatch(registry)
    if match is None or (match["port"] is not None and not 0 < int(match["port"]) <= 65535):
        return False
    if match["ipv6"] is not None:
        # The pattern has already refused everything but hex digits, ':' and '.' (no zone id).
        try:
            ipaddress.IPv6Address(match["ipv6"])
        except ValueError:
            return False
    return True


def parse_image_reference(text: str) -> ImageReference:
    """Parse `[registry[:port]/]repository[:tag][@digest]`; InputError naming the value otherwise."""
    if not isinstance(text, str) or not text or _UNPRINTABLE.search(text) or text != text.strip():
        raise _refuse("image reference", str(text), REFERENCE_HINT)
    rest, at, digest = text.partition("@")
    if at:
        parse_image_digest(digest)
    registry, path = _split_registry(rest)
    # The tag follows the last ':' of the repository path (a registry's ':port' is already split off).
    repository, colon, tag = path.rpartition(":") if ":" in path else (path, "", "")
    if colon:
        parse_image_tag(tag)
    if registry is not None and not _valid_registry(registry):
        raise _refuse("image reference", text, f"'{shown(registry)}' is not a registry host[:port]; {REFERENCE_HINT}")
    if not _REPOSITORY.fullmatch(repository):
        raise _refuse(
            "image reference", text,
            f"the repository '{shown(repository)}' must be lower-case letters and digits joined by '.', '_', '-' "
            f"or '/'; {REFERENCE_HINT}",
        )
    reference = ImageReference(repository, registry, tag if colon else None, digest if at else None)
    if len(reference.name) > NAME_MAX:
        raise _refuse("image reference", text, f"the name is longer than {NAME_MAX} characters")
    return reference
