"""Applying the safe fixes the checks found: forwarding, Bulwark's firewall table, drift, sysctls, permissions.

This module owns *changing* things on behalf of the doctor, and only through a result's `Remedy`: a check
decides what is wrong and what would repair it; `apply_fixes` does it, logs each system change through the
`Runner` (`[#] sysctl -q -w net.ipv4.ip_forward=1`) and reports one `FixOutcome` per result. It is only
called when the user asked (`--fix`, confirmed on a terminal or with `--yes`).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from bulwark_vpn.dataplane import firewall, netcfg
from bulwark_vpn.dataplane.apply import apply_changes
from bulwark_vpn.dataplane.runner import Runner
from bulwark_vpn.doctor.facts import read_store
from bulwark_vpn.doctor.model import CheckResult, FixOutcome
from bulwark_vpn.errors import BulwarkError, StoreError

# Independent host settings first; the device apply last (the only fix that can fail on a busy system).
_ORDER = {"chmod": 0, "forwarding": 1, "sysctl": 2, "firewall": 3, "apply": 4}


def plan(results: Iterable[CheckResult]) -> list[CheckResult]:
    """The results `apply_fixes` would act on, in the order it acts."""
    fixable = [r for r in results if r.fixable]
    return sorted(fixable, key=lambda r: _ORDER.get(r.remedy.kind if r.remedy else "", 9))


def apply_fixes(results: Iterable[CheckResult], runner: Runner | None = None) -> list[FixOutcome]:
    """Apply the remedy of every fixable result; one outcome each (a failed fix does not stop the others)."""
    runner = runner or Runner()
    outcomes = []
    for result in plan(results):
        assert result.remedy is not None  # noqa: S101 - plan() keeps fixable results only
        action = _ACTIONS[result.remedy.kind]
        try:
            detail = action(runner, dict(result.remedy.params))
        except (BulwarkError, OSError) as exc:
            outcomes.append(FixOutcome(result.name, False, str(exc)))
            continue
        outcomes.append(FixOutcome(result.name, True, detail))
    return outcomes


def _chmod(runner: Runner, params: dict[str, Any]) -> str:
    done = []
    for path, mode in params["paths"]:
        runner.announce(["chmod", f"{mode:o}", path])
        try:
            # Through a descriptor opened without following a link: a file swapped for a link since the check
            # is refused (ELOOP), never chmod-ed through.
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
        except FileNotFoundError:
            continue  # a WAL file SQLite removed meanwhile
        try:
            os.fchmod(fd, mode)
        finally:
            os.close(fd)
        done.append(path)
    return f"chmod {len(done)} path{'s' if len(done) != 1 else ''} to 0600 (files) / 0700 (folders)"


def _forwarding(runner: Runner, params: dict[str, Any]) -> str:
    ipv4 = True if params.get("ipv4", True) else None
    ipv6 = True if params.get("ipv6") else None
    netcfg.set_forwarding(runner, ipv4=ipv4, ipv6=ipv6)
    return "enabled IP forwarding" + (" (IPv4 and IPv6)" if ipv4 and ipv6 else " (IPv6)" if ipv6 else "")


def _sysctl(runner: Runner, params: dict[str, Any]) -> str:
    for name, value in params["values"]:
        runner.run(["sysctl", "-q", "-w", f"{name}={value}"])
    return ", ".join(f"{name} = {value}" for name, value in params["values"])


def _firewall(runner: Runner, params: dict[str, Any]) -> str:
    spec = firewall.spec_from_settings(_read_settings(params["config_dir"]), params["interface"])
    firewall.install_firewall(runner, spec)
    nat = f"NAT out of {spec.egress}" if spec.egress else f"NAT out of every interface but {spec.iface}"
    return f"reinstalled the firewall of {spec.iface} ({nat})"


def _read_settings(config_dir: str):
    view = read_store(Path(config_dir))
    if not view.usable or view.settings is None:
        raise StoreError(f"cannot read the store in '{config_dir}': {view.problem}")
    return view.settings


def _apply(runner: Runner, params: dict[str, Any]) -> str:
    from bulwark_vpn.dataplane import table
    from bulwark_vpn.dataplane.gateway import device_changes

    view = read_store(Path(params["config_dir"]))
    if not view.usable or view.settings is None or view.server_key is None:
        raise StoreError("cannot read the store", params["config_dir"], view.problem)
    iface = params["interface"]
    dump = table.read_dump(runner, iface)
    if dump is None:
        raise StoreError("the interface is not up", iface, "bring the gateway up first ('bulwark up')")
    wanted = table.DeviceTable(view.server_key.to_base64(), view.settings.listen_port)
    table.load_rows(wanted, view.rows, time.time())
    by_name = {row.name: row for row in view.rows}
    changes = device_changes(wanted, lambda names: [by_name[n] for n in names if n in by_name], dump)
    apply_changes(runner, iface, changes)
    return f"applied {len(changes)} change{'s' if len(changes) != 1 else ''} to {iface}"


_ACTIONS: dict[str, Callable[[Runner, dict[str, Any]], str]] = {
    "chmod": _chmod,
    "forwarding": _forwarding,
    "sysctl": _sysctl,
    "firewall": _firewall,
    "apply": _apply,
}
