"""Run every model parity case of fixtures/model/ through a `gar` binary on a chosen device and compare the
generated tokens with the reference's (the same arguments as crates/gar-cli/tests/model_cases.rs).

usage: python3 tools/gpu/model_cases.py GAR_BINARY DATA_DIR --device cuda --dtype f32 [--json OUT]
Prints one line per case and exits non-zero when an f32 case differs.
"""

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def region_flags(meta, data):
    args = []
    for r in sorted(meta["regions"], key=lambda r: int(r["prompt"])):
        if "mask_png" in r:
            args += ["--mask", str(data / r["mask_png"])]
        elif "rle" in r:
            args += ["--rle", json.dumps(r["rle"])]
        elif "box" in r:
            args += ["--box", ",".join(str(v) for v in r["box"])]
        else:
            raise SystemExit(f"unsupported region {r}")
    return args


def case_args(meta, data):
    ckpt = ROOT / "fixtures" / "checkpoints" / meta["checkpoint"]
    single = meta["prompt_kind"] == "single"
    args = ["describe" if single else "ask", "--model", str(ckpt), "--image", str(data / meta["image"])]
    args += region_flags(meta, data)
    args += ["--max-new-tokens", str(meta["n_new_tokens"]), "--bos", meta["bos_policy"], "--json"]
    if meta.get("max_num_tiles_override"):
        args += ["--max-tiles", str(meta["max_num_tiles"])]
    if single:
        args += ["--prompt", meta["instruction"], "--slot", str(int(meta["regions"][0]["prompt"]))]
    else:
        args.append(meta["question"])
    return args


def expected_tokens(meta):
    toks = meta["generated_tokens"]
    return toks if meta.get("eot_index") is None else toks[: meta["eot_index"]]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("gar")
    ap.add_argument("data", type=Path)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--dtype", default="f32")
    ap.add_argument("--json", type=Path)
    a = ap.parse_args()
    results, failed = [], 0
    for meta_path in sorted((ROOT / "fixtures" / "model").glob("*/meta.json")):
        meta = json.loads(meta_path.read_text())
        cmd = [a.gar] + case_args(meta, a.data) + ["--dtype", a.dtype]
        if a.device != "default":  # builds before --device existed ran on the CPU only
            cmd += ["--device", a.device]
        t0 = time.time()
        p = subprocess.run(cmd, capture_output=True, text=True)
        wall = time.time() - t0
        if p.returncode != 0:
            print(f"{meta['case']}: FAILED rc={p.returncode}: {p.stderr.strip()[-400:]}")
            failed += 1
            results.append({"case": meta["case"], "error": p.stderr[-400:]})
            continue
        out = json.loads([l for l in p.stdout.splitlines() if l.strip()][-1])
        want = expected_tokens(meta)
        got = out["tokens"]
        agree = next((i for i, (x, y) in enumerate(zip(got, want)) if x != y), min(len(got), len(want)))
        same = got == want
        failed += (not same) and a.dtype == "f32"
        print(f"{meta['case']}: {a.device} {a.dtype} tokens {'EQUAL' if same else 'DIFFER'} "
              f"(first {agree}/{len(want)} agree) wall {wall:.2f}s timings {json.dumps(out.get('timings'))}")
        results.append({"case": meta["case"], "equal": same, "prefix_agree": agree, "n": len(want),
                        "wall_s": wall, "timings": out.get("timings")})
    if a.json:
        a.json.write_text(json.dumps(results, indent=1))
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
