"""Reference loss and gradients of the real-photo training samples → fixtures/train/loss_photo/<case>.json.

Usage: make_photo_loss_fixtures.py      (skipped with a message when ../shared/data lacks the demo assets)

Unlike make_loss_fixtures.py (whose inputs are the Rust encoder's), the inputs here are the independent Python
encoding of make_encode_fixtures.py (transformers processor, bicubic label map, parse_label), on a photograph
(demo 3 of the GAR repository). The forward/backward is the same GARReference one in f32. The gradients are
stored as per-tensor summaries to keep the fixture small: max |g|, Σg, Σg², and every `stride`-th value.
"""

import json
import sys
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))
from common import write_generated_by  # noqa: E402
from make_encode_fixtures import CASES, encode, have_data  # noqa: E402
from make_loss_fixtures import loss_and_grads  # noqa: E402

REPO = HERE.parents[2]
OUT = REPO / "fixtures" / "train" / "loss_photo"
PHOTO_CASES = ["pe-l_photo_two", "pe-g_photo_single"]
SAMPLES_PER_TENSOR = 16


def summary(g: torch.Tensor) -> dict:
    flat = g.reshape(-1).to(torch.float64)
    stride = max(1, flat.numel() // SAMPLES_PER_TENSOR)
    return {
        "shape": list(g.shape),
        "max_abs": float(flat.abs().max()),
        "sum": float(flat.sum()),
        "sq_sum": float((flat * flat).sum()),
        "stride": stride,
        "sample": [float(v) for v in flat[::stride].tolist()],
    }


def main() -> None:
    torch.manual_seed(0)
    torch.set_num_threads(2)
    OUT.mkdir(parents=True, exist_ok=True)
    for name in PHOTO_CASES:
        case = CASES[name]
        if not have_data(case):
            print(f"{name}: skipped, its image or masks are not in shared/data")
            continue
        inputs, _ = encode(case)
        loss, grads, untouched = loss_and_grads(case["checkpoint"], inputs)
        body = {
            "encode_case": name,
            "checkpoint": case["checkpoint"],
            "loss": loss.item(),
            "supervised_tokens": int((inputs["labels"][1:] != -100).sum()),
            "untouched": untouched,
            "grads": {k: summary(g) for k, g in sorted(grads.items())},
        }
        path = OUT / f"{name}.json"
        path.write_text(json.dumps(body, separators=(",", ":")) + "\n")
        print(f"{name}: loss {loss.item():.7f}, {len(grads)} gradients, {path.stat().st_size} bytes")
    write_generated_by(
        OUT,
        "tools/reference/.venv/bin/python tools/reference/train/make_photo_loss_fixtures.py",
        "Reference f32 loss and per-tensor gradient summaries of the real-photo training samples, on the "
        "independent Python encoding (fixtures/train/encode). Checked by crates/gar-train/tests/train_parity.rs.",
    )


if __name__ == "__main__":
    main()
