#!/usr/bin/env python3
"""Compare the f32 tensors of two safetensors files (stdlib only: the GPU machine needs nothing else).

usage: compare_weights.py A.safetensors B.safetensors [--max-rel R]
Prints the largest relative difference |a − b| / max(|b|, 1e-3) (the measure of
crates/gar-train/tests/training_loop.rs) and whether the two are bit-identical; exits 1 above R.
"""
import argparse
import array
import json
import struct
import sys


def load(path):
    try:
        f = open(path, "rb")
    except OSError as e:
        sys.exit(f"FAIL: {e} (did that training run fail? see the log)")
    with f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        body = f.read()
    out = {}
    for name, meta in header.items():
        if name == "__metadata__":
            continue
        if meta["dtype"] != "F32":
            sys.exit(f"{path}: {name} is {meta['dtype']}, expected F32")
        a, b = meta["data_offsets"]
        values = array.array("f")
        values.frombytes(body[a:b])
        if sys.byteorder != "little":
            values.byteswap()
        out[name] = values
    return out


def main():
    p = argparse.ArgumentParser()
    p.add_argument("a")
    p.add_argument("b")
    p.add_argument("--max-rel", type=float, default=1e-4)
    args = p.parse_args()
    a, b = load(args.a), load(args.b)
    if sorted(a) != sorted(b):
        sys.exit(f"different tensor names: {sorted(set(a) ^ set(b))[:5]}")
    worst, identical = 0.0, True
    for name in sorted(a):
        if len(a[name]) != len(b[name]):
            sys.exit(f"{name}: {len(a[name])} vs {len(b[name])} values")
        identical &= a[name].tobytes() == b[name].tobytes()
        for x, y in zip(a[name], b[name]):
            worst = max(worst, abs(x - y) / max(abs(y), 1e-3))
    verdict = "ok" if worst <= args.max_rel else "FAIL"
    print(f"{verdict}: max relative difference {worst:.3e} (limit {args.max_rel:g}), bit-identical: {identical}")
    sys.exit(0 if verdict == "ok" else 1)


if __name__ == "__main__":
    main()
