"""Bulwark: a WireGuard VPN gateway. The core library; `cli` and `web` are its clients."""

__version__ = "0.1.0"
