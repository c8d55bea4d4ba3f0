#!/usr/bin/env bash
# Serve every model in the repository: HTTP on 3000 and gRPC on 50051 (see `python -m service serve --help`).
set -euo pipefail
cd "$(dirname "$0")/.."
venv=${VENV:-.venv}
if [ "$venv" = system ]; then py=${PYTHON:-python3}; else py="$venv/bin/python"; fi
exec "$py" -m service serve "$@"
