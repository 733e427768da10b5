#!/usr/bin/env bash
# Builds, on this machine, what scripts/gpu-check.sh runs on a GPU machine
# that has the GPU, CUDA and Python's torch but not this project's build
# dependencies (Highway, GoogleTest, protobuf, ...): into .gpu/ (ignored
# through .git/info/exclude), which the device tool carries there.
#   .gpu/bin   test_cuda, test_cuda_losses (CTest label cuda), spatialsoftmax
#   .gpu/lib   the shared libraries they need that a bare machine lacks
#   .gpu/wheel the Python package for CPython 3.12, CUDA kernels for sm_90
#   .gpu/peers Liger-Kernel's wheel, a peer of `bench --device cuda` (QuACK's
#              CuTe-DSL runtime wheel alone is 92 MB: over what travels)
#   .gpu/conformance  the peers' vectors (../shared does not travel)
# Kernels for sm_90 only (the H200), so that everything fits the 64 MiB the
# tool carries. The binaries need glibc 2.34 and GCC 12's libstdc++ (the
# GPU machine's Ubuntu has both) and find the rest in .gpu/lib.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
out="$root/.gpu"
grep -qx '/.gpu/' .git/info/exclude 2>/dev/null || echo '/.gpu/' >> .git/info/exclude
rm -rf "$out"
mkdir -p "$out/bin" "$out/lib" "$out/wheel"

cmake --preset gpu >/dev/null
cmake --build --preset gpu --target test_cuda test_cuda_losses spatialsoftmax_cli
cp build/gpu/tests/test_cuda build/gpu/tests/test_cuda_losses build/gpu/spatialsoftmax "$out/bin/"
strip "$out"/bin/*
for binary in "$out"/bin/*; do
  ldd "$binary" | awk '/=> \// {print $3}'
done | sort -u | grep -E 'libhwy|libprotobuf|libgtest|libgmock|libabsl' | xargs -r -I{} cp -L {} "$out/lib/"

# The package, built by a CPython 3.12 (the GPU machine's) in a venv of its own.
py312="${SPATIALSOFTMAX_PY312:-python3.12}"
if ! "$py312" -c pass 2>/dev/null && command -v pyenv >/dev/null; then
  py312="$(ls "$(pyenv root)"/versions/3.12*/bin/python3.12 2>/dev/null | tail -1)"
fi
venv="${SPATIALSOFTMAX_GPU_VENV:-$HOME/.cache/spatialsoftmax/gpu-py312}"
if [ ! -x "$venv/bin/python" ]; then "$py312" -m venv "$venv"; fi
"$venv/bin/python" -m pip install -q scikit-build-core==1.1.2 nanobind==3.1.0 ninja numpy
"$venv/bin/python" -m pip wheel -q --no-deps --no-build-isolation -w "$out/wheel" \
  --config-settings=cmake.define.CMAKE_CUDA_ARCHITECTURES=90 \
  --config-settings=cmake.define.SPATIALSOFTMAX_CUDA=ON \
  --config-settings=build-dir="$root/build/gpu-python" "$root"
for so in $(unzip -Z1 "$out"/wheel/*.whl | grep '\.so$'); do
  unzip -p "$out"/wheel/*.whl "$so" > /tmp/spatialsoftmax-ext.so
  ldd /tmp/spatialsoftmax-ext.so | awk '/=> \// {print $3}' | grep -E 'libhwy' |
    xargs -r -I{} cp -L {} "$out/lib/"
done

mkdir -p "$out/peers"
"$venv/bin/python" -m pip download -q --no-deps --only-binary=:all: -d "$out/peers" \
  liger-kernel==0.8.5

cp -r "${SPATIALSOFTMAX_CONFORMANCE_DIR:-$root/../shared/conformance}" "$out/conformance"
du -sh "$out" "$out"/*
