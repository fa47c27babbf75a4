"""`bulwark doctor` as text: pure functions of the check results (no secrets ever reach them).

    ok    forwarding       net.ipv4.ip_forward = 1
    fail  firewall         table inet bulwark_wg0 is missing: peers' traffic is not forwarded nor masqueraded
                           fix: bulwark doctor --fix --yes ... (doctor --fix can apply this)
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

NAME_WIDTH = 16
_INDENT = " " * (6 + NAME_WIDTH + 1)


def render_results(results: Iterable) -> str:
    """One line per check (status, name, evidence) and an indented fix line when it is not ok."""
    lines = []
    counts: Counter[str] = Counter()
    for result in results:
        status = str(result.status)
        counts[status] += 1
        lines.append(f"{status:<5} {result.name:<{NAME_WIDTH}} {result.evidence}")
        if status in ("warn", "fail") and result.fix:
            auto = "  (bulwark doctor --fix can apply this)" if result.fixable else ""
            lines.append(f"{_INDENT}fix: {result.fix}{auto}")
    order = ("fail", "warn", "ok", "skip")
    lines.append("summary: " + ", ".join(f"{counts[s]} {s}" for s in order if counts[s]))
    return "\n".join(lines) + "\n"


def render_plan(fixable: Iterable) -> str:
    """What `--fix` is about to do, one line per check."""
    items = list(fixable)
    lines = [f"bulwark doctor will fix {len(items)} problem{'s' if len(items) != 1 else ''}:"]
    lines += [f"  {r.name}: {r.fix}" for r in items]
    return "\n".join(lines) + "\n"


def render_outcomes(outcomes: Iterable) -> str:
    lines = [f"bulwark: fix {o.name}: {'done' if o.ok else 'FAILED'}: {o.detail}" for o in outcomes]
    return "\n".join(lines) + ("\n" if lines else "")


def results_json(results: Iterable) -> list[dict]:
    """The stable JSON shape: a list of {name, status, evidence, fix, fixable}."""
    return [r.to_dict() for r in results]
