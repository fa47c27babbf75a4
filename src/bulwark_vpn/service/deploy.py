"""`deploy`: deployment files for Docker, Kubernetes, Terraform (EC2) and systemd from the store's settings."""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bulwark_vpn.errors import InputError
from bulwark_vpn.fsutil import SafeFolder
from bulwark_vpn.model import Settings
from bulwark_vpn.service.context import LOCK_NAME, Context
from bulwark_vpn.store import STORE_NAME

DEPLOY_TARGETS = ("docker", "kubernetes", "terraform", "systemd")


@dataclass(frozen=True)
class DeployResult:
    target: str
    files: list[str]

    def to_dict(self) -> dict[str, Any]:
        return {"target": self.target, "files": list(self.files)}


def config_folder_snapshot(ctx: Context) -> tuple[tuple[str, bytes], ...]:
    """The config folder's files for a Kubernetes Secret: the store as a consistent SQLite snapshot (a live
    gateway keeps recent writes in the WAL, which a byte copy of the main file would miss), the rendered files as
    they are (read without following links); no WAL, shared-memory, lock or temp files."""
    files: list[tuple[str, bytes]] = []
    with SafeFolder.open(ctx.config_dir) as folder:
        todo = [""]
        while todo:
            relative = todo.pop()
            for name in sorted(folder.listdir(relative)):
                child = f"{relative}/{name}" if relative else name
                info = folder.lstat(child)
                if info is None or name.startswith(".") or name.startswith(STORE_NAME) or name == LOCK_NAME:
                    continue
                if info.st_mode & 0o170000 == 0o040000:
                    todo.append(child)
                elif info.st_mode & 0o170000 == 0o100000:
                    files.append((child, folder.read_bytes(child)))
    with tempfile.TemporaryDirectory() as tmp, ctx.open_store(read_only=True) as store:
        snapshot = Path(tmp) / STORE_NAME
        store.snapshot(snapshot)
        files.append((STORE_NAME, snapshot.read_bytes()))
    return tuple(sorted(files))


def render_deployment(ctx: Context, target: str, out_dir: Path, **overrides: object) -> DeployResult:
    """Write the deployment files for `target` from the store's settings and peers (or the defaults).

    Every override goes through the parser of its kind (see `deploy.DeployOptions`), and every file is rendered
    before the first one is written: a refused value leaves `out_dir` as it was.
    """
    from bulwark_vpn import deploy
    from bulwark_vpn.config import parse_config_dir

    renderers = {"docker": deploy.render_docker, "kubernetes": deploy.render_kubernetes,
                 "terraform": deploy.render_terraform, "systemd": deploy.render_systemd}
    if target not in renderers:
        raise InputError("unknown deploy target", target, f"use one of {', '.join(DEPLOY_TARGETS)}")
    out_dir = parse_config_dir(str(out_dir), "output folder")
    settings = Settings()
    peers: tuple[str, ...] = ()
    secret_files: tuple[tuple[str, bytes], ...] = ()
    if ctx.has_store():
        with ctx.open_store(read_only=True) as store:
            settings = store.settings()
            peers = tuple(p.name for p in store.peers())
        if overrides.get("storage") == "secret":
            secret_files = config_folder_snapshot(ctx)
    if overrides.get("aws_ssh_public_key") is not None:
        overrides["aws_ssh_public_key"] = _ssh_public_key_text(overrides["aws_ssh_public_key"])
    options = deploy.DeployOptions.from_settings(
        settings, peers=overrides.pop("peers", None) or peers or None,
        secret_files=secret_files or None, **overrides,
    )
    files = renderers[target](options)
    written = deploy.write_bundle(files, out_dir)
    return DeployResult(target, [str(p) for p in written])


def _ssh_public_key_text(value: object) -> str:
    """An SSH public key given as its text, or as the path of a file holding it (`~/.ssh/id_ed25519.pub`)."""
    from bulwark_vpn.values import require_text

    hint = "give a key line ('ssh-ed25519 AAAA... you@host') or the path of a readable .pub file"
    text = require_text(value, "SSH public key", hint)
    if text.startswith(("ssh-", "ecdsa-", "sk-")):
        return text
    try:
        return Path(text).expanduser().read_text().strip()
    except (OSError, UnicodeDecodeError):
        raise InputError("invalid SSH public key", value, hint) from None
