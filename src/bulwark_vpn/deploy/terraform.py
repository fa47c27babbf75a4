"""Terraform for AWS: one hardened EC2 instance named "bulwark" running Bulwark under systemd.

The network is a new VPC with one public subnet (or an existing VPC and subnet by id). The Elastic IP
is attached to the instance's network interface before the instance boots, so SERVERURL=auto finds
the final public address on the very first start. Variables default to the rendered options; the
user-data is a `templatefile` filled by Terraform (see cloudinit.py).

Every value reaches HCL through `_hcl` (a JSON string, valid HCL, with `${` and `%{` escaped). Each variable
that Terraform fills into the user-data template has a validation whose pattern admits only what Bulwark's
parsers admit for it, so a value given with `-var` at apply time cannot leave its line of the template
either (RE2, which Terraform uses, anchors `$` at the very end: no trailing newline gets through).
"""

from __future__ import annotations

import json

from bulwark_vpn.deploy._guard import guarded
from bulwark_vpn.deploy.cloudinit import render_cloud_init_template
from bulwark_vpn.deploy.options import DeployOptions, internal_subnet_value, peers_env_value
from bulwark_vpn.errors import InputError
from bulwark_vpn.model import DEFAULT_PORT

USER_DATA_TEMPLATE = "user-data.yaml.tftpl"

VERSIONS_TF = """\
terraform {
  required_version = ">= 1.5.0"

  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = ">= 5.0, < 6.0"
    }
  }
}
"""

MAIN_TF = """\
provider "aws" {
  region = var.region

  default_tags {
    tags = {
      Project = "bulwark"
    }
  }
}

locals {
  wireguard_port = 51820
  create_vpc     = var.vpc_id == null
  vpc_id         = local.create_vpc ? aws_vpc.bulwark[0].id : var.vpc_id
  subnet_id      = local.create_vpc ? aws_subnet.public[0].id : var.subnet_id
  vpc_cidr       = local.create_vpc ? aws_vpc.bulwark[0].cidr_block : data.aws_vpc.existing[0].cidr_block
  # Peers route the VPC through the tunnel, so they reach private resources.
  allowed_ips  = distinct(concat(var.allowed_ips, [local.vpc_cidr]))
  package_spec = (var.wheel_url == null ? "bulwark-vpn[web]==${var.bulwark_version}"
  : "bulwark-vpn[web] @ ${var.wheel_url}")
  user_data = templatefile("${path.module}/user-data.yaml.tftpl", {
    peers           = var.peers
    internal_subnet = var.internal_subnet
    peer_dns        = var.peer_dns
    allowed_ips     = join(", ", local.allowed_ips)
    package_spec    = local.package_spec
  })
}

# Debian 12 from Debian's own AWS account; its default user is "admin".
data "aws_ami" "debian" {
  most_recent = true
  owners      = ["136693071363"]

  filter {
    name   = "name"
    values = ["debian-12-${var.ami_architecture}-*"]
  }

  filter {
    name   = "virtualization-type"
    values = ["hvm"]
  }
}

data "aws_vpc" "existing" {
  count = local.create_vpc ? 0 : 1
  id    = var.vpc_id
}

resource "aws_vpc" "bulwark" {
  #checkov:skip=CKV2_AWS_11:flow logs need a destination, role and retention owned by the account's logging setup
  count                = local.create_vpc ? 1 : 0
  cidr_block           = var.vpc_cidr
  enable_dns_support   = true
  enable_dns_hostnames = true

  tags = {
    Name = "bulwark"
  }
}

# Adopting the default security group with no rules closes it.
resource "aws_default_security_group" "bulwark" {
  count  = local.create_vpc ? 1 : 0
  vpc_id = aws_vpc.bulwark[0].id
}

resource "aws_internet_gateway" "bulwark" {
  count  = local.create_vpc ? 1 : 0
  vpc_id = aws_vpc.bulwark[0].id

  tags = {
    Name = "bulwark"
  }
}

resource "aws_subnet" "public" {
  count                   = local.create_vpc ? 1 : 0
  vpc_id                  = aws_vpc.bulwark[0].id
  cidr_block              = var.subnet_cidr
  map_public_ip_on_launch = false

  tags = {
    Name = "bulwark-public"
  }
}

resource "aws_route_table" "public" {
  count  = local.create_vpc ? 1 : 0
  vpc_id = aws_vpc.bulwark[0].id

  route {
    cidr_block = "0.0.0.0/0"
    gateway_id = aws_internet_gateway.bulwark[0].id
  }

  tags = {
    Name = "bulwark-public"
  }
}

resource "aws_route_table_association" "public" {
  count          = local.create_vpc ? 1 : 0
  subnet_id      = aws_subnet.public[0].id
  route_table_id = aws_route_table.public[0].id
}

resource "aws_security_group" "bulwark" {
  name_prefix = "bulwark-"
  description = "Bulwark WireGuard gateway"
  vpc_id      = local.vpc_id

  tags = {
    Name = "bulwark"
  }

  lifecycle {
    create_before_destroy = true
  }
}

resource "aws_vpc_security_group_ingress_rule" "wireguard" {
  security_group_id = aws_security_group.bulwark.id
  description       = "WireGuard"
  ip_protocol       = "udp"
  from_port         = local.wireguard_port
  to_port           = local.wireguard_port
  cidr_ipv4         = "0.0.0.0/0"
}

resource "aws_vpc_security_group_ingress_rule" "ssh" {
  count             = var.ssh_cidr == null ? 0 : 1
  security_group_id = aws_security_group.bulwark.id
  description       = "SSH from the administrators' network"
  ip_protocol       = "tcp"
  from_port         = 22
  to_port           = 22
  cidr_ipv4         = var.ssh_cidr
}

resource "aws_vpc_security_group_egress_rule" "all" {
  security_group_id = aws_security_group.bulwark.id
  description       = "Peers' traffic to the VPC and the internet, package downloads"
  ip_protocol       = "-1"
  cidr_ipv4         = "0.0.0.0/0"
}

resource "aws_key_pair" "bulwark" {
  count           = var.ssh_public_key == null ? 0 : 1
  key_name_prefix = "bulwark-"
  public_key      = var.ssh_public_key
}

resource "aws_network_interface" "bulwark" {
  subnet_id       = local.subnet_id
  security_groups = [aws_security_group.bulwark.id]

  tags = {
    Name = "bulwark"
  }
}

# Attached to the interface before the instance exists: the first boot already has its final address.
resource "aws_eip" "bulwark" {
  domain            = "vpc"
  network_interface = aws_network_interface.bulwark.id
  depends_on        = [aws_internet_gateway.bulwark]

  tags = {
    Name = "bulwark"
  }
}

resource "aws_instance" "bulwark" {
  #checkov:skip=CKV2_AWS_41:the gateway calls no AWS API; an instance profile would only widen what a compromise reaches
  #checkov:skip=CKV_AWS_126:detailed monitoring is billed per instance; basic 5-minute metrics suffice for one gateway
  ami                         = data.aws_ami.debian.id
  instance_type               = var.instance_type
  key_name                    = var.ssh_public_key == null ? null : aws_key_pair.bulwark[0].key_name
  ebs_optimized               = true
  user_data                   = local.user_data
  user_data_replace_on_change = true
  depends_on                  = [aws_eip.bulwark, aws_route_table_association.public]

  network_interface {
    network_interface_id = aws_network_interface.bulwark.id
    device_index         = 0
  }

  metadata_options {
    http_endpoint = "enabled"
    http_tokens   = "required"
    # 2 hops, not 1: Bulwark in a container (one extra hop through the bridge) still reaches IMDS
    # to discover its public address for SERVERURL=auto.
    http_put_response_hop_limit = 2
  }

  root_block_device {
    encrypted   = true
    volume_type = "gp3"
    volume_size = var.root_volume_size
  }

  tags = {
    Name = "bulwark"
  }

  lifecycle {
    precondition {
      condition     = (var.vpc_id == null) == (var.subnet_id == null)
      error_message = "Give both vpc_id and subnet_id (an existing VPC and its public subnet), or neither."
    }
  }
}
"""

OUTPUTS_TF = """\
output "public_ip" {
  description = "The gateway's Elastic IP: clients' Endpoint host."
  value       = aws_eip.bulwark.public_ip
}

output "instance_id" {
  description = "The EC2 instance running Bulwark."
  value       = aws_instance.bulwark.id
}

output "vpc_cidr" {
  description = "The VPC network that peers reach through the tunnel."
  value       = local.vpc_cidr
}

output "peer_config_command" {
  description = "How to fetch a peer's configuration (replace NAME)."
  value       = "ssh admin@${aws_eip.bulwark.public_ip} sudo bulwark peer show NAME"
}

output "bootstrap_log_command" {
  description = "How to follow the first-boot installation."
  value       = "ssh admin@${aws_eip.bulwark.public_ip} sudo tail -f /var/log/cloud-init-output.log"
}
"""


# The RE2 patterns of the variables filled into the user-data template (and of the version in the pip spec).
TEMPLATE_PATTERNS: dict[str, str] = {
    "peers": r"^[A-Za-z0-9_=+.,-]*$",
    "internal_subnet": r"^[0-9]{1,3}([.][0-9]{1,3}){3}(/[0-9]{1,2})?$",
    "peer_dns": r"^[0-9A-Fa-f:.,]*$|^auto$",
    "allowed_ips": r"^[0-9A-Fa-f:.]{2,45}/[0-9]{1,3}$",
    "wheel_url": r"^https://[A-Za-z0-9._~!+,;=:@%/?&\[\]-]+$",
    "bulwark_version": r"^[0-9A-Za-z][0-9A-Za-z._+!-]{0,63}$",
}


def _hcl(value: object) -> str:
    """An HCL literal (JSON syntax is valid HCL for strings, numbers, lists, null); `${` escaped."""
    return json.dumps(value).replace("${", "$${").replace("%{", "%%{")


def _variable(name: str, type_: str, description: str, default: object, validation: str | None = None) -> str:
    lines = [
        f'variable "{name}" {{',
        f"  description = {_hcl(description)}",
        f"  type        = {type_}",
        f"  default     = {_hcl(default)}",
    ]
    if validation:
        lines += ["", "  validation {", *("    " + v for v in validation.splitlines()), "  }"]
    return "\n".join(lines + ["}"]) + "\n"


def _cidr_check(name: str) -> str:
    return (
        f"condition     = var.{name} == null || can(cidrnetmask(var.{name}))\n"
        f'error_message = "{name} must be an IPv4 CIDR such as 203.0.113.0/24."'
    )


def _pattern_check(name: str, message: str, nullable: bool = False) -> str:
    test = f"can(regex({_hcl(TEMPLATE_PATTERNS[name])}, var.{name}))"
    return (
        f"condition     = {f'var.{name} == null || ' if nullable else ''}{test}\n"
        f"error_message = {_hcl(message)}"
    )


@guarded
def render_variables(opts: DeployOptions) -> str:
    """variables.tf, with the options as defaults."""
    blocks = [
        _variable("region", "string", "AWS region.", opts.aws_region),
        _variable("instance_type", "string", "EC2 instance type.", opts.aws_instance_type),
        _variable(
            "ami_architecture",
            "string",
            "Debian 12 AMI architecture: amd64, or arm64 for Graviton instance types (t4g...).",
            opts.aws_architecture,
            'condition     = contains(["amd64", "arm64"], var.ami_architecture)\n'
            'error_message = "ami_architecture must be amd64 or arm64."',
        ),
        _variable("vpc_id", "string", "Existing VPC to use (null: create one).", opts.aws_vpc_id),
        _variable("subnet_id", "string", "Public subnet of the existing VPC (with vpc_id).", opts.aws_subnet_id),
        _variable(
            "vpc_cidr",
            "string",
            "CIDR of the VPC created when vpc_id is null.",
            str(opts.aws_vpc_cidr),
            'condition     = can(cidrnetmask(var.vpc_cidr))\n'
            'error_message = "vpc_cidr must be an IPv4 CIDR such as 10.0.0.0/16."',
        ),
        _variable("subnet_cidr", "string", "CIDR of the public subnet created.", str(opts.aws_subnet_cidr)),
        _variable(
            "ssh_cidr",
            "string",
            "Network allowed to SSH to the gateway (null: no SSH).",
            None if opts.aws_ssh_cidr is None else str(opts.aws_ssh_cidr),
            _cidr_check("ssh_cidr"),
        ),
        _variable(
            "ssh_public_key", "string", "Public key for the admin user (null: no key pair).", opts.aws_ssh_public_key
        ),
        _variable(
            "wheel_url",
            "string",
            "https URL of a Bulwark wheel to install instead of the package index release.",
            opts.wheel_url,
            _pattern_check("wheel_url", "wheel_url must be an https:// URL without quotes, spaces, $ or braces.",
                           nullable=True),
        ),
        _variable(
            "bulwark_version",
            "string",
            "Bulwark release installed from the package index.",
            opts.package_version,
            _pattern_check("bulwark_version", "bulwark_version must be a version such as 0.1.0."),
        ),
        _variable(
            "peers",
            "string",
            "PEERS: a number of peers or comma-separated peer names.",
            peers_env_value(opts.peers),
            _pattern_check("peers", "peers must be a number or comma-separated names (letters, digits and _=+.-)."),
        ),
        _variable(
            "internal_subnet",
            "string",
            "INTERNAL_SUBNET: the tunnel network.",
            internal_subnet_value(opts.subnet4),
            _pattern_check("internal_subnet", "internal_subnet must be an IPv4 address or CIDR, e.g. 10.13.13.0."),
        ),
        _variable(
            "peer_dns",
            "string",
            "PEERDNS: auto, empty, or DNS servers for peers.",
            opts.peer_dns,
            _pattern_check("peer_dns", "peer_dns must be auto, empty or IP addresses separated by commas."),
        ),
        _variable(
            "allowed_ips",
            "list(string)",
            "Networks peers route through the tunnel; the VPC CIDR is always added.",
            [str(n) for n in opts.allowed_ips],
            f"condition     = length(var.allowed_ips) > 0 && alltrue([for net in var.allowed_ips : "
            f"can(regex({_hcl(TEMPLATE_PATTERNS['allowed_ips'])}, net))])\n"
            'error_message = "allowed_ips must be CIDRs such as 10.0.0.0/16 or ::/0."',
        ),
        _variable("root_volume_size", "number", "Root volume size in GiB.", 8),
    ]
    return "\n".join(blocks)


@guarded
def render_terraform(opts: DeployOptions) -> dict[str, str]:
    """Terraform bundle: versions.tf, variables.tf, main.tf, outputs.tf and the user-data template."""
    if opts.client_port != DEFAULT_PORT:
        raise InputError("invalid advertised port for AWS", opts.client_port,
                         f"the Elastic IP does not translate ports, so clients must use {DEFAULT_PORT}")
    return {
        "versions.tf": VERSIONS_TF,
        "variables.tf": render_variables(opts),
        "main.tf": MAIN_TF,
        "outputs.tf": OUTPUTS_TF,
        USER_DATA_TEMPLATE: render_cloud_init_template(opts),
    }
