"""Terraform's own evaluation of a rendered bundle's user-data, offline: no provider, no cloud.

main.tf's `templatefile(...)` call (and the locals it uses) is copied into a module holding only the
bundle's variables.tf and template, with the VPC CIDR taken from var.vpc_cidr (a new VPC), then applied:
outputs only, so Terraform needs nothing but itself. Variable validations run as they would at `apply`.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import hcl2

from bulwark_vpn.deploy.cloudinit import fill_template
from bulwark_vpn.deploy.terraform import MAIN_TF, USER_DATA_TEMPLATE

TERRAFORM = shutil.which("terraform")
_ENV = {"CHECKPOINT_DISABLE": "1", "TF_IN_AUTOMATION": "1", "TF_CLI_CONFIG_FILE": os.devnull}


def _user_data_locals() -> str:
    call = re.search(r"(?ms)^  allowed_ips .*?^  \}\)$", MAIN_TF)
    assert call, "main.tf's user_data locals moved: update tests/tfharness.py"
    return call.group(0)


def apply(bundle: Path, work: Path, variables: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """`terraform apply` of the user-data module built from `bundle` in `work`, with `-var` `variables`."""
    assert TERRAFORM is not None
    work.mkdir(parents=True, exist_ok=True)
    for name in ("variables.tf", USER_DATA_TEMPLATE):
        shutil.copy(bundle / name, work / name)
    (work / "sim.tf").write_text("locals {\n  vpc_cidr = var.vpc_cidr\n" + _user_data_locals() + "\n}\n"
                                 'output "user_data" {\n  value = local.user_data\n}\n')
    env = os.environ | _ENV
    init = subprocess.run([TERRAFORM, "init", "-input=false", "-no-color"], cwd=work, env=env, capture_output=True,
                          text=True, timeout=120, check=False)
    assert init.returncode == 0, init.stdout + init.stderr
    var_args = [f"-var={name}={value}" for name, value in (variables or {}).items()]
    return subprocess.run([TERRAFORM, "apply", "-auto-approve", "-input=false", "-no-color", *var_args], cwd=work,
                          env=env, capture_output=True, text=True, timeout=120, check=False)


def user_data(bundle: Path, work: Path) -> str:
    """The user-data Terraform makes of the bundle with its variables' defaults (emulated without Terraform)."""
    if TERRAFORM is None:
        return emulated_user_data(bundle)
    applied = apply(bundle, work)
    assert applied.returncode == 0, applied.stdout + applied.stderr
    output = subprocess.run([TERRAFORM, "output", "-raw", "user_data"], cwd=work, env=os.environ | _ENV,
                            capture_output=True, text=True, timeout=60, check=True)
    return output.stdout


def _value(value: object) -> object:
    """python-hcl2 keeps string literals quoted: unquote them (HCL strings without templates are JSON strings)."""
    if isinstance(value, list):
        return [_value(v) for v in value]
    if isinstance(value, str) and len(value) >= 2 and value[0] == value[-1] == '"':
        return json.loads(value)
    return None if value in (None, "null") else value


def emulated_user_data(bundle: Path) -> str:
    """What `user_data` gives, computed in Python: main.tf's locals by hand, then `fill_template`."""
    blocks = hcl2.loads((bundle / "variables.tf").read_text())["variable"]
    defaults: dict = {name.strip('"'): _value(body["default"]) for block in blocks for name, body in block.items()}
    nets = list(dict.fromkeys([*defaults["allowed_ips"], defaults["vpc_cidr"]]))
    spec = (f"bulwark-vpn[web] @ {defaults['wheel_url']}" if defaults["wheel_url"]
            else f"bulwark-vpn[web]=={defaults['bulwark_version']}")
    values = {"peers": defaults["peers"], "internal_subnet": defaults["internal_subnet"],
              "peer_dns": defaults["peer_dns"], "allowed_ips": ", ".join(nets), "package_spec": spec}
    return fill_template((bundle / USER_DATA_TEMPLATE).read_text(), values)
