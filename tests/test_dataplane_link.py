"""WireGuard links for real, in namespaces: wireguard-go daemonized and in the foreground, deletion,
the kernel backend's absence on this machine, and rollback of a failed bring-up."""

from __future__ import annotations

import os
import signal

import pytest

from bulwark_vpn.dataplane import link, netcfg, wg
from bulwark_vpn.dataplane.runner import RollbackStack, Runner, Undo
from bulwark_vpn.errors import ConflictError, InputError, SystemActionError
from bulwark_vpn.keys import PrivateKey
from tests.netns import Netns, NetnsFactory


def quiet_runner(ns: Netns) -> Runner:
    return ns.runner(log=lambda _: None)


def assert_gone(runner: Runner, iface: str) -> None:
    assert not link.link_exists(runner, iface)
    assert link.userspace_pid(iface, runner.netns) is None
    assert not link.socket_path(iface).exists()


def test_auto_backend_falls_back_to_wireguard_go_and_delete_cleans_everything(
    netns_factory: NetnsFactory, netns: Netns
) -> None:
    runner, iface = quiet_runner(netns), netns_factory.ifname()
    assert link.create_link(runner, iface, "auto") == ("kernel" if link.kernel_available(runner) else "userspace")
    assert link.link_exists(runner, iface)
    pid = link.userspace_pid(iface, netns.name)
    assert pid is not None and pid in netns.pids()
    assert link.socket_answers(iface)
    state = wg.read_device(runner, iface)
    assert state is not None and state.peers == {}

    assert link.delete_link(runner, iface) is True
    assert_gone(runner, iface)
    assert link.delete_link(runner, iface) is False


def test_no_kernel_module_here_and_kernel_backend_says_so(netns_factory: NetnsFactory, netns: Netns) -> None:
    runner = quiet_runner(netns)
    if link.kernel_available(runner):
        pytest.skip("this kernel has the WireGuard module")  # not the case on the reference machine
    with pytest.raises(SystemActionError, match="use the userspace backend"):
        link.create_link(runner, netns_factory.ifname(), "kernel")


def test_create_refuses_an_existing_interface_and_bad_names(netns_factory: NetnsFactory, netns: Netns) -> None:
    runner, iface = quiet_runner(netns), netns_factory.ifname()
    link.create_link(runner, iface, "userspace")
    with pytest.raises(ConflictError, match=f"'{iface}' already exists"):
        link.create_link(runner, iface, "userspace")
    with pytest.raises(InputError, match="invalid interface name"):
        link.create_link(runner, "much-too-long-name0", "userspace")


def test_missing_wireguard_go_gives_the_install_hint(
    netns_factory: NetnsFactory, netns: Netns, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(SystemActionError, match="apt-get install -y wireguard-go"):
        link.start_userspace(quiet_runner(netns), netns_factory.ifname())


def test_foreground_process_can_be_watched_stopped_and_restarted(netns_factory: NetnsFactory, netns: Netns) -> None:
    runner, iface = quiet_runner(netns), netns_factory.ifname()
    child = link.start_userspace_foreground(runner, iface)
    assert child.poll() is None
    assert link.userspace_pid(iface, netns.name) == child.pid or child.pid in netns.pids()
    wg.set_interface(runner, iface, PrivateKey.generate(), 40000)
    state = wg.read_device(runner, iface)
    assert state is not None and state.listen_port == 40000

    os.kill(child.pid, signal.SIGKILL)  # a crash: the supervisor sees it and restarts
    assert child.wait(5) == -signal.SIGKILL
    child.stop()  # removes the stale socket
    assert not link.link_exists(runner, iface)

    again = link.start_userspace_foreground(runner, iface)
    assert again.poll() is None and link.socket_answers(iface)
    again.stop()
    assert_gone(runner, iface)


def test_failed_bring_up_rolls_back(netns_factory: NetnsFactory, netns: Netns) -> None:
    lines: list[str] = []
    runner, iface = netns.runner(log=lines.append), netns_factory.ifname()
    with pytest.raises(SystemActionError), RollbackStack(log=lines.append) as stack:
        link.create_link(runner, iface, "userspace")
        stack.push(Undo(f"delete {iface}", lambda: link.delete_link(runner, iface)))
        stack.push(netcfg.add_address(runner, iface, netcfg.ipaddress.ip_interface("10.66.0.1/24")))
        netcfg.add_address(runner, iface, netcfg.ipaddress.ip_interface("10.66.0.1/24"))  # File exists
    assert_gone(runner, iface)
    rollback = [line for line in lines if "rollback" in line]
    assert rollback == [
        f"[#] rollback: remove address 10.66.0.1/24 from {iface}",
        f"[#] rollback: delete {iface}",
    ]


def test_dry_run_changes_nothing(netns_factory: NetnsFactory, netns: Netns) -> None:
    lines: list[str] = []
    iface = netns_factory.ifname()
    dry = Runner(netns=netns.name, log=lines.append, dry_run=True)
    link.create_link(dry, iface, "userspace")
    assert not link.link_exists(dry, iface)
    assert lines and all(line.startswith("[dry-run] [#] ") for line in lines)


def test_missing_program_inside_a_namespace_gives_the_install_hint(netns: Netns) -> None:
    with pytest.raises(SystemActionError, match="'nft-not-here' not found: install it"):
        quiet_runner(netns).run(["nft-not-here"])


def test_dry_run_auto_backend_probes_instead_of_guessing(netns_factory: NetnsFactory, netns: Netns) -> None:
    dry = Runner(netns=netns.name, log=lambda _: None, dry_run=True)
    expected = "kernel" if link.kernel_available(dry) else "userspace"
    assert link.create_link(dry, netns_factory.ifname(), "auto") == expected
