"""Kubernetes deployment: namespace, state volume, env ConfigMap, gateway Deployment, UDP Service, test Job.

Design notes (each is also in docs/deploy.md):
- ip_forward is set by a tiny privileged initContainer inside the pod's own network namespace, so the
  pod spec needs no "unsafe" sysctl and no kubelet flag (the obstacle met on EKS).
- The gateway container drops every capability and adds back NET_ADMIN (plus NET_BIND_SERVICE when it
  serves DNS on port 53). It runs as UID 0 because Kubernetes grants added capabilities only to root:
  a non-root process would get them only through file capabilities, which wg/ip/nft do not carry.
  allowPrivilegeEscalation=false and the dropped bounding set keep that root small.
- The test-client Job reaches the gateway through the Service's ClusterIP, read from the
  <SERVICE>_SERVICE_HOST variable Kubernetes injects, not through the Service's DNS name.
"""

from __future__ import annotations

import base64
import re
import shlex
from typing import Any

from bulwark_vpn.deploy import _yaml
from bulwark_vpn.deploy._guard import guarded
from bulwark_vpn.deploy.options import DeployOptions, secret_key
from bulwark_vpn.errors import RenderError
from bulwark_vpn.values import peer_folder

CONFIG_DIR = "/config"
WG_PORT_NAME = "wireguard"
SEED_DIR = "/seed"

Manifest = dict[str, Any]

# checkov checks skipped on purpose, each with the reason written into the manifest.
SKIP_REASONS: dict[str, str] = {
    "CKV_K8S_16": "privileged: only the sysctl initContainer, to write net.ipv4.ip_forward in the pod's "
    "own network namespace; the gateway container is not privileged",
    "CKV_K8S_20": "allowPrivilegeEscalation: only the privileged sysctl initContainer (Kubernetes rejects "
    "false with privileged); the gateway container sets it to false",
    "CKV_K8S_23": "root: Kubernetes grants added capabilities (NET_ADMIN) only to UID 0; all other "
    "capabilities are dropped and privilege escalation is off",
    "CKV_K8S_40": "high UID: the process must be UID 0 to hold NET_ADMIN (see CKV_K8S_23)",
    "CKV_K8S_25": "NET_ADMIN: required to configure the WireGuard interface, routes and nftables NAT; "
    "NET_BIND_SERVICE (only when PEERDNS is auto): to serve DNS to peers on port 53",
    "CKV_K8S_15": "imagePullPolicy: the image is pinned by an explicit version tag; IfNotPresent lets "
    "clusters run an image loaded locally (minikube/kind image load)",
    "CKV_K8S_43": "digest: the image is pinned by an explicit version tag; pass a digest to pin it by content",
}
TEST_CLIENT_SKIP_REASONS: dict[str, str] = SKIP_REASONS | {
    "CKV_K8S_25": "NET_ADMIN: required to bring up the test client's WireGuard interface; "
    "NET_RAW: to ping the gateway's tunnel address",
}


def _labels(opts: DeployOptions, component: str) -> dict[str, str]:
    return {
        "app.kubernetes.io/name": "bulwark",
        "app.kubernetes.io/instance": opts.name,
        "app.kubernetes.io/component": component,
    }


def _meta(
    opts: DeployOptions,
    name: str,
    component: str,
    skips: tuple[str, ...] = (),
    reasons: dict[str, str] = SKIP_REASONS,
) -> Manifest:
    meta: Manifest = {"name": name, "namespace": opts.namespace, "labels": _labels(opts, component)}
    if skips:
        meta["annotations"] = {f"checkov.io/skip{i}": f"{check}={reasons[check]}" for i, check in enumerate(skips, 1)}
    return meta


def _service_env_prefix(opts: DeployOptions) -> str:
    # Pasted into the test script as a variable name (and the name into a message): letters, digits, '_' only.
    prefix = opts.name.upper().replace("-", "_")
    if not re.fullmatch(r"[A-Z][A-Z0-9_]*", prefix):
        raise RenderError("refusing to render the Service's variable name", prefix, "the name must start with a letter")
    return prefix


def _resources(cpu: str, memory: str, cpu_limit: str, memory_limit: str) -> Manifest:
    return {"requests": {"cpu": cpu, "memory": memory}, "limits": {"cpu": cpu_limit, "memory": memory_limit}}


_SMALL = _resources("10m", "16Mi", "100m", "32Mi")


def _image_skips(opts: DeployOptions) -> tuple[str, ...]:
    skips: list[str] = []
    if opts.image_pull_policy != "Always":
        skips.append("CKV_K8S_15")
    if opts.image_digest is None:
        skips.append("CKV_K8S_43")
    return tuple(skips)


def _server_capabilities(opts: DeployOptions) -> list[str]:
    # NET_BIND_SERVICE only when Bulwark serves DNS to peers on port 53.
    return ["NET_ADMIN", "NET_BIND_SERVICE"] if opts.peer_dns == "auto" else ["NET_ADMIN"]


def _container_security(add: list[str]) -> Manifest:
    capabilities: Manifest = {"drop": ["ALL"], "add": add} if add else {"drop": ["ALL"]}
    return {
        "allowPrivilegeEscalation": False,
        "capabilities": capabilities,
        "privileged": False,
        "readOnlyRootFilesystem": True,
        "runAsUser": 0,
        "runAsNonRoot": False,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


# --- objects -----------------------------------------------------------------------------------------


def namespace(opts: DeployOptions) -> Manifest:
    """The namespace; "privileged" Pod Security because of the sysctl initContainer."""
    return {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {
            "name": opts.namespace,
            "labels": {
                "app.kubernetes.io/name": "bulwark",
                "pod-security.kubernetes.io/enforce": "privileged",
                "pod-security.kubernetes.io/warn": "privileged",
            },
        },
    }


def config_map(opts: DeployOptions) -> Manifest:
    """The linuxserver environment of the gateway."""
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": _meta(opts, f"{opts.name}-env", "gateway"),
        "data": opts.environment(),
    }


def state_volume_object(opts: DeployOptions) -> Manifest:
    """Where /config lives: a PersistentVolumeClaim, or a Secret seeding an emptyDir."""
    if opts.storage == "secret":
        return {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": _meta(opts, f"{opts.name}-config", "gateway"),
            "type": "Opaque",
            "data": {secret_key(p): base64.b64encode(c).decode() for p, c in opts.secret_files},
        }
    spec: Manifest = {
        "accessModes": ["ReadWriteOnce"],
        "resources": {"requests": {"storage": opts.storage_size}},
    }
    if opts.storage_class is not None:
        spec["storageClassName"] = opts.storage_class
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": _meta(opts, f"{opts.name}-config", "gateway"),
        "spec": spec,
    }


def _state_volume(opts: DeployOptions) -> Manifest:
    if opts.storage == "secret":
        return {"name": "config", "emptyDir": {}}
    return {"name": "config", "persistentVolumeClaim": {"claimName": f"{opts.name}-config"}}


def _seed_volume(opts: DeployOptions, *, by_path: bool = False) -> Manifest:
    """The Secret as a volume: one file per key, or (`by_path`) each key at its /config path.

    The gateway's seed reads the files by key and installs them at their paths itself: `optional` spelled
    out and no `items` keep the pod playable by `podman kube play` before 4.4 (a secret volume without
    `optional` crashes it) and 4.5 (it ignores `items`).
    """
    secret: Manifest = {"secretName": f"{opts.name}-config", "defaultMode": 0o400, "optional": False}
    if by_path:
        secret["items"] = [{"key": secret_key(p), "path": p} for p, _ in opts.secret_files]
    return {"name": "seed", "secret": secret}


def _sysctl_container(opts: DeployOptions) -> Manifest:
    script = (
        "sysctl -w net.ipv4.ip_forward=1\n"
        "if [ -d /proc/sys/net/ipv6 ]; then sysctl -w net.ipv6.conf.all.forwarding=1; fi\n"
    )
    return {
        "name": "sysctls",
        "image": opts.image_ref,
        "imagePullPolicy": opts.image_pull_policy,
        "command": ["sh", "-c", script],
        "resources": _SMALL,
        "securityContext": {
            # Writing /proc/sys needs a privileged container; it touches only this pod's netns.
            "privileged": True,
            "capabilities": {"drop": ["ALL"]},
            "readOnlyRootFilesystem": True,
            "runAsUser": 0,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
    }


def _seed_container(opts: DeployOptions) -> Manifest:
    copies = "".join(
        f"[ -e {target} ] || install -D -m 0600 {shlex.quote(f'{SEED_DIR}/{secret_key(p)}')} {target}\n"
        for p, _ in opts.secret_files
        for target in [shlex.quote(f"{CONFIG_DIR}/{p}")]
    )
    return {
        "name": "seed-config",
        "image": opts.image_ref,
        "imagePullPolicy": opts.image_pull_policy,
        "command": ["sh", "-c", "set -eu\n" + copies],
        "resources": _SMALL,
        "securityContext": _container_security([]),
        "volumeMounts": [
            {"name": "seed", "mountPath": SEED_DIR, "readOnly": True},
            {"name": "config", "mountPath": CONFIG_DIR},
        ],
    }


def _probe(period: int, initial_delay: int) -> Manifest:
    return {
        "exec": {"command": ["bulwark", "status", "--json"]},
        "initialDelaySeconds": initial_delay,
        "periodSeconds": period,
        "timeoutSeconds": 5,
        "failureThreshold": 3,
    }


def _gateway_container(opts: DeployOptions) -> Manifest:
    r = opts.resources
    return {
        "name": "bulwark",
        "image": opts.image_ref,
        "imagePullPolicy": opts.image_pull_policy,
        "args": ["up", "--foreground"],
        "envFrom": [{"configMapRef": {"name": f"{opts.name}-env"}}],
        "env": [{"name": "BULWARK_CONFIG_DIR", "value": CONFIG_DIR}],
        "ports": [{"name": WG_PORT_NAME, "containerPort": opts.listen_port, "protocol": "UDP"}],
        "startupProbe": _probe(period=2, initial_delay=2) | {"failureThreshold": 30},
        "livenessProbe": _probe(period=30, initial_delay=0),
        "readinessProbe": _probe(period=10, initial_delay=0),
        "resources": _resources(r.cpu_request, r.memory_request, r.cpu_limit, r.memory_limit),
        "securityContext": _container_security(_server_capabilities(opts)),
        "volumeMounts": [
            {"name": "config", "mountPath": CONFIG_DIR},
            {"name": "run", "mountPath": "/run"},
            {"name": "tmp", "mountPath": "/tmp"},
        ],
    }


def _pod_security() -> Manifest:
    return {"seccompProfile": {"type": "RuntimeDefault"}}


def deployment(opts: DeployOptions) -> Manifest:
    """The gateway: one replica, recreated (never two at once on the same state)."""
    init = [_sysctl_container(opts)]
    volumes = [
        _state_volume(opts),
        {"name": "run", "emptyDir": {"medium": "Memory", "sizeLimit": "16Mi"}},
        {"name": "tmp", "emptyDir": {"sizeLimit": "64Mi"}},
    ]
    if opts.storage == "secret":
        init.append(_seed_container(opts))
        volumes.append(_seed_volume(opts))
    skips = ("CKV_K8S_16", "CKV_K8S_20", "CKV_K8S_23", "CKV_K8S_40", "CKV_K8S_25")
    pod: Manifest = {
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "securityContext": _pod_security(),
        "initContainers": init,
        "containers": [_gateway_container(opts)],
        "volumes": volumes,
    }
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _meta(opts, opts.name, "gateway", skips + _image_skips(opts)),
        "spec": {
            "replicas": 1,
            "strategy": {"type": "Recreate"},
            "selector": {"matchLabels": _labels(opts, "gateway")},
            "template": {"metadata": {"labels": _labels(opts, "gateway")}, "spec": pod},
        },
    }


def service(opts: DeployOptions) -> Manifest:
    """The UDP Service: LoadBalancer (port = advertised port) or NodePort (nodePort = advertised port)."""
    port: Manifest = {"name": WG_PORT_NAME, "protocol": "UDP", "targetPort": WG_PORT_NAME}
    if opts.service_type == "NodePort":
        port["port"] = opts.listen_port
        if opts.node_port is not None:
            port["nodePort"] = opts.node_port
    else:
        port["port"] = opts.client_port
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _meta(opts, opts.name, "gateway"),
        "spec": {"type": opts.service_type, "selector": _labels(opts, "gateway"), "ports": [port]},
    }


def network_policy(opts: DeployOptions) -> Manifest:
    """Ingress to the gateway: WireGuard UDP only. Egress stays open: forwarding peers' traffic is its job."""
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": _meta(opts, opts.name, "gateway"),
        "spec": {
            "podSelector": {"matchLabels": _labels(opts, "gateway")},
            "policyTypes": ["Ingress"],
            "ingress": [{"ports": [{"protocol": "UDP", "port": opts.listen_port}]}],
        },
    }


def test_network_policy(opts: DeployOptions) -> Manifest:
    """The test client talks to the gateway's WireGuard port and nothing else."""
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": _meta(opts, f"{opts.name}-test-client", "test-client"),
        "spec": {
            "podSelector": {"matchLabels": _labels(opts, "test-client")},
            "policyTypes": ["Ingress", "Egress"],
            "egress": [
                {
                    "to": [{"podSelector": {"matchLabels": _labels(opts, "gateway")}}],
                    "ports": [{"protocol": "UDP", "port": opts.listen_port}],
                }
            ],
        },
    }


def _test_script(opts: DeployOptions, peer: str) -> str:
    prefix = _service_env_prefix(opts)
    folder = peer_folder(peer)
    conf = shlex.quote(f"{CONFIG_DIR}/{folder}/{folder}.conf")
    target = opts.server_tunnel_address
    return f"""\
set -eu
# The Service's ClusterIP from the variables Kubernetes injects (its DNS name did not work as Endpoint).
host="${{{prefix}_SERVICE_HOST:?Service {opts.name} missing when this pod started; the Job retries}}"
port="${{{prefix}_SERVICE_PORT:?}}"
conf={conf}
tries=0
until [ -s "$conf" ]; do
  tries=$((tries + 1))
  if [ "$tries" -gt 60 ]; then echo "bulwark test: no client config at $conf" >&2; exit 1; fi
  sleep 2
done
sed -e "s|^Endpoint *=.*|Endpoint = $host:$port|" \\
    -e "s|^AllowedIPs *=.*|AllowedIPs = {target}/32|" \\
    -e '/^DNS *=/d' "$conf" > /work/wgtest.conf
wg-quick up /work/wgtest.conf
ping -c 3 -W 5 {target}
echo "bulwark test: reached {target} through $host:$port"
"""


def test_job(opts: DeployOptions, peer: str) -> Manifest:
    """A Job that connects as `peer` through the Service's ClusterIP and pings the gateway's tunnel address."""
    state = dict(_state_volume(opts))
    mount = {"name": "config", "mountPath": CONFIG_DIR, "readOnly": True}
    if opts.storage == "secret":
        state = _seed_volume(opts, by_path=True) | {"name": "config"}
    container = {
        "name": "test-client",
        "image": opts.image_ref,
        "imagePullPolicy": opts.image_pull_policy,
        "command": ["sh", "-c", _test_script(opts, peer)],
        "resources": _SMALL | {"limits": {"cpu": "200m", "memory": "64Mi"}},
        "securityContext": _container_security(["NET_ADMIN", "NET_RAW"]),
        "volumeMounts": [mount, {"name": "work", "mountPath": "/work"}, {"name": "run", "mountPath": "/run"}],
    }
    pod: Manifest = {
        "restartPolicy": "Never",
        "automountServiceAccountToken": False,
        "securityContext": _pod_security(),
        "containers": [container],
        "volumes": [
            state,
            {"name": "work", "emptyDir": {"medium": "Memory", "sizeLimit": "1Mi"}},
            {"name": "run", "emptyDir": {"medium": "Memory", "sizeLimit": "16Mi"}},
        ],
    }
    if opts.storage == "pvc":
        # A ReadWriteOnce volume is shared only on one node: run next to the gateway.
        pod["affinity"] = {
            "podAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": [
                    {
                        "labelSelector": {"matchLabels": _labels(opts, "gateway")},
                        "topologyKey": "kubernetes.io/hostname",
                    }
                ]
            }
        }
    skips = ("CKV_K8S_23", "CKV_K8S_40", "CKV_K8S_25") + _image_skips(opts)
    name = f"{opts.name}-test-client"
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": _meta(opts, name, "test-client", skips, TEST_CLIENT_SKIP_REASONS),
        "spec": {
            "backoffLimit": 4,
            "ttlSecondsAfterFinished": 3600,
            "template": {"metadata": {"labels": _labels(opts, "test-client")}, "spec": pod},
        },
    }


@guarded
def render_kubernetes(opts: DeployOptions) -> dict[str, str]:
    """Kubernetes bundle: `bulwark.yaml` (apply with kubectl) and, with a test peer, `test-client.yaml`.

    The Service comes before the Deployment so the injected Service variables exist for later pods.
    """
    docs = [
        namespace(opts),
        config_map(opts),
        state_volume_object(opts),
        service(opts),
        network_policy(opts),
        deployment(opts),
    ]
    header = _yaml.comment("Bulwark WireGuard gateway. Generated by `bulwark deploy kubernetes`.")
    files = {"bulwark.yaml": header + _yaml.dump_all(docs)}
    peer = opts.effective_test_peer
    if peer is not None:
        test_header = _yaml.comment(
            f"Tunnel test: connects as peer '{peer}' through the Service's ClusterIP and pings "
            f"{opts.server_tunnel_address}.",
            f"kubectl apply -f test-client.yaml && kubectl -n {opts.namespace} logs -f job/{opts.name}-test-client",
        )
        files["test-client.yaml"] = test_header + _yaml.dump_all([test_network_policy(opts), test_job(opts, peer)])
    return files
