"""Independent Python encoding of constructed training samples (training.md §2.6–§2.9) → fixtures/train/encode/.

Usage: make_encode_fixtures.py            (cases whose data is missing are skipped with a message)

Each case is a constructed sample — image, masks bound to <PromptK>, turns with `[[crop K]]` markers (the
SampleSpec the Rust encoder takes) — encoded the way GAR's training dataset does it, with no Rust output read:

* the checkpoint's PerceptionLMProcessor (transformers 4.56.2) `apply_chat_template(messages,
  add_generation_prompt=False, tokenize=True, return_dict=True)` on the RGB image → input_ids, pixel_values,
  aspect ratio; `<|image|>` expansion and the single BOS are the processor's own;
* the numpy label map (pixel = K of the first region holding it, else prompt_numbers) as a PIL image through
  the SAME processor call (messages_mask, bicubic, §2.7 item 5) → global_mask_values; the ids of both calls must
  agree (§2.7 item 6); the model-side labels are clamp(round((v+1)/2·255), 0, prompt_numbers);
* boxes from the full-resolution masks (§2.6), keyed by crop token id;
* labels by parse_label (§2.8), the assistant-header pattern taken from the tokenizer.

Stored per case (small): the spec, input_ids, labels, tile grid, boxes (f64), pixel_values sum / sum of squares /
a strided sample, label-map histogram / sum / strided sample. Real photographs come from ../shared/data and
are never stored.
"""

import json
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
from common import shared_data, write_generated_by  # noqa: E402

REPO = HERE.parents[2]
OUT = REPO / "fixtures" / "train" / "encode"
CKPTS = REPO / "fixtures" / "checkpoints"

# Strides of the stored samples: primes, so the sample walks across channels, rows and tiles.
PIXEL_STRIDE = 7919
LABEL_STRIDE = 1009

SYNTH = {"synthetic": "stripes_120x80"}
RECT = {"box": [12, 10, 50, 44]}  # half-open columns 12..49, rows 10..43
DISC = {"disc": [88, 50, 260]}  # (x-88)^2 + (y-50)^2 < 260

CASES = {
    # (a) one region, one turn, two tiles.
    "pe-l_synth_single": {
        "checkpoint": "tiny-pe-l",
        "max_num_tiles": 1,
        "image": SYNTH,
        "regions": [{"prompt": 0, **RECT}],
        "turns": [
            {
                "user": "<image>\nThere are some objects I am curious about: <Prompt0>; \n<Prompt0>: [[crop 0]]\n\n"
                "Describe <Prompt0>.",
                "assistant": "A striped red box with a dark edge.",
            }
        ],
    },
    # (b) two regions with non-default prompt ids, two turns, the checkpoint's own tile cap.
    "pe-g_synth_two": {
        "checkpoint": "tiny-pe-g",
        "max_num_tiles": None,
        "image": SYNTH,
        "regions": [{"prompt": 2, **RECT}, {"prompt": 0, **DISC}],
        "turns": [
            {
                "user": "<image>\nThere are some objects I am curious about: <Prompt2>; <Prompt0>; \n"
                "<Prompt2>: [[crop 2]]\n<Prompt0>: [[crop 0]]\n\nWhich is left?",
                "assistant": "<Prompt2> is left of <Prompt0>.",
            },
            {"user": "And the colour?", "assistant": "Both are green."},
        ],
    },
    # (c) a real photograph (demo 3 of the GAR repository), two regions, a negative-pair style answer.
    "pe-l_photo_two": {
        "checkpoint": "tiny-pe-l",
        "max_num_tiles": 4,
        "image": {"data": "assets/demo_image_3.png"},
        "regions": [
            {"prompt": 1, "mask_png": "assets/demo_mask_3_0.png"},
            {"prompt": 3, "mask_png": "assets/demo_mask_3_1.png"},
        ],
        "turns": [
            {
                "user": "<image>\nThere are some objects I am curious about: <Prompt1>; <Prompt3>; \n"
                "<Prompt1>: [[crop 1]]\n<Prompt3>: [[crop 3]]\n\nWhat is <Prompt1> doing?",
                "assistant": "<Prompt1> stands next to <Prompt3>.",
            },
            {"user": "And <Prompt4>?", "assistant": "<Prompt4> is not in the image."},
        ],
    },
    # (c) the same photograph, one region, the other checkpoint and its full tile grid.
    "pe-g_photo_single": {
        "checkpoint": "tiny-pe-g",
        "max_num_tiles": None,
        "image": {"data": "assets/demo_image_3.png"},
        "regions": [{"prompt": 0, "mask_png": "assets/demo_mask_3_2.png"}],
        "turns": [
            {
                "user": "<image>\nThere are some objects I am curious about: <Prompt0>; \n<Prompt0>: [[crop 0]]\n\n"
                "Give a short description.",
                "assistant": "A small round object on the table.",
            }
        ],
    },
}


# ------------------------------------------------------------------------------------------ inputs
def synthetic_stripes() -> Image.Image:
    """120×80 RGB: R = (3x + y) mod 256, G = 5y mod 256, B = (x·y div 7) mod 256."""
    y, x = np.mgrid[0:80, 0:120]
    rgb = np.stack([(3 * x + y) % 256, (5 * y) % 256, (x * y // 7) % 256], axis=-1).astype(np.uint8)
    return Image.fromarray(rgb).convert("RGB")


def load_image(spec: dict):
    if "synthetic" in spec:
        assert spec["synthetic"] == "stripes_120x80", spec
        return synthetic_stripes()
    path = shared_data() / spec["data"]
    return Image.open(path).convert("RGB")


def region_mask(region: dict, width: int, height: int) -> np.ndarray:
    if "box" in region:
        x0, y0, x1, y1 = region["box"]
        m = np.zeros((height, width), dtype=bool)
        m[y0:y1, x0:x1] = True
        return m
    if "disc" in region:
        cx, cy, r2 = region["disc"]
        y, x = np.mgrid[0:height, 0:width]
        return (x - cx) ** 2 + (y - cy) ** 2 < r2
    m = np.array(Image.open(shared_data() / region["mask_png"]).convert("L")) > 0
    assert m.shape == (height, width), (m.shape, width, height)
    return m


def have_data(case: dict) -> bool:
    paths = [case["image"].get("data")] + [r.get("mask_png") for r in case["regions"]]
    try:
        root = shared_data()
    except SystemExit:
        return False
    return all((root / p).is_file() for p in paths if p)


# ---------------------------------------------------------------------------------------- encoding
def label_map(masks: dict, height: int, width: int, prompt_numbers: int) -> np.ndarray:
    """gar-spec §8.1 in GAR's form: start from −1 (int16 on numpy 1.x), K where prompt K's mask is and the
    pixel is still free (first mask in prompt order wins), then the rest becomes prompt_numbers."""
    lab = -1 * np.ones((height, width), dtype=np.int16)
    for k in sorted(masks):
        lab[(lab == -1) & masks[k]] = k
    lab[lab == -1] = prompt_numbers
    return lab


def box_of(mask: np.ndarray, width: int, height: int) -> list:
    """§2.6: min/max non-zero column/row (max inclusive) over W/H, float64."""
    ys, xs = np.nonzero(mask)
    return [xs.min() / width, ys.min() / height, xs.max() / width, ys.max() / height]


def run_lengths(values: list) -> list:
    """[[value, count], ...]: the 256·T image tokens and 256 crop tokens per region shrink to one pair."""
    out = []
    for v in values:
        if out and out[-1][0] == v:
            out[-1][1] += 1
        else:
            out.append([v, 1])
    return out


def parse_label(ids: list, header: list, eot: int) -> list:
    """§2.8: after each assistant header, supervise up to and including the first <|eot_id|>."""
    labels = [-100] * len(ids)
    i, n = 0, len(header)
    while i < len(ids):
        if ids[i : i + n] == header:
            start = i + n
            ends = [j for j in range(start, len(ids)) if ids[j] == eot]
            if not ends:
                break
            labels[start : ends[0] + 1] = ids[start : ends[0] + 1]
            i = ends[0] + 1
        else:
            i += 1
    return labels


def messages_of(turns: list, first_image, crop_name) -> list:
    """§2.7 item 2: `<image>\\n` dropped from the first turn, `[[crop K]]` → 256 crop tokens of <PromptK>."""
    out = []
    for i, t in enumerate(turns):
        text = t["user"].replace("<image>\n", "") if i == 0 else t["user"]
        for k in range(16):
            text = text.replace(f"[[crop {k}]]", crop_name(k) * 256)
        assert "[[crop" not in text, text
        content = ([{"type": "image", "image": first_image}] if i == 0 else []) + [{"type": "text", "text": text}]
        out.append({"role": "user", "content": content})
        out.append({"role": "assistant", "content": [{"type": "text", "text": t["assistant"]}]})
    return out


def tile_grid(ip, width: int, height: int):
    """(ncw, nch) as the image processor's `resize` picks it (the processor output does not carry it): the
    canvas that fits the image without down-scaling, else the closest aspect ratio; (1, 1) for one tile."""
    if ip.max_num_tiles <= 1:
        return 1, 1
    ar = ip._fit_image_to_canvas(img_width=width, img_height=height, tile_size=448)
    if ar is None:
        ar = ip._find_closest_aspect_ratio(img_width=width, img_height=height, tile_size=448)
    return int(ar[0]), int(ar[1])


def encode(case: dict) -> dict:
    from transformers import (
        AutoTokenizer,
        PerceptionLMImageProcessorFast,
        PerceptionLMProcessor,
        PerceptionLMVideoProcessor,
    )

    # The checkpoint's model_type "GAR" is unknown to AutoProcessor, so the processor is assembled from its
    # parts, as GAR's training config does (tokenizer + PLM image processor of the same folder).
    ckpt = CKPTS / case["checkpoint"]
    tok = AutoTokenizer.from_pretrained(str(ckpt))
    proc_cfg = json.loads((ckpt / "processor_config.json").read_text())
    proc = PerceptionLMProcessor(
        video_processor=PerceptionLMVideoProcessor(),
        image_processor=PerceptionLMImageProcessorFast.from_pretrained(str(ckpt)),
        tokenizer=tok,
        patch_size=proc_cfg["patch_size"],
        pooling_ratio=proc_cfg["pooling_ratio"],
        chat_template=tok.chat_template,
    )
    if case["max_num_tiles"] is not None:
        proc.image_processor.max_num_tiles = case["max_num_tiles"]
    prompt_numbers = json.loads((ckpt / "config.json").read_text())["prompt_numbers"]

    image = load_image(case["image"])
    w, h = image.size
    masks = {r["prompt"]: region_mask(r, w, h) for r in case["regions"]}
    lab = label_map(masks, h, w, prompt_numbers)
    lab_image = Image.fromarray(lab.astype(np.int32)).convert("I")  # GAR: int16 array → mode "I" PIL image

    def crop_name(k):
        return f"<|reserved_special_token_{k + 2}|>"

    kw = dict(add_generation_prompt=False, tokenize=True, return_dict=True, return_tensors="pt")
    out = proc.apply_chat_template(messages_of(case["turns"], image, crop_name), **kw)
    out_mask = proc.apply_chat_template(messages_of(case["turns"], lab_image, crop_name), **kw)
    assert torch.equal(out["input_ids"], out_mask["input_ids"]), "image and mask calls disagree on ids"
    ids = out["input_ids"][0].tolist()
    assert ids.count(tok.bos_token_id) == 1 and ids[0] == tok.bos_token_id, "expected exactly one leading BOS"

    header = tok.encode("<|start_header_id|>assistant<|end_header_id|>\n\n", add_special_tokens=False)
    eot = tok.convert_tokens_to_ids("<|eot_id|>")
    labels = parse_label(ids, header, eot)
    assert any(x != -100 for x in labels[1:])

    pv = out["pixel_values"][0].to(torch.float64)  # (T, 3, 448, 448)
    gm = out_mask["pixel_values"][0].to(torch.float32)
    ncw, nch = tile_grid(proc.image_processor, w, h)
    assert pv.shape[0] == 1 + ncw * nch, (pv.shape, ncw, nch)
    assert torch.equal(gm[:, 0], gm[:, 1]) and torch.equal(gm[:, 0], gm[:, 2]), "label map channels differ"
    mask_labels = torch.clamp(torch.round((gm[:, 0] + 1) / 2 * 255), 0, prompt_numbers).to(torch.int64)
    flat_l = mask_labels.reshape(-1)
    flat_p = pv.reshape(-1)

    crop_ids = {k: tok.convert_tokens_to_ids(crop_name(k)) for k in masks}
    # The inputs themselves, for the real-photo loss reference (make_photo_loss_fixtures.py).
    tensors = {
        "input_ids": torch.tensor(ids, dtype=torch.int64),
        "labels": torch.tensor(labels, dtype=torch.int64),
        "pixel_values": out["pixel_values"][0].to(torch.float32).contiguous(),
        "mask_labels": mask_labels.to(torch.uint8).contiguous(),
        "boxes": torch.tensor([box_of(masks[k], w, h) for k in sorted(masks)], dtype=torch.float64),
        "crop_token_ids": torch.tensor([crop_ids[k] for k in sorted(masks)], dtype=torch.int64),
        "aspect_ratio": torch.tensor([ncw, nch], dtype=torch.int64),
    }
    return tensors, {
        "num_tiles": int(pv.shape[0]),
        "aspect_ratio": [ncw, nch],
        "image_size": [w, h],
        "input_ids_rle": run_lengths(ids),
        "labels_rle": run_lengths(labels),
        "boxes": [{"prompt": k, "crop_token_id": crop_ids[k], "box": box_of(masks[k], w, h)} for k in sorted(masks)],
        "pixel_len": int(flat_p.numel()),
        "pixel_sum": float(flat_p.sum()),
        "pixel_sq_sum": float((flat_p * flat_p).sum()),
        "pixel_stride": PIXEL_STRIDE,
        "pixel_sample": [float(v) for v in flat_p[::PIXEL_STRIDE].tolist()],
        "label_len": int(flat_l.numel()),
        "label_sum": int(flat_l.sum()),
        "label_histogram": [int((flat_l == k).sum()) for k in range(prompt_numbers + 1)],
        "label_stride": LABEL_STRIDE,
        "label_sample": flat_l[::LABEL_STRIDE].tolist(),
        "background_label": prompt_numbers,
    }


def main() -> None:
    import numpy
    import transformers

    assert transformers.__version__ == "4.56.2", transformers.__version__
    OUT.mkdir(parents=True, exist_ok=True)
    for name, case in CASES.items():
        if not have_data(case):
            print(f"{name}: skipped, its image or masks are not in shared/data")
            continue
        _, enc = encode(case)
        path = OUT / f"{name}.json"
        body = {"case": case, "numpy": numpy.__version__, **enc}
        path.write_text(json.dumps(body, separators=(",", ":")) + "\n")
        print(f"{name}: {sum(c for _, c in enc['input_ids_rle'])} ids, {enc['num_tiles']} tiles, grid {enc['aspect_ratio']}, "
              f"{sum(c for v, c in enc['labels_rle'] if v != -100)} labels, {path.stat().st_size} bytes")
    write_generated_by(
        OUT,
        "tools/reference/.venv/bin/python tools/reference/train/make_encode_fixtures.py",
        "Independent Python encoding of constructed training samples (training.md §2.6–§2.9): PerceptionLMProcessor "
        "apply_chat_template on the image and on the label map (bicubic), boxes from full-resolution masks, "
        "labels by parse_label. Checked by crates/gar-train/tests/encode_parity.rs.",
    )


if __name__ == "__main__":
    main()
