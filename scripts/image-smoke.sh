#!/usr/bin/env bash
# Build the serving image and try it as an operator would: read-only root, /tmp on tmpfs, the
# default digits model (published by `python -m training train`) mounted read-only. Checks
# /readyz, a /classify of a real PNG, gRPC health, the HEALTHCHECK, the non-root user, that the
# CPU image has no GPU providers, and a clean stop within the grace period. Prints build time,
# image size and start-up time. Minutes long: not part of `make test` (`make image-smoke`).
#
#   VENV=.venv scripts/image-smoke.sh            # ENGINE=podman (default) or docker
#   BASE_IMAGE=localhost/python:3.11-slim-bookworm scripts/image-smoke.sh   # registry out of reach
# Needs curl; the gRPC health check runs with the host venv's grpcio-health-checking.
set -euo pipefail
cd "$(dirname "$0")/.."
engine=${ENGINE:-podman}
image=${IMAGE:-visor:smoke}
venv=${VENV:-.venv}
smoke=image-smoke
work=${SMOKE_DIR:-build/image-smoke}
models="$work/models"
grace=${VISOR_GRACE_PERIOD_S:-20}
name="visor-smoke-$$"
source scripts/smoke-lib.sh

# 1. the model: the default digits model, trained as `make serve` does
smoke_model "$work"

# 2. the image (BASE_IMAGE=... builds on another base than the pinned one)
smoke_build "$engine" "$image" "$work/build.log"

# 3. run it read-only; host networking with non-default ports also exercises VISOR_HTTP_PORT
http_port=$(free_port); grpc_port=$(free_port)
cleanup() { $engine rm -f "$name" >/dev/null 2>&1 || true; }
trap cleanup EXIT
t0=$(now)
$engine run -d --name "$name" --read-only --tmpfs /tmp --network host \
  -e VISOR_HOST=127.0.0.1 -e VISOR_HTTP_PORT="$http_port" -e VISOR_GRPC_PORT="$grpc_port" \
  -v "$PWD/$models:/models:ro" "$image" >/dev/null
for _ in $(seq 1 600); do
  if curl -fsS -o /dev/null "http://127.0.0.1:$http_port/readyz" 2>/dev/null; then break; fi
  [ "$($engine inspect -f '{{.State.Running}}' "$name")" = true ] \
    || { $engine logs "$name" | tail -n 30; fail "the container exited while starting"; }
  sleep 0.2
done
curl -fsS -o /dev/null "http://127.0.0.1:$http_port/readyz" || fail "/readyz never answered 200"
startup_s=$(secs "$t0" "$(now)")

# 4. what an operator checks
answer=$(curl -fsS -F "image=@$png" "http://127.0.0.1:$http_port/classify") || fail "/classify"
echo "image-smoke: /classify $(basename "$png") -> $answer" | cut -c1-200
"$py" - "$answer" <<'PY' || fail "/classify answer"
import json, sys
body = json.loads(sys.argv[1])
assert body["model"] == "digits", body
assert body["predictions"][0]["top_k"][0]["label"] in [str(d) for d in range(10)], body
PY
"$py" - "127.0.0.1:$grpc_port" <<'PY' || fail "gRPC health"
import sys, grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
with grpc.insecure_channel(sys.argv[1]) as channel:
    status = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=10).status
assert status == health_pb2.HealthCheckResponse.SERVING, status
print("image-smoke: gRPC health SERVING")
PY
uid=$($engine exec "$name" id -u)
[ "$uid" = 10001 ] || fail "runs as uid $uid, not 10001"
$engine healthcheck run "$name" >/dev/null 2>&1 || [ "$engine" = docker ] || fail "HEALTHCHECK"
providers=$($engine exec "$name" python -c 'import onnxruntime as o; print(",".join(o.get_available_providers()))')
case "$providers" in *CUDA*|*Tensorrt*) fail "the CPU image ships GPU providers: $providers";; esac
echo "image-smoke: uid $uid, HEALTHCHECK healthy, ONNX Runtime providers: $providers"

# 5. a clean stop: SIGTERM, exit status 0, within the grace period
t0=$(now)
$engine stop -t $((grace + 10)) "$name" >/dev/null
stop_s=$(secs "$t0" "$(now)")
code=$($engine inspect -f '{{.State.ExitCode}}' "$name")
[ "$code" = 0 ] || { $engine logs "$name" | tail -n 20; fail "exit status $code after SIGTERM"; }
"$py" -c "import sys; sys.exit(float(sys.argv[1]) >= float(sys.argv[2]))" "$stop_s" "$grace" \
  || fail "stop took ${stop_s}s, not within the ${grace}s grace period"
echo "image-smoke: PASS  build ${build_s}s, image ${size_mb} MB, start-up to ready ${startup_s}s, stop ${stop_s}s (exit 0)"
