"""Parity fixtures for crates/gar-sam: a tiny random SAM in the exact HF layout and what transformers'
SamModel + SamProcessor compute with it on real images from shared/data.

Usage: make_sam_fixtures.py SHARED_DATA_DIR OUT_DIR   (normally through regenerate_sam.sh)

Outputs (OUT_DIR = fixtures/sam):
  tiny/                 SamModel.save_pretrained + SamProcessor.save_pretrained of the tiny random model
  cases.json            images (sizes, pixel checksums) and prompt cases (prompts, scores, best index, area)
  reference.safetensors per image: embeddings (full for PNGs, [..., ::2, ::2] for JPEGs), pixel_values[:, ::32, ::32];
                        per case: iou_scores (3,), low-res logits[:, 1::5, 1::5] (3, 52, 52)
  masks/<case>.png      the three post-processed candidate masks stacked vertically, 1-bit PNG
  GENERATED_BY.md
"""

import json
import math
import os
import sys

import numpy as np
import torch
from PIL import Image
from safetensors.torch import save_file
from transformers import SamConfig, SamImageProcessor, SamModel, SamProcessor
import transformers

SEED = 0
torch.set_num_threads(1)
torch.use_deterministic_algorithms(True)

# Small dimensions, real structure: 1024 input, 16-px patches (64x64 grid), windowed + global
# attention with relative positions, 3 multimask outputs, 2-layer two-way transformer.
CONFIG = dict(
    vision_config=dict(
        hidden_size=16,
        output_channels=32,
        num_hidden_layers=4,
        num_attention_heads=2,
        mlp_dim=32,
        window_size=14,
        global_attn_indexes=[1, 3],
        num_pos_feats=16,
    ),
    prompt_encoder_config=dict(hidden_size=32, mask_input_channels=8),
    mask_decoder_config=dict(
        hidden_size=32,
        mlp_dim=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        iou_head_hidden_dim=32,
    ),
)

IMAGES = {
    # RGBA PNG (alpha dropped by convert("RGB"), as the reference does), already 1024 wide: no resampling.
    "demo1": "assets/demo_image_1.png",
    # 640x427 RGB: upscaled to 1024x683.
    "demo3": "assets/demo_image_3.png",
    # 2048x1365 progressive JPEG: downscaled (antialiased bilinear) to 1024x683.
    "demo2": "assets/demo_image_2.jpg",
    # 515x640 portrait JPEG: padding on the right.
    "coco18519": "evaluation/Ferret-Bench/annotations/coco/val2017/000000018519.jpg",
}

SCRIBBLE_POINTS = 5
# Two images get their whole embedding stored, the other two a [..., ::2, ::2] sample (fixture size).
FULL_EMBEDDINGS = ("demo1", "demo3")
# (image, (width, height)) resized with PIL bilinear for exact resampling checks.
RESIZE_CHECKS = [("demo3", (300, 200)), ("demo1", (517, 389)), ("demo1", (1500, 1128)), ("demo3", (641, 1000))]


def scribble_to_points(polyline, count=SCRIBBLE_POINTS):
    """Same rule as gar_sam::scribble_points: `count` points evenly spaced by arc length, ends included."""
    pts = [(float(x), float(y)) for x, y in polyline]
    seg = [math.hypot(b[0] - a[0], b[1] - a[1]) for a, b in zip(pts, pts[1:])]
    total = sum(seg)
    if len(pts) == 1 or total == 0.0 or count == 1:
        return [list(pts[0])]
    out = []
    for i in range(count):
        target = total * i / (count - 1)
        j, acc = 0, 0.0
        while j < len(seg) - 1 and acc + seg[j] < target:
            acc += seg[j]
            j += 1
        t = 0.0 if seg[j] == 0.0 else min(max((target - acc) / seg[j], 0.0), 1.0)
        a, b = pts[j], pts[j + 1]
        out.append([a[0] + t * (b[0] - a[0]), a[1] + t * (b[1] - a[1])])
    return out


# (name, image, points [[x, y, label]], box [x1, y1, x2, y2] or None, scribble polyline or None)
CASES = [
    ("demo1_point", "demo1", [[512, 385, 1]], None, None),
    ("demo1_points", "demo1", [[300, 400, 1], [700, 300, 0]], None, None),
    ("demo1_box", "demo1", [], [200, 150, 800, 600], None),
    ("demo1_box_point", "demo1", [[500, 380, 1]], [200, 150, 800, 600], None),
    ("demo3_point", "demo3", [[320, 200, 1]], None, None),
    ("demo3_box", "demo3", [], [100, 80, 500, 400], None),
    ("demo3_scribble", "demo3", None, None, [[100, 300], [250, 200], [400, 250], [550, 150]]),
    ("demo2_point", "demo2", [[1000, 700, 1]], None, None),
    ("demo2_box_points", "demo2", [[1000, 700, 1], [500, 400, 0]], [400, 300, 1600, 1100], None),
    ("coco18519_points", "coco18519", [[250, 300, 1], [100, 600, 0]], None, None),
    ("coco18519_box", "coco18519", [], [50, 100, 450, 600], None),
]


def randomise(model):
    """Replaces HF's init (which zeroes pos_embed and rel_pos) so every weight is exercised."""
    gen = torch.Generator().manual_seed(SEED)
    with torch.no_grad():
        for name, p in sorted(model.named_parameters()):
            noise = torch.randn(p.shape, generator=gen)
            if "norm" in name and name.endswith("weight"):
                p.copy_(1.0 + 0.1 * noise)
            elif name.endswith("bias"):
                p.copy_(0.1 * noise)
            elif name.endswith("pos_embed") or "rel_pos" in name:
                p.copy_(0.2 * noise)
            else:
                fan_in = p[0].numel() if p.dim() > 1 else p.numel()
                p.copy_(noise / math.sqrt(fan_in))


def open_rgb(shared, rel):
    """How GAR's demo/gar_with_sam.py opens images before handing them to SamProcessor."""
    return Image.open(os.path.join(shared, rel)).convert("RGB")


def weighted_sum(a):
    flat = a.reshape(-1).astype(np.int64)
    return int(flat.sum()), int((flat * (np.arange(flat.size, dtype=np.int64) % 251)).sum())


def main():
    shared, out = sys.argv[1], sys.argv[2]
    os.makedirs(os.path.join(out, "masks"), exist_ok=True)
    torch.manual_seed(SEED)
    config = SamConfig(**CONFIG)
    model = SamModel(config).eval()
    randomise(model)
    model.tie_weights()
    processor = SamProcessor(SamImageProcessor())
    model.save_pretrained(os.path.join(out, "tiny"), safe_serialization=True)
    processor.save_pretrained(os.path.join(out, "tiny"))

    tensors, meta_images, meta_cases, embeddings = {}, {}, [], {}
    for key, rel in IMAGES.items():
        image = open_rgb(shared, rel)
        inputs = processor(images=image, return_tensors="pt")
        # What the processor resized (uint8, before rescale/normalise), for exact preprocessing checks.
        rgb_hwc = np.array(image)
        ip = processor.image_processor
        resized = ip.resize(rgb_hwc, ip.size, resample=ip.resample)  # _preprocess passes self.resample
        with torch.no_grad():
            emb = model.get_image_embeddings(inputs["pixel_values"])
        embeddings[key] = emb
        if key in FULL_EMBEDDINGS:
            tensors[f"{key}.embeddings"] = emb.contiguous()
        else:
            tensors[f"{key}.embeddings_s2"] = emb[:, :, ::2, ::2].contiguous()
        tensors[f"{key}.pixel_values_s32"] = inputs["pixel_values"][0, :, ::32, ::32].contiguous()
        ds, dw = weighted_sum(rgb_hwc)
        rs, rw = weighted_sum(resized)
        meta_images[key] = {
            "path": rel,
            "original_size": [int(v) for v in inputs["original_sizes"][0]],
            "reshaped_size": [int(v) for v in inputs["reshaped_input_sizes"][0]],
            "decoded_sum": ds,
            "decoded_wsum": dw,
            "resized_sum": rs,
            "resized_wsum": rw,
        }

    # PIL bilinear at other sizes (downscaling is antialiased: wider filter), on PNG-decoded images so
    # the Rust side can match exactly.
    resize_checks = []
    for key, (w, h) in RESIZE_CHECKS:
        rgb_hwc = np.array(open_rgb(shared, IMAGES[key]))
        out_img = np.array(Image.fromarray(rgb_hwc).resize((w, h), resample=Image.BILINEAR))
        s, ws = weighted_sum(out_img)
        resize_checks.append({"image": key, "size": [w, h], "sum": s, "wsum": ws})

    for name, key, points, box, scribble in CASES:
        image = open_rgb(shared, IMAGES[key])
        if scribble is not None:
            points = [p + [1] for p in scribble_to_points(scribble)]
        kwargs = {}
        if points:
            kwargs["input_points"] = [[[p[0], p[1]] for p in points]]
            kwargs["input_labels"] = [[int(p[2]) for p in points]]
        if box is not None:
            kwargs["input_boxes"] = [[box]]
        inputs = processor(images=image, return_tensors="pt", **kwargs)
        prompt = {k: inputs[k] for k in ("input_points", "input_labels", "input_boxes") if k in inputs}
        with torch.no_grad():
            outputs = model(image_embeddings=embeddings[key], multimask_output=True, **prompt)
        masks = processor.post_process_masks(
            outputs.pred_masks, inputs["original_sizes"], inputs["reshaped_input_sizes"]
        )[0][0]  # (3, H, W) bool
        scores = outputs.iou_scores[0, 0]
        best = int(torch.argmax(scores))
        tensors[f"{name}.iou_scores"] = scores.contiguous()
        tensors[f"{name}.low_res_s5"] = outputs.pred_masks[0, 0, :, 1::5, 1::5].contiguous()
        stacked = np.ascontiguousarray(masks.reshape(-1, masks.shape[-1]).numpy())
        Image.fromarray(stacked).save(os.path.join(out, "masks", f"{name}.png"))
        meta_cases.append({
            "name": name,
            "image": key,
            "points": points,
            "box": box,
            "scribble": scribble,
            "scores": [float(s) for s in scores],
            "best": best,
            "area": int(masks[best].sum()),
        })

    save_file(tensors, os.path.join(out, "reference.safetensors"), metadata={"generator": "make_sam_fixtures.py"})
    with open(os.path.join(out, "cases.json"), "w") as f:
        json.dump({"images": meta_images, "cases": meta_cases, "resize_checks": resize_checks,
                   "scribble_points": SCRIBBLE_POINTS}, f, indent=1)
        f.write("\n")
    with open(os.path.join(out, "GENERATED_BY.md"), "w") as f:
        f.write(GENERATED_BY.format(torch=torch.__version__, transformers=transformers.__version__,
                                    numpy=np.__version__, pillow=Image.__version__, seed=SEED))


GENERATED_BY = """# fixtures/sam

Generated by `tools/reference/sam/regenerate_sam.sh` (runs
`tools/reference/sam/make_sam_fixtures.py ../shared/data fixtures/sam` in `tools/reference/.venv`).
Byte-identical from run to run (one torch thread, deterministic algorithms, seed {seed}).

Versions: torch {torch}, transformers {transformers}, numpy {numpy}, pillow {pillow}.

* `tiny/`: `SamModel` with a small `SamConfig` (vision hidden 16, 4 layers with global attention at 1 and 3,
  window 14, 2 heads; prompt/decoder hidden 32; real 1024 input, 16-px patches, 3 multimask outputs),
  every parameter re-drawn from `torch.Generator().manual_seed({seed})` (HF's init zeroes `pos_embed` and
  `rel_pos_*`), saved with `save_pretrained` (HF key names) plus `SamProcessor` defaults.
* Images are opened as GAR's `demo/gar_with_sam.py` does: `Image.open(path).convert("RGB")` (alpha dropped).
* `cases.json`: per image its path under shared/data, original/reshaped size, pixel checksums (sum and
  sum of value·(index mod 251) over the decoded RGB and the resized uint8 image); per case the prompts,
  the three IoU scores, the best index (argmax) and the best mask's area; `resize_checks`: checksums of
  PIL bilinear resizes of the PNG images to other sizes (down and up, non-integer factors).
* `reference.safetensors`: `<image>.embeddings` (1, 32, 64, 64) for the PNG images, `<image>.embeddings_s2`
  (embeddings[..., ::2, ::2]) for the JPEGs (to keep the fixture small),
  `<image>.pixel_values_s32` (pixel_values[0, :, ::32, ::32]), `<case>.iou_scores` (3,), `<case>.low_res_s5` (pred_masks[0, 0, :, 1::5, 1::5]; offset 1 and
  stride 5 visit every phase of the two stride-2 transposed convolutions).
* `masks/<case>.png`: `SamProcessor.post_process_masks` output (binarised at 0), candidates 0, 1, 2 stacked
  vertically (3·H rows × W columns), 1-bit PNG.
"""

if __name__ == "__main__":
    main()
