"""One reference optimiser step on the GAR gradients (training.md §5.3–§5.4, §8.2 item 8) →
fixtures/train/step/<case>.safetensors + step.json.

For each case of fixtures/train/loss/ (reference gradients of one training sample on a tiny checkpoint):
the checkpoint's f32 weights become torch Parameters holding those gradients (the tied embedding / LM head
is one tensor, as in the checkpoint file), `torch.nn.utils.clip_grad_norm_(max_norm=1.0)` clips them, and
one `torch.optim.AdamW` step with GAR's settings (lr 1e-5, betas (0.9, 0.999), eps 1e-8, weight decay 0;
single-tensor path) updates them. Stored compactly, per checkpoint tensor: the update Δ = p_after − p_before
(f32) at 24 positions (the 8 largest |g|, the 8 smallest non-zero |g| — where eps matters — and 8 spread
evenly), and in step.json the per-tensor sums Σ Δ and Σ |Δ| (f64), the count of non-zero Δ, the gradient
norm before clipping and the clip coefficient. crates/gar-train/tests/train_parity.rs runs gar-train's
clip + AdamW on the same gradients and on its own gradients and compares.
"""

import json
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[2]
LOSS = REPO / "fixtures" / "train" / "loss"
OUT = REPO / "fixtures" / "train" / "step"
CASES = {"pe-l_single": "tiny-pe-l", "pe-g_two": "tiny-pe-g"}
LR, BETAS, EPS, WD, CLIP = 1e-5, (0.9, 0.999), 1e-8, 0.0, 1.0
SAMPLES = 8


def sample_positions(g: torch.Tensor) -> list:
    flat = g.abs().flatten()
    n = flat.numel()
    largest = torch.argsort(flat, descending=True, stable=True)[:SAMPLES].tolist()
    nonzero = torch.nonzero(flat > 0).flatten()
    smallest = nonzero[torch.argsort(flat[nonzero], stable=True)[:SAMPLES]].tolist()
    spread = [i * n // SAMPLES for i in range(SAMPLES)]
    return sorted(set(largest) | set(smallest) | set(spread))


def run_case(name: str, ckpt: str):
    weights = load_file(str(REPO / "fixtures" / "checkpoints" / ckpt / "model.safetensors"))
    grads = load_file(str(LOSS / name / "grads.safetensors"))
    assert set(weights) == set(grads), set(weights) ^ set(grads)
    keys = sorted(weights)
    params = [torch.nn.Parameter(weights[k].to(torch.float32).clone()) for k in keys]
    before = [p.detach().clone() for p in params]
    for p, k in zip(params, keys):
        p.grad = grads[k].to(torch.float32).clone()
    norm = float(torch.nn.utils.clip_grad_norm_(params, CLIP))
    coef = min(1.0, CLIP / (norm + 1e-6))
    opt = torch.optim.AdamW(params, lr=LR, betas=BETAS, eps=EPS, weight_decay=WD, foreach=False)
    opt.step()

    tensors, per_tensor = {}, {}
    for k, p, p0 in zip(keys, params, before):
        delta = (p.detach() - p0).flatten()
        pos = sample_positions(grads[k])
        tensors[f"{k}.index"] = torch.tensor(pos, dtype=torch.int64)
        tensors[f"{k}.delta"] = delta[pos].contiguous()
        per_tensor[k] = {
            "sum": float(delta.double().sum()),
            "abs_sum": float(delta.double().abs().sum()),
            "nonzero": int((delta != 0).sum()),
            "numel": int(delta.numel()),
        }
    OUT.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(OUT / f"{name}.safetensors"))
    return {"checkpoint": ckpt, "grad_norm": norm, "clip_coef": coef, "tensors": per_tensor}


def main():
    torch.set_num_threads(2)
    meta = {
        "lr": LR, "betas": list(BETAS), "eps": EPS, "weight_decay": WD, "clip": CLIP,
        "torch": torch.__version__,
        "cases": {name: run_case(name, ckpt) for name, ckpt in CASES.items()},
    }
    (OUT / "step.json").write_text(json.dumps(meta, indent=1, sort_keys=True) + "\n")
    for name, c in meta["cases"].items():
        print(f"{name}: grad norm {c['grad_norm']:.6g}, clip coef {c['clip_coef']:.6g}", file=sys.stderr)


if __name__ == "__main__":
    main()
