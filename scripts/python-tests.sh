#!/usr/bin/env bash
# Builds and installs the Python package into the cached virtual environment
# (scripts/python-env.sh) and runs its pytest suite (python/tests). The build
# folder build/python is kept, so a second run rebuilds only what changed
# (a plain `pip install .` builds in a temporary folder).
# Extra arguments go to pytest (e.g. -k torch, -x).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
venv="$("$root/scripts/python-env.sh")"
# The build requirements are in the environment already (python/requirements-dev.txt), so
# pip need not fetch them into an isolated one; `pip install .` alone works too.
"$venv/bin/python" -m pip install --no-build-isolation --quiet \
  --config-settings=build-dir="$root/build/python" "$root"
cd "$root"
"$venv/bin/python" -m pytest -q -p no:cacheprovider python/tests "$@"
