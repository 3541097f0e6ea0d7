#!/usr/bin/env bash
# Builds chartrl with the `cuda` feature on a machine without a GPU, so the binary can be
# copied to one. Installs what the build needs itself, from the Python package registry, into
# TOOLS (default target/cuda-toolchain): NVIDIA's wheels of the CUDA compiler (nvcc, nvvm, the
# C runtime headers), cudart, cuBLAS, cuRAND and NVRTC. The driver library libcuda.so comes
# with a GPU's driver, not with any wheel, so a link-time stub of it is generated from the
# driver functions the binary calls; the GPU machine's real libcuda.so.1 replaces it at run
# time.
#
#   bash scripts/build-cuda.sh            # -> target/cuda/release/chartrl (CUDA 13.0, sm_90)
#   CUDA_VERSION=13.0 CUDA_COMPUTE_CAP=80 bash scripts/build-cuda.sh
#
# On the GPU machine the binary needs libcublas, libcurand and libnvrtc of the same CUDA
# major version on its library path: the script prints the LD_LIBRARY_PATH that points at
# the ones it installed (copy TOOLS/cuda/lib64 along), or use the machine's own. Not part of
# CI. Needs python3 with pip, a C compiler and nm.
set -euo pipefail
cd "$(dirname "$0")/.."
version=${CUDA_VERSION:-13.0}
export CUDA_COMPUTE_CAP=${CUDA_COMPUTE_CAP:-90}
tools=$(realpath -m "${TOOLS:-target/cuda-toolchain}")
cuda=$tools/cuda
# Its own target directory, so the CPU build in target/release stays as it is.
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-target/cuda}
out=$CARGO_TARGET_DIR/release

echo "== CUDA $version wheels into $tools"
python3 -m pip install --quiet --upgrade --target "$tools/py" \
    "nvidia-cuda-nvcc==$version.*" "nvidia-nvvm==$version.*" "nvidia-cuda-crt==$version.*" \
    "nvidia-cuda-runtime==$version.*" "nvidia-cuda-nvrtc==$version.*" "nvidia-cuda-cccl==$version.*" \
    "nvidia-cublas==$version.*" "nvidia-curand<10.5"
root=$tools/py/nvidia/cu13
[ -x "$root/bin/nvcc" ] || { echo "no nvcc in $root/bin (CUDA $version wheels)"; exit 1; }

echo "== a CUDA tree in $cuda"
rm -rf "$cuda"
mkdir -p "$cuda/lib64"
ln -s "$root/bin" "$cuda/bin"
ln -s "$root/include" "$cuda/include"
ln -s "$root/nvvm" "$cuda/nvvm"
for lib in "$root"/lib/lib*.so.*; do
    name=$(basename "$lib")
    ln -sf "$lib" "$cuda/lib64/$name"
    ln -sf "$lib" "$cuda/lib64/${name%%.so.*}.so"
done
export CUDA_ROOT=$cuda CUDA_PATH=$cuda CUDA_HOME=$cuda CUDA_TOOLKIT_ROOT_DIR=$cuda
export PATH=$cuda/bin:$PATH
export LIBRARY_PATH=$cuda/lib64${LIBRARY_PATH:+:$LIBRARY_PATH}
nvcc --version | tail -n 2

echo "== the libcuda.so link stub"
# The dependencies first (no final link yet), then the driver functions cudarc calls.
cargo build --release --features cuda --lib
symbols=$(for f in "$out"/deps/libcudarc-*.rlib; do nm -u "$f" 2>/dev/null; done |
    awk '{print $NF}' | grep -E '^cu[A-Z]' | sort -u)
[ -n "$symbols" ] || { echo "found no driver symbols in cudarc"; exit 1; }
stub=$tools/libcuda_stub.c
{
    echo "/* Link-time stub of libcuda.so.1: the real one comes with the GPU's driver. */"
    for s in $symbols; do echo "int $s(void) { return 999; }"; done
} >"$stub"
cc -shared -fPIC -Wl,-soname,libcuda.so.1 -o "$cuda/lib64/libcuda.so" "$stub"
echo "$(echo "$symbols" | wc -l) driver functions"

echo "== chartrl with --features cuda"
cargo build --release --features cuda
ldd "$out/chartrl" | grep -E 'cuda|cublas|curand|nvrtc' || true
echo
echo "built $out/chartrl (CUDA $version, compute capability $CUDA_COMPUTE_CAP)"
echo "on the GPU machine: LD_LIBRARY_PATH=<copy of $cuda/lib64 without libcuda.so> ./chartrl bench --device cuda"
