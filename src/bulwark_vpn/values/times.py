"""Durations and moments: `--expires 30d`, `--expires 2026-12-31`, share links that last `24h`."""

from __future__ import annotations

import datetime as dt
import re

from bulwark_vpn.errors import InputError
from bulwark_vpn.values.text import require_text

_DURATION = re.compile(r"([0-9]{1,6})([smhdw])")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
_MOMENT = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}(:[0-9]{2})?(Z|[+-][0-9]{2}:[0-9]{2})")
MAX_SECONDS = 10 * 366 * 86400


def parse_duration(value: object, what: str = "duration", *, low: int = 60, high: int = MAX_SECONDS) -> int:
    """A duration such as 90m, 24h, 30d or 2w, in seconds."""
    hint = "use a number and a unit (s, m, h, d, w), e.g. 24h or 30d"
    text = require_text(value, what, hint)
    match = _DURATION.fullmatch(text)
    if not match:
        raise InputError(f"invalid {what}", value, hint)
    seconds = int(match.group(1)) * _UNITS[match.group(2)]
    if not low <= seconds <= high:
        raise InputError(f"invalid {what}", value, f"use between {low} s and {high // 86400} days")
    return seconds


def parse_expiry(value: object, now: float, what: str = "expiry") -> float:
    """When something expires: a duration from now (30d), a date (2026-12-31: the end of that day, UTC) or a
    moment with its time zone (2026-12-31T18:00Z). It must lie in the future, within ten years."""
    hint = "use a duration (30d, 12h), a date (2026-12-31) or a time with zone (2026-12-31T18:00Z)"
    text = require_text(value, what, hint)
    if _DURATION.fullmatch(text):
        return now + parse_duration(text, what)
    try:
        if _DATE.fullmatch(text):
            day = dt.datetime.strptime(text, "%Y-%m-%d").replace(tzinfo=dt.UTC)
            moment = (day + dt.timedelta(days=1)).timestamp() - 1
        elif _MOMENT.fullmatch(text):
            moment = dt.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
        else:
            raise ValueError
    except ValueError:
        raise InputError(f"invalid {what}", value, hint) from None
    if moment <= now:
        raise InputError(f"invalid {what}", value, "it lies in the past: give a later date or a duration")
    if moment > now + MAX_SECONDS:
        raise InputError(f"invalid {what}", value, "at most ten years ahead")
    return moment


def format_moment(timestamp: float | None) -> str | None:
    """A Unix time as ISO 8601 in UTC (what --json and the API show next to the raw number)."""
    if timestamp is None:
        return None
    return dt.datetime.fromtimestamp(timestamp, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
