"""The operations users ask for: typed requests in, typed results out (`to_dict()` is what `--json` prints and
the HTTP API returns). The CLI and the web app are clients of this package and nothing else.

Every operation takes a `Context` (config folder, runtime folder, environment, lock timeout). Mutations run
under the folder lock through the render journal (see `service.context` and `service.files`): bad input changes
nothing, and a crash at any point heals at the next command.
"""

from __future__ import annotations

from bulwark_vpn.service.context import DEFAULT_RUN_DIR, Context
from bulwark_vpn.service.deploy import DEPLOY_TARGETS, DeployResult, render_deployment
from bulwark_vpn.service.doctor import run_doctor
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

__all__ = [
    "DEFAULT_RUN_DIR",
    "DEPLOY_TARGETS",
    "AddPeersRequest",
    "ApplyResult",
    "Context",
    "DeployResult",
    "DownResult",
    "InitResult",
    "PeerConfig",
    "PeerConfigRequest",
    "PeerInfo",
    "PeerList",
    "PeerNamesRequest",
    "PeersResult",
    "UpResult",
    "add_peers",
    "apply_now",
    "down",
    "init_from_sources",
    "init_server",
    "list_peers",
    "peer_config",
    "peer_qr_text",
    "remove_peers",
    "render_deployment",
    "run_doctor",
    "set_peers_enabled",
    "show_peer",
    "status",
    "up_background",
    "up_foreground",
]
