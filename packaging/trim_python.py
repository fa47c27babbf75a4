"""Trim the Python of the container image: modules run from their compiled form, without their sources.

Usage (in the Dockerfile, with the image's venv Python):  python trim_python.py PACKAGE ROOT...

Every module under each ROOT (the standard library, the venv's site-packages) is compiled to a .pyc beside
where its source was, which Python imports without the source; the source and its `__pycache__` copy go.
Two kinds of source stay, with their `__pycache__` copies:

- PACKAGE's own (Bulwark's), so its tracebacks (`bulwark --debug`) read in full;
- any source that something reads while PACKAGE's modules are imported (through `linecache`, the funnel of
  `inspect.getsource`): anyio, for one, reads its own `__init__.py` to import its parts lazily and, without
  it, imports them all eagerly (20 ms more to start the API).

Type stubs (.pyi) go too: only type checkers read them. Symbolic links (Debian's sitecustomize.py points at
/etc) are left as they are. Nothing else is touched: data files, extension modules and metadata stay.
"""

from __future__ import annotations

import importlib
import linecache
import py_compile
import sys
from pathlib import Path
from types import ModuleType


def module_names(package: ModuleType) -> list[str]:
    """Every module of `package`, namespace sub-packages included (pkgutil skips those), but `__main__`."""
    names = []
    for root in map(Path, package.__path__):
        for path in sorted(root.rglob("*.py")):
            parts = (package.__name__, *path.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            if parts[-1] != "__main__":
                names.append(".".join(parts))
    return names


def sources_read_on_import(package_name: str) -> set[Path]:
    """The source files read (through linecache) while every module of the package is imported."""
    read: set[str] = set()
    update = linecache.updatecache

    def recording(filename: str, module_globals: object = None) -> list[str]:
        read.add(filename)
        return update(filename, module_globals)  # type: ignore[arg-type]

    linecache.updatecache = recording  # type: ignore[assignment]
    try:
        package = importlib.import_module(package_name)
        for name in module_names(package):
            try:
                importlib.import_module(name)
            except ImportError:
                pass  # a module of an optional extra that this image does not install
    finally:
        linecache.updatecache = update
    return {Path(f).resolve() for f in read if f.endswith(".py") and Path(f).is_file()}


def trim(root: Path, keep: set[Path], keep_under: Path) -> tuple[int, int]:
    """Compile and drop the sources under `root` except `keep` and those under `keep_under`."""
    compiled = kept = 0
    for source in sorted(root.rglob("*.py")):
        if source.is_symlink() or not source.is_file():
            continue
        if source.is_relative_to(keep_under) or source.resolve() in keep:
            kept += 1
            continue
        py_compile.compile(str(source), cfile=str(source.with_suffix(".pyc")), doraise=True)
        for cached in (source.parent / "__pycache__").glob(f"{source.stem}.*.pyc"):
            cached.unlink()
        source.unlink()
        compiled += 1
    for stub in root.rglob("*.pyi"):
        stub.unlink()
    for cache in sorted(root.rglob("__pycache__"), reverse=True):
        if cache.is_dir() and not any(cache.iterdir()):
            cache.rmdir()
    return compiled, kept


def main(argv: list[str]) -> int:
    package_name, *roots = argv
    keep = sources_read_on_import(package_name)
    package_dir = Path(importlib.import_module(package_name).__path__[0]).resolve()
    for root in map(Path, roots):
        compiled, kept = trim(root.resolve(), keep, package_dir)
        print(f"{root}: {compiled} modules compiled without their sources, {kept} sources kept")
    for path in sorted(keep):
        print(f"kept (read on import): {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
