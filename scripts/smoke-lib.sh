# Shared by scripts/image-smoke.sh and scripts/kube-smoke.sh (sourced, not run): the model, the
# image build and the small helpers. Expects `set -euo pipefail`, cwd at the repository root,
# $venv, and $smoke naming the caller in messages.
py="$venv/bin/python"
fail() { echo "$smoke: FAIL: $*" >&2; exit 1; }
free_port() { "$py" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
now() { date +%s.%N; }
secs() { "$py" -c "import sys; print(f'{float(sys.argv[2]) - float(sys.argv[1]):.1f}')" "$1" "$2"; }

# smoke_model WORK: the default digits model in WORK/models, trained as `make serve` does; sets $png
smoke_model() {
  local work=$1
  mkdir -p "$work"
  VENV=$venv VISOR_DEFAULT_DATA="$work/data" scripts/default-model.sh "$work/models"
  png=$(find "$work/data" -name '*.png' | sort | sed -n 1p)  # NOTE: not head: SIGPIPE under pipefail
  [ -n "$png" ] || fail "no PNG in $work/data"
}

# smoke_build ENGINE IMAGE LOG: build the serving image; BASE_IMAGE=... overrides the pinned base
# (a local mirror or stand-in where the registry is out of reach); sets $build_s and $size_mb
smoke_build() {
  local engine=$1 image=$2 log=$3 args=() t0
  # NOTE: podman's default (OCI) image format has no HEALTHCHECK
  [ "$engine" = podman ] && args+=(--format docker)
  [ -n "${BASE_IMAGE:-}" ] && args+=(--build-arg "BASE_IMAGE=$BASE_IMAGE" --build-arg "TRAIN_IMAGE=$BASE_IMAGE")
  t0=$(now)
  $engine build "${args[@]}" --network host -t "$image" . >"$log" 2>&1 \
    || { tail -n 30 "$log"; fail "build failed (log: $log)"; }
  build_s=$(secs "$t0" "$(now)")
  size_mb=$($engine image inspect --format '{{.Size}}' "$image" | awk '{printf "%.0f", $1 / 1e6}')
}
