"""`doctor`: the server checks (or a client config's), and the safe fixes when asked. See `bulwark_vpn.doctor`."""

from __future__ import annotations

from pathlib import Path

from bulwark_vpn.service.context import Context


def run_doctor(ctx: Context | None, *, interface: str | None = None, peer_config: Path | None = None,
               fix: bool = False, confirm=None):
    """Checks with evidence and fixes; with `fix`, the safe fixes once `confirm(results, fixable)` agrees, then the
    checks again. For a folder whose interface runs another folder's gateway, it refuses (a fix would rewrite the
    other gateway)."""
    from bulwark_vpn import doctor
    from bulwark_vpn.service.gateway import _parsed_interface

    interface = _parsed_interface(interface)
    if peer_config is None and ctx is not None and ctx.has_store():
        from bulwark_vpn.errors import StoreError
        from bulwark_vpn.service.gateway import _interface, check_same_gateway

        try:
            with ctx.open_store(read_only=True) as store:
                check_same_gateway(ctx, store, _interface(store, interface))
        except StoreError:
            pass  # the store check reports it
    return doctor.diagnose(ctx.config_dir if ctx is not None else None, run_dir=ctx.run_dir if ctx else None,
                           interface=interface, peer_config=peer_config, fix=fix, confirm=confirm)
