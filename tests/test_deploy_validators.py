"""The deploy bundles checked by their ecosystems' own validators (slow: about half a minute in all).

kubernetes-validate --strict (each Kubernetes minor 1.29-1.37), checkov (Kubernetes and Terraform, with
every skip documented and necessary), hadolint (the Dockerfile), cloud-init schema (the user-data) and
systemd-analyze verify (the unit). A missing validator fails the test: CI installs them all
(Python ones from the test extras, cloud-init and systemd from Debian).

Terraform itself, when installed (it is not a Debian package, so CI may lack it; the template is then
checked through `fill_template` and the validation patterns through Python's re), fills the user-data
template and applies the variables' validations (tests/tfharness.py).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from bulwark_vpn.deploy import (
    DeployOptions,
    render_cloud_init,
    render_kubernetes,
    render_systemd,
    render_terraform,
    write_bundle,
)
from bulwark_vpn.deploy.cloudinit import fill_template, template_values
from tests import tfharness
from tests.test_deploy_render import CUSTOM_AWS, CUSTOM_K8S, DEFAULT, ROOT

# Generated examples and external validators: part of the full suite, not of the fast set.
pytestmark = pytest.mark.slow

KUBERNETES_VERSIONS = [f"1.{minor}.0" for minor in range(29, 38)]
K8S_CASES = {"default": DEFAULT, "custom": CUSTOM_K8S, "no-test-client": DeployOptions()}
TF_CASES = {"default": DEFAULT, "custom": CUSTOM_AWS}


def tool(name: str) -> str:
    """The validator's path: the venv's bin first (pip-installed ones), then PATH. Missing: fail."""
    venv_bin = Path(sys.executable).parent / name
    if venv_bin.exists():
        return str(venv_bin)
    found = shutil.which(name)
    if found is None:
        pytest.fail(f"validator '{name}' not found: install the test extras and the Debian packages CI uses")
    return found


def run(
    args: list[str], cwd: Path | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, cwd=cwd, env=env, timeout=300, check=False)


# --- Kubernetes ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def k8s_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("k8s")
    for case, opts in K8S_CASES.items():
        write_bundle(render_kubernetes(opts), root / case)
    return root


@pytest.mark.slow
@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_kubernetes_validate_strict(k8s_dir: Path, version: str) -> None:
    files = sorted(str(p) for p in k8s_dir.rglob("*.yaml"))
    result = run([tool("kubernetes-validate"), "--strict", "-k", version, *files])
    assert result.returncode == 0, result.stdout + result.stderr
    passed = [line for line in result.stdout.splitlines() if " passed for resource " in line]
    documents = sum(Path(f).read_text().count("\napiVersion: ") for f in files)
    assert len(passed) == documents == 22, result.stdout
    assert "ERROR" not in result.stdout + result.stderr and "WARN" not in result.stdout + result.stderr


# --- checkov ---------------------------------------------------------------------------------------------

# Offline: no guideline mapping, no policy download (checkov otherwise calls its vendor's API).
CHECKOV_ENV = {"BC_SKIP_MAPPING": "TRUE", "CHECKOV_RUN_SCA_PACKAGE_SCAN_V2": "false", "LOG_LEVEL": "WARNING"}


def checkov(directory: Path, framework: str) -> dict[str, Any]:
    env = os.environ | CHECKOV_ENV
    args = [tool("checkov"), "-d", str(directory), "--framework", framework, "--skip-download", "-o", "json"]
    result = run(args, cwd=directory, env=env)
    assert result.returncode in (0, 1), result.stderr[-3000:]
    report = json.loads(result.stdout)
    report = report[0] if isinstance(report, list) else report
    assert report["summary"]["parsing_errors"] == 0, report["summary"]
    return report


def _found(report: dict[str, Any], kind: str) -> set[tuple[str, str, str]]:
    return {(c["check_id"], c["file_path"], c["resource"]) for c in report["results"][kind]}


def _assert_clean_with_documented_skips(report: dict[str, Any]) -> None:
    failed = [(c["check_id"], c["resource"], c["check_name"]) for c in report["results"]["failed_checks"]]
    assert failed == []
    assert report["summary"]["passed"] > 20
    for check in report["results"]["skipped_checks"]:
        reason = check["check_result"].get("suppress_comment") or ""
        assert len(reason) > 30, f"{check['check_id']} on {check['resource']} is skipped without a reason"


def _strip_skips(src: Path, dst: Path, pattern: str) -> None:
    for path in src.rglob("*"):
        if path.is_file():
            target = dst / path.relative_to(src)
            target.parent.mkdir(parents=True, exist_ok=True)
            kept = [line for line in path.read_text().splitlines(keepends=True) if not re.search(pattern, line)]
            target.write_text("".join(kept))


@pytest.mark.slow
def test_checkov_kubernetes(k8s_dir: Path, tmp_path: Path) -> None:
    report = checkov(k8s_dir, "kubernetes")
    _assert_clean_with_documented_skips(report)
    skipped = _found(report, "skipped_checks")
    assert {s[0] for s in skipped} >= {"CKV_K8S_16", "CKV_K8S_23", "CKV_K8S_25"}
    # Every skip is needed: without the annotations exactly the skipped checks fail.
    _strip_skips(k8s_dir, tmp_path / "bare", r"checkov\.io/skip")
    bare = checkov(tmp_path / "bare", "kubernetes")
    assert _found(bare, "failed_checks") == skipped


@pytest.fixture(scope="module")
def tf_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("terraform")
    for case, opts in TF_CASES.items():
        write_bundle(render_terraform(opts), root / case)
    return root


@pytest.mark.slow
def test_checkov_terraform(tf_dir: Path, tmp_path: Path) -> None:
    report = checkov(tf_dir, "terraform")
    _assert_clean_with_documented_skips(report)
    passed = {c["check_id"] for c in report["results"]["passed_checks"]}
    assert {"CKV_AWS_79", "CKV_AWS_8", "CKV_AWS_24", "CKV2_AWS_12"} <= passed  # IMDSv2, encrypted root...
    skipped = _found(report, "skipped_checks")
    _strip_skips(tf_dir, tmp_path / "bare", r"#checkov:skip=")
    bare = checkov(tmp_path / "bare", "terraform")
    assert _found(bare, "failed_checks") == skipped


# --- hadolint, cloud-init, systemd ----------------------------------------------------------------------


def test_hadolint_dockerfile() -> None:
    result = run([tool("hadolint"), "--failure-threshold", "warning", "--no-color", str(ROOT / "Dockerfile")])
    assert result.returncode == 0, result.stdout + result.stderr
    ignores = re.findall(r"# hadolint ignore=(\S+)", (ROOT / "Dockerfile").read_text())
    assert set(ignores) <= {"DL3008", "DL3067"}, "each hadolint ignore must be explained in the Dockerfile"


def test_dockerfile_contract() -> None:
    text = (ROOT / "Dockerfile").read_text()
    for needle in (
        'ENTRYPOINT ["bulwark"]',
        'CMD ["up", "--foreground"]',
        "BULWARK_CONFIG_DIR=/config",
        'VOLUME ["/config"]',
        "EXPOSE 51820/udp",
        'HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 CMD ["bulwark", "status", "--json"]',
        "wireguard-go",
        "wireguard-tools",
        "nftables",
        "iproute2",
    ):
        assert needle in text
    assert text.startswith("# Bulwark") and "debian:bookworm-slim" in text


@pytest.mark.parametrize("opts", [DEFAULT, CUSTOM_AWS], ids=["default", "custom"])
def test_cloud_init_schema(opts: DeployOptions, tmp_path: Path) -> None:
    user_data = tmp_path / "user-data.yaml"
    filled = fill_template(render_terraform(opts)["user-data.yaml.tftpl"], template_values(opts))
    assert filled == render_cloud_init(opts)
    user_data.write_text(filled)
    result = run([tool("cloud-init"), "schema", "--config-file", str(user_data)])
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Valid cloud-config" in result.stdout


def test_systemd_analyze_verify(tmp_path: Path) -> None:
    # verify checks that ExecStart exists: point it at this venv's bulwark entry point.
    bulwark = Path(sys.executable).parent / "bulwark"
    assert bulwark.exists(), "the package must be installed in the venv (pip install -e .)"
    unit = tmp_path / "bulwark.service"
    unit.write_text(render_systemd(DEFAULT.with_changes(bulwark_path=str(bulwark)))["bulwark.service"])
    result = run([tool("systemd-analyze"), "verify", str(unit)])
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip() == "", result.stderr  # unknown keys and bad values only warn


# --- Terraform's own templatefile and validations -------------------------------------------------------

needs_terraform = pytest.mark.skipif(tfharness.TERRAFORM is None, reason="terraform is not installed")
HOSTILE_LOOKING = DEFAULT.with_changes(
    peers="BULWARK_EOF,a+b=c,x.y-z,=eq,+plus,_,peer7", server_url="l00-x.l01-x.example.com",
    subnet6="fd44:44:44::/64", peer_dns="1.1.1.1,2606:4700:4700::1111", allowed_ips="0.0.0.0/0, ::/0",
    wheel_url="https://[2001:db8::1]:8443/bulwark_vpn-0.1.0-py3-none-any.whl?sig=a%2Fb&x=1",
)


@needs_terraform
@pytest.mark.parametrize("opts", [DEFAULT, CUSTOM_AWS, HOSTILE_LOOKING], ids=["default", "custom", "hostile-looking"])
def test_terraform_templatefile_gives_the_cloud_init_user_data(opts: DeployOptions, tmp_path: Path) -> None:
    write_bundle(render_terraform(opts), tmp_path / "bundle")
    assert tfharness.user_data(tmp_path / "bundle", tmp_path / "tf") == render_cloud_init(opts)
    assert tfharness.emulated_user_data(tmp_path / "bundle") == render_cloud_init(opts)


# Values given with -var at apply time that would leave their line (or their quotes) in the template.
TEMPLATE_ATTACKS = [
    ("peers", "a\nb"),
    ("peers", 'a",X="y'),
    ("peers", "a\u2028b"),
    ("peer_dns", "1.1.1.1\x85POSTUP=x"),
    ("peer_dns", "auto\n"),
    ("internal_subnet", "10.13.13.0\n      - path: /etc/x"),
    ("allowed_ips", '["10.0.0.0/8\\nX=1"]'),
    ("allowed_ips", "[]"),
    ("wheel_url", "https://x.example/w.whl'; touch /tmp/PWNED; '"),
    ("wheel_url", "https://x.example/$(id).whl"),
    ("bulwark_version", "0.1.0' 'evil"),
    ("bulwark_version", "0.1.0\n"),
    ("vpc_cidr", "10.0.0.0/16\nX"),
]


@needs_terraform
def test_terraform_refuses_template_variables_that_could_leave_their_line(tmp_path: Path) -> None:
    write_bundle(render_terraform(DEFAULT), tmp_path / "bundle")
    for i, (name, value) in enumerate(TEMPLATE_ATTACKS):
        applied = tfharness.apply(tmp_path / "bundle", tmp_path / f"tf{i}", {name: value})
        assert applied.returncode != 0, (name, value, applied.stdout)
        assert "Invalid value for variable" in applied.stderr, applied.stderr
        assert "This was checked by the validation rule at variables.tf" in applied.stderr
