#!/bin/bash
# Build `gar` with the `cuda` feature on a machine without a GPU or a CUDA install.
#
# The CUDA 13 compiler, headers and libraries come from NVIDIA's PyPI wheels. candle links cudarc against the CUDA
# sonames at build time (`dynamic-linking`), so the driver library is linked against a generated stub with the
# real soname (libcuda.so.1); the GPU machine's driver provides the real one at run time, and its CUDA 13 runtime
# libraries (a CUDA toolkit, or the nvidia-* wheels PyTorch ships) must be on LD_LIBRARY_PATH.
#
# usage: scripts/build-cuda.sh [COMPUTE_CAP]   (default 90: H100/H200; 80: A100; 89: L4/RTX 40xx)
# output: target/cuda/release/gar
set -euo pipefail
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
export CUDA_ROOT=$CU CUDA_PATH=$CU PATH=$CU/bin:$PATH CUDA_COMPUTE_CAP=$CAP
export LIBRARY_PATH=$CU/lib:$CU/lib/stubs
export RUSTFLAGS="-L native=$CU/lib -L native=$CU/lib/stubs"
cd "$ROOT"
CARGO_TARGET_DIR=$ROOT/target/cuda cargo build --release -p gar-cli --features cuda
echo "built $ROOT/target/cuda/release/gar (sm_$CAP, CUDA 13)"
