"""What a deployment bundle needs to know: `DeployOptions`, built from `Settings` plus overrides.

The renderers in this package read only these options; they never touch the store or the system.
Every value becomes typed here, once, through the one parser of its kind: the same parsers as `init`
(`bulwark_vpn.values`, `bulwark_vpn.config`), so `3` means `peer3` and a peer name, a CIDR or PEERDNS is
accepted by `deploy` exactly when `init` accepts it. Kinds that only deployments have (Kubernetes names and
quantities, AWS ids, SSH public keys) are parsed below, each matched whole. The renderers still refuse any
value holding a line break (`_guard.py`), so options built around these parsers cannot add a line either.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any, Literal

from bulwark_vpn import __version__
from bulwark_vpn.config import parse_keepalive_peers, parse_peer_dns, parse_peers
from bulwark_vpn.errors import InputError
from bulwark_vpn.model import DEFAULT_ALLOWED_IPS, DEFAULT_PORT, DEFAULT_SUBNET4, IPNetwork, Settings
from bulwark_vpn.values import (
    parse_absolute_path,
    parse_bool,
    parse_choice,
    parse_https_url,
    parse_int,
    parse_network,
    parse_networks,
    parse_peer_name,
    parse_port,
    parse_relative_path,
    parse_server_url,
    parse_subnet4,
    parse_subnet6,
    require_ascii_token,
)
from bulwark_vpn.values.image import ImageReference, parse_image_reference

ServiceType = Literal["LoadBalancer", "NodePort"]
Storage = Literal["pvc", "secret"]
PullPolicy = Literal["IfNotPresent", "Always", "Never"]
SERVICE_TYPES: tuple[ServiceType, ...] = ("LoadBalancer", "NodePort")
STORAGES: tuple[Storage, ...] = ("pvc", "secret")
PULL_POLICIES: tuple[PullPolicy, ...] = ("IfNotPresent", "Always", "Never")

DEFAULT_IMAGE = "bulwark-vpn"
PACKAGE_NAME = "bulwark-vpn"


# Kinds only deployments have; each is matched whole (fullmatch), after require_text refused control characters.
_KUBERNETES_NAME = re.compile(r"[a-z0-9](?:[-a-z0-9]{0,61}[a-z0-9])?")
_QUANTITY = re.compile(r"[0-9]{1,12}(?:\.[0-9]{1,9})?(?:m|Ki|Mi|Gi|Ti|Pi|k|M|G|T|P)?")
_AWS_REGION = re.compile(r"[a-z]{2,4}(?:-[a-z0-9]{1,15}){1,4}")
_AWS_INSTANCE_TYPE = re.compile(r"[a-z][a-z0-9-]{0,15}\.[a-z0-9]{1,20}")
_AWS_ID = {"vpc": re.compile(r"vpc-(?:[0-9a-f]{8}|[0-9a-f]{17})"),
           "subnet": re.compile(r"subnet-(?:[0-9a-f]{8}|[0-9a-f]{17})")}
_SSH_KEY = re.compile(
    r"(?:ssh-ed25519|ssh-rsa|ecdsa-sha2-nistp(?:256|384|521)|sk-(?:ssh-ed25519|ecdsa-sha2-nistp256)@openssh\.com)"
    r" [A-Za-z0-9+/]{16,16384}={0,2}(?: [A-Za-z0-9_.@+=:,/ -]{1,200})?"
)
_PACKAGE_VERSION = re.compile(r"[0-9A-Za-z][0-9A-Za-z._+!-]{0,63}")
# Graviton (arm64) families: t4g, m6g, m6gd, c7gn, r8g, x2gd, im4gn...
_GRAVITON = re.compile(r"[a-z]+[0-9]+[a-z]*g[a-z]*\.")


@dataclass(frozen=True)
class Resources:
    """Kubernetes resource requests and limits of the gateway container (quantities as strings)."""

    cpu_request: str = "50m"
    memory_request: str = "64Mi"
    cpu_limit: str = "500m"
    memory_limit: str = "256Mi"


@dataclass(frozen=True)
class DeployOptions:
    """Everything the deploy renderers need; build it with `DeployOptions.from_settings`.

    Each field is parsed by the parser of its kind (see `_PARSERS`): sequences may be given as lists or
    comma-separated strings, `peers` as a count N (peer1..peerN, as linuxserver's `PEERS=N`) or names in
    which a bare number N means `peerN`, ports and booleans as text.
    """

    # The container image: a reference (`[registry[:port]/]repository[:tag][@digest]`), plus a tag and a
    # digest given on their own, which may not repeat what the reference already holds. They are stored
    # split: `image` is the name, `image_tag` and `image_digest` the rest. Without either, the tag is
    # this version.
    image: str = DEFAULT_IMAGE
    image_tag: str | None = None
    image_digest: str | None = None
    image_pull_policy: PullPolicy = "IfNotPresent"
    # Where the gateway listens inside its container/host. Containers always listen on 51820.
    listen_port: int = DEFAULT_PORT
    # Port written in client Endpoints; None = listen port (or the nodePort for a NodePort Service).
    advertised_port: int | None = None
    # Endpoint host for clients: a name, an address, or "auto" (discovered at start-up).
    server_url: str = "auto"
    subnet4: ipaddress.IPv4Network = DEFAULT_SUBNET4
    subnet6: ipaddress.IPv6Network | None = None
    peers: tuple[str, ...] = ()
    peer_dns: str = "auto"
    allowed_ips: tuple[IPNetwork, ...] = DEFAULT_ALLOWED_IPS
    # linuxserver PERSISTENTKEEPALIVE_PEERS: peer names, or ("all",).
    keepalive_peers: tuple[str, ...] = ()
    log_confs: bool = False
    # The HTTP API and web pages, served with the gateway to peers (through the tunnel) and its own loopback.
    serve: bool = True
    # The exposures the server settings open (closed by default: nothing is written for them).
    peer_to_peer: bool = False
    lan_to_peers: bool = False
    host_access: bool = False
    dns_clients: tuple[IPNetwork, ...] = ()
    # Docker
    container_name: str = "bulwark"
    host_config_dir: str = "./config"
    build_context: str | None = None
    # Kubernetes
    name: str = "bulwark"
    namespace: str = "bulwark"
    service_type: ServiceType = "LoadBalancer"
    node_port: int | None = None
    storage: Storage = "pvc"
    storage_size: str = "1Gi"
    storage_class: str | None = None
    # storage="secret": the /config files (relative path -> content) to seed from a Secret.
    secret_files: tuple[tuple[str, bytes], ...] = ()
    resources: Resources = field(default_factory=Resources)
    test_client: bool = True
    # The peer the test-client Job connects as; None = the first peer.
    test_peer: str | None = None
    # Host (systemd, Terraform)
    bulwark_path: str = "/usr/local/bin/bulwark"
    config_dir: str = "/etc/bulwark"
    environment_file: str = "/etc/default/bulwark"
    package_version: str = __version__
    wheel_url: str | None = None
    # AWS (Terraform)
    aws_region: str = "us-east-1"
    aws_instance_type: str = "t3.micro"
    aws_vpc_id: str | None = None
    aws_subnet_id: str | None = None
    aws_vpc_cidr: ipaddress.IPv4Network = ipaddress.IPv4Network("10.0.0.0/16")
    aws_subnet_cidr: ipaddress.IPv4Network = ipaddress.IPv4Network("10.0.1.0/24")
    aws_ssh_cidr: ipaddress.IPv4Network | None = None
    aws_ssh_public_key: str | None = None

    def __post_init__(self) -> None:
        for name, parse in _PARSERS.items():
            value = getattr(self, name)
            object.__setattr__(self, name, None if value is None and name in _OPTIONAL else parse(value))
        _validate_image(self)
        _check_combinations(self)

    @classmethod
    def from_settings(cls, settings: Settings, **overrides: Any) -> DeployOptions:
        """Options from the server `settings`, then `overrides` (an override of None means "not given")."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(overrides) - known)
        if unknown:
            raise InputError("unknown deploy option", unknown[0], f"known options: {', '.join(sorted(known))}")
        # Deployed gateways always listen on 51820; a host that listened elsewhere keeps that port
        # for its clients by publishing it (SERVERPORT).
        moved = settings.listen_port if settings.listen_port != DEFAULT_PORT else None
        base: dict[str, Any] = {
            "advertised_port": settings.server_port if settings.server_port is not None else moved,
            "server_url": settings.server_url or "auto",
            "subnet4": settings.subnet4,
            "subnet6": settings.subnet6,
            "peer_dns": settings.peer_dns,
            "allowed_ips": settings.allowed_ips,
            "log_confs": settings.log_confs,
            "peer_to_peer": settings.peer_to_peer,
            "lan_to_peers": settings.lan_to_peers,
            "host_access": settings.host_access,
            "dns_clients": settings.dns_clients,
        }
        base.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**base)

    def with_changes(self, **changes: Any) -> DeployOptions:
        """A copy with `changes` applied (parsed again)."""
        return replace(self, **changes)

    @property
    def image_reference(self) -> ImageReference:
        """The image to run: the name with its tag (this version when neither tag nor digest is given)."""
        reference = parse_image_reference(self.image)
        tag = self.image_tag if self.image_tag is not None or self.image_digest else __version__
        return ImageReference(reference.repository, reference.registry, tag, self.image_digest)

    @property
    def image_ref(self) -> str:
        """The image reference written into the files: `name:tag`, `name@digest` or `name:tag@digest`."""
        return str(self.image_reference)

    @property
    def aws_architecture(self) -> str:
        """The AMI architecture the instance type needs: arm64 for Graviton families, else amd64."""
        return "arm64" if _GRAVITON.match(self.aws_instance_type) else "amd64"

    @property
    def client_port(self) -> int:
        """The port clients put in their Endpoint."""
        if self.advertised_port is not None:
            return self.advertised_port
        if self.service_type == "NodePort" and self.node_port is not None:
            return self.node_port
        return self.listen_port

    @property
    def server_tunnel_address(self) -> ipaddress.IPv4Address:
        """The gateway's own address in the tunnel (first host of subnet4)."""
        return next(self.subnet4.hosts())

    @property
    def effective_test_peer(self) -> str | None:
        """The peer the Kubernetes test client uses, or None when there is none."""
        if not self.test_client:
            return None
        return self.test_peer or (self.peers[0] if self.peers else None)

    def environment(self) -> dict[str, str]:
        """The linuxserver/wireguard environment variables describing this gateway, in a stable order."""
        env = {"SERVERURL": self.server_url, "SERVERPORT": str(self.client_port)}
        if self.peers:
            env["PEERS"] = peers_env_value(self.peers)
        env["INTERNAL_SUBNET"] = internal_subnet_value(self.subnet4)
        if self.subnet6 is not None:
            env["INTERNAL_SUBNET6"] = str(self.subnet6)
        env["PEERDNS"] = self.peer_dns
        env["ALLOWEDIPS"] = ", ".join(str(n) for n in self.allowed_ips)
        if self.keepalive_peers:
            env["PERSISTENTKEEPALIVE_PEERS"] = ",".join(self.keepalive_peers)
        env["LOG_CONFS"] = "true" if self.log_confs else "false"
        env["BULWARK_SERVE"] = "true" if self.serve else "false"
        # Only what is open: a gateway deployed from a closed store is closed without saying so.
        for name, is_open in (("BULWARK_PEER_TO_PEER", self.peer_to_peer), ("BULWARK_LAN_TO_PEERS", self.lan_to_peers),
                              ("BULWARK_HOST_ACCESS", self.host_access)):
            if is_open:
                env[name] = "true"
        if self.dns_clients:
            env["BULWARK_DNS_CLIENTS"] = ",".join(str(n) for n in self.dns_clients)
        return env


def peers_env_value(peers: tuple[str, ...]) -> str:
    """linuxserver's PEERS: a count when the peers are exactly peer1..peerN, else the names."""
    if peers and peers == tuple(f"peer{i}" for i in range(1, len(peers) + 1)):
        return str(len(peers))
    return ",".join(peers)


def internal_subnet_value(subnet: ipaddress.IPv4Network) -> str:
    """linuxserver's INTERNAL_SUBNET: the bare network address for a /24, else CIDR notation."""
    return str(subnet.network_address) if subnet.prefixlen == 24 else str(subnet)


# --- the deploy-only kinds -------------------------------------------------------------------------------


def parse_kubernetes_name(value: object, what: str, longest: int = 63, letter_first: bool = False) -> str:
    """An RFC 1123 label (namespaces, StorageClass names, container names); with `letter_first` an RFC 1035
    label, as Service names must be (their environment variables, NAME_SERVICE_HOST, start with it)."""
    first = "a lower-case letter" if letter_first else "a letter or digit"
    hint = f"use lower-case letters, digits and '-', starting with {first}, at most {longest} characters, e.g. bulwark"
    text = require_ascii_token(value, what, hint, _KUBERNETES_NAME)
    if len(text) > longest or (letter_first and not text[0].isalpha()):
        raise InputError(f"invalid {what}", value, hint)
    return text


def parse_quantity(value: object, what: str = "resource quantity") -> str:
    """A Kubernetes quantity such as 100m, 64Mi, 1Gi or 0.5."""
    return require_ascii_token(value, what, "e.g. 100m, 64Mi, 1Gi", _QUANTITY)


def parse_aws_region(value: object) -> str:
    return require_ascii_token(value, "AWS region", "e.g. eu-west-2", _AWS_REGION)


def parse_aws_instance_type(value: object) -> str:
    return require_ascii_token(value, "instance type", "e.g. t3.micro", _AWS_INSTANCE_TYPE)


def parse_aws_id(value: object, kind: Literal["vpc", "subnet"]) -> str:
    """An existing VPC or subnet id: `vpc-` or `subnet-` then 8 or 17 hex digits."""
    what = "VPC id" if kind == "vpc" else "subnet id"
    return require_ascii_token(value, what, f"e.g. {kind}-0123456789abcdef0", _AWS_ID[kind])


def parse_ssh_public_key(value: object) -> str:
    """One OpenSSH public key line: type, base64 key, an optional plain comment (you@host)."""
    hint = "give one key line such as 'ssh-ed25519 AAAA... you@host' (comment: letters, digits, _.@+=:,/- spaces)"
    return require_ascii_token(value, "SSH public key", hint, _SSH_KEY)


def parse_package_version(value: object) -> str:
    return require_ascii_token(value, "package version", f"e.g. {__version__}", _PACKAGE_VERSION)


def _ipv4_network(what: str) -> Callable[[object], ipaddress.IPv4Network]:
    def parse(value: object) -> ipaddress.IPv4Network:
        net = parse_network(_text(value), what)
        if not isinstance(net, ipaddress.IPv4Network):
            raise InputError(f"invalid {what}", value, "give an IPv4 network in CIDR notation, e.g. 10.0.0.0/16")
        return net

    return parse


def _text(value: object) -> object:
    """Typed network values (from Settings) as the text their parser reads; anything else unchanged."""
    if isinstance(value, ipaddress.IPv4Network | ipaddress.IPv6Network):
        return str(value)
    return value


def _texts(value: object) -> object:
    if isinstance(value, list | tuple):
        return [_text(v) for v in value]
    return value


def _resources(value: object) -> Resources:
    if not isinstance(value, Resources):
        raise InputError("invalid resources", value, "give a Resources(cpu_request, memory_request, ...) value")
    return Resources(*(parse_quantity(getattr(value, f.name), f"resource quantity ({f.name})")
                       for f in fields(Resources)))


def secret_key(path: str) -> str:
    """The Kubernetes Secret key of a /config file: `/` as `__`, and each character a Secret key cannot hold
    (`+`, `=` and `@` may appear in peer folders) as `-xHH-`."""
    return re.sub(r"[^A-Za-z0-9._/-]", lambda m: f"-x{ord(m.group()):02x}-", path).replace("/", "__")


def _secret_files(value: object) -> tuple[tuple[str, bytes], ...]:
    items: Iterable[Any] = value.items() if isinstance(value, Mapping) else value  # type: ignore[assignment]
    pairs = []
    for item in items:
        if not isinstance(item, tuple | list) or len(item) != 2 or not isinstance(item[1], str | bytes):
            raise InputError("invalid secret file", item, "give (relative path, content) pairs")
        path = parse_relative_path(item[0], "secret file path")
        if path == "." or path.startswith("./"):
            raise InputError("invalid secret file path", item[0], "give a plain relative path inside /config")
        pairs.append((path, item[1].encode() if isinstance(item[1], str) else bytes(item[1])))
    keys: dict[str, str] = {}
    for path, _ in pairs:
        if keys.setdefault(secret_key(path), path) != path:
            raise InputError("invalid secret file path", path,
                             f"it and '{keys[secret_key(path)]}' map to the same Secret key: rename one of them")
    return tuple(sorted(pairs))


def _image(opts: DeployOptions) -> dict[str, Any]:
    """The image reference split into name, tag and digest; a tag or digest given twice is refused."""
    reference = parse_image_reference(str(opts.image))
    if opts.image_tag is not None:
        reference = reference.with_tag(opts.image_tag)
    if opts.image_digest is not None:
        reference = reference.with_digest(opts.image_digest)
    return {"image": reference.name, "image_tag": reference.tag, "image_digest": reference.digest}


# Every field but the image's own (image, image_tag, image_digest: `_validate_image`) and its parser.
_PARSERS: dict[str, Callable[[Any], Any]] = {
    "image_pull_policy": lambda v: parse_choice(v, PULL_POLICIES, "image pull policy"),
    "listen_port": lambda v: parse_port(v, "listen port"),
    "advertised_port": lambda v: parse_port(v, "advertised port (SERVERPORT)"),
    "server_url": parse_server_url,
    "subnet4": lambda v: parse_subnet4(_text(v)),
    "subnet6": lambda v: parse_subnet6(_text(v)),
    "peers": parse_peers,
    "peer_dns": parse_peer_dns,
    "allowed_ips": lambda v: parse_networks(_texts(v), "ALLOWEDIPS"),
    "keepalive_peers": parse_keepalive_peers,
    "log_confs": lambda v: parse_bool(v, "LOG_CONFS"),
    "serve": lambda v: parse_bool(v, "serve"),
    "peer_to_peer": lambda v: parse_bool(v, "peer to peer"),
    "lan_to_peers": lambda v: parse_bool(v, "LAN to peers"),
    "host_access": lambda v: parse_bool(v, "host access"),
    "dns_clients": lambda v: parse_networks(_texts(v), "DNS clients", allow_empty=True),
    "container_name": lambda v: parse_kubernetes_name(v, "container name"),
    "host_config_dir": lambda v: (parse_absolute_path(v, "host config folder") if isinstance(v, str)
                                  and v.startswith("/") else parse_relative_path(v, "host config folder")),
    "build_context": lambda v: (parse_absolute_path(v, "build context") if isinstance(v, str)
                                and v.startswith("/") else parse_relative_path(v, "build context")),
    "name": lambda v: parse_kubernetes_name(v, "Kubernetes name", 40, letter_first=True),
    "namespace": lambda v: parse_kubernetes_name(v, "Kubernetes namespace", 40),
    "service_type": lambda v: parse_choice(v, SERVICE_TYPES, "service type"),
    "node_port": lambda v: parse_int(v, 30000, 32767, "nodePort", "the NodePort range"),
    "storage": lambda v: parse_choice(v, STORAGES, "storage"),
    "storage_size": lambda v: parse_quantity(v, "storage size"),
    "storage_class": lambda v: parse_kubernetes_name(v, "storage class"),
    "secret_files": _secret_files,
    "resources": _resources,
    "test_client": lambda v: parse_bool(v, "test client"),
    "test_peer": parse_peer_name,
    "bulwark_path": lambda v: parse_absolute_path(v, "bulwark path"),
    "config_dir": lambda v: parse_absolute_path(v, "config folder"),
    "environment_file": lambda v: parse_absolute_path(v, "environment file"),
    "package_version": parse_package_version,
    "wheel_url": lambda v: parse_https_url(v, "wheel URL"),
    "aws_region": parse_aws_region,
    "aws_instance_type": parse_aws_instance_type,
    "aws_vpc_id": lambda v: parse_aws_id(v, "vpc"),
    "aws_subnet_id": lambda v: parse_aws_id(v, "subnet"),
    "aws_vpc_cidr": _ipv4_network("VPC CIDR"),
    "aws_subnet_cidr": _ipv4_network("subnet CIDR"),
    "aws_ssh_cidr": _ipv4_network("SSH CIDR"),
    "aws_ssh_public_key": parse_ssh_public_key,
}
# Fields where None means "not given" (and is kept as None).
_OPTIONAL = frozenset({
    "advertised_port", "subnet6", "build_context", "node_port", "storage_class", "test_peer", "wheel_url",
    "aws_vpc_id", "aws_subnet_id", "aws_ssh_cidr", "aws_ssh_public_key",
})
IMAGE_FIELDS = frozenset({"image", "image_tag", "image_digest"})


# --- checks across fields ----------------------------------------------------------------------------------


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise InputError(message)


def _refuse(ok: bool, message: str, value: object, hint: str) -> None:
    if not ok:
        raise InputError(message, value, hint)


def _validate_image(o: DeployOptions) -> None:
    """The image reference parsed whole and split into name, tag and digest (see `values.image`)."""
    for name, value in _image(o).items():
        object.__setattr__(o, name, value)


def _check_combinations(o: DeployOptions) -> None:
    _refuse(o.listen_port == DEFAULT_PORT, "invalid listen port", o.listen_port,
            f"deployments listen on {DEFAULT_PORT}; set the advertised port (SERVERPORT) to publish another port")
    _refuse(o.node_port is None or o.service_type == "NodePort", "invalid nodePort", o.node_port,
            "a nodePort needs service type NodePort")
    _refuse(o.storage != "secret" or bool(o.secret_files), "invalid storage", o.storage,
            "storage 'secret' needs the /config files to seed: pass secret_files, or use storage 'pvc'")
    _refuse(o.test_peer is None or o.test_peer in o.peers, "unknown test peer", o.test_peer,
            f"pick one of the peers ({','.join(o.peers)})")
    _refuse((o.aws_vpc_id is None) == (o.aws_subnet_id is None), "incomplete existing VPC",
            o.aws_vpc_id or o.aws_subnet_id,
            "an existing VPC needs its public subnet: give both the VPC id and the subnet id, or neither")
    _refuse(o.aws_subnet_cidr.subnet_of(o.aws_vpc_cidr), "invalid subnet CIDR", str(o.aws_subnet_cidr),
            f"it must lie inside the VPC CIDR {o.aws_vpc_cidr}")
    _refuse(o.aws_ssh_cidr is None or o.aws_ssh_public_key is not None, "invalid SSH CIDR", str(o.aws_ssh_cidr),
            "SSH access needs a key: give the SSH public key along with the SSH CIDR")
