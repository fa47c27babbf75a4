variable "region" {
  description = "AWS region."
  type        = string
  default     = "eu-west-2"
}

variable "instance_type" {
  description = "EC2 instance type."
  type        = string
  default     = "t4g.small"
}

variable "ami_architecture" {
  description = "Debian 12 AMI architecture: amd64, or arm64 for Graviton instance types (t4g...)."
  type        = string
  default     = "arm64"

  validation {
    condition     = contains(["amd64", "arm64"], var.ami_architecture)
    error_message = "ami_architecture must be amd64 or arm64."
  }
}

variable "vpc_id" {
  description = "Existing VPC to use (null: create one)."
  type        = string
  default     = "vpc-0123456789abcdef0"
}

variable "subnet_id" {
  description = "Public subnet of the existing VPC (with vpc_id)."
  type        = string
  default     = "subnet-0123456789abcdef0"
}

variable "vpc_cidr" {
  description = "CIDR of the VPC created when vpc_id is null."
  type        = string
  default     = "172.31.0.0/16"

  validation {
    condition     = can(cidrnetmask(var.vpc_cidr))
    error_message = "vpc_cidr must be an IPv4 CIDR such as 10.0.0.0/16."
  }
}

variable "subnet_cidr" {
  description = "CIDR of the public subnet created."
  type        = string
  default     = "172.31.1.0/24"
}

variable "ssh_cidr" {
  description = "Network allowed to SSH to the gateway (null: no SSH)."
  type        = string
  default     = "198.51.100.0/24"

  validation {
    condition     = var.ssh_cidr == null || can(cidrnetmask(var.ssh_cidr))
    error_message = "ssh_cidr must be an IPv4 CIDR such as 203.0.113.0/24."
  }
}

variable "ssh_public_key" {
  description = "Public key for the admin user (null: no key pair)."
  type        = string
  default     = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFakeBulwarkTestKeyOnlyForGoldenFilesXXXXXXXX test@bulwark"
}

variable "wheel_url" {
  description = "https URL of a Bulwark wheel to install instead of the package index release."
  type        = string
  default     = "https://files.example.org/bulwark_vpn-0.1.0-py3-none-any.whl"

  validation {
    condition     = var.wheel_url == null || can(regex("^https://[A-Za-z0-9._~!+,;=:@%/?&\\[\\]-]+$", var.wheel_url))
    error_message = "wheel_url must be an https:// URL without quotes, spaces, $ or braces."
  }
}

variable "bulwark_version" {
  description = "Bulwark release installed from the package index."
  type        = string
  default     = "0.1.0"

  validation {
    condition     = can(regex("^[0-9A-Za-z][0-9A-Za-z._+!-]{0,63}$", var.bulwark_version))
    error_message = "bulwark_version must be a version such as 0.1.0."
  }
}

variable "peers" {
  description = "PEERS: a number of peers or comma-separated peer names."
  type        = string
  default     = "2"

  validation {
    condition     = can(regex("^[A-Za-z0-9_=+.,-]*$", var.peers))
    error_message = "peers must be a number or comma-separated names (letters, digits and _=+.-)."
  }
}

variable "internal_subnet" {
  description = "INTERNAL_SUBNET: the tunnel network."
  type        = string
  default     = "10.8.0.0"

  validation {
    condition     = can(regex("^[0-9]{1,3}([.][0-9]{1,3}){3}(/[0-9]{1,2})?$", var.internal_subnet))
    error_message = "internal_subnet must be an IPv4 address or CIDR, e.g. 10.13.13.0."
  }
}

variable "peer_dns" {
  description = "PEERDNS: auto, empty, or DNS servers for peers."
  type        = string
  default     = "1.1.1.1,9.9.9.9"

  validation {
    condition     = can(regex("^[0-9A-Fa-f:.,]*$|^auto$", var.peer_dns))
    error_message = "peer_dns must be auto, empty or IP addresses separated by commas."
  }
}

variable "allowed_ips" {
  description = "Networks peers route through the tunnel; the VPC CIDR is always added."
  type        = list(string)
  default     = ["10.0.0.0/8", "192.168.0.0/16"]

  validation {
    condition     = length(var.allowed_ips) > 0 && alltrue([for net in var.allowed_ips : can(regex("^[0-9A-Fa-f:.]{2,45}/[0-9]{1,3}$", net))])
    error_message = "allowed_ips must be CIDRs such as 10.0.0.0/16 or ::/0."
  }
}

variable "root_volume_size" {
  description = "Root volume size in GiB."
  type        = number
  default     = 8
}
