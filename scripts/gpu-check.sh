#!/usr/bin/env bash
# The GPU check (issue 13), on a machine with an NVIDIA GPU, CUDA and
# Python's torch: run from the repository root with .gpu/ beside it
# (scripts/gpu-bundle.sh makes it on a build machine; the device tool carries
# it). Each step's log goes to ${OUT:-/tmp/gpu-check}/<step>.log, the
# benchmark's rows to bench.jsonl; a failed step is reported and the others
# still run. The exit status is 1 if any step failed.
#   1. the C++ GPU tests (CTest label cuda: test_cuda, test_cuda_losses)
#   2. the Python GPU tests (pytest -m cuda: the torch front and the
#      conformance vectors on CUDA tensors)
#   3. `spatialsoftmax run --device cuda` of a Caffe2 net and its gradient,
#      against the same run on the CPU
#   4. `spatialsoftmax bench --device cuda` (PyTorch and Liger-Kernel peers)
set -uo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
out="${OUT:-/tmp/gpu-check}"
mkdir -p "$out"
export LD_LIBRARY_PATH="$root/.gpu/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export SPATIALSOFTMAX_CONFORMANCE_DIR="$root/.gpu/conformance"
export PYTHONUNBUFFERED=1
status=0

step() {
  local name="$1"
  shift
  local start=$SECONDS
  if "$@" >"$out/$name.log" 2>&1; then
    echo "== $name: ok ($((SECONDS - start)) s)"
  else
    echo "== $name: FAILED (exit $?, $((SECONDS - start)) s); its log ends:"
    tail -40 "$out/$name.log"
    status=1
  fi
}

nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || status=1

step cuda-tests bash -c '.gpu/bin/test_cuda && .gpu/bin/test_cuda_losses'

site=/tmp/spatialsoftmax-site
python3 -m pip install -q --no-index --no-deps --no-compile --upgrade --target "$site" \
  .gpu/wheel/*.whl .gpu/peers/*.whl && export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
step pytest-cuda python3 -m pytest -q -p no:cacheprovider -m cuda -rs python/tests

net_check() {
  local case_dir="$SPATIALSOFTMAX_CONFORMANCE_DIR/caffe2-spatial/c2s_basic" net=/tmp/c2s_net.json
  cat >"$net" <<'NET'
{"name": "c2s", "op": [{"type": "SpatialSoftmaxWithLoss", "input": ["X", "T"],
  "output": ["P", "avg_loss"]}],
 "external_input": ["X", "T"]}
NET
  for device in cpu cuda; do
    .gpu/bin/spatialsoftmax run "$net" --input "X=$case_dir/X.npy" --input "T=$case_dir/T.npy" \
      --gradients avg_loss --device "$device" --out "/tmp/net-$device" || return 1
  done
  python3 - <<'PY'
import numpy as np
for blob in ("P", "avg_loss", "X_grad"):
    cpu, gpu = (np.load(f"/tmp/net-{d}/{blob}.npy") for d in ("cpu", "cuda"))
    err = float(np.max(np.abs(cpu - gpu))) if cpu.size else 0.0
    print(f"{blob}: max |cuda - cpu| = {err:.3g}")
    assert err <= 1e-5 * (1 + float(np.max(np.abs(cpu)))), blob
PY
}
step run-device net_check

bench() {
  .gpu/bin/spatialsoftmax bench --device cuda --python python3 --peers-dir bench/peers \
    --shapes cityscapes,lm --layouts NCHW,NHWC --min-time 0.3 --json >"$out/bench.jsonl" || return 1
  python3 - "$out/bench.jsonl" <<'PY'
import json, sys
rows = [json.loads(line) for line in open(sys.argv[1]) if line.startswith("{")]
for r in rows:
    shape = "x".join(map(str, r["shape"]))
    extra = " ".join(f"{k[11:]} {v:.2f}x" for k, v in r.items() if k.startswith("speedup_vs_"))
    print(f"{r['impl']:15} {r['op']:17} {shape:16} {r['layout']:5} {r['ms_min']:9.4f} ms "
          f"{r['gbps']:8.1f} GB/s {r.get('pct_memcpy', ''):>6} %copy  {extra}")
PY
}
step bench bench
cat "$out/bench.log"
exit $status
