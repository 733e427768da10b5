#!/usr/bin/env bash
# Creates (or reuses) the Python virtual environment of the package's build
# and tests and prints its path. It lives outside the checkout, in
# ${SPATIALSOFTMAX_VENV:-$HOME/.cache/spatialsoftmax/venv}, because PyPI's
# torch is a CUDA build of about 5.5 GB that no checkout should carry or
# download twice. Idempotent: an environment whose installed requirements
# match python/requirements-dev.txt is left as it is (a stamp file records
# the requirements it was made from).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
venv="${SPATIALSOFTMAX_VENV:-$HOME/.cache/spatialsoftmax/venv}"
requirements="$root/python/requirements-dev.txt"
stamp="$venv/.spatialsoftmax-requirements"
python="${PYTHON:-python3}"
if [ ! -x "$venv/bin/python" ]; then
  "$python" -m venv "$venv" >&2
fi
if ! cmp -s "$requirements" "$stamp"; then
  "$venv/bin/python" -m pip install -q --upgrade pip >&2
  "$venv/bin/python" -m pip install -q -r "$requirements" >&2
  cp "$requirements" "$stamp"
fi
echo "$venv"
