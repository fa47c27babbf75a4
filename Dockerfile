# Bulwark WireGuard gateway: `docker build -t bulwark-vpn:0.1.0 .`
# Runs `bulwark up --foreground`; state lives in the /config volume (linuxserver/wireguard layout).
# Optional parts of Bulwark go in with one build argument, `--build-arg EXTRAS=...` (comma-separated): the
# HTTP API and web pages (`web`) by default; `--build-arg EXTRAS=` leaves them out.
# podman and buildah keep the HEALTHCHECK only in Docker's image format: `podman build --format docker`.

ARG DEBIAN_IMAGE=debian:bookworm-slim

FROM ${DEBIAN_IMAGE} AS runtime
# Versions are not pinned: Debian stable only ships security and point-release fixes, and its
# mirrors drop superseded versions, so exact pins would break rebuilds. Pin the base image instead.
# netbase gives nft the protocol names of the firewall rules (/etc/protocols: ipv6-icmp); curl asks the
# API from a shell in the container (`docker exec bulwark curl -s 127.0.0.1:8080/api/v1/health`).
# Left out of the layer: apt's cache, lists and logs, dpkg's and debconf's backup copies, and the
# parts of Python that only serve Python developers (the test-suite helpers and test modules,
# unittest and doctest, offline help pages, the pure-Python decimal fallback
# behind the C one, and turtle, which needs Tk), as slim images leave out manuals.
# hadolint ignore=DL3008
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        ca-certificates \
        curl \
        iproute2 \
        iputils-ping \
        netbase \
        nftables \
        procps \
        python3 \
        qrencode \
        wireguard-go \
        wireguard-tools \
    && apt-get clean \
    && rm -rf /var/lib/apt/lists/* /var/log/apt/* /var/log/dpkg.log /var/cache/debconf/*-old /var/lib/dpkg/*-old \
    && py=/usr/lib/python3.11 \
    && rm -rf "$py"/test "$py"/unittest "$py"/pydoc_data "$py"/doctest.py "$py"/_pydecimal.py \
        "$py"/turtle.py "$py"/__pycache__/doctest.* "$py"/__pycache__/_pydecimal.* "$py"/__pycache__/turtle.* \
        "$py"/lib-dynload/_test* "$py"/lib-dynload/_ctypes_test* "$py"/lib-dynload/*xx*

FROM runtime AS build
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends binutils python3-venv \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml README.md ./
COPY src ./src
ARG EXTRAS="web"
# The package from this build context (its dependencies within pyproject.toml's ranges) goes into a
# venv without pip or setuptools: pip runs from a throw-away venv of this stage. Debug symbols are
# stripped from the compiled extensions (cryptography's alone carries 3 MB of them), and the manual
# page a dependency installs is dropped.
RUN python3 -m venv /tmp/pip \
    && python3 -m venv --without-pip /opt/bulwark \
    && /tmp/pip/bin/pip --python /opt/bulwark/bin/python install --no-cache-dir "/src${EXTRAS:+[$EXTRAS]}" \
    && find /opt/bulwark -name '*.so' -exec strip --strip-unneeded {} + \
    && rm -rf /opt/bulwark/share

FROM runtime AS image
COPY --from=build /opt/bulwark /opt/bulwark
COPY packaging/trim_python.py /tmp/
# What only developers use goes; everything a command, the API or a shell in the container runs stays:
# - the Python sources of the standard library and of the dependencies: each module runs from its .pyc
#   (tracebacks through them then show file and line, not the line's text). Bulwark's own sources stay,
#   and so does any source a dependency reads when imported (see packaging/trim_python.py);
# - type stubs (.pyi), which only type checkers read;
# - the CJK codecs: Bulwark reads and writes UTF-8 and ASCII (HTTP headers: Latin-1);
# - glibc's iconv modules, for legacy character sets: Python has codecs of its own, and glibc has UTF-8,
#   ASCII, UCS-2/4 and UTF-16/32 built in.
RUN py=/usr/lib/python3.11 \
    && find "$py"/encodings -regextype posix-extended \
        -regex '.*/(big5(hkscs)?|cp9(32|49|50)|euc_.*|gb.*|hz|iso2022_.*|johab|shift_jis.*)\..*' -delete \
    && rm "$py"/lib-dynload/_codecs_*.so "$py"/lib-dynload/_multibytecodec.*.so \
    && /opt/bulwark/bin/python /tmp/trim_python.py bulwark_vpn "$py" /opt/bulwark/lib/python3.11/site-packages \
    && rm /tmp/trim_python.py \
    && rm -r /usr/lib/*-linux-gnu/gconv

# The image is that stage's file system as one layer: what the trimming deleted is gone, not kept in the
# layers of debian:bookworm-slim and the packages, under a layer that hides it.
FROM scratch
# hadolint ignore=DL3067
COPY --from=image / /
# The API and web pages are served with the gateway, to peers through the tunnel and on the container's
# loopback only: `-e BULWARK_SERVE=false` turns them off.
ENV PATH=/opt/bulwark/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    BULWARK_CONFIG_DIR=/config \
    BULWARK_SERVE=true \
    PYTHONDONTWRITEBYTECODE=1
VOLUME ["/config"]
EXPOSE 51820/udp
# Exits 0 while the WireGuard interface is up.
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 CMD ["bulwark", "status", "--json"]
ENTRYPOINT ["bulwark"]
CMD ["up", "--foreground"]
