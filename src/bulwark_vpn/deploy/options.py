"""What a deployment bundle needs to know: `DeployOptions`, built from `Settings` plus overrides.

The renderers in this package read only these options; they never touch the store or the system.
Every value is validated here, once, so the renderers can interpolate without further checks.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any, Literal

from bulwark_vpn import __version__
from bulwark_vpn.errors import InputError
from bulwark_vpn.model import DEFAULT_ALLOWED_IPS, DEFAULT_PORT, DEFAULT_SUBNET4, IPNetwork, Settings
from bulwark_vpn.values.image import ImageReference, parse_image_reference

ServiceType = Literal["LoadBalancer", "NodePort"]
Storage = Literal["pvc", "secret"]
PullPolicy = Literal["IfNotPresent", "Always", "Never"]

DEFAULT_IMAGE = "bulwark-vpn"
PACKAGE_NAME = "bulwark-vpn"

_PEER_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,31}$")
_NUMBERED_PEER = re.compile(r"^peer([1-9][0-9]*)$")
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
_TAG = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
_HOST = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9.:-]{0,252})$")
_QUANTITY = re.compile(r"^[0-9]+(\.[0-9]+)?(m|Ki|Mi|Gi|Ti|k|M|G|T)?$")
_AWS_NAME = re.compile(r"^[a-z0-9][a-z0-9.-]{1,40}$")
_AWS_ID = re.compile(r"^(vpc|subnet)-[0-9a-f]{8,17}$")
_SSH_KEY = re.compile(
    r"^(ssh-ed25519|ssh-rsa|ecdsa-sha2-nistp(256|384|521)|sk-[a-z0-9@.-]+) [A-Za-z0-9+/=]+( [^\n\"'\\$%{}]*)?$"
)
# Graviton (arm64) families: t4g, m6g, m6gd, c7gn, r8g, x2gd, im4gn...
_GRAVITON = re.compile(r"^[a-z]+[0-9]+[a-z]*g[a-z]*\.")
_URL = re.compile(r"^https://[A-Za-z0-9._~:/?#@!$&()*+,;=%-]+$")
_PATH = re.compile(r"^/[A-Za-z0-9._/-]*$")
_DNS_VALUE = re.compile(r"^[A-Za-z0-9.:, -]*$")


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

    Sequences given as lists or comma-separated strings are normalised to tuples; `peers` may also
    be a count N, meaning peer1..peerN as linuxserver's `PEERS=N` does.
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
        for name, value in _coerced(self).items():
            object.__setattr__(self, name, value)
        _validate(self)

    @classmethod
    def from_settings(cls, settings: Settings, **overrides: Any) -> DeployOptions:
        """Options from the server `settings`, then `overrides` (an override of None means "not given")."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(overrides) - known)
        if unknown:
            raise InputError(f"unknown deploy option: '{unknown[0]}'; known options: {', '.join(sorted(known))}")
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
        """A copy with `changes` applied (validated again)."""
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
    numbered = [_NUMBERED_PEER.match(p) for p in peers]
    if all(numbered) and [int(m.group(1)) for m in numbered if m] == list(range(1, len(peers) + 1)):
        return str(len(peers))
    return ",".join(peers)


def internal_subnet_value(subnet: ipaddress.IPv4Network) -> str:
    """linuxserver's INTERNAL_SUBNET: the bare network address for a /24, else CIDR notation."""
    return str(subnet.network_address) if subnet.prefixlen == 24 else str(subnet)


def peer_folder(name: str) -> str:
    """The linuxserver folder of a peer: `peerN` for numbered peers, else `peer_NAME`."""
    return name if _NUMBERED_PEER.match(name) else f"peer_{name}"


# --- coercion --------------------------------------------------------------------------------------


def _names(value: Any) -> tuple[str, ...]:
    if isinstance(value, int) and not isinstance(value, bool):
        if value < 0:
            raise InputError(f"invalid peer count: '{value}': give a number of peers >= 0")
        return tuple(f"peer{i}" for i in range(1, value + 1))
    if isinstance(value, str):
        value = value.split(",")
    return tuple(str(v).strip() for v in value if str(v).strip())


def _network(value: Any, what: str) -> IPNetwork:
    try:
        return ipaddress.ip_network(str(value).strip(), strict=True)
    except ValueError:
        raise InputError(f"invalid {what}: '{value}': give a network in CIDR notation, e.g. 10.0.0.0/16") from None


def _networks(value: Any) -> tuple[IPNetwork, ...]:
    if isinstance(value, str):
        value = value.split(",")
    return tuple(_network(v, "allowed IPs network") for v in value if str(v).strip())


def _typed_network(value: Any, what: str, version: int) -> Any:
    if value is None or isinstance(value, ipaddress.IPv4Network | ipaddress.IPv6Network):
        net = value
    else:
        net = _network(value, what)
    if net is not None and net.version != version:
        raise InputError(f"invalid {what}: '{value}': expected an IPv{version} network")
    return net


def _secret_files(value: Any) -> tuple[tuple[str, bytes], ...]:
    items: Iterable[tuple[str, Any]] = value.items() if isinstance(value, Mapping) else value
    pairs = ((str(k), v.encode() if isinstance(v, str) else bytes(v)) for k, v in items)
    return tuple(sorted(pairs))


def _image(opts: DeployOptions) -> dict[str, Any]:
    """The image reference split into name, tag and digest; a tag or digest given twice is refused."""
    reference = parse_image_reference(str(opts.image))
    if opts.image_tag is not None:
        reference = reference.with_tag(opts.image_tag)
    if opts.image_digest is not None:
        reference = reference.with_digest(opts.image_digest)
    return {"image": reference.name, "image_tag": reference.tag, "image_digest": reference.digest}


def _coerced(opts: DeployOptions) -> dict[str, Any]:
    """Normalise convenient input forms (lists, strings, counts) to the declared types."""
    return _image(opts) | {
        "peers": _names(opts.peers),
        "keepalive_peers": _names(opts.keepalive_peers),
        "allowed_ips": _networks(opts.allowed_ips),
        "dns_clients": tuple(_network(v, "DNS clients network") for v in (
            opts.dns_clients.split(",") if isinstance(opts.dns_clients, str) else opts.dns_clients) if str(v).strip()),
        "subnet4": _typed_network(opts.subnet4, "internal subnet", 4),
        "subnet6": _typed_network(opts.subnet6, "internal IPv6 subnet", 6),
        "aws_vpc_cidr": _typed_network(opts.aws_vpc_cidr, "VPC CIDR", 4),
        "aws_subnet_cidr": _typed_network(opts.aws_subnet_cidr, "subnet CIDR", 4),
        "aws_ssh_cidr": _typed_network(opts.aws_ssh_cidr, "SSH CIDR", 4),
        "secret_files": _secret_files(opts.secret_files),
    }


# --- validation ------------------------------------------------------------------------------------


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise InputError(message)


def _check_port(value: int | None, what: str) -> None:
    if value is not None:
        _check(
            isinstance(value, int) and 1 <= value <= 65535,
            f"invalid {what}: '{value}': give a port between 1 and 65535",
        )


def _validate(o: DeployOptions) -> None:
    _validate_network_settings(o)
    _validate_image(o)
    _validate_kubernetes(o)
    _validate_host(o)
    _validate_aws(o)


def _validate_network_settings(o: DeployOptions) -> None:
    _check_port(o.listen_port, "listen port")
    _check_port(o.advertised_port, "advertised port")
    _check(
        o.listen_port == DEFAULT_PORT,
        f"invalid listen port: '{o.listen_port}': deployments listen on {DEFAULT_PORT}; "
        "set the advertised port (SERVERPORT) to publish another port",
    )
    _check(
        o.server_url == "auto" or bool(_HOST.match(o.server_url)),
        f"invalid server URL: '{o.server_url}': give a host name, an IP address or 'auto'",
    )
    for name in o.peers + tuple(p for p in o.keepalive_peers if p != "all"):
        _check(
            bool(_PEER_NAME.match(name)),
            f"invalid peer name: '{name}': use letters, digits, '_' or '-' (at most 32 characters)",
        )
    _check(len(set(o.peers)) == len(o.peers), f"duplicate peer name in: '{','.join(o.peers)}'")
    _check(
        bool(_DNS_VALUE.match(o.peer_dns)),
        f"invalid peer DNS: '{o.peer_dns}': give 'auto', '' or comma-separated addresses",
    )
    _check(bool(o.allowed_ips), "invalid allowed IPs: '': give at least one network, e.g. 0.0.0.0/0")


def _validate_image(o: DeployOptions) -> None:
    # The reference itself was parsed by `_image`.
    _check(
        o.image_pull_policy in ("IfNotPresent", "Always", "Never"),
        f"invalid image pull policy: '{o.image_pull_policy}': use IfNotPresent, Always or Never",
    )
    _check(
        bool(_DNS_LABEL.match(o.container_name)),
        f"invalid container name: '{o.container_name}': use lower-case letters, digits and '-'",
    )


def _validate_kubernetes(o: DeployOptions) -> None:
    for what, value in (("name", o.name), ("namespace", o.namespace)):
        _check(
            bool(_DNS_LABEL.match(value)) and len(value) <= 40,
            f"invalid Kubernetes {what}: '{value}': use lower-case letters, digits and '-' (at most 40)",
        )
    _check(
        o.service_type in ("LoadBalancer", "NodePort"),
        f"invalid service type: '{o.service_type}': use LoadBalancer or NodePort",
    )
    if o.node_port is not None:
        _check(
            o.service_type == "NodePort" and 30000 <= o.node_port <= 32767,
            f"invalid nodePort: '{o.node_port}': needs service type NodePort and a port in 30000-32767",
        )
    _check(o.storage in ("pvc", "secret"), f"invalid storage: '{o.storage}': use pvc or secret")
    _check(
        o.storage != "secret" or bool(o.secret_files),
        "storage 'secret' needs the /config files to seed: pass secret_files, or use storage 'pvc'",
    )
    for path, _ in o.secret_files:
        _check(
            bool(re.match(r"^[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)*$", path)) and ".." not in path.split("/"),
            f"invalid secret file path: '{path}': give a relative path inside /config",
        )
    quantities = (o.storage_size, *vars(o.resources).values())
    for q in quantities:
        _check(bool(_QUANTITY.match(q)), f"invalid resource quantity: '{q}': e.g. 100m, 64Mi, 1Gi")
    _check(
        o.storage_class is None or bool(_DNS_LABEL.match(o.storage_class)),
        f"invalid storage class: '{o.storage_class}': give the name of a StorageClass",
    )
    _check(
        o.test_peer is None or o.test_peer in o.peers,
        f"unknown test peer: '{o.test_peer}': pick one of the peers ({','.join(o.peers)})",
    )


def _validate_host(o: DeployOptions) -> None:
    for what, path in (
        ("bulwark path", o.bulwark_path),
        ("config dir", o.config_dir),
        ("environment file", o.environment_file),
    ):
        _check(bool(_PATH.match(path)), f"invalid {what}: '{path}': give an absolute path")
    _check(bool(_TAG.match(o.package_version)), f"invalid package version: '{o.package_version}'")
    _check(
        o.wheel_url is None or bool(_URL.match(o.wheel_url)),
        f"invalid wheel URL: '{o.wheel_url}': give an https:// URL without quotes or spaces",
    )


def _validate_aws(o: DeployOptions) -> None:
    _check(bool(_AWS_NAME.match(o.aws_region)), f"invalid AWS region: '{o.aws_region}': e.g. eu-west-2")
    _check(
        bool(_AWS_NAME.match(o.aws_instance_type)),
        f"invalid instance type: '{o.aws_instance_type}': e.g. t3.micro",
    )
    for what, value, prefix in (("VPC id", o.aws_vpc_id, "vpc"), ("subnet id", o.aws_subnet_id, "subnet")):
        _check(
            value is None or (bool(_AWS_ID.match(value)) and value.startswith(prefix)),
            f"invalid {what}: '{value}': e.g. {prefix}-0123456789abcdef0",
        )
    _check(
        (o.aws_vpc_id is None) == (o.aws_subnet_id is None),
        "an existing VPC needs its public subnet: give both the VPC id and the subnet id, or neither",
    )
    _check(
        o.aws_subnet_cidr.subnet_of(o.aws_vpc_cidr),
        f"invalid subnet CIDR: '{o.aws_subnet_cidr}': it must lie inside the VPC CIDR {o.aws_vpc_cidr}",
    )
    key = o.aws_ssh_public_key
    _check(
        key is None or bool(_SSH_KEY.match(key.strip())),
        "invalid SSH public key: give one line such as 'ssh-ed25519 AAAA... you@host'",
    )
    _check(
        o.aws_ssh_cidr is None or key is not None,
        "SSH access needs a key: give the SSH public key along with the SSH CIDR",
    )
