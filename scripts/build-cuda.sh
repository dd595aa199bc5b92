#!/bin/bash
# Build `gar` with the `cuda` feature on a machine without a GPU or a CUDA install.
#
# The CUDA 13 compiler, headers and libraries come from NVIDIA's PyPI wheels. candle links cudarc against the CUDA
# sonames at build time (`dynamic-linking`), so the driver library is linked against a generated stub with the
# real soname (libcuda.so.1); the GPU machine's driver provides the real one at run time, and its CUDA 13 runtime
# libraries (a CUDA toolkit, or the nvidia-* wheels PyTorch ships) must be on LD_LIBRARY_PATH.
#
# With --nccl it also builds the `nccl` feature (multi-GPU data-parallel training): libnccl comes from the
# nvidia-nccl-cu13 wheel (2.32, the newest cu13 build on PyPI; cudarc's bindings are NCCL 2.30's, whose functions 2.32 still exports) and is
# linked by soname (libnccl.so.2); at run time it must be on LD_LIBRARY_PATH (printed at the end).
#
# usage: scripts/build-cuda.sh [--nccl] [COMPUTE_CAP]   (default 90: H100/H200; 80: A100; 89: L4/RTX 40xx)
# output: target/cuda/release/gar
set -euo pipefail
FEATURES=cuda
if [ "${1:-}" = "--nccl" ]; then FEATURES="cuda nccl"; shift; fi
CAP=${1:-90}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
KIT=${GAR_CUDA_KIT:-$ROOT/target/cuda-kit}
CU=$KIT/x/nvidia/cu13
if [ ! -x "$CU/bin/nvcc" ] || [ ! -e "$CU/include/nv/target" ]; then
  mkdir -p "$KIT/whl" "$KIT/x"
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
    --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d "$KIT/whl" \
    "nvidia-cuda-nvcc==13.0.*" "nvidia-nvvm==13.0.*" "nvidia-cuda-crt==13.0.*" "nvidia-cuda-cccl==13.0.*" \
    "nvidia-cuda-runtime==13.0.*" "nvidia-cublas==13.0.*" "nvidia-cuda-nvrtc==13.0.*" "nvidia-curand==10.4.*"
  for w in "$KIT"/whl/*.whl; do unzip -qo "$w" -d "$KIT/x"; done
fi
# A toolkit-shaped root for cudarc's and candle-kernels' build scripts: lib64, unversioned .so names, libcuda stub.
ln -sfn lib "$CU/lib64"
for l in cublas cublasLt cudart nvrtc; do ln -sfn "lib$l.so.13" "$CU/lib/lib$l.so"; done
ln -sfn libcurand.so.10 "$CU/lib/libcurand.so"
if [ ! -e "$CU/lib/stubs/libcuda.so" ]; then
  mkdir -p "$CU/lib/stubs"
  cargo fetch -q --manifest-path "$ROOT/Cargo.toml"
  sys=$(ls -d "$HOME"/.cargo/registry/src/*/cudarc-0.19.*/src/driver/sys/mod.rs | tail -1)
  grep -o 'load::<_F>("[A-Za-z0-9_]*")' "$sys" | sed 's/.*("\(.*\)")/\1/' | sort -u \
    | awk '{print "void " $1 "(void) {}"}' > "$CU/lib/stubs/libcuda_stub.c"
  gcc -shared -fPIC -Wl,-soname,libcuda.so.1 -o "$CU/lib/stubs/libcuda.so" "$CU/lib/stubs/libcuda_stub.c"
fi
NCCL_LIB=""
if [ "$FEATURES" = "cuda nccl" ]; then
  NCCL_LIB=$KIT/x/nvidia/nccl/lib
  if [ ! -e "$NCCL_LIB/libnccl.so.2" ]; then
    mkdir -p "$KIT/whl-nccl"
    python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
      --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 -d "$KIT/whl-nccl" "nvidia-nccl-cu13==2.32.*"
    for w in "$KIT"/whl-nccl/*.whl; do unzip -qo "$w" -d "$KIT/x"; done
  fi
  # Linked from the CUDA lib folder already on the search path, so RUSTFLAGS (and the cached build) stay the same.
  ln -sfn "$NCCL_LIB/libnccl.so.2" "$CU/lib/libnccl.so"
fi
export CUDA_ROOT=$CU CUDA_PATH=$CU PATH=$CU/bin:$PATH CUDA_COMPUTE_CAP=$CAP
export LIBRARY_PATH=$CU/lib:$CU/lib/stubs
export RUSTFLAGS="-L native=$CU/lib -L native=$CU/lib/stubs"
cd "$ROOT"
CARGO_TARGET_DIR=$ROOT/target/cuda cargo build --release -p gar-cli --features "$FEATURES"
echo "built $ROOT/target/cuda/release/gar (sm_$CAP, CUDA 13, features: $FEATURES)"
if [ -n "$NCCL_LIB" ]; then echo "run it with LD_LIBRARY_PATH including $NCCL_LIB"; fi
