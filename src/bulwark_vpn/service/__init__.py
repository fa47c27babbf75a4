"""The operations users ask for: typed requests in, typed results out (`to_dict()` is what `--json` prints and
the HTTP API returns). The CLI and the web app are clients of this package and nothing else.

Every operation takes a `Context` (config folder, runtime folder, environment, lock timeout). Mutations run
under the folder lock through the render journal (see `service.context` and `service.files`): bad input changes
nothing, and a crash at any point heals at the next command.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from bulwark_vpn.service.backup import (
        BackupRequest,
        BackupResult,
        RestoreRequest,
        RestoreResult,
        backup_is_encrypted,
        backup_store,
        restore_store,
    )
    from bulwark_vpn.service.context import DEFAULT_RUN_DIR, Context
    from bulwark_vpn.service.deploy import DEPLOY_TARGETS, DeployResult, render_deployment
    from bulwark_vpn.service.doctor import run_doctor
    from bulwark_vpn.service.files import RenderResult, background_render, render_pending
    from bulwark_vpn.service.gateway import (
        ApplyResult,
        DownResult,
        UpResult,
        apply_now,
        down,
        status,
        up_background,
        up_foreground,
    )
    from bulwark_vpn.service.peers import (
        AddPeersRequest,
        ListPeersRequest,
        PeerConfig,
        PeerConfigRequest,
        PeerInfo,
        PeerList,
        PeerNamesRequest,
        PeersResult,
        add_peers,
        list_peers,
        peer_config,
        peer_qr_text,
        remove_peers,
        set_peers_enabled,
        show_peer,
    )
    from bulwark_vpn.service.provision import InitResult, init_from_sources, init_server
    from bulwark_vpn.service.transfer import (
        ExportRequest,
        ExportResult,
        ImportRequest,
        ImportResult,
        export_server,
        import_server,
    )

# Each name loads its module on first use (PEP 562), so a command imports only what it needs: `peer list`
# never loads QR codes, the data plane or deploy renderers.
_WHERE = {
    "AddPeersRequest": "peers",
    "BackupRequest": "backup",
    "BackupResult": "backup",
    "ExportRequest": "transfer",
    "ExportResult": "transfer",
    "ImportRequest": "transfer",
    "ImportResult": "transfer",
    "RestoreRequest": "backup",
    "RestoreResult": "backup",
    "backup_store": "backup",
    "backup_is_encrypted": "backup",
    "export_server": "transfer",
    "import_server": "transfer",
    "restore_store": "backup",
    "ApplyResult": "gateway",
    "Context": "context",
    "DEFAULT_RUN_DIR": "context",
    "DEPLOY_TARGETS": "deploy",
    "DeployResult": "deploy",
    "DownResult": "gateway",
    "InitResult": "provision",
    "ListPeersRequest": "peers",
    "PeerConfig": "peers",
    "PeerConfigRequest": "peers",
    "PeerInfo": "peers",
    "PeerList": "peers",
    "PeerNamesRequest": "peers",
    "PeersResult": "peers",
    "RenderResult": "files",
    "UpResult": "gateway",
    "add_peers": "peers",
    "apply_now": "gateway",
    "background_render": "files",
    "down": "gateway",
    "init_from_sources": "provision",
    "init_server": "provision",
    "list_peers": "peers",
    "peer_config": "peers",
    "peer_qr_text": "peers",
    "remove_peers": "peers",
    "render_deployment": "deploy",
    "render_pending": "files",
    "run_doctor": "doctor",
    "set_peers_enabled": "peers",
    "show_peer": "peers",
    "status": "gateway",
    "up_background": "gateway",
    "up_foreground": "gateway",
}


__all__ = [
    "DEFAULT_RUN_DIR",
    "BackupRequest",
    "BackupResult",
    "ExportRequest",
    "ExportResult",
    "ImportRequest",
    "ImportResult",
    "RestoreRequest",
    "RestoreResult",
    "backup_is_encrypted",
    "backup_store",
    "export_server",
    "import_server",
    "restore_store",
    "DEPLOY_TARGETS",
    "AddPeersRequest",
    "ApplyResult",
    "Context",
    "DeployResult",
    "DownResult",
    "InitResult",
    "ListPeersRequest",
    "PeerConfig",
    "PeerConfigRequest",
    "PeerInfo",
    "PeerList",
    "PeerNamesRequest",
    "PeersResult",
    "RenderResult",
    "UpResult",
    "add_peers",
    "apply_now",
    "background_render",
    "down",
    "init_from_sources",
    "init_server",
    "list_peers",
    "peer_config",
    "peer_qr_text",
    "remove_peers",
    "render_deployment",
    "render_pending",
    "run_doctor",
    "set_peers_enabled",
    "show_peer",
    "status",
    "up_background",
    "up_foreground",
]


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'bulwark_vpn.service' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"bulwark_vpn.service.{module}"), name)
    globals()[name] = value
    return value
