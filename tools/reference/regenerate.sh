#!/usr/bin/env bash
# Regenerate every parity fixture under fixtures/ with the PyTorch reference, deterministically.
#   tools/reference/regenerate.sh            # create/update the venv, regenerate everything, write SHA256SUMS
#   tools/reference/regenerate.sh model ops  # only some steps (checkpoints model ops processor tokenizer smollm2 verify train trainloss
#                                            # trainexport chat sam; the last two are other generators sharing this venv)
# Needs the benchmark data at ../shared/data (or GAR_SHARED_DATA=/path/to/shared/data) and PyPI access the first
# time (venv creation). Running it twice gives byte-identical files (see README.md).
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
VENV="$HERE/.venv"
PY="${PYTHON:-python3}"

if [ ! -x "$VENV/bin/python" ]; then
  "$PY" -m venv "$VENV"
fi
if ! "$VENV/bin/python" - "$HERE" <<'PYEOF' 2>/dev/null
import sys, importlib.metadata as md, pathlib
here = pathlib.Path(sys.argv[1])
for f in ("requirements.txt", "requirements-nodeps.txt"):
    for line in (here / f).read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            name, ver = line.split("==")
            assert md.version(name) == ver, (name, md.version(name), ver)
PYEOF
then
  "$VENV/bin/pip" install -q -r "$HERE/requirements.txt" -c "$HERE/requirements.lock"
  "$VENV/bin/pip" install -q --no-deps -r "$HERE/requirements-nodeps.txt"
fi

export PYTHONHASHSEED=0 OMP_NUM_THREADS=2 MKL_NUM_THREADS=2 OPENBLAS_NUM_THREADS=2 TOKENIZERS_PARALLELISM=false
export CUDA_VISIBLE_DEVICES="" HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_HOME="$HERE/.cache/hf"
export PYTHONDONTWRITEBYTECODE=1 TQDM_DISABLE=1

steps=("$@")
if [ ${#steps[@]} -eq 0 ]; then
  steps=(checkpoints model ops processor tokenizer smollm2 verify train trainloss trainexport)
  # fixtures written by other generators that share this venv
  if [ -f "$HERE/make_chat_fixture.py" ]; then steps+=(chat); fi
  steps+=(multi_image)
  if [ -x "$HERE/sam/regenerate_sam.sh" ]; then steps+=(sam); fi
fi
cd "$HERE"
for s in "${steps[@]}"; do
  echo "== $s" >&2
  case "$s" in
    checkpoints) "$VENV/bin/python" make_checkpoints.py ;;
    model) "$VENV/bin/python" make_model_fixtures.py ;;
    ops) "$VENV/bin/python" make_op_fixtures.py ;;
    processor) "$VENV/bin/python" make_processor_fixtures.py ;;
    tokenizer) "$VENV/bin/python" make_tokenizer_fixture.py ;;
    smollm2) "$VENV/bin/python" make_smollm2_fixture.py ;;
    verify) "$VENV/bin/python" verify_fixtures.py ;;
    chat) "$VENV/bin/python" make_chat_fixture.py ;;
    multi_image) "$VENV/bin/python" make_multi_image_fixture.py ;;
    train) "$VENV/bin/python" train/make_optim_fixtures.py && "$VENV/bin/python" train/make_construct_fixtures.py \
      && "$VENV/bin/python" train/make_arrow_fixture.py && "$VENV/bin/python" train/make_encode_fixtures.py ;;
    sam) "$HERE/sam/regenerate_sam.sh" ;;
    trainloss)
      # The encoded inputs come from the Rust encoder (see fixtures/train/loss/GENERATED_BY.md).
      dump="$(mktemp -d)"
      (cd "$REPO" && GAR_DUMP_TRAIN_INPUTS="$dump" cargo test -q -p gar-train --test train_parity dump_encoded_inputs)
      "$VENV/bin/python" train/make_loss_fixtures.py "$dump"
      "$VENV/bin/python" train/make_step_fixtures.py
      # Real-photo cases: inputs from the independent Python encoder (fixtures/train/encode), not from Rust.
      "$VENV/bin/python" train/make_photo_loss_fixtures.py
      rm -rf "$dump" ;;
    trainexport)
      # The export comes from `gar train` (the overfit test's 50-step run, kept in a temporary folder); the
      # script runs transformers on it (see fixtures/train/export_generate/GENERATED_BY.md).
      work="$(mktemp -d)"
      (cd "$REPO" && GAR_TRAIN_OVERFIT_DIR="$work" cargo test -q -p gar-cli --test train_overfit -- \
        --ignored --exact run_only_for_the_fixture)
      "$VENV/bin/python" train/make_export_generate_fixture.py "$work"
      rm -rf "$work" ;;
    *) echo "unknown step $s" >&2; exit 2 ;;
  esac
done

# manifest of every file this script generates (sorted), so two runs can be compared byte for byte
cd "$REPO"
dirs=()
for d in checkpoints model ops processor tokenizer-llama3 smollm2 chat multi_image sam train eval; do
  if [ -d "fixtures/$d" ]; then dirs+=("fixtures/$d"); fi
done
find "${dirs[@]}" -type f -print0 | LC_ALL=C sort -z | xargs -0 sha256sum > fixtures/SHA256SUMS
echo "wrote fixtures/SHA256SUMS ($(wc -l < fixtures/SHA256SUMS) files)" >&2
