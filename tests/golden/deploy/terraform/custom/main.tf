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
