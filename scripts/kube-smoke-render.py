"""Render deploy/k8s/base's Deployment for `podman kube play --network host` (scripts/kube-smoke.sh).

    python scripts/kube-smoke-render.py HTTP_PORT GRPC_PORT > build/kube-smoke/deployment.yaml

podman 4.3 refuses `ports` on a host-network pod, and its bridge network puts pods on private
addresses the smoke must never call; so the pod shares the host's network, listens on 127.0.0.1
only, on free ports, and everything else (image, probes, volumes, security context, env) is the
base's own. The changes, and only these: one replica, hostNetwork, no `ports`, VISOR_HOST and the
two ports, the probes' ports as numbers (a port name needs `ports`). Printed to stderr for the log.
"""

from __future__ import annotations

import sys
from pathlib import Path

import yaml

BASE = Path(__file__).resolve().parents[1] / "deploy" / "k8s" / "base"


def render(http_port: int, grpc_port: int) -> dict:
    (deployment,) = [
        doc
        for doc in yaml.safe_load_all((BASE / "deployment.yaml").read_text())
        if doc and doc["kind"] == "Deployment"
    ]
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    declared = {p["name"]: p["containerPort"] for p in container.pop("ports")}
    moved = {
        declared["http"]: http_port,
        declared["grpc"]: grpc_port,
        "http": http_port,
        "grpc": grpc_port,
    }
    changes = [
        f"replicas {deployment['spec']['replicas']} -> 1",
        "hostNetwork: true",
        f"ports {declared} removed",
    ]
    deployment["spec"]["replicas"] = 1
    pod["hostNetwork"] = True
    env = [
        e
        for e in container["env"]
        if e["name"] not in ("VISOR_HOST", "VISOR_HTTP_PORT", "VISOR_GRPC_PORT")
    ]
    env += [
        {"name": "VISOR_HOST", "value": "127.0.0.1"},
        {"name": "VISOR_HTTP_PORT", "value": str(http_port)},
        {"name": "VISOR_GRPC_PORT", "value": str(grpc_port)},
    ]
    container["env"] = env
    changes.append(
        f"env VISOR_HOST=127.0.0.1 VISOR_HTTP_PORT={http_port} VISOR_GRPC_PORT={grpc_port}"
    )
    for probe_name in ("startupProbe", "readinessProbe", "livenessProbe"):
        probe = container.get(probe_name) or {}
        for handler in ("httpGet", "grpc", "tcpSocket"):
            if handler in probe:
                old = probe[handler]["port"]
                probe[handler]["port"] = moved[old]
                changes.append(f"{probe_name}.{handler}.port {old} -> {moved[old]}")
    print("kube-smoke-render: " + "; ".join(changes), file=sys.stderr)
    return deployment


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: kube-smoke-render.py HTTP_PORT GRPC_PORT")
    yaml.safe_dump(render(int(sys.argv[1]), int(sys.argv[2])), sys.stdout, sort_keys=False)
