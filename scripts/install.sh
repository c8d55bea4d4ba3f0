#!/usr/bin/env bash
# Install Visor into a virtual environment. Used by `make`, .ci/run and the Dockerfile.
#   scripts/install.sh serve   serving only: ONNX Runtime, BentoML, gRPC (no TensorFlow)
#   scripts/install.sh train   serving + training (TensorFlow, tf-keras, tf2onnx)
#   scripts/install.sh full    serving + training + test/load-test tools (default)
# VENV=path picks the environment (default .venv); VENV=system installs into the current Python.
set -euo pipefail
cd "$(dirname "$0")/.."
profile=${1:-full}
case "$profile" in
  serve) extras="" ;;
  train) extras="[train]" ;;
  full)  extras="[train,dev]" ;;
  *) echo "install.sh: unknown profile '$profile' (serve|train|full)" >&2; exit 2 ;;
esac
venv=${VENV:-.venv}
if [ "$venv" = system ]; then py=${PYTHON:-python3}; else py="$venv/bin/python"; fi
stamp_dir=${venv/#system//tmp}
stamp="$stamp_dir/.visor-installed-$profile-$(cat pyproject.toml | sha256sum | cut -c1-16)"
if [ -f "$stamp" ]; then exit 0; fi
if [ "$venv" != system ] && [ ! -x "$py" ]; then
  "${PYTHON:-python3}" -m venv "$venv"
fi
"$py" -m pip install --quiet --upgrade pip wheel setuptools
"$py" -m pip install --quiet -e ".${extras}"
# NOTE: plain `onnxruntime` shares the module name with onnxruntime-gpu and hides the CUDA
# provider; some packages pull it in, so refuse to continue if it appeared.
if "$py" -m pip show onnxruntime >/dev/null 2>&1; then
  echo "install.sh: plain 'onnxruntime' got installed beside onnxruntime-gpu; removing it" >&2
  "$py" -m pip uninstall -y onnxruntime
  "$py" -m pip install --quiet --force-reinstall --no-deps "onnxruntime-gpu==1.31.*"
fi
mkdir -p "$stamp_dir"; rm -f "$stamp_dir"/.visor-installed-"$profile"-*; touch "$stamp"
echo "install.sh: $profile environment ready in $venv"
