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


# CI (.ci/run sets BULWARK_NO_SKIP=1) runs everything: a skipped test there is a failure, except for what the CI
# machine cannot have (Terraform is not in Debian or PyPI; the kernel module test is for machines that have it).
ALLOWED_SKIPS = ("terraform is not installed", "this kernel has the WireGuard module")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    outcome = yield
    report = outcome.get_result()
    if report.skipped and os.environ.get("BULWARK_NO_SKIP") == "1" and not hasattr(report, "wasxfail"):
        reason = str(report.longrepr[-1]) if isinstance(report.longrepr, tuple) else str(report.longrepr)
        if not any(allowed in reason for allowed in ALLOWED_SKIPS):
            report.outcome = "failed"
            report.longrepr = f"skipped in CI, where every test must run: {reason}"


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
