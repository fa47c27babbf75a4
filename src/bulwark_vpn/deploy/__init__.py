"""Deployment generators: pure functions from `DeployOptions` to files (relative path -> text).

`bulwark deploy docker|kubernetes|terraform|systemd --out DIR` calls one renderer, then `write_bundle`.
Every renderer is checked against golden files and by its ecosystem's validator (hadolint, compose,
kubernetes-validate and checkov, python-hcl2 and checkov, cloud-init schema, systemd-analyze).
"""

from __future__ import annotations

from bulwark_vpn.deploy.bundle import holds_secrets, write_bundle
from bulwark_vpn.deploy.cloudinit import render_bootstrap_script, render_cloud_init
from bulwark_vpn.deploy.docker import render_docker
from bulwark_vpn.deploy.kubernetes import render_kubernetes
from bulwark_vpn.deploy.options import DeployOptions, Resources
from bulwark_vpn.deploy.systemd import render_systemd
from bulwark_vpn.deploy.terraform import render_terraform

__all__ = [
    "DeployOptions",
    "Resources",
    "holds_secrets",
    "render_bootstrap_script",
    "render_cloud_init",
    "render_docker",
    "render_kubernetes",
    "render_systemd",
    "render_terraform",
    "write_bundle",
]
