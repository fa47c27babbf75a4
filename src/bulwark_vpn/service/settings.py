"""Reading the server settings, and changing the ones that are safe to change from the API.

Safe means: a change cannot cut off the API or the gateway the caller is using (not the interface, ports,
subnets, backend or egress), and never turns on logging of secrets (LOG_CONFS). Everything else stays with
`bulwark init` on the gateway.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from bulwark_vpn.errors import InputError
from bulwark_vpn.service.context import Context
from bulwark_vpn.service.provision import init_server, settings_dict

SAFE_SETTINGS = ("server_url", "server_port", "peer_dns", "allowed_ips", "mtu", "peer_to_peer", "lan_to_peers",
                 "host_access", "dns_clients", "api_url", "require_2fa", "audit_retention_days")


@dataclass(frozen=True)
class SettingsView:
    settings: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return {"settings": dict(self.settings), "safe_to_change": list(SAFE_SETTINGS)}


def get_settings(ctx: Context) -> SettingsView:
    ctx.actor.require_admin()
    with ctx.open_store(read_only=True) as store:
        return SettingsView(settings_dict(store.settings()))


def update_settings(ctx: Context, raw: Mapping[str, object]) -> SettingsView:
    """Change some of the safe settings (each through its parser); anything else is refused, nothing changed."""
    from bulwark_vpn.config import InitRequest, settings_update

    ctx.actor.require_admin()
    unsafe = sorted(set(raw) - set(SAFE_SETTINGS))
    if unsafe:
        raise InputError("this setting cannot be changed here", unsafe[0],
                         f"change it with 'bulwark init' on the gateway; here: {', '.join(SAFE_SETTINGS)}")
    if not raw:
        raise InputError("no setting given", None, f"give some of {', '.join(SAFE_SETTINGS)}")
    result = init_server(ctx, InitRequest(update=settings_update(dict(raw))))
    with ctx.open_store() as store:
        from bulwark_vpn.service.audit import record

        record(ctx, store, "settings.update", ",".join(sorted(raw)))
    return SettingsView(settings_dict(result.settings))
