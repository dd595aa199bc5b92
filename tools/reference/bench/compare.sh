#!/usr/bin/env bash
# Run `gar bench` and the PyTorch reference (stock and --gqa-fix) back to back on one checkpoint and print
# gar / reference ratios. Usage: tools/reference/bench/compare.sh DIR [--tiles N] [--prompt-tokens N]
#   [--new-tokens N] [--repeat K] [--threads N]   (GAR=path/to/gar overrides the binary; default target/release/gar)
set -euo pipefail
cd "$(dirname "$0")/../../.."
dir=${1:?usage: compare.sh DIR [bench flags]}
shift
gar=${GAR:-target/release/gar}
py=tools/reference/.venv/bin/python
out=$(mktemp -d)
"$gar" bench --model "$dir" "$@" --json | tail -1 > "$out/gar.json"
$py tools/reference/bench/bench_reference.py --model "$dir" "$@" | tail -1 > "$out/torch.json"
$py tools/reference/bench/bench_reference.py --model "$dir" "$@" --gqa-fix | tail -1 > "$out/torch_gqa.json"
$py - "$out" <<'PY'
import json, sys
d = sys.argv[1]
g, t, q = (json.load(open(f"{d}/{n}.json")) for n in ("gar", "torch", "torch_gqa"))
assert g["prompt_tokens"] == t["prompt_tokens"] == q["prompt_tokens"], "inputs differ"
print(f"{'metric':24} {'gar':>12} {'pytorch':>12} {'gqa-fix':>12} {'gar/pt':>8} {'gar/gqa':>8}")
for k in ["preprocess_s", "vision_s_per_tile", "prefill_tokens_per_s", "ttft_s", "decode_tokens_per_s",
          "end_to_end_s", "peak_rss_mib"]:
    print(f"{k:24} {g[k]:12.4g} {t[k]:12.4g} {q[k]:12.4g} {g[k] / t[k]:8.3f} {g[k] / q[k]:8.3f}")
print(json.dumps({"gar": g, "pytorch": t, "pytorch_gqa_fix": q}))
PY
