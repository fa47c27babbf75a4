# One command to run the gateway, one to run the tests, on a fresh Debian 12 machine (as root).
#   make up     install what Bulwark needs, provision the server from flags/env, bring it up (foreground)
#   make test   install what the tests need and run them all (the command CI runs)

SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
# netbase: /etc/protocols, where nft reads the protocol names of the firewall rules (ipv6-icmp).
APT_RUN := wireguard-tools wireguard-go nftables netbase iproute2 procps qrencode
# The browser tests drive Debian's Chromium with Playwright (its own browser download does not work here) and read
# QR codes back from screenshots with zbarimg; the backup tests open encrypted backups with Debian's age.
APT_TEST := $(APT_RUN) iptables iputils-ping dnsutils cloud-init systemd ca-certificates curl age chromium zbar-tools
# The container tests: podman with runc (crun refuses hybrid cgroups), catatonit for kube play's pause
# image, podman-compose, and mmdebstrap for the local Debian base image (no image registry is needed).
APT_CONTAINER := podman runc conmon catatonit containernetworking-plugins podman-compose mmdebstrap
CONFIG_DIR ?= /etc/bulwark
BULWARK_ARGS ?=

.PHONY: up test test-fast test-browser screenshots deps-run deps-test venv checkov lint clean

deps-run:
	@command -v wg >/dev/null && command -v wireguard-go >/dev/null && command -v nft >/dev/null && command -v qrencode >/dev/null \
	  && [ -f /etc/protocols ] || \
	  (apt-get update -qq && apt-get install -y -qq --no-install-recommends $(APT_RUN))

deps-test:
	@missing=""; for b in wg wireguard-go nft iptables ping dig cloud-init ip systemd-analyze qrencode curl age \
	  podman runc conmon catatonit podman-compose mmdebstrap chromium zbarimg; do \
	  command -v $$b >/dev/null || missing=1; done; \
	  [ -x /usr/lib/cni/bridge ] && [ -f /etc/protocols ] || missing=1; \
	  if [ -n "$$missing" ]; then apt-get update -qq && \
	  apt-get install -y -qq --no-install-recommends $(APT_TEST) $(APT_CONTAINER); fi

$(PY):
	python3 -m venv $(VENV)

# Installed once, again only when pyproject.toml changes (so `make up` works offline afterwards).
$(VENV)/.installed: pyproject.toml | $(PY)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $@

venv: $(VENV)/.installed

# checkov ships its own fork of python-hcl2 under the same import name, so it lives in a venv of its own
# and the main venv keeps the real python-hcl2 the tests parse Terraform with.
CHECKOV_VENV := $(VENV)/checkov
$(CHECKOV_VENV)/bin/checkov:
	python3 -m venv $(CHECKOV_VENV)
	$(CHECKOV_VENV)/bin/pip install -q 'checkov>=3.2'

checkov: $(CHECKOV_VENV)/bin/checkov venv
	ln -sf $(abspath $(CHECKOV_VENV))/bin/checkov $(VENV)/bin/checkov

up: deps-run venv
	$(VENV)/bin/bulwark init --config-dir $(CONFIG_DIR) $(BULWARK_ARGS)
	$(VENV)/bin/bulwark up --foreground --serve --config-dir $(CONFIG_DIR)

test: deps-test venv checkov
	$(VENV)/bin/ruff check src tests bench
	$(VENV)/bin/mypy
	$(VENV)/bin/pytest -q

# The pure and in-process tests, in seconds: no namespaces, containers, browser or long runs.
test-fast: venv
	$(VENV)/bin/pytest -q -n auto --dist worksteal -m "not netns and not slow and not container and not browser"

# The web UI in a real Chromium against a gateway in namespaces (root), and the README's screenshots.
test-browser: deps-test venv
	$(VENV)/bin/pytest -q -m browser

screenshots: deps-test venv
	BULWARK_SCREENSHOTS=$(abspath docs/screenshots) $(VENV)/bin/pytest -q tests/test_web_ui.py -k accessibility

lint: venv
	$(VENV)/bin/ruff check src tests bench

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
