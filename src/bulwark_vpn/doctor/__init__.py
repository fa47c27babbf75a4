"""`bulwark doctor`: checks that say what is wrong with a gateway (or a client config) and how to fix it.

The public API, shared by the CLI and the future web API:

* `run_server_checks(config_dir, interface=None) -> list[CheckResult]` (doctor.checks)
* `run_client_checks(path) -> list[CheckResult]` (doctor.client)
* `apply_fixes(results) -> list[FixOutcome]` (doctor.fixes): the safe fixes, only when asked
* `diagnose(...) -> DoctorReport`: checks, then (with `fix=True` and a yes from `confirm`) fixes and checks again.

Nothing here prints; `render.doctor` formats the results.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from bulwark_vpn.dataplane.runner import Runner
from bulwark_vpn.doctor.checks import SERVER_CHECKS, run_server_checks
from bulwark_vpn.doctor.client import CLIENT_CHECKS, run_client_checks
from bulwark_vpn.doctor.fixes import apply_fixes, plan
from bulwark_vpn.doctor.model import CheckResult, FixOutcome, Remedy, Status, any_failed

__all__ = [
    "CLIENT_CHECKS",
    "SERVER_CHECKS",
    "CheckResult",
    "DoctorReport",
    "FixOutcome",
    "Remedy",
    "Status",
    "apply_fixes",
    "diagnose",
    "plan",
    "run_client_checks",
    "run_server_checks",
]

# Called with (results, the fixable ones) before anything changes; True means go ahead.
Confirm = Callable[[list[CheckResult], list[CheckResult]], bool]


@dataclass
class DoctorReport:
    """`checks`: the first run; `fixes`: what was applied; `final`: the checks after the fixes (else `checks`)."""

    checks: list[CheckResult]
    fixes: list[FixOutcome] = field(default_factory=list)
    final: list[CheckResult] = field(default_factory=list)
    # Fixes were available and asked for, but not confirmed (no terminal and no --yes, or answered no).
    declined: bool = False

    @property
    def failed(self) -> bool:
        return any_failed(self.final)

    def to_dict(self) -> dict:
        """What `doctor --json` prints and the API returns: the final results, the fixes applied, the verdict."""
        return {
            "checks": [r.to_dict() for r in self.final],
            "fixes": [{"name": f.name, "ok": f.ok, "detail": f.detail} for f in self.fixes],
            "declined": self.declined,
            "failed": self.failed,
        }


def diagnose(config_dir: Path | None = None, *, interface: str | None = None, peer_config: Path | None = None,
             fix: bool = False, confirm: Confirm | None = None, runner: Runner | None = None,
             run_dir: Path | None = None) -> DoctorReport:
    """Run the server checks (or the client checks of `peer_config`); with `fix`, apply the safe fixes once
    `confirm(results, fixable)` says yes, then run the checks again."""
    def run() -> list[CheckResult]:
        if peer_config is not None:
            return run_client_checks(peer_config, runner=runner)
        if config_dir is None:
            raise ValueError("diagnose needs a config dir or a peer config")
        return run_server_checks(config_dir, interface=interface, runner=runner, run_dir=run_dir)

    results = run()
    report = DoctorReport(results, final=results)
    fixable = plan(results)
    if not fix or not fixable:
        return report
    if confirm is None or not confirm(results, fixable):
        report.declined = True
        return report
    report.fixes = apply_fixes(fixable, runner)
    report.final = run()
    return report
