#!/usr/bin/env bash
# Regenerates fixtures/sam/ (tiny random SAM + transformers SamModel/SamProcessor outputs on shared/data).
# Uses the same venv as tools/reference/regenerate.sh. Output is byte-identical from run to run.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../../.." && pwd)"
shared="${GAR_SHARED_DATA:-$root/../shared/data}"
python="$root/tools/reference/.venv/bin/python"
out="$root/fixtures/sam"
rm -rf "$out/tiny" "$out/masks"
OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 PYTHONHASHSEED=0 \
  "$python" "$here/make_sam_fixtures.py" "$shared" "$out"
