"""Multi-image parity fixture fixtures/multi_image/: two small images in one PLM prompt, no regions.

transformers' PerceptionLMProcessor expands each `<|image|>` with the tile count of its own image
(`_expand_media_tokens`), and PerceptionLMForConditionalGeneration flattens pixel_values (B, T, 3, h, w)
to tiles and `masked_scatter`s the features into the image tokens in order. Two images with different
tile counts cannot be stacked into (B, T, ...) (`return_tensors="pt"` fails), so the tiles of both images
are concatenated along T: flatten(0, 1) of (1, T0 + T1, ...) is the same tile sequence the model would see.
The whole thing is checked against the stock model forward (input_ids + pixel_values) too.

The two images are synthetic (deterministic gradients) and stored next to the tensors so the Rust test
reads exactly what the reference read.
"""

import shutil
import sys

import numpy as np
import torch
from PIL import Image

from common import CKPT_DIR, FIXTURES, save_tensors, setup_torch, write_generated_by, write_json, write_png
from gar_reference import GARReference

OUT = FIXTURES / "multi_image"
CHECKPOINT = "tiny-pe-l"
MAX_NUM_TILES = 4
N_NEW = 12
PIXEL_STRIDE = 4099
# `<Prompt0>` without a region: plain text in a multi-image prompt (what an LLM judge sends).
TEXT = "1. The original image:\n2. <Prompt0>:\nIs the caption right? Answer True or False."


def synthetic(w: int, h: int, seed: int) -> np.ndarray:
    """A smooth RGB pattern with a few hard edges (so resizing has something to do)."""
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    r = 127.5 + 127.5 * np.sin(x / (3.0 + seed) + y / 7.0)
    g = 255.0 * x / max(w - 1, 1)
    b = np.where((x // (5 + seed) + y // 6) % 2 == 0, 230.0, 20.0)
    return np.clip(np.stack([r, g, b], -1).round(), 0, 255).astype(np.uint8)


def main(argv):
    setup_torch(2)
    if OUT.exists():
        shutil.rmtree(OUT)
    OUT.mkdir(parents=True)
    ref = GARReference(CKPT_DIR / CHECKPOINT)
    tok = ref.tokenizer
    arrays = [synthetic(48, 48, 0), synthetic(96, 40, 1)]
    names = ["image_0.png", "image_1.png"]
    for arr, name in zip(arrays, names):
        write_png(OUT / name, arr)
    # Read back what was written, as the Rust side will.
    images = [Image.open(OUT / n).convert("RGB") for n in names]

    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "image"}, {"type": "text", "text": TEXT}]}]
    rendered = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert rendered.count("<|image|>") == 2
    ref.image_processor.max_num_tiles = MAX_NUM_TILES
    # The GAR inference path tokenises with add_special_tokens=True (double BOS, gar-spec §7.4).
    # transformers 4.56 cannot batch images whose grids differ (its fast image processor stacks the resized
    # tiles of all images, with or without grouping), so each image goes through the image processor on
    # its own, and the text through the processor's own `_expand_media_tokens` + tokenizer call: exactly
    # the steps of PerceptionLMProcessor.__call__. The GAR inference path tokenises with
    # add_special_tokens=True (double BOS, gar-spec §7.4).
    per_image = [ref.image_processor(images=img, return_tensors="pt")["pixel_values"][0] for img in images]
    tiles = [int(p.shape[0]) for p in per_image]
    assert tiles[0] != tiles[1], tiles  # different grids: the interesting case
    expanded = ref.processor._expand_media_tokens(rendered, tok.image_token, iter(per_image))
    enc = tok(expanded, add_special_tokens=True)
    pv = torch.cat(per_image, 0)
    input_ids = torch.tensor(enc["input_ids"], dtype=torch.int64)
    n_img = int((input_ids == ref.image_token_id).sum())
    assert n_img == 256 * sum(tiles), (n_img, tiles)
    # Each image's run of <|image|> tokens is contiguous and the runs are separate only by the image order.
    pos = (input_ids == ref.image_token_id).nonzero().flatten()
    assert int(pos[-1] - pos[0]) + 1 == n_img

    with torch.no_grad():
        vision_out = ref.vision_forward(pv, None)
        _, image_features = ref.projector(vision_out)
        stock = ref.mllm.model.get_image_features(pixel_values=pv[None])
        assert torch.allclose(stock, image_features, atol=1e-5), float((stock - image_features).abs().max())
        emb = ref.build_inputs_embeds(input_ids, image_features, {})
        _, logits = ref.prefill(emb)
        full = ref.mllm(input_ids=input_ids[None], pixel_values=pv[None], use_cache=False).logits[0]
        assert torch.allclose(full, logits, atol=1e-5, rtol=1e-5), float((full - logits).abs().max())
        gen, step_logits, margins = ref.greedy(emb, N_NEW)
        hf = ref.hf_generate(emb, N_NEW)
    eot = tok.eos_token_id
    stop = gen[: gen.index(eot) + 1] if eot in gen else gen
    assert hf == stop, (hf, stop)

    save_tensors(
        OUT / "tensors.safetensors",
        {
            "input_ids": input_ids,
            "generated_tokens": torch.tensor(gen, dtype=torch.int64),
            "decode_logits": step_logits,
            # The tiles of both images in order, sampled (every PIXEL_STRIDE-th value) and summed per tile:
            # pins tiling and order without storing megabytes.
            "pixel_values_sample": pv.flatten()[::PIXEL_STRIDE].contiguous(),
            "pixel_values_tile_sums": pv.double().sum(dim=(1, 2, 3)),
        },
    )
    write_json(
        OUT / "meta.json",
        {
            "checkpoint": CHECKPOINT,
            "images": names,
            "image_sizes": [list(i.size) for i in images],
            "image_tiles": tiles,
            "max_num_tiles": MAX_NUM_TILES,
            "pixel_stride": PIXEL_STRIDE,
            "text": TEXT,
            "prompt_rendered": rendered,
            "bos_policy": "double",
            "seq_len": int(input_ids.shape[0]),
            "num_image_tokens": n_img,
            "n_new_tokens": N_NEW,
            "generated_tokens": gen,
            "hf_generate_tokens": hf,
            "eot_id": eot,
            "decoded_text": tok.decode(stop, skip_special_tokens=True).strip(),
            "greedy_min_margin": min(margins),
        },
    )
    write_generated_by(
        OUT,
        "tools/reference/.venv/bin/python tools/reference/make_multi_image_fixture.py",
        f"Two synthetic images in one PLM prompt on {CHECKPOINT} (no regions, max_num_tiles {MAX_NUM_TILES}): "
        f"input ids, greedy tokens ({N_NEW} steps, no stop) and each step's logits, f32 CPU.",
    )
    print(f"tiles={tiles} L={input_ids.shape[0]} gen={gen} min_margin={min(margins):.4f}", flush=True)


if __name__ == "__main__":
    main(sys.argv)
