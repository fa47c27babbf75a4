"""No deploy input can become a line, a key, a section or a command (issue 8, for `bulwark deploy`).

- Every deploy option and every `bulwark deploy` flag, given generated text with line breaks (\\n, \\r,
  U+0085, U+2028, U+2029, NUL), zone ids, spaces, quotes, `$`, backticks, `${`, `%{`, BULWARK_EOF...:
  either a clean refusal (an InputError; exit 2 with one line naming the value, output folder untouched) or
  files whose structure equals that of a clean value (same YAML documents and keys, same lines and keys in
  env files and units, same lines in scripts, same HCL blocks).
- The environment files read back by their real readers, systemd's env-file parser and sh/bash, give
  exactly the values written, whatever the value holds.
- docker-run.sh run by a real shell hands `docker` exactly the expected arguments.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import hcl2
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bulwark_vpn import cli
from bulwark_vpn.deploy import (
    DeployOptions,
    Resources,
    render_bootstrap_script,
    render_cloud_init,
    render_docker,
    render_kubernetes,
    render_systemd,
    render_terraform,
)
from bulwark_vpn.deploy.options import IMAGE_FIELDS
from bulwark_vpn.deploy.systemd import environment_line, render_environment_file
from bulwark_vpn.errors import BulwarkError, InputError, RenderError
from bulwark_vpn.values import has_unsafe_char

# Generated examples and external validators: part of the full suite, not of the fast set.
pytestmark = pytest.mark.slow

SSH_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFakeBulwarkTestKeyOnlyForGoldenFilesXXXXXXXX test@bulwark"
LINE_BREAKS = ["\n", "\r", "\r\n", "\x85", "\u2028", "\u2029", "\x00", "\x0b", "\x0c", "\x1b"]
FRAGMENTS = [
    *LINE_BREAKS,
    "%", "%eth0", "%x\n[Interface]\nPreUp = touch /tmp/PWNED", " ", "\t", '"', "'", "$", "`", "\\", "${HOME}",
    "%{if true}x%{endif}", "$(touch /tmp/PWNED)", "`touch /tmp/PWNED`", "BULWARK_EOF", "\nBULWARK_EOF\n", ";",
    "&", "|", "#", ":", ",", "=", "+", "/", "..", "{", "}", "[", "]", "@@bulwark:peers@@", "é", "\u200b",
    "\n- path: /etc/x\n  content: y", "\nExecStartPre=/bin/touch /tmp/PWNED", '"\nX="', "'\n;touch x;'",
]


# Characters some kinds accept: so that accepted values (whose files must keep their shape) come up too.
BENIGN = ["+", "=", "-", ".", "_", "x", "7", ",", "/", ":", " "]


def hostile(clean: str) -> st.SearchStrategy[str]:
    """`clean` with fragments inserted, appended or instead of it."""
    fragment = st.lists(st.sampled_from(FRAGMENTS), min_size=1, max_size=3).map("".join)
    benign = st.lists(st.sampled_from(BENIGN), min_size=1, max_size=2).map("".join)
    inserted = st.tuples(st.one_of(fragment, benign), st.integers(0, len(clean))).map(
        lambda fa: clean[: fa[1]] + fa[0] + clean[fa[1]:])
    return st.one_of(inserted, fragment, fragment.map(lambda f: clean + f))


# --- the structure of rendered files ---------------------------------------------------------------------


def _document(doc: Any) -> Any:
    skeleton = _skeleton(doc)
    if isinstance(doc, dict) and doc.get("kind") == "Secret":
        skeleton["data"] = ["entry"] * len(doc["data"])  # its keys are file names: values, not structure
    return skeleton


def _skeleton(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _skeleton(v) for k, v in value.items() if not str(k).startswith("__")}
    if isinstance(value, list):
        return [_skeleton(v) for v in value]
    return type(value).__name__


def _blocks(value: Any) -> Any:
    """HCL blocks and attributes; a list of plain values (a variable's default list) is one value."""
    if isinstance(value, dict):
        return {str(k): _blocks(v) for k, v in value.items() if not str(k).startswith("__")}
    if isinstance(value, list):
        if all(not isinstance(v, dict | list) for v in value):
            return "list"
        return [_blocks(v) for v in value]
    return type(value).__name__


@functools.lru_cache(maxsize=512)
def _hcl_skeleton(text: str) -> Any:
    return _blocks(hcl2.loads(text))


def _unit_keys(text: str) -> list[str]:
    keys, section = [], ""
    for line in text.splitlines():
        if line.startswith("["):
            section = line
        elif line and not line.startswith("#"):
            keys.append(f"{section}{line.split('=', 1)[0]}")
    return keys


def structure(name: str, text: str) -> Any:
    """What must not change when a value changes: documents and keys, lines, sections, blocks."""
    lines = text.count("\n")
    if name.endswith((".yaml", ".tftpl")):
        return lines if name.endswith(".tftpl") else None, [_document(d) for d in yaml.safe_load_all(text)]
    if name.endswith(".tf"):
        return lines, _hcl_skeleton(text)
    if name.endswith((".env", ".service")) or name == "environment":
        return lines, _unit_keys(text)
    return lines, None  # scripts: one command per line


def _cloud_init(opts: DeployOptions) -> dict[str, str]:
    return {"user-data.yaml": render_cloud_init(opts), "bootstrap.sh": render_bootstrap_script(opts)}


RENDERERS: dict[str, Callable[[DeployOptions], dict[str, str]]] = {
    "docker": render_docker, "kubernetes": render_kubernetes, "terraform": render_terraform,
    "systemd": render_systemd, "cloud-init": _cloud_init,
}


def render_all(opts: DeployOptions) -> dict[str, Any]:
    """The structure of every file of every bundle, plus the env files cloud-init writes."""
    out: dict[str, Any] = {}
    for target, render in RENDERERS.items():
        for name, text in render(opts).items():
            out[f"{target}/{name}"] = structure(name, text)
    for i, entry in enumerate(yaml.safe_load(render_cloud_init(opts))["write_files"]):
        kind = "environment" if entry["path"] == opts.environment_file else "file.sh"
        out[f"cloud-init:write_files[{i}]"] = structure(kind, entry["content"])
    return out


# --- every deploy option ----------------------------------------------------------------------------------

BASE = {"peers": "leo_mac,phone"}
# option -> (a clean value as text, what else the option needs to be renderable by every target)
CLEAN: dict[str, tuple[str, dict[str, Any]]] = {
    "image": ("registry.example.org/net/bulwark-vpn", {}),
    "image_tag": ("0.1.0", {}),
    "image_digest": ("sha256:" + "ab" * 32, {}),
    "image_pull_policy": ("Always", {}),
    "listen_port": ("51820", {}),
    "advertised_port": ("51820", {}),
    "server_url": ("vpn.example.org", {}),
    "subnet4": ("10.8.0.0/24", {}),
    "subnet6": ("fd00:8::/64", {}),
    "peers": ("leo_mac,phone", {}),
    "peer_dns": ("1.1.1.1,9.9.9.9", {}),
    "allowed_ips": ("10.0.0.0/8, 192.168.0.0/16", {}),
    "keepalive_peers": ("leo_mac", {}),
    "log_confs": ("true", {}),
    "serve": ("false", {}),
    "peer_to_peer": ("true", {}),
    "lan_to_peers": ("true", {}),
    "host_access": ("true", {}),
    "dns_clients": ("192.168.1.0/24, 10.9.0.0/16", {}),
    "container_name": ("edge-vpn", {}),
    "host_config_dir": ("/srv/bulwark", {}),
    "build_context": (".", {}),
    "name": ("edge-vpn", {}),
    "namespace": ("vpn", {}),
    "service_type": ("NodePort", {"advertised_port": 51820}),
    "node_port": ("31820", {"service_type": "NodePort", "advertised_port": 51820}),
    "storage": ("pvc", {}),
    "storage_size": ("2Gi", {}),
    "storage_class": ("gp3", {}),
    "secret_files": ("wg_confs/wg0.conf", {"storage": "secret"}),
    "resources": ("128Mi", {}),
    "test_client": ("true", {}),
    "test_peer": ("phone", {}),
    "bulwark_path": ("/usr/local/sbin/bulwark", {}),  # not the venv's own: the link commands stay
    "config_dir": ("/var/lib/bulwark", {}),  # also /etc/... (ALSO_CLEAN): both get a StateDirectory-like pair
    "environment_file": ("/etc/bulwark.env", {}),
    "package_version": ("0.1.0", {}),
    "wheel_url": ("https://files.example.org/bulwark_vpn-0.1.0-py3-none-any.whl", {}),
    "aws_region": ("eu-west-2", {}),
    "aws_instance_type": ("t4g.small", {}),
    "aws_vpc_id": ("vpc-0123456789abcdef0", {"aws_subnet_id": "subnet-0123456789abcdef0"}),
    "aws_subnet_id": ("subnet-0123456789abcdef0", {"aws_vpc_id": "vpc-0123456789abcdef0"}),
    "aws_vpc_cidr": ("10.0.0.0/16", {}),
    "aws_subnet_cidr": ("10.0.1.0/24", {}),
    "aws_ssh_cidr": ("198.51.100.0/24", {"aws_ssh_public_key": SSH_KEY}),
    "aws_ssh_public_key": (SSH_KEY, {}),
}


# Other clean values whose files legitimately differ in shape: no peers means no PEERS line and no test client.
# And a config folder outside /etc and /var/lib needs no ConfigurationDirectory=/StateDirectory= lines.
# An empty test_client is false (parse_bool): no test-client.yaml.
ALSO_CLEAN = {"peers": ("",), "keepalive_peers": ("",), "config_dir": ("/srv/bulwark", "/etc/bulwark"),
              "test_client": ("false",), "peer_to_peer": ("false",), "lan_to_peers": ("false",),
              "host_access": ("false",), "dns_clients": ("",)}


def _option_value(option: str, text: str) -> Any:
    if option == "secret_files":
        return {text: "[Interface]\nPrivateKey = (test only)\n"}
    if option == "resources":
        return Resources(memory_request=text)
    return text


def _options(option: str, text: str) -> DeployOptions:
    return DeployOptions(**{**BASE, **CLEAN[option][1], option: _option_value(option, text)})


@functools.lru_cache(maxsize=64)
def _clean_structures(option: str) -> list[dict[str, Any]]:
    return [render_all(_options(option, text)) for text in (CLEAN[option][0], *ALSO_CLEAN.get(option, ()))]


def test_every_option_is_covered() -> None:
    from dataclasses import fields

    assert {f.name for f in fields(DeployOptions)} == set(CLEAN)


@pytest.mark.parametrize("option", sorted(CLEAN))
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_every_option_refuses_or_keeps_the_structure(option: str, data: st.DataObject) -> None:
    text = data.draw(hostile(CLEAN[option][0]), label=option)
    try:
        opts = _options(option, text)
    except InputError as refused:
        if option not in IMAGE_FIELDS:  # the image's own parsers belong to the image-handling change
            assert "\n" not in str(refused) and refused.value is not None, str(refused)
        return
    try:
        rendered = render_all(opts)
    except RenderError as refused:
        # Only a value the parsers let through can reach a renderer: for Bulwark's own parsers, never.
        assert option in IMAGE_FIELDS and has_unsafe_char(text), (option, text, str(refused))
        return
    except InputError as refused:
        assert "\n" not in str(refused)
        return
    assert rendered in _clean_structures(option), (option, text)


# --- the environment file, read back by its real readers ---------------------------------------------------

ENV_VALUE = st.text(st.characters(codec="utf-8", exclude_categories=("Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp")),
                    max_size=40)
SYSTEMD_ANALYZE = shutil.which("systemd-analyze")


def _systemd_condition(key: str, value: str) -> str:
    """ConditionOSRelease= that holds iff systemd's env-file parser read `key` as exactly `value`.

    The fnmatch form (`$=`) with every special character escaped is an exact comparison, and spaces as
    `[ ]` survive the condition parser's own trimming; an empty value is "matches no character at all".
    """
    if value == "":
        return f'ConditionOSRelease="{key}!$=?*"'
    pattern = "".join("[ ]" if c == " " else "\\" + c if c in "*?[\\" else c for c in value)
    quoted = pattern.replace("\\", "\\\\").replace('"', '\\"').replace("%", "%%")
    return f'ConditionOSRelease="{key}$={quoted}"'


def systemd_reads(path: Path, expected: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """Ask systemd's own env-file parser (the one EnvironmentFile= uses) whether `path` holds `expected`.

    systemd-analyze evaluates ConditionOSRelease= against /etc/os-release, which it reads with that parser;
    the file is bind-mounted there in a private mount namespace (the host's os-release is untouched).
    """
    assert SYSTEMD_ANALYZE, "systemd-analyze is needed (Debian package systemd)"
    conditions = [_systemd_condition(k, v) for k, v in expected.items()]
    script = 'mount --bind "$1" /etc/os-release && shift && exec systemd-analyze condition "$@"'
    return subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c", script, "sh", str(path),
                           *conditions], capture_output=True, text=True, timeout=30, check=False)


def shell_reads(path: Path, shell: str) -> dict[str, str]:
    """What `shell` exports after `set -a; . FILE`: the file's variables as a shell reads them."""
    done = subprocess.run(["env", "-i", shell, "-c", 'set -a; . "$1"; exec env -0', shell, str(path)],
                          capture_output=True, timeout=30, check=True)
    pairs = (item.split("=", 1) for item in done.stdout.decode().split("\0") if "=" in item)
    return {k: v for k, v in pairs if k not in ("PWD", "SHLVL", "_", "OLDPWD")}


def _check_readers(tmp: Path, env: dict[str, str]) -> None:
    path = tmp / f"env-{hashlib.sha256(repr(env).encode()).hexdigest()[:12]}"
    path.write_text(render_environment_file(env))
    assert path.read_text().count("\n") == len(env) + 1
    for shell in ("bash", "sh"):
        assert shell_reads(path, shell) == env, shell
    read = systemd_reads(path, env)
    assert read.returncode == 0, read.stdout + read.stderr
    wrong = systemd_reads(path, {next(iter(env)): next(iter(env.values())) + "x"})
    assert wrong.returncode != 0, "the systemd check must be able to fail"


def test_rendered_env_files_read_back_by_systemd_and_the_shells(tmp_path: Path) -> None:
    for opts in (DeployOptions(**BASE), _options("peer_dns", "1.1.1.1,9.9.9.9").with_changes(
            subnet6="fd00:8::/64", keepalive_peers="all", log_confs=True, server_url="vpn.example.org")):
        _check_readers(tmp_path, opts.environment())


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(values=st.lists(ENV_VALUE, min_size=1, max_size=4))
def test_any_single_line_value_reads_back_whole(tmp_path: Path, values: list[str]) -> None:
    """Quotes, `$`, backticks, backslashes, `%`, spaces, `#`, unicode: each reader gets the value back."""
    _check_readers(tmp_path, {f"V{i}": v for i, v in enumerate(values)})


@pytest.mark.parametrize("brk", LINE_BREAKS)
def test_env_lines_refuse_line_breaks(brk: str) -> None:
    with pytest.raises(RenderError) as info:
        environment_line("PEERS", f"a{brk}EVIL=1")
    assert "\n" not in str(info.value)


# --- docker-run.sh, run by a real shell ---------------------------------------------------------------------

def test_docker_run_script_hands_docker_exactly_its_arguments(tmp_path: Path) -> None:
    opts = DeployOptions(peers="BULWARK_EOF,a+b=c,=eq", server_url="vpn.example.org", peer_dns="1.1.1.1, ::1",
                         container_name="edge-vpn", host_config_dir="./my+config")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    record = tmp_path / "argv.json"
    (bin_dir / "docker").write_text(f'#!{sys.executable}\nimport json, sys\n'
                                    f'json.dump(sys.argv[1:], open({str(record)!r}, "w"))\n')
    (bin_dir / "docker").chmod(0o755)
    (tmp_path / "docker-run.sh").write_text(render_docker(opts)["docker-run.sh"])
    subprocess.run(["sh", "docker-run.sh"], cwd=tmp_path, env={"PATH": f"{bin_dir}:/usr/bin:/bin"}, check=True)
    argv = json.loads(record.read_text())
    env = [argv[i + 1] for i, a in enumerate(argv) if a == "-e"]
    assert env == [f"{k}={v}" for k, v in opts.environment().items()]
    assert argv[argv.index("-v") + 1] == f"{tmp_path}/my+config:/config" and (tmp_path / "my+config").is_dir()
    assert argv[:2] == ["run", "-d"] and "--name=edge-vpn" in argv and argv[-1] == opts.image_ref


# --- every `bulwark deploy` flag ----------------------------------------------------------------------------

# flag -> (a clean value, the target it matters to, other flags it needs)
FLAGS: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "--out": ("out", "systemd", ()),
    "--config-dir": ("store", "systemd", ()),
    "--image": ("registry.example.org/bulwark-vpn", "docker", ()),
    "--tag": ("0.1.0", "docker", ()),
    "--digest": ("sha256:" + "ab" * 32, "docker", ()),
    "--pull-policy": ("Always", "kubernetes", ()),
    "--server-url": ("vpn.example.org", "docker", ()),
    "--service-type": ("NodePort", "kubernetes", ()),
    "--node-port": ("31820", "kubernetes", ("--service-type=NodePort",)),
    "--storage": ("pvc", "kubernetes", ()),
    "--namespace": ("vpn", "kubernetes", ()),
    "--region": ("eu-west-2", "terraform", ()),
    "--instance-type": ("t4g.small", "terraform", ()),
    "--vpc-id": ("vpc-0123456789abcdef0", "terraform", ("--subnet-id=subnet-0123456789abcdef0",)),
    "--subnet-id": ("subnet-0123456789abcdef0", "terraform", ("--vpc-id=vpc-0123456789abcdef0",)),
    "--vpc-cidr": ("10.0.0.0/16", "terraform", ()),
    "--ssh-cidr": ("198.51.100.0/24", "terraform", (f"--ssh-public-key={SSH_KEY}",)),
    "--ssh-public-key": (SSH_KEY, "terraform", ()),
    "--wheel-url": ("https://files.example.org/w.whl", "terraform", ()),
    "TARGET": ("docker", "", ()),
}
IMAGE_FLAGS = {"--image", "--tag", "--digest"}
# execve ends each argument at its first NUL: no command line can hold one.
CLI_FRAGMENTS = [f for f in FRAGMENTS if "\x00" not in f]


def run_cli(*argv: str) -> tuple[int, str, str]:
    """`bulwark ARGV` through its real entry point (cli.main), in this process: exit code, stdout, stderr."""
    out, err = io.StringIO(), io.StringIO()
    saved_argv, saved_umask = sys.argv, os.umask(0o022)
    sys.argv = ["bulwark", *argv]
    code: Any = 0
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            cli.main()
    except SystemExit as exc:
        code = exc.code
    finally:
        sys.argv = saved_argv
        os.umask(saved_umask)
    return int(code or 0), out.getvalue(), err.getvalue()


def _cli_args(flag: str, value: str, root: Path, out: Path) -> list[str]:
    """The command line for one flag's value: --out and --config-dir values are relative to fresh folders."""
    _, target, needs = FLAGS[flag]
    args = {"--out": str(out), "--config-dir": str(root / "store")}
    if flag == "TARGET":
        return [value, *(f"{k}={v}" for k, v in args.items())]
    args[flag] = f"{out}/{value}" if flag == "--out" else f"{root}/{value}" if flag == "--config-dir" else value
    return [target, *(f"{k}={v}" for k, v in args.items()), *needs]


def _tree(folder: Path) -> dict[str, Any]:
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    return {str(p.relative_to(folder)): structure(p.name, p.read_text()) for p in files}


@pytest.fixture(scope="module")
def cli_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("cli")
    (root / "store").mkdir()
    return root


@pytest.mark.parametrize("flag", sorted(FLAGS))
@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_every_deploy_flag_refuses_in_one_line_or_keeps_the_structure(flag: str, data: st.DataObject,
                                                                      cli_root: Path) -> None:
    clean = FLAGS[flag][0]
    fragment = st.lists(st.sampled_from(CLI_FRAGMENTS), min_size=1, max_size=3).map("".join)
    value = data.draw(st.one_of(st.tuples(fragment, st.integers(0, len(clean))).map(
        lambda fa: clean[: fa[1]] + fa[0] + clean[fa[1]:]), fragment.map(lambda f: clean + f)), label=flag)
    run = hashlib.sha256(f"{flag}\0{value}".encode()).hexdigest()[:16]
    out = cli_root / f"out-{run}"
    shutil.rmtree(out, ignore_errors=True)
    code, stdout, stderr = run_cli("deploy", *_cli_args(flag, value, cli_root, out))
    if code != 0:
        assert code == 2, (value, stderr)
        assert stdout == "" and not out.exists(), "a refusal writes nothing"
        if flag not in IMAGE_FLAGS:  # the image's own parsers belong to the image-handling change
            assert stderr.startswith("bulwark: ") and stderr.count("\n") == 1 and "'" in stderr, stderr
        return
    written = [line for line in stdout.splitlines() if line]
    assert written and all(Path(p).is_file() for p in written), stdout
    if flag not in _CLEAN_TREES:
        reference = cli_root / f"clean-{flag.strip('-')}"
        clean_code, clean_out, clean_err = run_cli("deploy", *_cli_args(flag, clean, cli_root, reference))
        assert clean_code == 0, clean_err
        _CLEAN_TREES[flag] = _tree(Path(clean_out.split()[0]).parent)
    assert _tree(Path(written[0]).parent) == _CLEAN_TREES[flag], (flag, value)


_CLEAN_TREES: dict[str, dict[str, Any]] = {}


@pytest.mark.parametrize("brk", [b for b in LINE_BREAKS if b != "\x00"])
def test_deploy_flag_with_a_line_break_is_one_line_naming_it(brk: str, tmp_path: Path) -> None:
    out = tmp_path / "out"
    code, stdout, stderr = run_cli("deploy", "kubernetes", f"--config-dir={tmp_path}", f"--out={out}",
                                   f"--server-url=fe80::1%x{brk}[Interface]{brk}PreUp = touch /tmp/PWNED")
    assert (code, stdout) == (2, "") and not out.exists()
    assert stderr.count("\n") == 1 and stderr.startswith("bulwark: invalid server URL: 'fe80::1%x"), stderr


def test_deploy_refuses_an_unknown_target_and_a_bad_number_in_one_line(tmp_path: Path) -> None:
    for args, message in ((["nomad"], "unknown deploy target: 'nomad'"),
                          (["kubernetes", "--service-type=NodePort", "--node-port=+31820"],
                           "invalid nodePort: '+31820'"),
                          (["kubernetes", "--service-type=loadbalancer"], "invalid service type: 'loadbalancer'")):
        code, _, stderr = run_cli("deploy", *args, f"--config-dir={tmp_path}", f"--out={tmp_path / 'o'}")
        assert code == 2 and stderr == f"bulwark: {message}" + stderr[len(f"bulwark: {message}"):], stderr
        assert stderr.count("\n") == 1 and not (tmp_path / "o").exists()


def test_render_error_is_exit_2_like_input_errors() -> None:
    assert RenderError("x").exit_code == InputError("x").exit_code == 2
    assert issubclass(RenderError, BulwarkError)
