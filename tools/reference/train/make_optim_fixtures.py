"""Optimiser parity fixture (training.md §5.3–5.5): torch.optim.AdamW + clip_grad_norm_ + the warm-up/cosine
schedule for a few optimizer steps with gradient accumulation, on small random f32 tensors. Writes
fixtures/train/optim/{tensors.safetensors, meta.json, GENERATED_BY.md}.

The schedule is written out here from the closed form of training.md §5.5 (mmengine is not installed); the Rust
test checks its own schedule against the `lrs` recorded here and its AdamW/clip against torch's results."""

import json
import math
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import torch  # noqa: E402
from safetensors.torch import save_file  # noqa: E402

from common import FIXTURES, setup_torch  # noqa: E402

OUT = FIXTURES / "train" / "optim"
SHAPES = {"a": (4, 3), "b": (5,), "c": (2, 2, 3)}
STEPS, ACCUM = 6, 2
BASE_LR, WARMUP_RATIO, WEIGHT_DECAY, MAX_NORM = 1e-2, 0.3, 0.01, 1.0
# Per-step gradient scales: small steps stay below the clip threshold, large ones are clipped.
SCALES = [0.05, 2.0, 0.1, 5.0, 0.02, 1.0]


def lr_at_micro(g, total):
    w = int(WARMUP_RATIO * total)
    s = 1e-5
    if g < w:
        return BASE_LR * s if w == 1 else BASE_LR * (s + (1 - s) * g / (w - 1))
    return BASE_LR * (1 + math.cos(math.pi * (g - w) / (total - w))) / 2


def main():
    setup_torch()
    gen = torch.Generator().manual_seed(20251127)
    params = {n: torch.randn(s, generator=gen) for n, s in SHAPES.items()}
    tensors = {f"init.{n}": p.clone() for n, p in params.items()}
    plist = [torch.nn.Parameter(params[n].clone()) for n in SHAPES]
    opt = torch.optim.AdamW(plist, lr=BASE_LR, betas=(0.9, 0.999), eps=1e-8, weight_decay=WEIGHT_DECAY, foreach=False)
    total_micro = STEPS * ACCUM
    lrs, norms = [], []
    for k in range(STEPS):
        for p in plist:
            p.grad = torch.zeros_like(p)
        for a in range(ACCUM):
            for n, p in zip(SHAPES, plist):
                g = torch.randn(SHAPES[n], generator=gen) * SCALES[k]
                tensors[f"grad.{k}.{a}.{n}"] = g.clone()
                # The loss is divided by the accumulation count before backward (§5.4).
                p.grad += g / ACCUM
        norm = torch.nn.utils.clip_grad_norm_(plist, max_norm=MAX_NORM)
        norms.append(float(norm))
        lr = lr_at_micro(k * ACCUM + ACCUM - 1, total_micro)
        lrs.append(lr)
        for group in opt.param_groups:
            group["lr"] = lr
        opt.step()
        for n, p in zip(SHAPES, plist):
            tensors[f"param.{k}.{n}"] = p.detach().clone()
    for n, p in zip(SHAPES, plist):
        st = opt.state[p]
        tensors[f"exp_avg.{n}"] = st["exp_avg"].clone()
        tensors[f"exp_avg_sq.{n}"] = st["exp_avg_sq"].clone()
    OUT.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in sorted(tensors.items())}, str(OUT / "tensors.safetensors"))
    meta = {
        "names": list(SHAPES),
        "steps": STEPS,
        "accumulation": ACCUM,
        "base_lr": BASE_LR,
        "warmup_ratio": WARMUP_RATIO,
        "weight_decay": WEIGHT_DECAY,
        "max_norm": MAX_NORM,
        "betas": [0.9, 0.999],
        "eps": 1e-8,
        "lrs": lrs,
        "grad_norms": norms,
    }
    (OUT / "meta.json").write_text(json.dumps(meta, indent=1, sort_keys=True) + "\n")
    (OUT / "GENERATED_BY.md").write_text(
        "# Generated file set — do not edit by hand\n\n"
        f"torch.optim.AdamW (foreach=False, betas (0.9, 0.999), eps 1e-8, weight decay {WEIGHT_DECAY}) + "
        f"clip_grad_norm_(max_norm={MAX_NORM}) + warm-up/cosine schedule (training.md §5.5, base {BASE_LR}, "
        f"warm-up ratio {WARMUP_RATIO}) for {STEPS} optimizer steps with accumulation {ACCUM} on three small "
        "random f32 tensors (generator seed 20251127). `tensors.safetensors`: `init.<n>`, `grad.<step>.<micro>.<n>` "
        "(raw per-micro-iteration gradients, before the division by the accumulation count), `param.<step>.<n>` "
        "(after each step), final `exp_avg.<n>` / `exp_avg_sq.<n>`. `meta.json`: settings, per-step lr and "
        "pre-clip global norm.\n\n"
        "Command: `tools/reference/.venv/bin/python tools/reference/train/make_optim_fixtures.py` "
        "(or `tools/reference/regenerate.sh train`).\n\n"
        f"torch {torch.__version__}\n"
    )


if __name__ == "__main__":
    main()
