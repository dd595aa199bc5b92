#!/bin/bash
# One prepared run on a GPU machine (docs/performance.md "GPU"): CUDA parity of the model cases against the
# reference tokens, `gar bench` on a GAR-1B-shaped random checkpoint, and the PyTorch reference on the same GPU.
#
# Usage (repository root, on the GPU machine):
#   GAR=path/to/gar-with-cuda DATA=dir-with-the-shared-data-subset WHL=dir-of-wheels OUT=logdir \
#     bash tools/gpu/device-check.sh
# Every step is independent and time-limited; everything is logged under $OUT.
set -uo pipefail
: "${GAR:?set GAR to the CUDA build of gar}" "${DATA:?set DATA to the shared-data subset}"
OUT=${OUT:-/tmp/gar-device}
mkdir -p "$OUT"
LOG=$OUT/device-check.log
step() { echo "=== $(date +%T) $*" | tee -a "$LOG"; }
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 GAR_SHARED_DATA=$DATA

step "machine"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>&1 | tee -a "$LOG"
python3 -c 'import torch,sys; print("python", sys.version.split()[0], "torch", torch.__version__, torch.version.cuda)' 2>&1 | tee -a "$LOG"

# The binary is linked against the CUDA 13 sonames; the driver provides libcuda, the torch wheels the rest.
libdirs=$(find / -xdev \( -name 'libcublas.so.13*' -o -name 'libcublasLt.so.13*' -o -name 'libcurand.so.10*' \
  -o -name 'libnvrtc.so.13*' -o -name 'libcudart.so.13*' -o -name 'libcuda.so.1' \) 2>/dev/null \
  | xargs -r -n1 dirname | sort -u | tr '\n' ':')
export LD_LIBRARY_PATH=${libdirs}${LD_LIBRARY_PATH:-}
step "libraries: $LD_LIBRARY_PATH"
ldd "$GAR" | grep -E 'cuda|cublas|curand|nvrtc|not found' | tee -a "$LOG"
"$GAR" --version 2>&1 | tee -a "$LOG"

if [ -n "${WHL:-}" ] && [ -d "$WHL" ]; then
  step "reference wheels"
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site "$WHL"/*.whl \
    2>&1 | tail -3 | tee -a "$LOG"
  export PYTHONPATH=/tmp/site
  python3 -c 'import transformers, timm; print("transformers", transformers.__version__, "timm", timm.__version__)' \
    2>&1 | tee -a "$LOG"
fi

step "parity: model cases, cuda f32 (must equal the reference tokens)"
timeout 120 python3 tools/gpu/model_cases.py "$GAR" "$DATA" --device cuda --dtype f32 --json "$OUT/parity_f32.json" \
  2>&1 | tee -a "$LOG"

step "GAR-1B-shaped random checkpoint"
CK=/tmp/gar1b-bench
timeout 200 python3 tools/reference/bench/make_gar1b_checkpoint.py "$CK" 2>&1 | tail -3 | tee -a "$LOG"

SHAPE=(--tiles 17 --prompt-tokens 4608 --new-tokens 100)
bench_pair() {
  step "gar bench cuda $1 ${SHAPE[*]}"
  timeout 120 "$GAR" bench --model "$CK" --device cuda --dtype "$1" "${SHAPE[@]}" --repeat 2 --json \
    2>>"$LOG" | tail -1 | tee -a "$OUT/bench.jsonl" | tee -a "$LOG"
  step "pytorch cuda $1 ${SHAPE[*]}"
  timeout 120 python3 tools/reference/bench/bench_reference.py --model "$CK" --device cuda --dtype "$1" \
    "${SHAPE[@]}" --repeat 2 2>>"$LOG" | tail -1 | tee -a "$OUT/bench.jsonl" | tee -a "$LOG"
}
bench_pair bf16

step "parity: model cases, cuda bf16 (agreement reported)"
timeout 90 python3 tools/gpu/model_cases.py "$GAR" "$DATA" --device cuda --dtype bf16 --json "$OUT/parity_bf16.json" \
  2>&1 | tee -a "$LOG"

bench_pair f32
step "done"
