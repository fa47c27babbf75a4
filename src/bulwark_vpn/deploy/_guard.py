"""The line guard of every deploy renderer: defence in depth behind the parsers of `options.py`.

The renderers write option values into YAML, env files, shell scripts, systemd units and HCL. The parsers
already refuse anything that could add a line there; `guarded` makes each renderer refuse such a value as
well (RenderError), should options ever be built around the parsers (`object.__setattr__`, a subclass, a
future code path). Format-specific quoting (shell, env file, unit, HCL, YAML) lives with each renderer.
"""

from __future__ import annotations

import dataclasses
import functools
import ipaddress
from collections.abc import Callable, Iterator
from typing import ParamSpec, TypeVar

from bulwark_vpn.errors import RenderError
from bulwark_vpn.values import has_unsafe_char

P = ParamSpec("P")
R = TypeVar("R")

_HINT = "a deploy value may not hold a line break or a control character (options built around the parsers?)"


def check_line(value: str, where: str) -> str:
    """`value` unchanged, or RenderError when it holds a line break, a separator or a control character."""
    if not isinstance(value, str) or has_unsafe_char(value):
        raise RenderError(f"refusing to render {where}", value, _HINT)
    return value


def option_values(opts: object) -> Iterator[tuple[str, object]]:
    """Every leaf value of `opts` (a dataclass), as (field path, value), nested tuples and dataclasses included."""
    for f in dataclasses.fields(opts):  # type: ignore[arg-type]
        yield from _leaves(f.name, getattr(opts, f.name))


def _leaves(path: str, value: object) -> Iterator[tuple[str, object]]:
    if isinstance(value, tuple | list):
        for i, item in enumerate(value):
            yield from _leaves(f"{path}[{i}]", item)
    elif dataclasses.is_dataclass(value) and not isinstance(value, type):
        for f in dataclasses.fields(value):
            yield from _leaves(f"{path}.{f.name}", getattr(value, f.name))
    else:
        yield path, value


def check_options(opts: object) -> None:
    """RenderError unless every value of `opts` is of a type the renderers expect and holds no line break."""
    for path, value in option_values(opts):
        if isinstance(value, bytes | bool | int) or value is None:
            continue  # bytes: file contents, base64-encoded wherever they are written
        if isinstance(value, ipaddress.IPv4Network | ipaddress.IPv6Network):
            value = str(value)
        if not isinstance(value, str):
            raise RenderError(f"refusing to render deploy option {path}", repr(value), "unexpected type")
        check_line(value, f"deploy option {path}")


def guarded(renderer: Callable[P, R]) -> Callable[P, R]:
    """Run `check_options` on a renderer's first argument (its DeployOptions) before it renders anything."""

    @functools.wraps(renderer)
    def render(*args: P.args, **kwargs: P.kwargs) -> R:
        check_options(args[0])
        return renderer(*args, **kwargs)

    return render

