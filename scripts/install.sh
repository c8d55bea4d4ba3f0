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
  full)  extras="[train,dev,spark]" ;;
  *) echo "install.sh: unknown profile '$profile' (serve|train|full)" >&2; exit 2 ;;
esac
# The full profile's tests also need programs from Debian: a browser and its driver (the web UI
# test), a Java runtime (Spark's local[N] master) and promtool (the alert rules). Installed here
# when missing and we may (root with apt-get); otherwise those tests say what to install.
system_packages() {
  local want=() cmd pkg
  for pair in chromium:chromium chromedriver:chromium-driver java:default-jre-headless \
              promtool:prometheus; do
    cmd=${pair%%:*}; pkg=${pair#*:}
    command -v "$cmd" >/dev/null 2>&1 || want+=("$pkg")
  done
  [ ${#want[@]} -gt 0 ] || return 0
  if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    echo "install.sh: not root with apt-get; install ${want[*]} for the browser, Spark and promtool tests" >&2
    return 0
  fi
  echo "install.sh: installing ${want[*]} (Debian packages)"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${want[@]}" >/dev/null
}
if [ "$profile" = full ]; then system_packages; fi
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
