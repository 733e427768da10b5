#!/usr/bin/env bash
# scripts/fuzz.sh SECONDS [HARNESS...]
#
# Builds the fuzz preset (build/fuzz) if needed and runs each libFuzzer
# harness (default: all of them) for SECONDS, two at a time on the two
# cores. Each run starts from a scratch copy of fuzz/corpus/<harness> (the
# committed corpus never grows). At the end it prints, per harness, the
# executions, libFuzzer's final coverage (cov: edges, ft: features) and the
# findings; it exits non-zero on any finding and keeps the scratch folder
# (reproducers in <scratch>/<harness>/artifacts/). A reproducer reruns with
#   build/fuzz/<harness> <file>
# Environment: FUZZ_JOBS (2), FUZZ_SCRATCH (a new folder under /tmp).
set -euo pipefail
cd "$(dirname "$0")/.."

if [ $# -lt 1 ] || ! [[ $1 =~ ^[0-9]+$ ]]; then
  echo "usage: $0 SECONDS [HARNESS...]" >&2
  exit 2
fi
seconds=$1
shift
all=(fuzz_npy fuzz_net_binary fuzz_net_text fuzz_net_json fuzz_case)
harnesses=("$@")
((${#harnesses[@]})) || harnesses=("${all[@]}")
jobs=${FUZZ_JOBS:-2}

scripts/install-deps.sh --sweep
cmake --preset fuzz >/dev/null
cmake --build --preset fuzz --target "${harnesses[@]}"

scratch=${FUZZ_SCRATCH:-$(mktemp -d /tmp/spatialsoftmax-fuzz.XXXXXX)}
echo "fuzz: ${#harnesses[@]} harness(es), $seconds s each, $jobs at a time; scratch $scratch"

# -max_len: every reader's interesting structure fits in 4 KiB (npy headers,
# nets, case.json); longer inputs only slow the mutations down.
# -rss_limit_mb (and the malloc limit, which follows it): a reader that
# allocates gigabytes for a small input is a finding. -timeout: seconds per
# input, ample for inputs of 4 KiB even under ASan.
# halt_on_error/abort_on_error: a sanitizer report ends the run as a crash.
run_one() {
  local h=$1 dir=$scratch/$1
  mkdir -p "$dir/corpus" "$dir/artifacts" "$dir/tmp"
  cp fuzz/corpus/"$h"/* "$dir/corpus/"
  local rc=0
  TMPDIR=$dir/tmp ASAN_OPTIONS=abort_on_error=1:${ASAN_OPTIONS:-} \
    UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1:${UBSAN_OPTIONS:-} \
    build/fuzz/"$h" "$dir/corpus" -max_total_time="$seconds" -max_len=4096 \
    -rss_limit_mb=2048 -timeout=20 -print_final_stats=1 \
    -artifact_prefix="$dir/artifacts/" >"$dir/log" 2>&1 || rc=$?
  echo "$rc" >"$dir/rc"
}

for h in "${harnesses[@]}"; do
  [ -x build/fuzz/"$h" ] || { echo "fuzz: no harness build/fuzz/$h" >&2; exit 2; }
  while [ "$(jobs -rp | wc -l)" -ge "$jobs" ]; do wait -n || true; done
  echo "fuzz: $h started"
  run_one "$h" &
done
wait

findings=0
printf '\n%-16s %12s %8s %8s %8s  %s\n' harness executions cov ft corpus findings
for h in "${harnesses[@]}"; do
  dir=$scratch/$h
  log=$dir/log
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  status=$(grep -E '^#[0-9]+.* cov: ' "$log" | tail -1 || true)
  cov=$(sed -n 's/.* cov: \([0-9]*\).*/\1/p' <<<"$status")
  ft=$(sed -n 's/.* ft: \([0-9]*\).*/\1/p' <<<"$status")
  corp=$(sed -n 's/.* corp: \([0-9]*\).*/\1/p' <<<"$status")
  # slow-unit-* files are reports of slow inputs, not failures.
  found=$(find "$dir/artifacts" -type f ! -name 'slow-unit-*' | sort)
  rc=$(cat "$dir/rc")
  what=none
  if [ -n "$found" ] || [ "$rc" != 0 ]; then
    what="exit $rc: ${found:-no reproducer written}"
    findings=1
  fi
  printf '%-16s %12s %8s %8s %8s  %s\n' "$h" "${execs:-?}" "${cov:-?}" "${ft:-?}" "${corp:-?}" "$what"
done
for h in "${harnesses[@]}"; do
  if [ "$(cat "$scratch/$h/rc")" != 0 ]; then
    echo
    echo "=== $h: $scratch/$h/log"
    grep -m1 -E '^==[0-9]+== ?ERROR|runtime error|round trip|terminate called' "$scratch/$h/log" || true
    # The stack's top in our code: frames of the sanitizer runtime,
    # libFuzzer and libc's abort left out.
    grep -E '^ +#[0-9]+ ' "$scratch/$h/log" |
      grep -vE ' in (__sanitizer_|__asan|__ubsan|fuzzer::|__pthread_kill|raise|abort|__libc)| \(/lib/' |
      head -6 || true
    grep -E 'Test unit written to' "$scratch/$h/log" || true
  fi
done
if ((findings)); then
  echo "fuzz: FINDINGS; scratch kept: $scratch"
  exit 1
fi
[ -n "${FUZZ_SCRATCH:-}" ] || rm -rf "$scratch"
echo "fuzz: no findings"
