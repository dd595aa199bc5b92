#!/bin/bash
# GPU check of data-parallel training (docs/training.md "Data parallelism"): the NCCL all-reduce of a
# `scripts/build-cuda.sh --nccl` build, on the tiny stand-in model in f32 (a few seconds per run).
#
#   1. CPU, one process, accumulation 2                         (what CI's train_multiprocess test checks)
#   2. cuda:0, one process, accumulation 2                      (reference for 3–5; compared with 1)
#   3. cuda:0, WORLD_SIZE=1, GAR_ALLREDUCE=nccl, accumulation 2 (a one-rank NCCL communicator: must equal 2 bit for bit)
#   4. cuda:0, WORLD_SIZE=1, GAR_ALLREDUCE=tcp, accumulation 2  (the TCP path with CUDA tensors: must equal 2)
#   5. with ≥ 2 GPUs: RANK 0/1 on cuda:0/1 over NCCL, accumulation 1 each (must equal 2 within 1e-4)
#
# Usage (repository root, on the GPU machine):
#   GAR=path/to/gar-built-with---nccl OUT=logdir bash tools/gpu/train-dist-check.sh
# libnccl.so.2 and the CUDA 13 libraries are looked up on the machine (PyTorch's nvidia-* wheels) unless
# LD_LIBRARY_PATH already has them.
set -uo pipefail
: "${GAR:?set GAR to a build of gar with --features nccl (scripts/build-cuda.sh --nccl)}"
OUT=${OUT:-/tmp/gar-train-dist}
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
mkdir -p "$OUT"
LOG=$OUT/train-dist-check.log
step() { echo "=== $(date +%T) $*" | tee -a "$LOG"; }
CMP="python3 $ROOT/tools/gpu/compare_weights.py"

libdirs=$(find / -xdev \( -name 'libcublas.so.13*' -o -name 'libcublasLt.so.13*' -o -name 'libcurand.so.10*' \
  -o -name 'libnvrtc.so.13*' -o -name 'libcudart.so.13*' -o -name 'libcuda.so.1' -o -name 'libnccl.so.2' \) \
  2>/dev/null | xargs -r -n1 dirname | sort -u | tr '\n' ':')
export LD_LIBRARY_PATH=${LD_LIBRARY_PATH:-}:${libdirs}
step "libraries"
ldd "$GAR" | grep -E 'cuda|cublas|nccl|not found' | tee -a "$LOG"
NGPU=$(nvidia-smi -L 2>/dev/null | wc -l)
step "$NGPU GPU(s)"

# config NAME DEVICE ACCUMULATION
config() {
  cat > "$OUT/$1.toml" <<TOML
out_dir = "$OUT/$1"
seed = 5
[model]
kind = "tiny"
dtype = "f32"
device = "$2"
dir = "$ROOT/fixtures/checkpoints/tiny-pe-l"
[data]
arrow = ["$ROOT/fixtures/train/arrow/dataset"]
[optim]
lr = 0.05
schedule = "constant"
[loop]
steps = 4
micro_batch = 1
accumulation = $3
save_every = 0
TOML
  rm -rf "${OUT:?}/$1"
  echo "$OUT/$1.toml"
}
train() { # NAME, then env assignments
  local name=$1; shift
  step "train $name $*"
  env -u WORLD_SIZE -u RANK -u LOCAL_RANK "$@" timeout 120 "$GAR" train --config "$OUT/$name.toml" \
    >>"$LOG" 2>&1 </dev/null
  echo "exit $?" | tee -a "$LOG"
}
weights() { echo "$OUT/$1/export/model.safetensors"; }
DIST=(WORLD_SIZE=1 RANK=0 MASTER_ADDR=127.0.0.1 GAR_DIST_TIMEOUT=60)

config cpu cpu 2 >/dev/null && train cpu
config cuda cuda 2 >/dev/null && train cuda
step "cuda vs cpu (different kernels: reported, loose limit)"
$CMP "$(weights cuda)" "$(weights cpu)" --max-rel 1e-2 2>&1 | tee -a "$LOG"

config nccl1 cuda 2 >/dev/null && train nccl1 "${DIST[@]}" MASTER_PORT=29611 GAR_ALLREDUCE=nccl
step "one-rank NCCL vs no all-reduce (must be bit-identical)"
$CMP "$(weights nccl1)" "$(weights cuda)" --max-rel 0 2>&1 | tee -a "$LOG"

config tcp1 cuda 2 >/dev/null && train tcp1 "${DIST[@]}" MASTER_PORT=29612 GAR_ALLREDUCE=tcp
step "one-rank TCP on CUDA tensors vs no all-reduce (must be bit-identical)"
$CMP "$(weights tcp1)" "$(weights cuda)" --max-rel 0 2>&1 | tee -a "$LOG"

if [ "$NGPU" -ge 2 ]; then
  config nccl2 cuda 1 >/dev/null
  step "train nccl2: ranks 0 and 1 on cuda:0 and cuda:1"
  common=(WORLD_SIZE=2 MASTER_ADDR=127.0.0.1 MASTER_PORT=29613 GAR_DIST_TIMEOUT=60)
  env "${common[@]}" RANK=1 LOCAL_RANK=1 timeout 120 "$GAR" train --config "$OUT/nccl2.toml" \
    >"$OUT/nccl2-rank1.log" 2>&1 </dev/null &
  env "${common[@]}" RANK=0 LOCAL_RANK=0 timeout 120 "$GAR" train --config "$OUT/nccl2.toml" >>"$LOG" 2>&1 </dev/null
  echo "rank 0 exit $?" | tee -a "$LOG"
  wait $!; echo "rank 1 exit $?" | tee -a "$LOG"
  step "two ranks over NCCL vs one process with accumulation 2"
  $CMP "$(weights nccl2)" "$(weights cuda)" --max-rel 1e-4 2>&1 | tee -a "$LOG"
else
  step "only one GPU: the two-rank NCCL run is skipped"
fi
step "done"
