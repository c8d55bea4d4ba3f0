#!/usr/bin/env bash
# Virtual environments for the benchmark's peer servers, one each under build/peers/<name>/.
#   scripts/peer-venvs.sh                 both peers (kserve, pytriton)
#   scripts/peer-venvs.sh kserve          only the named ones
# Idempotent: a peer whose stamp matches this script is skipped. PYTHON picks the interpreter
# (python3.11 by default). `make bench` uses a peer only when its venv is here.
set -euo pipefail
cd "$(dirname "$0")/.."
py=${PYTHON:-python3.11}
root=build/peers
# NOTE: the peers run the same ONNX Runtime release as Visor (onnxruntime-gpu 1.31, which falls
# back to the CPU provider where there is no GPU) so that a difference is the server's, not the
# runtime's. Each venv is separate from Visor's, so its grpcio/protobuf versions never meet the
# load client (which sends serialized bytes from Visor's venv).
declare -A packages=(
  [kserve]="kserve onnxruntime-gpu==1.31.* numpy"
  [pytriton]="nvidia-pytriton onnxruntime-gpu==1.31.* numpy"
)
names=("$@")
[ ${#names[@]} -gt 0 ] || names=(kserve pytriton)
stamp_of() { echo "$root/$1/.peer-installed-$(echo "${packages[$1]}" | sha256sum | cut -c1-16)"; }
status=0
for name in "${names[@]}"; do
  if [ -z "${packages[$name]+x}" ]; then
    echo "peer-venvs.sh: unknown peer '$name' (${!packages[*]})" >&2; exit 2
  fi
  venv=$root/$name
  if [ -f "$(stamp_of "$name")" ]; then echo "peer-venvs.sh: $name ready in $venv"; continue; fi
  echo "peer-venvs.sh: installing $name into $venv (${packages[$name]})"
  [ -x "$venv/bin/python" ] || "$py" -m venv "$venv"
  "$venv/bin/python" -m pip install --quiet --upgrade pip wheel setuptools
  # shellcheck disable=SC2086  # the package list is split on purpose
  if ! "$venv/bin/python" -m pip install --quiet ${packages[$name]}; then
    echo "peer-venvs.sh: $name failed to install (see pip's error above)" >&2; status=1; continue
  fi
  rm -f "$venv"/.peer-installed-*; touch "$(stamp_of "$name")"
  echo "peer-venvs.sh: $name ready in $venv"
done
exit $status
