"""Reference loss and gradients of one training sample (training.md §8) → fixtures/train/loss/<case>/.

Usage: make_loss_fixtures.py INPUT_DIR
INPUT_DIR holds <case>.safetensors, the ENCODED inputs written by the Rust test
crates/gar-train/tests/train_parity.rs (run with GAR_DUMP_TRAIN_INPUTS=INPUT_DIR). The encoding is
therefore Rust's (it is validated against the reference processor elsewhere); this script checks the
training forward and backward only: GARReference (transformers + timm + torchvision) in f32 with every
parameter requiring grad, loss = mean cross-entropy of the shifted labels != -100, one backward pass.
"""

import json
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
from gar_reference import GARReference  # noqa: E402

REPO = HERE.parents[2]
OUT = REPO / "fixtures" / "train" / "loss"
CASES = {"pe-l_single": "tiny-pe-l", "pe-g_two": "tiny-pe-g"}


def loss_and_grads(ckpt: str, inputs: dict):
    """Reference loss (f32 tensor) and the gradient of every checkpoint tensor (key → f32 tensor, zeros where
    the loss does not reach it), plus the keys of those untouched tensors."""
    ref = GARReference(REPO / "fixtures" / "checkpoints" / ckpt)
    params = dict(("mllm." + n, p) for n, p in ref.mllm.named_parameters())
    params["mask_patch_embedding.weight"] = ref.mask_patch_embedding.weight
    ckpt_keys = set(load_file(str(ref.ckpt_dir / "model.safetensors")))
    assert set(params) == ckpt_keys, set(params) ^ ckpt_keys  # tied head appears once, as in the file
    for p in params.values():
        p.requires_grad_(True)
        p.grad = None

    input_ids = inputs["input_ids"]
    labels = inputs["labels"]
    pv = inputs["pixel_values"]
    ncw, nch = (int(v) for v in inputs["aspect_ratio"])
    vision_out = ref.vision_forward(pv, ref.mask_embeds(inputs["mask_labels"]))
    _, image_features = ref.projector(vision_out)
    fmap = ref.merge_tiles(image_features, ncw, nch)
    replays = {}
    for bbox, cid in zip(inputs["boxes"].tolist(), inputs["crop_token_ids"].tolist()):
        replays[int(cid)], _ = ref.replay_one(fmap, bbox, ncw, nch)
    embeds = ref.build_inputs_embeds(input_ids, image_features, replays)
    logits = ref.mllm(inputs_embeds=embeds[None], use_cache=False).logits[0].float()
    loss = F.cross_entropy(logits[:-1], labels[1:], ignore_index=-100, reduction="mean")
    loss.backward()

    grads = {}
    for k, p in sorted(params.items()):
        g = p.grad if p.grad is not None else torch.zeros_like(p)
        grads[k] = g.detach().to(torch.float32).contiguous()
    untouched = [k for k, p in sorted(params.items()) if p.grad is None]
    return loss, grads, untouched


def run_case(name: str, ckpt: str, inputs: dict):
    loss, grads, untouched = loss_and_grads(ckpt, inputs)
    input_ids = inputs["input_ids"]
    labels = inputs["labels"]
    pv = inputs["pixel_values"]
    ncw, nch = (int(v) for v in inputs["aspect_ratio"])
    out = OUT / name
    out.mkdir(parents=True, exist_ok=True)
    save_file(grads, str(out / "grads.safetensors"))
    meta = {
        "checkpoint": ckpt,
        "loss": loss.item(),
        "supervised_tokens": int((labels[1:] != -100).sum()),
        "num_tiles": int(pv.shape[0]),
        "aspect_ratio": [ncw, nch],
        "input_ids": input_ids.tolist(),
        "labels": labels.tolist(),
        "pixel_sum": float(pv.double().sum()),
        "pixel_abs_sum": float(pv.double().abs().sum()),
        "mask_label_sum": int(inputs["mask_labels"].long().sum()),
        "untouched": untouched,
    }
    (out / "meta.json").write_text(json.dumps(meta, indent=1) + "\n")
    print(f"{name}: loss {loss.item():.7f}, {len(grads)} gradients", file=sys.stderr)


def main():
    torch.manual_seed(0)
    torch.set_num_threads(2)
    src = Path(sys.argv[1])
    for name, ckpt in CASES.items():
        run_case(name, ckpt, load_file(str(src / f"{name}.safetensors")))


if __name__ == "__main__":
    main()
