#!/usr/bin/env bash
# Remove from a serving venv what serving never imports (the image build runs it; docs/install.md
# has the sizes): the installers (pip, setuptools: the editable install's finder needs neither)
# and the test suites that packages ship inside themselves (numpy, scipy, scikit-learn, tornado...).
# Run scripts/serve-imports.py afterwards: it fails if serving needed anything removed.
#   scripts/slim-venv.sh VENV
set -euo pipefail
venv=${1:?usage: slim-venv.sh VENV}
site=$(echo "$venv"/lib/python3*/site-packages)
[ -d "$site" ] || { echo "slim-venv.sh: no site-packages under $venv" >&2; exit 2; }
before=$(du -sm "$site" | cut -f1)
"$venv/bin/python" -m pip uninstall --quiet -y pip setuptools
# a package's own tests: folders named tests/ or test/ inside an installed package
find "$site" -mindepth 2 -depth -type d \( -name tests -o -name test \) -exec rm -rf {} +
echo "slim-venv.sh: $site $before MiB -> $(du -sm "$site" | cut -f1) MiB"
