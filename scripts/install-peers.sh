#!/usr/bin/env bash
# Installs the peers that `spatialsoftmax bench` compares against:
#   - oneDNN (Debian's libdnnl-dev, 2.6; apt-get, with sudo only when not root);
#     the bench's oneDNN runner (build/<preset>/spatialsoftmax_onednn_peer) is
#     built by CMake when it is present, so reconfigure after installing it;
#   - PyTorch, ONNX Runtime, onnx (to build the SoftmaxCrossEntropyLoss model)
#     and numpy from PyPI, into the virtual environment .venv-peers/ at the top
#     of the source tree (PEERS_VENV overrides the path, PYTHON the interpreter);
#   - oneDNN 3.13 from PyPI (onednn and onednn-devel 2026.1.0, a SYCL build
#     with its runtimes, about 2 GB) into .venv-onednn/ (ONEDNN_VENV overrides
#     it), which CMake prefers to Debian's 2.6 for the oneDNN runner (its JIT
#     softmax runs class-first too; 2.6 runs a reference kernel there);
#   - JAX and optax from PyPI into .venv-jax/ (JAX_VENV overrides it): JAX
#     0.12 needs Python 3.12 (PYTHON312, else python3.12 or pyenv's); without
#     one the JAX peer is left out, with a note.
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

# --- oneDNN 3.13 from PyPI -----------------------------------------------------------
onednn_venv="${ONEDNN_VENV:-$root/.venv-onednn}"
if [ -f "$onednn_venv/include/oneapi/dnnl/dnnl.hpp" ] && ls "$onednn_venv"/lib/libdnnl.so.3* >/dev/null 2>&1; then
  echo "install-peers: $onednn_venv is up to date"
else
  [ -x "$onednn_venv/bin/python" ] || "${PYTHON:-python3}" -m venv "$onednn_venv"
  "$onednn_venv/bin/python" -m pip install --quiet onednn==2026.1.0 onednn-devel==2026.1.0
  echo "install-peers: reconfigure (cmake --preset release) to build spatialsoftmax_onednn_peer on it"
fi

# --- JAX and optax (Python 3.12) ----------------------------------------------------
jax_venv="${JAX_VENV:-$root/.venv-jax}"
jax_check='import jax, optax, numpy; print("install-peers: jax", jax.__version__, "| optax", optax.__version__)'
if [ -x "$jax_venv/bin/python" ] && "$jax_venv/bin/python" -c "$jax_check" 2>/dev/null; then
  echo "install-peers: $jax_venv is up to date"
else
  py312="${PYTHON312:-python3.12}"
  if ! "$py312" -c pass 2>/dev/null && command -v pyenv >/dev/null; then
    py312="$(ls "$(pyenv root)"/versions/3.12*/bin/python3.12 2>/dev/null | tail -1)"
  fi
  if [ -n "$py312" ] && "$py312" -c pass 2>/dev/null; then
    [ -x "$jax_venv/bin/python" ] || "$py312" -m venv "$jax_venv"
    "$jax_venv/bin/python" -m pip install --quiet jax==0.12.0.1 jaxlib==0.12.0.1 optax==0.2.8 numpy
    "$jax_venv/bin/python" -c "$jax_check"
  else
    echo "install-peers: no Python 3.12 (set PYTHON312): the JAX peer is left out"
  fi
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
