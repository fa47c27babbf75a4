"""Deploy renderers: golden files, options validation, bundle writing, and the structure of each output.

Regenerate the golden files (and the shipped compose.yaml / packaging/bulwark.service) with
    BULWARK_UPDATE_GOLDEN=1 .venv/bin/pytest tests/test_deploy_render.py
then review the diff. The ecosystem validators run in test_deploy_validators.py.
"""

from __future__ import annotations

import configparser
import ipaddress
import json
import os
import re
import stat
import subprocess
from collections.abc import Callable
from dataclasses import fields
from pathlib import Path
from typing import Any

import hcl2
import pytest
import yaml

from bulwark_vpn.deploy import (
    DeployOptions,
    Resources,
    render_bootstrap_script,
    render_cloud_init,
    render_docker,
    render_kubernetes,
    render_systemd,
    render_terraform,
    write_bundle,
)
from bulwark_vpn.deploy.cloudinit import fill_template, template_values
from bulwark_vpn.deploy.kubernetes import SKIP_REASONS
from bulwark_vpn.deploy.options import peers_env_value
from bulwark_vpn.deploy.terraform import TEMPLATE_PATTERNS
from bulwark_vpn.errors import InputError, RenderError
from bulwark_vpn.model import Settings

ROOT = Path(__file__).resolve().parent.parent
GOLDEN = Path(__file__).resolve().parent / "golden" / "deploy"
UPDATE = os.environ.get("BULWARK_UPDATE_GOLDEN") == "1"

SSH_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFakeBulwarkTestKeyOnlyForGoldenFilesXXXXXXXX test@bulwark"

DEFAULT = DeployOptions.from_settings(Settings(), peers=("leo_mac", "phone"))
CUSTOM = DeployOptions.from_settings(
    Settings(
        server_url="vpn.example.org",
        server_port=51821,
        subnet4=ipaddress.IPv4Network("10.8.0.0/24"),
        subnet6=ipaddress.IPv6Network("fd00:8::/64"),
        peer_dns="1.1.1.1, 9.9.9.9",
        allowed_ips=(ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("192.168.0.0/16")),
        log_confs=True,
    ),
    peers=2,
    keepalive_peers="all",
    image="registry.example.org/net/bulwark-vpn",
    image_digest="sha256:" + "ab" * 32,
    image_pull_policy="Always",
    container_name="edge-vpn",
    host_config_dir="/srv/bulwark",
    bulwark_path="/opt/bulwark/bin/bulwark",
    config_dir="/var/lib/bulwark",
    environment_file="/etc/bulwark.env",
)
CUSTOM_K8S = CUSTOM.with_changes(
    advertised_port=None,
    name="edge-vpn",
    namespace="vpn",
    service_type="NodePort",
    node_port=31820,
    storage="secret",
    secret_files={
        "wg_confs/wg0.conf": "[Interface]\nPrivateKey = (test only)\nListenPort = 51820\n",
        "peer2/peer2.conf": "[Interface]\nPrivateKey = (test only)\nAddress = 10.8.0.3/32\n",
    },
    storage_class="gp3",
    resources=Resources("100m", "128Mi", "1", "512Mi"),
    test_peer="peer2",
)
CUSTOM_AWS = CUSTOM.with_changes(
    advertised_port=None,
    aws_region="eu-west-2",
    aws_instance_type="t4g.small",
    aws_vpc_id="vpc-0123456789abcdef0",
    aws_subnet_id="subnet-0123456789abcdef0",
    aws_vpc_cidr="172.31.0.0/16",
    aws_subnet_cidr="172.31.1.0/24",
    aws_ssh_cidr="198.51.100.0/24",
    aws_ssh_public_key=SSH_KEY,
    wheel_url="https://files.example.org/bulwark_vpn-0.1.0-py3-none-any.whl",
)


def _cloud_init(opts: DeployOptions) -> dict[str, str]:
    return {"user-data.yaml": render_cloud_init(opts), "bootstrap.sh": render_bootstrap_script(opts)}


Renderer = Callable[[DeployOptions], dict[str, str]]
CASES: dict[str, tuple[Renderer, DeployOptions]] = {
    "docker/default": (render_docker, DEFAULT),
    "docker/custom": (render_docker, CUSTOM),
    "kubernetes/default": (render_kubernetes, DEFAULT),
    "kubernetes/custom": (render_kubernetes, CUSTOM_K8S),
    "terraform/default": (render_terraform, DEFAULT),
    "terraform/custom": (render_terraform, CUSTOM_AWS),
    "systemd/default": (render_systemd, DEFAULT),
    "systemd/custom": (render_systemd, CUSTOM),
    "cloud-init/default": (_cloud_init, DEFAULT),
    "cloud-init/custom": (_cloud_init, CUSTOM_AWS),
}

# The files shipped at the top of the repository are renderer output too.
SHIPPED: dict[str, Callable[[], str]] = {
    "compose.yaml": lambda: render_docker(DeployOptions(build_context=".", peers=1))["compose.yaml"],
    "packaging/bulwark.service": lambda: render_systemd(DeployOptions())["bulwark.service"],
}


def rendered(case: str) -> dict[str, str]:
    """The files of one golden case."""
    renderer, opts = CASES[case]
    return renderer(opts)


def _assert_same_files(expected_dir: Path, files: dict[str, str]) -> None:
    if UPDATE:
        for old in expected_dir.rglob("*") if expected_dir.exists() else ():
            if old.is_file() and old.relative_to(expected_dir).as_posix() not in files:
                old.unlink()
        for name, content in files.items():
            (expected_dir / name).parent.mkdir(parents=True, exist_ok=True)
            (expected_dir / name).write_text(content)
    on_disk = {p.relative_to(expected_dir).as_posix() for p in expected_dir.rglob("*") if p.is_file()}
    assert on_disk == set(files), "golden file set differs: run with BULWARK_UPDATE_GOLDEN=1 and review"
    for name, content in files.items():
        assert (expected_dir / name).read_text() == content, f"{name} differs from its golden file"


@pytest.mark.parametrize("case", sorted(CASES))
def test_golden(case: str) -> None:
    _assert_same_files(GOLDEN / case, rendered(case))


@pytest.mark.parametrize("path", sorted(SHIPPED))
def test_shipped_files_are_renderer_output(path: str) -> None:
    content = SHIPPED[path]()
    if UPDATE:
        (ROOT / path).parent.mkdir(parents=True, exist_ok=True)
        (ROOT / path).write_text(content)
    assert (ROOT / path).read_text() == content


def test_renderers_are_pure_and_deterministic() -> None:
    for case in CASES:
        assert rendered(case) == rendered(case)


# --- options -------------------------------------------------------------------------------------------


def test_from_settings_takes_server_settings_and_overrides() -> None:
    settings = Settings(server_url="vpn.example.org", server_port=443, peer_dns="", log_confs=True)
    opts = DeployOptions.from_settings(settings, peers="a,b", namespace=None, node_port=None)
    assert (opts.server_url, opts.client_port, opts.peer_dns, opts.log_confs) == ("vpn.example.org", 443, "", True)
    assert opts.peers == ("a", "b")
    assert opts.namespace == "bulwark"  # an override of None is "not given"


def test_from_settings_keeps_a_moved_listen_port_for_clients() -> None:
    opts = DeployOptions.from_settings(Settings(listen_port=443))
    assert (opts.listen_port, opts.client_port) == (51820, 443)


def test_open_exposures_are_carried_to_the_deployed_gateway_and_closed_ones_say_nothing() -> None:
    env = DeployOptions.from_settings(Settings()).environment()
    # The API is served by default (to peers and the loopback only); no exposure is opened.
    assert {k for k in env if k.startswith("BULWARK_")} == {"BULWARK_SERVE"} and env["BULWARK_SERVE"] == "true"
    assert DeployOptions.from_settings(Settings(), serve=False).environment()["BULWARK_SERVE"] == "false"
    settings = Settings(peer_to_peer=True, host_access=True, dns_clients=(ipaddress.ip_network("10.0.1.0/24"),))
    env = DeployOptions.from_settings(settings).environment()
    assert env["BULWARK_PEER_TO_PEER"] == "true" and env["BULWARK_HOST_ACCESS"] == "true"
    assert env["BULWARK_DNS_CLIENTS"] == "10.0.1.0/24" and "BULWARK_LAN_TO_PEERS" not in env


def test_unset_server_url_means_auto() -> None:
    assert DeployOptions.from_settings(Settings(server_url=None)).server_url == "auto"


def test_unknown_override_is_refused() -> None:
    with pytest.raises(InputError, match="unknown deploy option: 'replicas'"):
        DeployOptions.from_settings(Settings(), replicas=2)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"peers": "ok,bad name"}, "invalid peer name: 'bad name'"),
        ({"peers": "a,a"}, "invalid PEERS: 'a': each peer may be listed once"),
        ({"peers": "-x"}, "invalid peer name: '-x'"),
        ({"server_url": "vpn example"}, "invalid server URL: 'vpn example'"),
        ({"advertised_port": 70000}, "invalid advertised port (SERVERPORT): '70000'"),
        ({"advertised_port": "+5"}, "invalid advertised port (SERVERPORT): '+5'"),
        ({"listen_port": 443}, "invalid listen port: '443'"),
        ({"image_tag": "bad tag"}, "invalid image tag: 'bad tag'"),
        ({"image_digest": "sha256:xyz"}, "invalid image digest: 'sha256:xyz'"),
        ({"node_port": 31000}, "invalid nodePort: '31000'"),
        ({"service_type": "NodePort", "node_port": 80}, "invalid nodePort: '80'"),
        ({"service_type": "ClusterIP"}, "invalid service type: 'ClusterIP'"),
        ({"storage": "secret"}, "storage 'secret' needs the /config files"),
        ({"storage": "secret", "secret_files": {"../etc/x": "y"}}, "invalid secret file path: '../etc/x'"),
        ({"namespace": "Bad_NS"}, "invalid Kubernetes namespace: 'Bad_NS'"),
        ({"name": "7edge"}, "invalid Kubernetes name: '7edge'"),
        ({"resources": Resources(cpu_limit="lots")}, "invalid resource quantity (cpu_limit): 'lots'"),
        ({"test_peer": "ghost"}, "unknown test peer: 'ghost'"),
        ({"subnet4": "224.0.0.0/24"}, "invalid IPv4 subnet: '224.0.0.0/24'"),
        ({"subnet6": "10.0.0.0/24"}, "invalid IPv6 subnet: '10.0.0.0/24'"),
        ({"subnet6": "fe80::1%x/64"}, "invalid IPv6 subnet: 'fe80::1%x/64'"),
        ({"allowed_ips": ""}, "invalid ALLOWEDIPS: ''"),
        ({"allowed_ips": "10.0.0.0/8\n"}, "invalid ALLOWEDIPS: '10.0.0.0/8\\n'"),
        ({"wheel_url": "http://x/y.whl"}, "invalid wheel URL: 'http://x/y.whl'"),
        ({"wheel_url": "https://x/y'.whl"}, "invalid wheel URL"),
        ({"wheel_url": "https://x/${y}.whl"}, "invalid wheel URL"),
        ({"bulwark_path": "bulwark"}, "invalid bulwark path: 'bulwark'"),
        ({"aws_vpc_id": "vpc-0123456789abcdef0"}, "give both the VPC id and the subnet id"),
        ({"aws_vpc_id": "subnet-0123456789abcdef0", "aws_subnet_id": "subnet-0123456789abcdef0"}, "invalid VPC id"),
        ({"aws_subnet_cidr": "10.9.0.0/24"}, "must lie inside the VPC CIDR"),
        ({"aws_ssh_cidr": "198.51.100.0/24"}, "SSH access needs a key"),
        ({"aws_region": "eu-west-2\n"}, "invalid AWS region: 'eu-west-2\\n'"),
        ({"aws_ssh_public_key": "not a key"}, "invalid SSH public key"),
        ({"aws_ssh_public_key": SSH_KEY + " ${evil}"}, "invalid SSH public key"),
        ({"peer_dns": 'x"y'}, "invalid PEERDNS entry: 'x\"y'"),
        ({"peer_dns": "fe80::1%eth0"}, "invalid PEERDNS entry: 'fe80::1%eth0'"),
        ({"server_url": "fe80::1%x\n[Interface]"}, "invalid server URL: 'fe80::1%x\\n[Interface]'"),
        ({"container_name": "bulwark\n"}, "invalid container name: 'bulwark\\n'"),
        ({"host_config_dir": "/srv/a:/etc"}, "invalid host config folder: '/srv/a:/etc'"),
        ({"config_dir": "/etc/bulwark %i"}, "invalid config folder: '/etc/bulwark %i'"),
        ({"node_port": "+31000", "service_type": "NodePort"}, "invalid nodePort: '+31000'"),
        ({"service_type": "loadbalancer"}, "invalid service type: 'loadbalancer'"),
        ({"keepalive_peers": "a b"}, "invalid peer name: 'a b'"),
        ({"test_client": "maybe"}, "invalid test client: 'maybe'"),
    ],
)
def test_bad_options_raise_one_line_input_errors(changes: dict[str, Any], message: str) -> None:
    with pytest.raises(InputError, match=None) as info:
        DEFAULT.with_changes(**changes)
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_peers_env_value_uses_a_count_for_numbered_peers() -> None:
    assert peers_env_value(("peer1", "peer2", "peer3")) == "3"
    assert peers_env_value(("peer1", "peer3")) == "peer1,peer3"
    assert peers_env_value(("leo_mac", "phone")) == "leo_mac,phone"
    assert DeployOptions(peers=3).peers == ("peer1", "peer2", "peer3")


def test_deploy_options_parse_like_init() -> None:
    """The same parsers as `init`: bare numbers are numbered peers, CIDRs lose their host bits, PEERDNS is
    canonical, ports and booleans may be text."""
    opts = DeployOptions(peers="3, leo_mac,a+b=c", keepalive_peers="all", test_peer="3", subnet4="10.1.2.3/24",
                         allowed_ips="10.0.0.1/8, ::/0", peer_dns="1.1.1.1, 9.9.9.9", advertised_port="51821",
                         log_confs="yes", test_client="false")
    assert opts.peers == ("peer3", "leo_mac", "a+b=c") and opts.test_peer == "peer3"
    assert str(opts.subnet4) == "10.1.2.0/24"
    assert [str(n) for n in opts.allowed_ips] == ["10.0.0.0/8", "::/0"]
    assert (opts.peer_dns, opts.advertised_port, opts.log_confs, opts.test_client) == ("1.1.1.1,9.9.9.9", 51821,
                                                                                         True, False)
    assert DeployOptions(peers=("2", 5)).peers == ("peer2", "peer5")
    assert DeployOptions(subnet4="10.20.0.0").subnet4 == ipaddress.IPv4Network("10.20.0.0/24")


def test_every_option_has_a_parser() -> None:
    from bulwark_vpn.deploy.options import _PARSERS, IMAGE_FIELDS

    assert {f.name for f in fields(DeployOptions)} == set(_PARSERS) | IMAGE_FIELDS


def test_image_reference_prefers_the_digest() -> None:
    assert DEFAULT.image_ref == "bulwark-vpn:0.1.0"
    assert CUSTOM.image_ref == "registry.example.org/net/bulwark-vpn@sha256:" + "ab" * 32


def test_secret_keys_encode_what_a_secret_key_cannot_hold() -> None:
    files = {"peer_a+b=c/peer_a+b=c.conf": "x", "wg_confs/wg0.conf": "y"}
    opts = DEFAULT.with_changes(storage="secret", secret_files=files)
    secret = _k8s_objects(opts)["Secret/bulwark-config"]
    assert set(secret["data"]) == {"peer_a-x2b-b-x3d-c__peer_a-x2b-b-x3d-c.conf", "wg_confs__wg0.conf"}
    # The seed script installs each key at its path (the volume has no items: podman before 4.5 ignores them).
    deployment = _k8s_objects(opts)["Deployment/bulwark"]["spec"]["template"]["spec"]
    assert "items" not in deployment["volumes"][-1]["secret"]
    seed = next(c["command"][-1] for c in deployment["initContainers"] if c["name"] == "seed-config")
    assert "/seed/peer_a-x2b-b-x3d-c__peer_a-x2b-b-x3d-c.conf /config/peer_a+b=c/peer_a+b=c.conf" in seed
    with pytest.raises(InputError, match="map to the same Secret key"):
        DEFAULT.with_changes(storage="secret", secret_files={"a+b": "x", "a-x2b-b": "y"})


# --- the renderers' own guard (options built around the parsers) ---------------------------------------

GUARDED: dict[str, Renderer] = {
    "docker": render_docker,
    "kubernetes": render_kubernetes,
    "systemd": render_systemd,
    "cloud-init": render_cloud_init,
    "bootstrap": render_bootstrap_script,
    "terraform": render_terraform,
}
# A value with a line break for every option, in the shape the option holds (options built around the parsers).
BYPASS: dict[str, object] = {
    "server_url": "vpn.example.org\n[Interface]\nPreUp = touch /tmp/PWNED",
    "peers": ("leo_mac", "x\u2028y"),
    "peer_dns": "1.1.1.1\rPOSTUP=x",
    "config_dir": "/etc/bulwark\nExecStartPre=/bin/touch /tmp/PWNED",
    "bulwark_path": "/usr/local/bin/bulwark\x85x",
    "environment_file": "/etc/default/bulwark\x00",
    "resources": Resources(cpu_limit="1\n"),
    "secret_files": (("wg_confs/wg0.conf\nx", b"[Interface]\n"),),
    "allowed_ips": ("0.0.0.0/0\n",),
    "subnet4": "10.13.13.0/24\nX=1",
    "listen_port": "51820\n",
    "log_confs": "true\n",
}


def _bypass_value(field_name: str) -> object:
    if field_name in BYPASS:
        return BYPASS[field_name]
    current = getattr(DEFAULT, field_name)
    if isinstance(current, tuple):
        return ("leo_mac\nBULWARK_EOF",)
    return f"{current if isinstance(current, str) else 'x'}\nBULWARK_EOF\n"


@pytest.mark.parametrize("field_name", sorted(f.name for f in fields(DeployOptions)))
@pytest.mark.parametrize("target", sorted(GUARDED))
def test_renderers_refuse_a_line_break_even_around_the_parsers(field_name: str, target: str) -> None:
    opts = DeployOptions.from_settings(Settings(), peers=("leo_mac",))
    object.__setattr__(opts, field_name, _bypass_value(field_name))
    with pytest.raises(RenderError) as info:
        GUARDED[target](opts)
    assert "\n" not in str(info.value) and info.value.exit_code == 2


def test_the_template_refuses_a_value_that_looks_like_its_placeholder() -> None:
    opts = DeployOptions.from_settings(Settings(), peers=("leo_mac",))
    object.__setattr__(opts, "server_url", "@@bulwark:peers@@")
    with pytest.raises(RenderError, match="placeholder marker"):
        render_terraform(opts)


def test_renderers_refuse_values_from_a_subclass_that_skips_the_parsers() -> None:
    class Unchecked(DeployOptions):
        def __post_init__(self) -> None:
            pass

    for target, renderer in GUARDED.items():
        with pytest.raises(RenderError, match="deploy option server_url"):
            renderer(Unchecked(server_url="x\n[Interface]", peers=("a",)))
        assert renderer(Unchecked(peers=("a",))), target


# --- write_bundle ----------------------------------------------------------------------------------------


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_write_bundle_modes_secrets_private_scripts_executable(tmp_path: Path) -> None:
    write_bundle(render_kubernetes(CUSTOM_K8S) | render_docker(DEFAULT), tmp_path / "out")
    assert _mode(tmp_path / "out" / "bulwark.yaml") == 0o600  # holds the state Secret
    assert _mode(tmp_path / "out" / "compose.yaml") == 0o644
    assert _mode(tmp_path / "out" / "docker-run.sh") == 0o755
    changed = write_bundle({"a/b.conf": "[Interface]\nPrivateKey = x\n", "c.txt": "x"}, tmp_path / "out")
    assert _mode(tmp_path / "out" / "a" / "b.conf") == 0o600
    assert len(changed) == 2


def test_write_bundle_leaves_unchanged_files_alone(tmp_path: Path) -> None:
    files = render_systemd(DEFAULT)
    assert len(write_bundle(files, tmp_path)) == 2
    assert write_bundle(files, tmp_path) == []


def test_write_bundle_honours_explicit_secret_paths(tmp_path: Path) -> None:
    write_bundle({"token.txt": "abc"}, tmp_path, secret_paths={"token.txt"})
    assert _mode(tmp_path / "token.txt") == 0o600


@pytest.mark.parametrize("bad", ["../escape.yaml", "/etc/passwd", "a/../../b", ""])
def test_write_bundle_refuses_paths_outside_the_folder(tmp_path: Path, bad: str) -> None:
    with pytest.raises(InputError, match="invalid bundle path"):
        write_bundle({bad: "x"}, tmp_path)
    assert list(tmp_path.iterdir()) == []


# --- Docker ----------------------------------------------------------------------------------------------


def test_compose_is_linuxserver_shaped_with_net_admin_only() -> None:
    service = yaml.safe_load(render_docker(DEFAULT)["compose.yaml"])["services"]["bulwark"]
    assert service["cap_add"] == ["NET_ADMIN"]
    assert service["sysctls"] == ["net.ipv4.ip_forward=1", "net.ipv4.conf.all.src_valid_mark=1"]
    assert service["volumes"] == ["./config:/config"]
    assert service["ports"] == ["51820:51820/udp"]
    assert service["image"] == "bulwark-vpn:0.1.0"
    env = service["environment"]
    assert env["PEERS"] == "leo_mac,phone" and env["SERVERURL"] == "auto" and env["SERVERPORT"] == "51820"
    assert env["INTERNAL_SUBNET"] == "10.13.13.0" and env["ALLOWEDIPS"] == "0.0.0.0/0, ::/0"
    assert all(isinstance(v, str) for v in env.values())


def test_compose_publishes_the_advertised_port() -> None:
    service = yaml.safe_load(render_docker(CUSTOM)["compose.yaml"])["services"]["bulwark"]
    assert service["ports"] == ["51821:51820/udp"]
    assert service["environment"]["SERVERPORT"] == "51821"
    assert service["environment"]["PERSISTENTKEEPALIVE_PEERS"] == "all"


def test_docker_run_script_is_valid_shell_without_sys_module() -> None:
    script = render_docker(DEFAULT)["docker-run.sh"]
    subprocess.run(["sh", "-n"], input=script, text=True, check=True)
    assert "--cap-add=NET_ADMIN" in script and "SYS_MODULE" not in script.replace("SYS_MODULE and", "")
    assert "/lib/modules" not in script.replace("/lib/modules are", "")
    assert script.rstrip().endswith("bulwark-vpn:0.1.0")


# --- Kubernetes ------------------------------------------------------------------------------------------


def _k8s_objects(opts: DeployOptions) -> dict[str, dict[str, Any]]:
    objects: dict[str, dict[str, Any]] = {}
    for text in render_kubernetes(opts).values():
        for doc in yaml.safe_load_all(text):
            objects[f"{doc['kind']}/{doc['metadata']['name']}"] = doc
    return objects


def _skips(obj: dict[str, Any]) -> dict[str, str]:
    annotations = obj["metadata"].get("annotations", {})
    return dict(v.split("=", 1) for k, v in annotations.items() if k.startswith("checkov.io/skip"))


def test_kubernetes_gateway_pod_security() -> None:
    objs = _k8s_objects(DEFAULT)
    assert objs["Namespace/bulwark"]["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "privileged"
    deploy = objs["Deployment/bulwark"]
    assert deploy["spec"]["replicas"] == 1 and deploy["spec"]["strategy"] == {"type": "Recreate"}
    pod = deploy["spec"]["template"]["spec"]
    assert "sysctls" not in pod["securityContext"]  # no unsafe sysctl: the initContainer sets it
    (init,) = pod["initContainers"]
    assert init["securityContext"]["privileged"] is True
    assert "sysctl -w net.ipv4.ip_forward=1" in init["command"][-1]
    assert "net.ipv6.conf.all.forwarding=1" in init["command"][-1]
    (main,) = pod["containers"]
    sc = main["securityContext"]
    assert sc["capabilities"] == {"drop": ["ALL"], "add": ["NET_ADMIN", "NET_BIND_SERVICE"]}
    assert sc["allowPrivilegeEscalation"] is False and sc["readOnlyRootFilesystem"] is True
    assert sc["runAsUser"] == 0 and sc["seccompProfile"] == {"type": "RuntimeDefault"}
    assert main["livenessProbe"]["exec"]["command"] == ["bulwark", "status", "--json"]
    assert main["readinessProbe"]["exec"]["command"] == ["bulwark", "status", "--json"]
    assert set(main["resources"]) == {"requests", "limits"}
    assert main["image"] == "bulwark-vpn:0.1.0" and main["imagePullPolicy"] == "IfNotPresent"
    assert {"configMapRef": {"name": "bulwark-env"}} in main["envFrom"]
    assert objs["PersistentVolumeClaim/bulwark-config"]["spec"]["accessModes"] == ["ReadWriteOnce"]


def test_kubernetes_gateway_without_dns_needs_net_admin_only() -> None:
    pod = _k8s_objects(CUSTOM_K8S)["Deployment/edge-vpn"]["spec"]["template"]["spec"]
    assert pod["containers"][0]["securityContext"]["capabilities"]["add"] == ["NET_ADMIN"]
    assert pod["containers"][0]["image"].endswith("@sha256:" + "ab" * 32)


def test_kubernetes_service_type_follows_the_option() -> None:
    lb = _k8s_objects(DEFAULT)["Service/bulwark"]["spec"]
    assert lb["type"] == "LoadBalancer" and lb["ports"][0]["protocol"] == "UDP" and lb["ports"][0]["port"] == 51820
    objs = _k8s_objects(CUSTOM_K8S)
    node = objs["Service/edge-vpn"]["spec"]
    assert node["type"] == "NodePort" and node["ports"][0]["nodePort"] == 31820
    assert objs["ConfigMap/edge-vpn-env"]["data"]["SERVERPORT"] == "31820"


def test_kubernetes_secret_storage_seeds_config() -> None:
    objs = _k8s_objects(CUSTOM_K8S)
    assert set(objs["Secret/edge-vpn-config"]["data"]) == {"wg_confs__wg0.conf", "peer2__peer2.conf"}
    pod = objs["Deployment/edge-vpn"]["spec"]["template"]["spec"]
    assert [c["name"] for c in pod["initContainers"]] == ["sysctls", "seed-config"]
    assert {"name": "config", "emptyDir": {}} in pod["volumes"]
    seed = pod["initContainers"][1]["command"][-1]
    subprocess.run(["sh", "-n"], input=seed, text=True, check=True)


def test_kubernetes_test_client_uses_the_cluster_ip_not_dns() -> None:
    job = _k8s_objects(DEFAULT)["Job/bulwark-test-client"]
    script = job["spec"]["template"]["spec"]["containers"][0]["command"][-1]
    subprocess.run(["sh", "-n"], input=script, text=True, check=True)
    assert "${BULWARK_SERVICE_HOST" in script and ".svc" not in script
    assert "/config/peer_leo_mac/peer_leo_mac.conf" in script
    assert "ping -c 3 -W 5 10.13.13.1" in script
    custom = _k8s_objects(CUSTOM_K8S)["Job/edge-vpn-test-client"]
    assert "${EDGE_VPN_SERVICE_HOST" in custom["spec"]["template"]["spec"]["containers"][0]["command"][-1]


def test_kubernetes_no_test_client_without_peers() -> None:
    assert set(render_kubernetes(DeployOptions())) == {"bulwark.yaml"}
    assert set(render_kubernetes(DEFAULT.with_changes(test_client=False))) == {"bulwark.yaml"}


def test_kubernetes_every_skip_names_a_reason() -> None:
    for opts in (DEFAULT, CUSTOM_K8S):
        for obj in _k8s_objects(opts).values():
            for check, reason in _skips(obj).items():
                assert check.startswith("CKV_K8S_") and len(reason) > 30
                assert "=" not in reason  # checkov splits the annotation on "="
    digest_pinned = _skips(_k8s_objects(CUSTOM_K8S)["Deployment/edge-vpn"])
    assert "CKV_K8S_43" not in digest_pinned and "CKV_K8S_15" not in digest_pinned
    assert set(_skips(_k8s_objects(DEFAULT)["Deployment/bulwark"])) <= set(SKIP_REASONS)


# --- Terraform -------------------------------------------------------------------------------------------


def _plain(value: Any) -> Any:
    """python-hcl2 and checkov's fork share the `hcl2` module but differ: unwrap both to plain values."""
    if isinstance(value, dict):
        return {k.strip('"'): _plain(v) for k, v in value.items() if not k.startswith("__")}
    if isinstance(value, list):
        items = [_plain(v) for v in value]
        return items[0] if len(items) == 1 and not isinstance(items[0], dict) else items
    if isinstance(value, str) and len(value) >= 2 and value[0] == value[-1] == '"':
        return value[1:-1]
    return value


def _terraform(opts: DeployOptions) -> dict[str, Any]:
    parsed = {name: _plain(hcl2.loads(text)) for name, text in render_terraform(opts).items() if name.endswith(".tf")}
    resources: dict[str, Any] = {}
    for block in parsed["main.tf"]["resource"]:
        for kind, named in block.items():
            for name, body in named.items():
                resources[f"{kind}.{name}"] = body[0] if isinstance(body, list) else body
    return {"files": parsed, "resources": resources}


def _block(value: Any) -> dict[str, Any]:
    return value[0] if isinstance(value, list) else value


def test_terraform_parses_and_has_the_expected_files() -> None:
    files = render_terraform(DEFAULT)
    assert set(files) == {"versions.tf", "variables.tf", "main.tf", "outputs.tf", "user-data.yaml.tftpl"}
    for name, text in files.items():
        if name.endswith(".tf"):
            hcl2.loads(text)


def test_terraform_security_group_opens_only_wireguard_and_optional_ssh() -> None:
    res = _terraform(DEFAULT)["resources"]
    ingress = {k: v for k, v in res.items() if k.startswith("aws_vpc_security_group_ingress_rule.")}
    assert set(ingress) == {"aws_vpc_security_group_ingress_rule.wireguard", "aws_vpc_security_group_ingress_rule.ssh"}
    wg = ingress["aws_vpc_security_group_ingress_rule.wireguard"]
    assert wg["ip_protocol"] == "udp" and wg["from_port"] == wg["to_port"] == "${local.wireguard_port}"
    assert "wireguard_port = 51820" in render_terraform(DEFAULT)["main.tf"]
    ssh = ingress["aws_vpc_security_group_ingress_rule.ssh"]
    assert ssh["ip_protocol"] == "tcp" and ssh["from_port"] == ssh["to_port"] == 22
    assert ssh["cidr_ipv4"] == "${var.ssh_cidr}" and "var.ssh_cidr" in ssh["count"]
    assert "ingress" not in res["aws_security_group.bulwark"]


def test_terraform_instance_is_hardened() -> None:
    tf = _terraform(DEFAULT)
    inst = tf["resources"]["aws_instance.bulwark"]
    meta = _block(inst["metadata_options"])
    assert meta["http_tokens"] == "required" and meta["http_put_response_hop_limit"] == 2
    assert _block(inst["root_block_device"])["encrypted"] is True
    assert inst["user_data"] == "${local.user_data}"
    assert _block(inst["tags"])["Name"] == "bulwark"
    assert "templatefile" in render_terraform(DEFAULT)["main.tf"]
    assert tf["resources"]["aws_eip.bulwark"]["network_interface"] == "${aws_network_interface.bulwark.id}"
    outputs = {k for block in tf["files"]["outputs.tf"]["output"] for k in block}
    assert {"public_ip", "peer_config_command"} <= outputs
    assert "ssh admin@" in render_terraform(DEFAULT)["outputs.tf"]
    assert "sudo bulwark peer show NAME" in render_terraform(DEFAULT)["outputs.tf"]


def _variables(opts: DeployOptions) -> dict[str, Any]:
    blocks = _terraform(opts)["files"]["variables.tf"]["variable"]
    return {name: _block(body) for block in blocks for name, body in block.items()}


def test_terraform_variables_default_to_the_options() -> None:
    variables = _variables(CUSTOM_AWS)
    assert variables["region"]["default"] == "eu-west-2"
    assert variables["vpc_id"]["default"] == "vpc-0123456789abcdef0"
    assert variables["ssh_cidr"]["default"] == "198.51.100.0/24"
    assert variables["peers"]["default"] == "2"
    assert variables["ami_architecture"]["default"] == "arm64"  # t4g is Graviton
    assert variables["wheel_url"]["default"].startswith("https://files.example.org/")
    defaults = _variables(DEFAULT)
    assert defaults["ssh_cidr"]["default"] is None and defaults["vpc_id"]["default"] is None
    assert defaults["ami_architecture"]["default"] == "amd64"


def test_terraform_refuses_a_translated_port() -> None:
    with pytest.raises(InputError, match="invalid advertised port for AWS: '51821'"):
        render_terraform(CUSTOM)


def test_user_data_template_filled_like_terraform_equals_render_cloud_init() -> None:
    for opts in (DEFAULT, CUSTOM_AWS):
        template = render_terraform(opts)["user-data.yaml.tftpl"]
        assert fill_template(template, template_values(opts)) == render_cloud_init(opts)


def _re2(pattern: str) -> re.Pattern[str]:
    """A Terraform (RE2) pattern for Python's re: RE2's `$` without (?m) is the very end, Python's `\\Z`."""
    return re.compile(pattern.replace("$", r"\Z"))


def test_terraform_template_variables_are_validated_like_the_parsers() -> None:
    for opts in (DEFAULT, CUSTOM_AWS):
        variables = _variables(opts)
        text = render_terraform(opts)["variables.tf"]
        for name, pattern in TEMPLATE_PATTERNS.items():
            block = text[text.index(f'variable "{name}"'):]
            block = block[: block.index("\n}\n")]
            assert f"can(regex({json.dumps(pattern)}, " in block, name
            default = variables[name]["default"]
            for value in default if isinstance(default, list) else [default]:
                assert value is None or _re2(pattern).search(value), (name, value)
    valid = {"peers": ["7", "BULWARK_EOF,a+b=c,x.y-z,=eq,+plus,_", ""],
             "internal_subnet": ["10.13.13.0", "10.8.0.0/16"],
             "peer_dns": ["auto", "", "1.1.1.1,2606:4700:4700::1111"], "allowed_ips": ["0.0.0.0/0", "fd00::/8"],
             "wheel_url": ["https://[2001:db8::1]:8443/w.whl?sig=a%2F&x=1"], "bulwark_version": ["0.1.0", "1.0rc1"]}
    for name, values in valid.items():
        for value in values:
            assert _re2(TEMPLATE_PATTERNS[name]).search(value), (name, value)
    for name, pattern in TEMPLATE_PATTERNS.items():
        for bad in ("\n", "\r", "\x85", "\u2028", "\u2029", "\x00", '"', "'", "$", "`", "\\", " ", "${x}", "%{x}", "#"):
            assert not _re2(pattern).search("1" + bad), (name, bad)
            assert not _re2(pattern).search("auto" + bad), (name, bad)


def test_fill_template_unescapes_literal_interpolations() -> None:
    assert fill_template("$${HOME} %%{x} ${a}", {"a": "${b}"}) == "${HOME} %{x} ${b}"


# --- cloud-init and the bootstrap -----------------------------------------------------------------------


def _write_files(opts: DeployOptions) -> dict[str, dict[str, str]]:
    return {entry["path"]: entry for entry in yaml.safe_load(render_cloud_init(opts))["write_files"]}


def test_cloud_init_writes_the_files_then_runs_the_bootstrap() -> None:
    doc = yaml.safe_load(render_cloud_init(DEFAULT))
    files = _write_files(DEFAULT)
    assert list(files) == ["/etc/default/bulwark", "/etc/systemd/system/bulwark.service",
                           "/etc/sysctl.d/90-bulwark.conf", "/usr/local/sbin/bulwark-bootstrap"]
    assert files["/usr/local/sbin/bulwark-bootstrap"]["content"] == render_bootstrap_script(DEFAULT)
    assert files["/usr/local/sbin/bulwark-bootstrap"]["permissions"] == "0700"
    assert files["/etc/systemd/system/bulwark.service"]["content"] == render_systemd(DEFAULT)["bulwark.service"]
    env = files["/etc/default/bulwark"]["content"]
    assert 'SERVERURL="auto"' in env and 'ALLOWEDIPS="0.0.0.0/0, ::/0, 10.0.0.0/16"' in env
    assert doc["runcmd"] == [["/usr/local/sbin/bulwark-bootstrap"]]
    assert render_cloud_init(DEFAULT).startswith("#cloud-config\n")


def test_bootstrap_installs_bulwark_and_enables_the_unit() -> None:
    script = render_bootstrap_script(DEFAULT)
    subprocess.run(["sh", "-n"], input=script, text=True, check=True)
    assert "pip install --no-cache-dir --upgrade 'bulwark-vpn[web]==0.1.0'" in script
    assert "<<" not in script and "cat >" not in script  # files come from write_files, never a heredoc
    assert script.rstrip().endswith("systemctl enable --now bulwark.service")


def test_bootstrap_installs_a_given_wheel() -> None:
    script = render_bootstrap_script(CUSTOM_AWS)
    assert "'bulwark-vpn[web] @ https://files.example.org/bulwark_vpn-0.1.0-py3-none-any.whl'" in script
    env = _write_files(CUSTOM_AWS)["/etc/bulwark.env"]["content"]
    assert 'ALLOWEDIPS="10.0.0.0/8, 192.168.0.0/16, 172.31.0.0/16"' in env
    assert "ln -sf" not in script  # ExecStart already points into the venv
    subprocess.run(["sh", "-n"], input=script, text=True, check=True)


# --- systemd ---------------------------------------------------------------------------------------------


def test_systemd_unit_structure() -> None:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string(render_systemd(DEFAULT)["bulwark.service"])
    svc = parser["Service"]
    assert svc["ExecStart"] == "/usr/local/bin/bulwark up --foreground"
    assert svc["Restart"] == "on-failure"
    assert svc["Environment"] == "BULWARK_CONFIG_DIR=/etc/bulwark"
    assert "CAP_NET_ADMIN" in svc["CapabilityBoundingSet"] and "CAP_NET_ADMIN" in svc["AmbientCapabilities"]
    assert svc["ProtectSystem"] == "strict" and svc["ReadWritePaths"] == "/etc/bulwark"
    assert svc["RuntimeDirectory"] == "wireguard bulwark"
    assert svc["ProtectHome"] == svc["PrivateTmp"] == svc["NoNewPrivileges"] == "yes"
    assert parser["Install"]["WantedBy"] == "multi-user.target"


def test_systemd_state_directory_outside_etc() -> None:
    unit = render_systemd(CUSTOM)["bulwark.service"]
    assert "StateDirectory=bulwark\n" in unit and "ReadWritePaths=/var/lib/bulwark\n" in unit
    assert "ExecStart=/opt/bulwark/bin/bulwark up --foreground\n" in unit
    assert render_systemd(CUSTOM)["bulwark.env"].count("\n") == len(CUSTOM.environment()) + 1
