#!/usr/bin/env bash
# Play deploy/k8s with `podman kube play`, as a cluster would run it, and check what an operator
# relies on: the pod starts from the image; without the API-key Secret, or with an empty one, it
# does not serve; the model volume is mounted read-only; the probes the manifest declares pass;
# HTTP and gRPC answer (and refuse a call without the key); the root file system is read-only and
# the user is not root; a version published to the volume is served with no failed request.
# Minutes long: not part of `make test` (`make kube-smoke`). podman 4.3 plays Pods, Deployments
# and PVCs only: the Service, HPA, PDB and NetworkPolicy are not played (docs/deploy.md).
#
#   VENV=.venv scripts/kube-smoke.sh
#   BASE_IMAGE=localhost/python:3.11-slim-bookworm scripts/kube-smoke.sh   # registry out of reach
# The pod shares the host's network on 127.0.0.1 and free ports (scripts/kube-smoke-render.py):
# podman's bridge network puts pods on private addresses, which this smoke never calls.
set -euo pipefail
cd "$(dirname "$0")/.."
smoke=kube-smoke
venv=${VENV:-.venv}
work=${SMOKE_DIR:-build/kube-smoke}
tag=$(sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml)
source scripts/smoke-lib.sh
volume=visor-models     # the claimName of deploy/k8s/base/pvc.yaml
secret=visor-api-keys   # the secretKeyRef of deploy/k8s/base/deployment.yaml
pod=visor-pod-0         # podman's name for the Deployment's one pod
container=$pod-visor
export CONTAINERS_CONF=${CONTAINERS_CONF:-/var/tmp/visor-containers.conf}
manifest="$work/deployment.yaml"

# NOTE: the names are the manifests' own, so a stale pod, volume or secret of an earlier run is
# removed first; nothing else of podman's is touched.
cleanup() {
  podman pod rm -f "$pod" >/dev/null 2>&1 || true
  podman secret rm "$secret" >/dev/null 2>&1 || true
  podman volume rm -f "$volume" >/dev/null 2>&1 || true
}
cleanup
trap cleanup EXIT
set_secret() {  # podman 4.3 reads a secretKeyRef from a secret holding {"key": base64(value)}
  podman secret rm "$secret" >/dev/null 2>&1 || true
  printf '{"keys": "%s"}' "$(printf '%s' "$1" | base64 -w0)" | podman secret create "$secret" - >/dev/null
}

# 1. the model (two versions: the volume starts with 1, and 2 is published while serving) and the
# image the manifest names (visor:TAG)
smoke_model "$work"
if [ ! -d "$work/models/digits/2" ]; then
  "$py" -m training train --data "$work/data" --name digits --out "$work/models" --image-size 16
fi
smoke_build podman "visor:$tag" "$work/build.log"
echo "kube-smoke: image visor:$tag built in ${build_s}s (${size_mb} MB)"

# 2. the claim: a podman volume of the claim's name, bound to a folder this script publishes into
rm -rf "$work/volume" && mkdir -p "$work/volume/digits"
cp -r "$work/models/digits/1" "$work/volume/digits/1"
podman volume create --opt type=none --opt o=bind --opt device="$PWD/$work/volume" "$volume" >/dev/null

# 3. the Deployment for host networking (the changes are printed)
http_port=$(free_port); grpc_port=$(free_port)
"$py" scripts/kube-smoke-render.py "$http_port" "$grpc_port" >"$manifest"

# 4. fail closed: no Secret, then a Secret with no key
if podman kube play --network host "$manifest" >"$work/play-nosecret.log" 2>&1 \
   && [ "$(podman inspect -f '{{.State.Running}}' "$container" 2>/dev/null)" = true ]; then
  fail "the pod runs without the $secret Secret"
fi
grep -q "$secret" "$work/play-nosecret.log" || { cat "$work/play-nosecret.log"; fail "no word of the missing Secret"; }
echo "kube-smoke: without the Secret the pod does not start: $(grep -o "cannot set env.*" "$work/play-nosecret.log" | head -n 1)"
podman pod rm -f "$pod" >/dev/null 2>&1 || true
set_secret ""
podman kube play --network host "$manifest" >/dev/null 2>&1 || true
# NOTE: a Deployment's pod restarts its container (restartPolicy Always), as a kubelet would in
# CrashLoopBackOff: wait for a restart, and the server must never have been ready meanwhile.
refused=""
for _ in $(seq 1 300); do
  curl -fsS -o /dev/null "http://127.0.0.1:$http_port/readyz" 2>/dev/null && fail "served with an empty key Secret"
  restarts=$(podman inspect -f '{{.RestartCount}}' "$container" 2>/dev/null || echo 0)
  refused=$(podman logs "$container" 2>&1 | grep -o 'serve: error: .*no API key is set' | head -n 1 || true)
  [ -n "$refused" ] && [ "$restarts" -ge 1 ] && break
  sleep 0.2
done
[ -n "$refused" ] || fail "with an empty key the server did not refuse to start"
echo "kube-smoke: with an empty key the server refuses to start (restarted $restarts times, never ready): ${refused}"
podman pod rm -f "$pod" >/dev/null 2>&1

# 5. the real thing: a random key, the pod, ready
key=$("$py" -c 'import secrets; print(secrets.token_hex(16))')
set_secret "$key"
t0=$(now)
podman kube play --network host "$manifest" >"$work/play.log" 2>&1 || { cat "$work/play.log"; fail "podman kube play"; }
for _ in $(seq 1 600); do
  curl -fsS -o /dev/null "http://127.0.0.1:$http_port/readyz" 2>/dev/null && break
  [ "$(podman inspect -f '{{.State.Running}}' "$container")" = true ] \
    || { podman logs "$container" 2>&1 | tail -n 30; fail "the container exited while starting"; }
  sleep 0.2
done
curl -fsS -o /dev/null "http://127.0.0.1:$http_port/readyz" || fail "/readyz never answered 200"
echo "kube-smoke: pod $pod ready in $(secs "$t0" "$(now)")s (image $(podman inspect -f '{{.ImageName}}' "$container"))"

# 6. what the pod runs as, and what it can write
read -r ro user mounts < <(podman inspect -f '{{.HostConfig.ReadonlyRootfs}} {{.Config.User}} {{range .Mounts}}{{.Destination}}:{{.RW}},{{end}}' "$container")
[ "$ro" = true ] || fail "the root file system is writable"
case ",$mounts" in *,/models:false,*) ;; *) fail "/models is not mounted read-only: $mounts";; esac
uid=$(podman exec "$container" id -u)
[ "$uid" != 0 ] || fail "runs as root"
podman exec "$container" sh -c 'touch /models/x' 2>/dev/null && fail "/models is writable"
podman exec "$container" sh -c 'touch /opt/visor/x' 2>/dev/null && fail "the root file system is writable"
# NOTE: the kernel's view of PID 1: no capabilities (drop: [ALL]), no_new_privs
# (allowPrivilegeEscalation: false)
caps=$(podman exec "$container" sh -c "sed -n 's/^CapEff:[[:space:]]*//p' /proc/1/status")
nnp=$(podman exec "$container" sh -c "sed -n 's/^NoNewPrivs:[[:space:]]*//p' /proc/1/status")
[ "$caps" = 0000000000000000 ] || fail "PID 1 holds capabilities $caps"
[ "$nnp" = 1 ] || fail "PID 1 may gain privileges (NoNewPrivs $nnp)"
echo "kube-smoke: read-only root ($ro), user $user (id -u $uid), mounts $mounts /models and / refuse writes, CapEff $caps, NoNewPrivs $nnp"

# 7. the probes, both wires, then a new version published under load
server_log() { podman logs "$container" 2>&1 | grep -v 'systemd' | tail -n "${1:-15}"; }
"$py" scripts/kube-smoke-check.py probes "$manifest" || { server_log; exit 1; }
"$py" scripts/kube-smoke-check.py wires "$http_port" "$grpc_port" "$key" "$png" || { server_log; exit 1; }
"$py" scripts/kube-smoke-check.py publish "$http_port" "$grpc_port" "$key" "$png" \
  "$work/models/digits/2" "$work/volume/digits/2" 90 || { server_log; exit 1; }
podman logs "$container" >"$work/server.log" 2>&1 || true

# 8. a clean stop: SIGTERM, exit status 0, within terminationGracePeriodSeconds
grace=$("$py" -c 'import sys, yaml; print(yaml.safe_load(open(sys.argv[1]))["spec"]["template"]["spec"]["terminationGracePeriodSeconds"])' "$manifest")
t0=$(now)
podman pod stop -t "$grace" "$pod" >/dev/null 2>&1
stop_s=$(secs "$t0" "$(now)")
code=$(podman inspect -f '{{.State.ExitCode}}' "$container")
[ "$code" = 0 ] || { podman logs "$container" 2>&1 | tail -n 20; fail "exit status $code after SIGTERM"; }
echo "kube-smoke: PASS  stop ${stop_s}s (exit 0, grace ${grace}s); the server's log: $work/server.log"
