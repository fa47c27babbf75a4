# Bulwark WireGuard gateway: `docker build -t bulwark-vpn:0.1.0 .`
# Runs `bulwark up --foreground`; state lives in the /config volume (linuxserver/wireguard layout).

ARG DEBIAN_IMAGE=debian:bookworm-slim

FROM ${DEBIAN_IMAGE} AS runtime
# Versions are not pinned: Debian stable only ships security and point-release fixes, and its
# mirrors drop superseded versions, so exact pins would break rebuilds. Pin the base image instead.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends \
        ca-certificates \
        iproute2 \
        iputils-ping \
        nftables \
        procps \
        python3 \
        qrencode \
        wireguard-go \
        wireguard-tools \
    && rm -rf /var/lib/apt/lists/*

FROM runtime AS build
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3-venv \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml README.md ./
COPY src ./src
# The package from this build context (its dependencies are pinned by pyproject.toml's ranges).
RUN python3 -m venv /opt/bulwark \
    && /opt/bulwark/bin/pip install --no-cache-dir /src

FROM runtime
COPY --from=build /opt/bulwark /opt/bulwark
ENV PATH=/opt/bulwark/bin:$PATH \
    BULWARK_CONFIG_DIR=/config \
    PYTHONDONTWRITEBYTECODE=1
VOLUME ["/config"]
EXPOSE 51820/udp
# Exits 0 while the WireGuard interface is up.
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 CMD ["bulwark", "status", "--json"]
ENTRYPOINT ["bulwark"]
CMD ["up", "--foreground"]
