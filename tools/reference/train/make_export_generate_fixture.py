"""fixtures/train/export_generate/: what transformers generates on the export of the 50-step overfit run.

Usage: make_export_generate_fixture.py WORK_DIR

WORK_DIR is the folder written by the overfit test's run-only variant (tools/reference/regenerate.sh trainexport runs
`GAR_TRAIN_OVERFIT_DIR=WORK_DIR cargo test -p gar-cli --test train_overfit -- --ignored --exact
run_only_for_the_fixture`): the generated picture and masks, train.toml, run/log.jsonl and run/export/ (the HF
layout checkpoint `gar train` wrote after 25 + resume + 25 steps on fixtures/checkpoints/tiny-pe-l).

Copies run/export/ to export/ (the checkpoint the tokens are for; the test runs `gar describe` on it on every
machine) and writes expected.json with
* what identifies the run: the training config (the repo path replaced by `{repo}`), the sha256 of the decoded
  pixels of the picture and of the mask, the 50 logged losses, and the export's weights described per tensor
  (shape; mean, mean |w|, rms, max |w| of the weights and of the update export − initial checkpoint) plus the
  sha256 of model.safetensors (the test reports whether it is bit-identical, it does not rely on it);
* what transformers generates on it: generate_export.generate() with `gar describe`'s prompt (slot 1, double BOS,
  max_num_tiles 1, 16 new tokens) — the token ids, the top-1/top-2 logit gap of each step and the prompt length.
crates/gar-cli/tests/train_overfit.rs compares its own run with this file always, and also runs transformers live
when tools/reference/.venv exists.
"""

import hashlib
import json
import shutil
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent.parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

OUT = REPO / "fixtures/train/export_generate"
CHECKPOINT = REPO / "fixtures/checkpoints/tiny-pe-l"
MASK = "m1.png"
MAX_NUM_TILES = 1
MAX_NEW_TOKENS = 16
STEPS = 50


def pixels_sha256(path: Path, mode: str) -> str:
    import numpy as np
    from PIL import Image

    arr = np.asarray(Image.open(path).convert(mode), dtype=np.uint8)
    return hashlib.sha256(np.ascontiguousarray(arr).tobytes()).hexdigest()


def stats(a) -> dict:
    """Per-tensor statistics in f64 (the test computes the same ones in Rust)."""
    import numpy as np

    a = a.astype(np.float64).ravel()
    return {
        "mean": float(a.mean()),
        "mean_abs": float(np.abs(a).mean()),
        "rms": float(np.sqrt((a * a).mean())),
        "max_abs": float(np.abs(a).max()),
    }


def weight_stats(export: Path) -> dict:
    from safetensors.numpy import load_file

    after = load_file(str(export / "model.safetensors"))
    before = load_file(str(CHECKPOINT / "model.safetensors"))
    assert sorted(after) == sorted(before), "the export's keys differ from the checkpoint's"
    out = {}
    for key in sorted(after):
        w = after[key]
        assert str(w.dtype) == "float32", (key, w.dtype)
        out[key] = {
            "shape": list(w.shape),
            "weights": stats(w),
            "update": stats(w.astype("float64") - before[key].astype("float64")),
        }
    return out


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    work = Path(sys.argv[1]).resolve()
    export = work / "run" / "export"
    if not (export / "model.safetensors").is_file():
        sys.exit(f"{export}/model.safetensors is missing: run the test's run-only variant first (see the docstring)")

    losses = [json.loads(line) for line in (work / "run" / "log.jsonl").read_text().splitlines()]
    steps = [row["step"] for row in losses]
    assert steps == list(range(1, STEPS + 1)), f"the log does not hold steps 1..{STEPS} once each: {steps}"
    config = (work / "train.toml").read_text()
    repo_text = str(REPO.resolve())
    assert repo_text in config, "train.toml does not name the checkpoint under this repository"

    from common import sha256_file, versions, write_generated_by, write_json
    from generate_export import DEFAULT_INSTRUCTION, generate

    # The export itself is committed next to the tokens: the training is chaotic across CPUs (see
    # docs/training.md), so the test checks `gar describe` against transformers on this very export.
    committed = OUT / "export"
    shutil.rmtree(committed, ignore_errors=True)
    # its GENERATED_BY.md is the untrained tiny-pe-l's (copied by `gar train`), not this folder's story
    shutil.copytree(export, committed, ignore=shutil.ignore_patterns("GENERATED_BY.md"))
    generated = generate(committed, work / "img.png", work / MASK, DEFAULT_INSTRUCTION, 1, MAX_NUM_TILES,
                         MAX_NEW_TOKENS)
    v = versions()
    write_json(OUT / "expected.json", {
        "config": config.replace(repo_text, "{repo}"),
        "image_pixels_sha256": pixels_sha256(work / "img.png", "RGB"),
        "mask": MASK,
        "mask_pixels_sha256": pixels_sha256(work / MASK, "L"),
        "losses": [row["loss"] for row in losses],
        "export_sha256": sha256_file(export / "model.safetensors"),
        "export_tensors": weight_stats(export),
        "generate": {
            "instruction": DEFAULT_INSTRUCTION,
            "slot": 1,
            "max_num_tiles": MAX_NUM_TILES,
            "max_new_tokens": MAX_NEW_TOKENS,
            **generated,
        },
        "versions": {k: v[k] for k in ("torch", "transformers", "timm", "safetensors")},
    })
    write_generated_by(
        OUT,
        "tools/reference/regenerate.sh trainexport",
        """
What transformers generates on the export of `gar train`'s 50-step overfit run (25 steps, resume, 25 more) of
`crates/gar-cli/tests/train_overfit.rs`, and what identifies that export. The export and the inputs come from the
Rust trainer (the test's ignored `run_only_for_the_fixture`, with `GAR_TRAIN_OVERFIT_DIR=<dir>`); the tokens come
from transformers (`tools/reference/train/generate_export.py`: PerceptionLMForConditionalGeneration through
GARReference, `generate` greedy, `gar describe`'s prompt). Script: `tools/reference/train/make_export_generate_fixture.py
<dir>`. `expected.json`: training config, pixel checksums of the picture and mask, the 50 losses, per-tensor
statistics of the exported weights and of their update, the export's sha256, and transformers' token ids, per-step
top-1/top-2 logit gaps and prompt length. `export/`: that exported checkpoint as `gar train` wrote it, less the
GENERATED_BY.md it copies from tiny-pe-l (the tokens are transformers' on it; `gar describe` must give them on every
CPU, whereas a new 50-step run may differ across CPUs because the training is chaotic). Checked by `cargo test -p gar-cli --test train_overfit` (always; it also
runs transformers live when the venv exists).
""",
    )
    print(f"transformers tokens {generated['tokens']}, min margin {generated['min_margin']:.4f}", file=sys.stderr)


if __name__ == "__main__":
    main()
