"""Greedy generation with the PyTorch reference on a checkpoint written by `gar train` (its export/).

Usage: generate_export.py MODEL_DIR IMAGE MASK [--instruction TEXT] [--slot K] [--max-num-tiles M]
                          [--max-new-tokens N]

Loads MODEL_DIR with transformers' PerceptionLMForConditionalGeneration (GARReference, the same loader as
the model fixtures), builds the single-region prompt `gar describe` sends (slot K, double BOS, nearest
label map), generates greedily with transformers' `generate` (stops at <|eot_id|>), and prints one JSON
line: {"tokens": ids without the end token, "stopped": bool, "margins": the top-1/top-2 logit gap of each
generated step (end token included), "min_margin": their smallest, "prompt_tokens": prompt length}. Used by
crates/gar-cli/tests/train_overfit.rs (live, when the venv exists) and by make_export_generate_fixture.py (which
stores the same object in fixtures/train/export_generate/expected.json for the test to use without the venv).
"""

import argparse
import json
import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

DEFAULT_INSTRUCTION = "Describe this masked region in detail."


def generate(model, image, mask, instruction=DEFAULT_INSTRUCTION, slot=1, max_num_tiles=None,
             max_new_tokens=16):
    """Greedy tokens of the single-region prompt on MODEL (see the module docstring for the fields)."""
    image, mask = Path(image).resolve(), Path(mask).resolve()
    # The fixture helpers read images relative to the shared data folder; point it at the inputs.
    os.environ["GAR_SHARED_DATA"] = str(image.parent)

    import torch

    from common import setup_torch
    from make_model_fixtures import prepare_case

    from gar_reference import GARReference

    setup_torch(2)
    ref = GARReference(Path(model))
    case = dict(
        image=os.path.relpath(image, image.parent),
        regions=[{"prompt": slot, "mask_png": os.path.relpath(mask, image.parent)}],
        kind="single",
        instruction=instruction,
        max_num_tiles=max_num_tiles,
        bos="double",
    )
    p = prepare_case(ref, case)
    eot = ref.tokenizer.eos_token_id
    with torch.no_grad():
        embeds = ref.build_inputs_embeds(p["input_ids"], p["image_features"], p["replay_by_cid"])
        hf = ref.hf_generate(embeds, max_new_tokens)
        plain, _, margins = ref.greedy(embeds, max_new_tokens)
    # transformers' generate and the plain KV-cache loop must agree up to the stop token.
    stop = plain[: plain.index(eot) + 1] if eot in plain else plain
    assert hf == stop, (hf, stop)
    tokens = hf[:-1] if hf and hf[-1] == eot else hf
    margins = margins[: len(hf)]
    return {
        "tokens": tokens,
        "stopped": bool(hf) and hf[-1] == eot,
        "margins": margins,
        "min_margin": min(margins),
        "prompt_tokens": int(p["input_ids"].shape[0]),
    }


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("image")
    ap.add_argument("mask")
    ap.add_argument("--instruction", default=DEFAULT_INSTRUCTION)
    ap.add_argument("--slot", type=int, default=1)
    ap.add_argument("--max-num-tiles", type=int, default=None)
    ap.add_argument("--max-new-tokens", type=int, default=16)
    args = ap.parse_args()
    out = generate(args.model, args.image, args.mask, args.instruction, args.slot, args.max_num_tiles,
                   args.max_new_tokens)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
