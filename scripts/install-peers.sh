#!/usr/bin/env bash
# Installs the peers that `spatialsoftmax bench` compares against:
#   - oneDNN (Debian's libdnnl-dev, 2.6; apt-get, with sudo only when not root);
#     the bench's oneDNN runner (build/<preset>/spatialsoftmax_onednn_peer) is
#     built by CMake when it is present, so reconfigure after installing it;
#   - PyTorch, ONNX Runtime, onnx (to build the SoftmaxCrossEntropyLoss model)
#     and numpy from PyPI, into the virtual environment .venv-peers/ at the top
#     of the source tree (PEERS_VENV overrides the path, PYTHON the interpreter).
# Idempotent: does nothing when everything is present and imports.
#
# PyPI's Linux torch wheel is a CUDA build: libtorch_cpu.so and libtorch_cuda.so
# are linked against the nvidia-* libraries (libcudart, libcufile, libcudnn, ...),
# so `pip install torch --no-deps` does not import ("libcufile.so.0: cannot open
# shared object file") and the install pulls about 4.5 GB of nvidia-* and triton
# packages (the venv is about 5.5 GB); nothing of it needs a GPU at run time.
# Where the CPU-only wheels of download.pytorch.org may be used, setting
# PEERS_TORCH_INDEX=https://download.pytorch.org/whl/cpu installs torch from
# there instead (much smaller; not the default, and not tested by this project).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${PEERS_VENV:-$root/.venv-peers}"
python="${PYTHON:-python3}"
need_gb=8  # free space wanted before installing torch with its CUDA libraries

# --- oneDNN from Debian ---------------------------------------------------------
if ! dpkg-query -W -f='${Status}' libdnnl-dev 2>/dev/null | grep -q "install ok installed"; then
  sudo=""
  [ "$(id -u)" -ne 0 ] && sudo="sudo"
  echo "install-peers: installing libdnnl-dev (oneDNN) with apt-get"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends libdnnl-dev
  echo "install-peers: reconfigure (cmake --preset release) to build spatialsoftmax_onednn_peer"
fi

# --- Python peers ----------------------------------------------------------------
check='import numpy, onnx, onnxruntime, torch, torch.nn.functional as F
x = torch.zeros(2, 3, 4, requires_grad=True)
F.cross_entropy(x, torch.zeros(2, 4, dtype=torch.long)).backward()
assert "CPUExecutionProvider" in onnxruntime.get_available_providers()
print("install-peers: torch", torch.__version__, "| onnxruntime", onnxruntime.__version__,
      "| onnx", onnx.__version__, "| numpy", numpy.__version__)'

if [ -x "$venv/bin/python" ] && "$venv/bin/python" -c "$check" 2>/dev/null; then
  echo "install-peers: $venv is up to date"
  exit 0
fi

if [ ! -x "$venv/bin/python" ]; then
  echo "install-peers: creating $venv"
  "$python" -m venv "$venv"
fi

df -h "$(dirname "$venv")"
avail_kb=$(df -Pk "$(dirname "$venv")" | awk 'NR == 2 { print $4 }')
if [ "${PEERS_TORCH_INDEX:-}" = "" ] && [ "$avail_kb" -lt $((need_gb * 1024 * 1024)) ]; then
  echo "install-peers: less than ${need_gb} GB free for torch and its CUDA libraries; free some space" \
       "or set PEERS_TORCH_INDEX (see the top of this script)" >&2
  exit 1
fi

pip=("$venv/bin/python" -m pip install --quiet)
if [ -n "${PEERS_TORCH_INDEX:-}" ]; then
  "${pip[@]}" --index-url "$PEERS_TORCH_INDEX" torch
fi
"${pip[@]}" torch onnxruntime onnx numpy

if ! "$venv/bin/python" -c "$check"; then
  echo "install-peers: the peers do not import in $venv (see the error above)" >&2
  exit 1
fi
du -sh "$venv"
