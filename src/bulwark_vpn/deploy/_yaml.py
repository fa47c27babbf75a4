"""Deterministic YAML output for the deploy renderers: key order kept, multi-line text as blocks.

Every value reaches YAML through the PyYAML serializer; the only text written by hand is comment lines,
and `comment` refuses any that would end early (a line break of any kind YAML knows).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import yaml

from bulwark_vpn.deploy._guard import check_line


class _Dumper(yaml.SafeDumper):
    """SafeDumper that indents sequences under their key and writes multi-line strings as `|` blocks."""

    def increase_indent(self, flow: bool = False, indentless: bool = False) -> None:
        super().increase_indent(flow, False)

    def ignore_aliases(self, data: Any) -> bool:
        # Shared sub-objects are written out in full: no &anchors, *aliases in manifests.
        return True


def _represent_str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _represent_str)


def dump(document: Any) -> str:
    """One YAML document."""
    return str(yaml.dump(document, Dumper=_Dumper, sort_keys=False, default_flow_style=False, width=4096))


def dump_all(documents: Iterable[Any]) -> str:
    """Several YAML documents separated by `---`."""
    return "---\n".join(dump(d) for d in documents)


def comment(*lines: str) -> str:
    """`# line` for each line: RenderError if one holds a line break (YAML also breaks on U+0085, U+2028...)."""
    return "".join(f"# {check_line(line, 'a YAML comment')}\n" for line in lines)
