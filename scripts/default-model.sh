#!/usr/bin/env bash
# Create the default `digits` model in MODELS_DIR (default models/) unless it already holds a model.
set -euo pipefail
cd "$(dirname "$0")/.."
models=${1:-models}
venv=${VENV:-.venv}
if [ "$venv" = system ]; then py=${PYTHON:-python3}; else py="$venv/bin/python"; fi
if compgen -G "$models/*/[0-9]*/metadata.json" >/dev/null; then
  echo "default-model.sh: $models already holds a model; nothing to do"
  exit 0
fi
data=${VISOR_DEFAULT_DATA:-build/data/digits}
echo "default-model.sh: no model in $models; training the default 'digits' model (a few minutes on 2 cores: 1 fit + 5 cross-fitting fits)"
"$py" -m training dataset digits --out "$data"
# NOTE: the scans are 8x8; at 16x16 the model scores as at 32x32 (0.9888 on the test split) for a
# quarter of the compute (docs/benchmarks.md, finding 13).
"$py" -m training train --data "$data" --name digits --out "$models" --image-size 16
