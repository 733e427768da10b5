#!/usr/bin/env bash
# scripts/kill-test.sh [ROUNDS] [BINARY]: kills `spatialsoftmax run` at random
# moments while it writes over older outputs and checks what --out holds
# afterwards (see scripts/kill_test.py). Builds nothing; BINARY defaults to
# build/release/spatialsoftmax. KILL_TEST_SEED fixes the random delays.
set -euo pipefail
cd "$(dirname "$0")/.."
exec python3 scripts/kill_test.py "$@"
