"""Deterministic YAML output for the deploy renderers: key order kept, multi-line text as blocks."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import yaml


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
