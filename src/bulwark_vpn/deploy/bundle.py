"""Writing a rendered bundle (relative path -> content) to a folder, atomically, with the right modes."""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping
from pathlib import Path, PurePosixPath

from bulwark_vpn.errors import InputError
from bulwark_vpn.fsutil import PRIVATE_FILE, PUBLIC_FILE, atomic_write

EXECUTABLE_FILE = 0o755

# Content that must never be world-readable: WireGuard keys and Kubernetes Secrets.
_SECRET_CONTENT = re.compile(r"^\s*(PrivateKey|PresharedKey)\s*=|^kind:\s*Secret\s*$", re.MULTILINE)


def holds_secrets(path: str, content: str) -> bool:
    """True when `content` carries key material (a WireGuard key line or a Kubernetes Secret)."""
    return bool(_SECRET_CONTENT.search(content))


def file_mode(path: str, content: str, secret_paths: Collection[str] = ()) -> int:
    """0600 for anything holding secrets, 0755 for scripts, else 0644."""
    if path in secret_paths or holds_secrets(path, content):
        return PRIVATE_FILE
    if path.endswith(".sh"):
        return EXECUTABLE_FILE
    return PUBLIC_FILE


def _relative(path: str) -> PurePosixPath:
    rel = PurePosixPath(path)
    if not path or rel.is_absolute() or ".." in rel.parts or str(rel) != path:
        raise InputError("invalid bundle path", path, "give a plain relative path such as k8s/app.yaml")
    return rel


def write_bundle(files: Mapping[str, str], out_dir: Path, *, secret_paths: Collection[str] = ()) -> list[Path]:
    """Write `files` under `out_dir` atomically and return the paths that changed.

    Files holding secrets (as `holds_secrets` detects, or listed in `secret_paths`) are written 0600,
    `*.sh` scripts 0755 and everything else 0644. Unchanged files are left untouched.
    """
    checked = {name: _relative(name) for name in files}
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise InputError("output path is not a folder", str(out_dir), "pick a folder for --out")
    changed: list[Path] = []
    for name, rel in sorted(checked.items()):
        target = out_dir.joinpath(*rel.parts)
        target.parent.mkdir(parents=True, exist_ok=True)
        if atomic_write(target, files[name], file_mode(name, files[name], secret_paths)):
            changed.append(target)
    return changed
