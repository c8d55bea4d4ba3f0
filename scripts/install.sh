#!/usr/bin/env bash
# Install Visor into a virtual environment from a hashed lock (requirements/PROFILE-ACCEL.txt).
# Used by `make`, .ci/run and the Dockerfile; docs/install.md describes the profiles.
#   scripts/install.sh serve   serving only: ONNX Runtime, BentoML, gRPC (no TensorFlow)
#   scripts/install.sh train   serving + training: what `make serve` needs to create the default model
#   scripts/install.sh score   serving + offline scoring, local and on Spark (Java from Debian)
#   scripts/install.sh dev     everything `make test` needs, with Debian's browser, Java and promtool
# VISOR_ACCEL=auto|cpu|gpu picks ONNX Runtime's wheel: auto (default) is gpu when `nvidia-smi`
# lists a GPU. VENV=path picks the environment (default .venv); VENV=system installs into the
# current Python. VISOR_INSTALL_PLAN=1 prints the lock it would install and stops.
set -euo pipefail
cd "$(dirname "$0")/.."
profile=${1:-dev}
case "$profile" in
  serve|train|score|dev) ;;
  full) profile=dev ;;  # the name of the dev profile before the locks
  *) echo "install.sh: unknown profile '$profile' (serve|train|score|dev)" >&2; exit 2 ;;
esac
accel=${VISOR_ACCEL:-auto}
case "$accel" in
  auto) if nvidia-smi -L 2>/dev/null | grep -q '^GPU '; then accel=gpu; else accel=cpu; fi ;;
  cpu|gpu) ;;
  *) echo "install.sh: VISOR_ACCEL='$accel': use auto, cpu or gpu" >&2; exit 2 ;;
esac
lock=requirements/$profile-$accel.txt
[ -f "$lock" ] || { echo "install.sh: $lock is missing; scripts/lock.sh writes it" >&2; exit 2; }
if [ "${VISOR_INSTALL_PLAN:-0}" = 1 ]; then echo "$profile $accel $lock"; exit 0; fi
# Programs from Debian: the dev profile's tests need a browser and its driver (the web UI test),
# a Java runtime (Spark's local[N] master) and promtool (the alert rules); the score profile needs
# Java for `--engine spark`. Installed when missing and we may (root with apt-get); otherwise the
# tests and the Spark engine say what to install. The serve and train profiles need none.
system_packages() {
  local want=() cmd pkg pair
  for pair in "$@"; do
    cmd=${pair%%:*}; pkg=${pair#*:}
    command -v "$cmd" >/dev/null 2>&1 || want+=("$pkg")
  done
  [ ${#want[@]} -gt 0 ] || return 0
  if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    echo "install.sh: not root with apt-get; install ${want[*]} (Debian packages) for the $profile profile" >&2
    return 0
  fi
  echo "install.sh: installing ${want[*]} (Debian packages)"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${want[@]}" >/dev/null
}
case "$profile" in
  dev) system_packages chromium:chromium chromedriver:chromium-driver java:default-jre-headless \
         promtool:prometheus ;;
  score) system_packages java:default-jre-headless ;;
esac
venv=${VENV:-.venv}
if [ "$venv" = system ]; then py=${PYTHON:-python3}; else py="$venv/bin/python"; fi
stamp_dir=${venv/#system//tmp}
stamp="$stamp_dir/.visor-installed-$profile-$accel-$(cat "$lock" pyproject.toml | sha256sum | cut -c1-16)"
if [ -f "$stamp" ]; then exit 0; fi
# Disk first: pip's answer to a full disk ("OSError: [Errno 28]") comes minutes in, halfway
# through an environment, and names no size. Each need is the profile's fresh environment (du,
# Python 3.11, CPU wheels: serve 0.5 GB, score 1.3, train 2.7, dev 3.9) plus room for pip
# to unpack into (about 1 GB; 0.5 for serve), rounded up. VISOR_INSTALL_MIN_FREE_GB=0 skips it.
case "$profile" in serve) need_gb=1 ;; score) need_gb=3 ;; train) need_gb=4 ;; dev) need_gb=5 ;; esac
need_gb=${VISOR_INSTALL_MIN_FREE_GB:-$need_gb}
where=$venv; [ "$venv" = system ] && where=$("$py" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
probe=$where; while [ ! -d "$probe" ]; do probe=$(dirname "$probe"); done
free_kb=$(df -Pk "$probe" | awk 'NR == 2 {print $4}')
if [ -n "$free_kb" ] && [ "$free_kb" -lt $((need_gb * 1024 * 1024)) ]; then
  echo "install.sh: $((free_kb / 1024)) MB free on the disk of $where; the $profile profile needs" \
    "about $need_gb GB. Free some space (old virtual environments, ~/.cache/pip) or set" \
    "VENV to a disk with room (VISOR_INSTALL_MIN_FREE_GB=0 skips this check)" >&2
  exit 1
fi
if [ "$venv" != system ] && [ ! -x "$py" ]; then
  "${PYTHON:-python3}" -m venv "$venv"
fi
# onnxruntime and onnxruntime-gpu own the same module: the other one goes before this one comes
other=onnxruntime-gpu; [ "$accel" = gpu ] && other=onnxruntime
if "$py" -m pip show "$other" >/dev/null 2>&1; then
  echo "install.sh: removing $other (this environment now gets the $accel wheel)"
  "$py" -m pip uninstall --quiet -y "$other"
  # its removal took the shared module's files; the wanted wheel must be unpacked again
  "$py" -m pip uninstall --quiet -y "$(sed -n 's/^\(onnxruntime[-a-z]*\)==.*/\1/p' "$lock")" 2>/dev/null || true
fi
# every package pinned and hash-checked; pip refuses anything the lock does not list
"$py" -m pip install --quiet --require-hashes -r "$lock"
# Visor itself, editable, built with the lock's setuptools (no unpinned build environment)
"$py" -m pip install --quiet --no-deps --no-build-isolation -e .
mkdir -p "$stamp_dir"; rm -f "$stamp_dir"/.visor-installed-"$profile"-*; touch "$stamp"
echo "install.sh: $profile environment ($accel, $lock) ready in $venv"
