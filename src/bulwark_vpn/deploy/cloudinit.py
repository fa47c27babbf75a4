"""Host bootstrap for a fresh Debian machine: the cloud-init user-data and the shell script it runs.

cloud-init writes the files (`write_files`: the environment file, the systemd unit, the sysctls and the
bootstrap script, each a string in YAML written by the serializer), then runs the bootstrap, which only
installs Bulwark and starts the unit: no heredoc, and every value in it one `shlex`-quoted word.

The same text serves two ends: concrete (values from the options, for `render_cloud_init`) and a
Terraform `templatefile` (values left as `${name}` for Terraform to fill at apply time; every other `${`
and `%{` escaped, and the Terraform variables validated so a filled-in value stays inside its line).
"""

from __future__ import annotations

import re
import shlex

from bulwark_vpn.deploy import _yaml
from bulwark_vpn.deploy._guard import check_line, guarded
from bulwark_vpn.deploy.options import PACKAGE_NAME, DeployOptions, internal_subnet_value, peers_env_value
from bulwark_vpn.deploy.systemd import UNIT_NAME, render_environment_file, render_unit
from bulwark_vpn.errors import RenderError

BOOTSTRAP_PATH = "/usr/local/sbin/bulwark-bootstrap"
VENV = "/opt/bulwark"
DEBIAN_PACKAGES = ("python3-venv", "wireguard-tools", "wireguard-go", "nftables", "iproute2")
SYSCTL_PATH = "/etc/sysctl.d/90-bulwark.conf"
SYSCTLS = "net.ipv4.ip_forward = 1\nnet.ipv6.conf.all.forwarding = 1\n"

# Values Terraform supplies at apply time (see terraform.py); everything else is fixed at render time.
TEMPLATE_VARS = ("peers", "internal_subnet", "peer_dns", "allowed_ips", "package_spec")
_SENTINEL = "@@bulwark:{}@@"


def package_spec(opts: DeployOptions) -> str:
    """What pip installs: the wheel URL when given, else the pinned release from the package index."""
    # With the web extra: the API and pages are part of every deployment (BULWARK_SERVE turns them off).
    if opts.wheel_url:
        return f"{PACKAGE_NAME}[web] @ {opts.wheel_url}"
    return f"{PACKAGE_NAME}[web]=={opts.package_version}"


def host_allowed_ips(opts: DeployOptions) -> str:
    """Peers' AllowedIPs on AWS: the configured networks plus the VPC CIDR (kept in order, no repeats)."""
    nets: list[str] = []
    for net in (*opts.allowed_ips, opts.aws_vpc_cidr):
        if str(net) not in nets:
            nets.append(str(net))
    return ", ".join(nets)


def template_values(opts: DeployOptions) -> dict[str, str]:
    """The concrete values of TEMPLATE_VARS for these options."""
    return {
        "peers": peers_env_value(opts.peers),
        "internal_subnet": internal_subnet_value(opts.subnet4),
        "peer_dns": opts.peer_dns,
        "allowed_ips": host_allowed_ips(opts),
        "package_spec": package_spec(opts),
    }


def _environment(opts: DeployOptions, values: dict[str, str]) -> dict[str, str]:
    env = opts.environment()
    env.update(
        {
            "PEERS": values["peers"],
            "INTERNAL_SUBNET": values["internal_subnet"],
            "PEERDNS": values["peer_dns"],
            "ALLOWEDIPS": values["allowed_ips"],
        }
    )
    return env


def _dirname(path: str) -> str:
    return path.rsplit("/", 1)[0] or "/"


def _quoted(value: str) -> str:
    """One shell word, always single-quoted (so a Terraform value filled in later stays inside the quotes)."""
    return "'" + check_line(value, "a shell word").replace("'", "'\"'\"'") + "'"


def _link_commands(opts: DeployOptions) -> list[str]:
    """Put the venv's entry point where the unit's ExecStart expects it."""
    target = f"{VENV}/bin/bulwark"
    if opts.bulwark_path == target:
        return []
    return [f"mkdir -p {shlex.quote(_dirname(opts.bulwark_path))}",
            f"ln -sf {shlex.quote(target)} {shlex.quote(opts.bulwark_path)}"]


def _bootstrap(opts: DeployOptions, values: dict[str, str]) -> str:
    lines = [
        "#!/bin/sh",
        "# Bulwark bootstrap, run by cloud-init after write_files has put the unit, its environment file and",
        "# the sysctls in place: install Bulwark and start it under systemd (-x: each command in the log).",
        "set -eux",
        "export DEBIAN_FRONTEND=noninteractive",
        "apt-get update",
        f"apt-get install -y --no-install-recommends {shlex.join(DEBIAN_PACKAGES)}",
        f"python3 -m venv {shlex.quote(VENV)}",
        f"{shlex.quote(VENV + '/bin/pip')} install --no-cache-dir --upgrade {_quoted(values['package_spec'])}",
        *_link_commands(opts),
        f"install -d -m 0700 {shlex.quote(opts.config_dir)}",
        f"sysctl -p {shlex.quote(SYSCTL_PATH)}",
        "systemctl daemon-reload",
        f"systemctl enable --now {shlex.quote(UNIT_NAME)}",
    ]
    return "\n".join(lines) + "\n"


def _write_files(opts: DeployOptions, values: dict[str, str]) -> list[dict[str, str]]:
    """cloud-init's write_files: each file's content is a YAML string written by the serializer, never a heredoc."""
    env_file = render_environment_file(_environment(opts, values))
    files = [
        (opts.environment_file, "0644", env_file),
        (f"/etc/systemd/system/{UNIT_NAME}", "0644", render_unit(opts)),
        (SYSCTL_PATH, "0644", SYSCTLS),
        (BOOTSTRAP_PATH, "0700", _bootstrap(opts, values)),
    ]
    return [{"path": path, "owner": "root:root", "permissions": mode, "content": content}
            for path, mode, content in files]


def _user_data(opts: DeployOptions, values: dict[str, str]) -> str:
    document = {"write_files": _write_files(opts, values), "runcmd": [[BOOTSTRAP_PATH]]}
    header = "#cloud-config\n" + _yaml.comment("Bulwark WireGuard gateway. Generated by `bulwark deploy terraform`.")
    return header + _yaml.dump(document)


@guarded
def render_bootstrap_script(opts: DeployOptions) -> str:
    """The shell script cloud-init runs once it has written the files: installs Bulwark, starts the unit."""
    return _bootstrap(opts, template_values(opts))


@guarded
def render_cloud_init(opts: DeployOptions) -> str:
    """The cloud-init user-data (#cloud-config) that writes the files and the bootstrap script, and runs it."""
    return _user_data(opts, template_values(opts))


@guarded
def render_cloud_init_template(opts: DeployOptions) -> str:
    """The user-data as a Terraform templatefile: TEMPLATE_VARS left as `${name}`, other `${`/`%{` escaped."""
    sentinels = {name: _SENTINEL.format(name) for name in TEMPLATE_VARS}
    text = _user_data(opts, sentinels)
    # Each placeholder is used once: a value rendered into the user-data that looked like one is refused.
    if text.count(_SENTINEL.format("")[:-2]) != len(sentinels) or any(text.count(s) != 1 for s in sentinels.values()):
        raise RenderError("refusing to render a value into the user-data template", _SENTINEL.format("..."),
                          "a deploy value holds the template's own placeholder marker")
    text = text.replace("${", "$${").replace("%{", "%%{")
    for name, sentinel in sentinels.items():
        text = text.replace(sentinel, "${" + name + "}")
    return text


_TEMPLATE_TOKEN = re.compile(r"\$\$\{|%%\{|\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


def fill_template(template: str, values: dict[str, str]) -> str:
    """What Terraform's templatefile does with our templates: `${name}` filled, `$${`/`%%{` unescaped."""

    def token(match: re.Match[str]) -> str:
        if match.group(1) is not None:
            return values[match.group(1)]
        return match.group(0)[1:]

    return _TEMPLATE_TOKEN.sub(token, template)
