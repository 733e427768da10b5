#!/usr/bin/env bash
# The reliability sweep: ThreadSanitizer on the thread and kernel tests
# (scripts/tsan.sh), every libFuzzer harness for 60 s (scripts/fuzz.sh 60)
# and the kill test of `run`'s outputs (scripts/kill-test.sh) against the
# build folder given (default build/release), which must exist (the README's
# test command builds build/ci and passes it).
# Runs every step even after a failure; exits non-zero if any failed and
# prints the time each step took.
set -uo pipefail
cd "$(dirname "$0")/.."

build=${1:-build/release}
scripts/install-deps.sh --sweep || exit 1
steps=("scripts/tsan.sh" "scripts/fuzz.sh ${SWEEP_FUZZ_SECONDS:-60}"
       "scripts/kill-test.sh ${SWEEP_KILL_ROUNDS:-5} $build/spatialsoftmax")
results=()
failed=0
for step in "${steps[@]}"; do
  echo "=== sweep: $step"
  start=$SECONDS
  if $step; then result=ok; else result="FAILED (exit $?)"; failed=1; fi
  results+=("$(printf '%-62s %-18s %5d s' "$step" "$result" $((SECONDS - start)))")
done
echo "=== sweep summary"
printf '%s\n' "${results[@]}"
exit $failed
