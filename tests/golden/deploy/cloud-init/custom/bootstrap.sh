#!/bin/sh
# Bulwark bootstrap, run by cloud-init after write_files has put the unit, its environment file and
# the sysctls in place: install Bulwark and start it under systemd (-x: each command in the log).
set -eux
export DEBIAN_FRONTEND=noninteractive
apt-get update
apt-get install -y --no-install-recommends python3-venv wireguard-tools wireguard-go nftables iproute2
python3 -m venv /opt/bulwark
/opt/bulwark/bin/pip install --no-cache-dir --upgrade 'bulwark-vpn[web] @ https://files.example.org/bulwark_vpn-0.1.0-py3-none-any.whl'
install -d -m 0700 /var/lib/bulwark
sysctl -p /etc/sysctl.d/90-bulwark.conf
systemctl daemon-reload
systemctl enable --now bulwark.service
