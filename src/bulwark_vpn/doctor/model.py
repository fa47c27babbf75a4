"""The result of one doctor check, and the fix it carries.

A check returns a `CheckResult`: a stable `name`, a `status` (ok / warn / fail, or skip when it could not be
checked), one line of `evidence`, and the `fix`: the exact command or setting a person runs. When Bulwark can
apply the fix itself safely, the result also carries a `Remedy` (what `apply_fixes` does) and is `fixable`.
`to_dict()` is the stable JSON shape: {name, status, evidence, fix, fixable}; fields are only ever added.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


class Status(StrEnum):
    OK = "ok"
    WARN = "warn"
    FAIL = "fail"
    SKIP = "skip"  # not checked (a prerequisite failed, or it does not apply): says why in the evidence


@dataclass(frozen=True)
class Remedy:
    """A fix Bulwark can apply by itself: `kind` names the action in `doctor.fixes`, `params` its inputs."""

    kind: str
    params: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class CheckResult:
    name: str
    status: Status
    evidence: str
    fix: str = ""
    remedy: Remedy | None = field(default=None, compare=False, repr=False)

    @property
    def fixable(self) -> bool:
        """True when `bulwark doctor --fix` can repair this by itself."""
        return self.remedy is not None and self.status in (Status.WARN, Status.FAIL)

    @property
    def failed(self) -> bool:
        return self.status == Status.FAIL

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "status": str(self.status),
            "evidence": self.evidence,
            "fix": self.fix,
            "fixable": self.fixable,
        }


def ok(name: str, evidence: str) -> CheckResult:
    return CheckResult(name, Status.OK, evidence)


def skip(name: str, evidence: str) -> CheckResult:
    return CheckResult(name, Status.SKIP, evidence)


def warn(name: str, evidence: str, fix: str, remedy: Remedy | None = None) -> CheckResult:
    return CheckResult(name, Status.WARN, evidence, fix, remedy)


def fail(name: str, evidence: str, fix: str, remedy: Remedy | None = None) -> CheckResult:
    return CheckResult(name, Status.FAIL, evidence, fix, remedy)


@dataclass(frozen=True)
class FixOutcome:
    """What applying one check's remedy did."""

    name: str
    ok: bool
    detail: str


def any_failed(results: list[CheckResult]) -> bool:
    return any(r.failed for r in results)
