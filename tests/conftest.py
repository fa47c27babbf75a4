"""Shared pytest fixtures. The network-namespace ones (netns_factory, netns) need root and run for real."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator

import pytest

from tests.netns import Netns, NetnsFactory, remove_orphans

REQUIRED_TOOLS = ("ip", "wg", "wg-quick", "wireguard-go", "nft", "ping")


def _require_root_and_tools() -> None:
    if os.geteuid() != 0:
        pytest.fail("network-namespace tests need root: run them as root (e.g. sudo .venv/bin/pytest)")
    missing = [tool for tool in REQUIRED_TOOLS if shutil.which(tool) is None]
    if missing:
        pytest.fail(f"missing tools for network-namespace tests: {', '.join(missing)}: apt-get install them")


# Tests that use these fixtures run real namespaces, links and processes: marked `netns` on collection, so the
# fast set (`make test-fast`: -m "not netns and not slow and not container and not browser") leaves them out.
NETNS_FIXTURES = {"netns_factory", "netns", "lab"}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if NETNS_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.netns)


@pytest.fixture(scope="session")
def _netns_session() -> None:
    _require_root_and_tools()
    remove_orphans()


@pytest.fixture
def netns_factory(_netns_session: None) -> Iterator[NetnsFactory]:
    """Call it to get a fresh namespace; `.ifname()` gives unique interface names. All is torn down."""
    factory = NetnsFactory()
    try:
        yield factory
    finally:
        factory.cleanup()


@pytest.fixture
def netns(netns_factory: NetnsFactory) -> Netns:
    """One fresh network namespace (loopback up)."""
    return netns_factory()


@pytest.fixture
def lab(netns_factory: NetnsFactory):
    """Server, VPC host and client namespaces with a provisioned Bulwark config dir (see tests/gwlab.py)."""
    from tests.gwlab import cleanup_lab, make_lab

    built = make_lab(netns_factory)
    try:
        yield built
    finally:
        cleanup_lab(built)
