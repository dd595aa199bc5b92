"""Processor side of the reference: regions → masks → label map → tiles, boxes, prompts (gar-spec §6–§8.2).

The image path is transformers' own PerceptionLMImageProcessorFast (+ PerceptionLMProcessor for the text);
the label map goes through the SAME processor's own `resize` (grid choice + torchvision resize) with
resample = NEAREST and its own `_split`, as gar-spec §6.3/§8.2 describe.
"""

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from common import shared_data

TILE = 448


# ----------------------------------------------------------------------------------------------- regions
def decode_region(region: dict, height: int, width: int) -> np.ndarray:
    """Binary HxW mask of one region spec. Forms (exactly one key besides `prompt`):

    * {"mask_png": "assets/demo_mask_1.png"}: `Image.open(p).convert("L")` then `> 0` (gar-spec §8.1).
    * {"rle": {"size": [h, w], "counts": "..."}}: COCO compressed RLE, decoded with pycocotools.
    * {"box": [x0, y0, x1, y1]}: integer pixel box, half-open: rows y0..y1-1, cols x0..x1-1 are set.
    * {"polygon": [[x0, y0, x1, y1, ...], ...]}: rasterised with pycocotools frPyObjects + merge + decode.
    """
    if "mask_png" in region:
        m = np.array(Image.open(shared_data() / region["mask_png"]).convert("L")).astype(bool)
    elif "rle" in region:
        from pycocotools import mask as mask_utils

        rle = dict(region["rle"])
        rle["counts"] = rle["counts"].encode() if isinstance(rle["counts"], str) else rle["counts"]
        m = mask_utils.decode(rle).astype(bool)
    elif "box" in region:
        x0, y0, x1, y1 = region["box"]
        m = np.zeros((height, width), dtype=bool)
        m[y0:y1, x0:x1] = True
    elif "polygon" in region:
        from pycocotools import mask as mask_utils

        rles = mask_utils.frPyObjects(region["polygon"], height, width)
        m = mask_utils.decode(mask_utils.merge(rles)).astype(bool)
    else:
        raise ValueError(region)
    assert m.shape == (height, width), (m.shape, height, width)
    return m


def build_label_map(masks_by_prompt: dict, height: int, width: int, prompt_numbers: int) -> np.ndarray:
    """gar-spec §8.1: pixel = K for region <PromptK>, first region (lowest K) wins overlaps, else N."""
    lab = np.full((height, width), prompt_numbers, dtype=np.uint8)
    for k in sorted(masks_by_prompt):
        free = lab == prompt_numbers
        lab[masks_by_prompt[k] & free] = k
    return lab


def mask_bbox(mask: np.ndarray) -> list:
    """Normalised (x_min/W, y_min/H, x_max/W, y_max/H) of the nonzero pixels; max inclusive (gar-spec §8.1)."""
    h, w = mask.shape
    ys, xs = np.nonzero(mask)
    assert len(xs) > 0, "empty region mask"
    return [float(xs.min()) / w, float(ys.min()) / h, float(xs.max()) / w, float(ys.max()) / h]


# ----------------------------------------------------------------------------------------------- image
def load_image(rel_path: str) -> Image.Image:
    """Opened as the demos do (no conversion; the processor converts non-RGB with PIL convert)."""
    img = Image.open(shared_data() / rel_path)
    img.load()
    return img


def image_processor_from(ckpt_dir: Path):
    from transformers import PerceptionLMImageProcessorFast

    return PerceptionLMImageProcessorFast.from_pretrained(str(ckpt_dir))


def grid_for(proc, width: int, height: int, max_num_tiles: int):
    """(ncw, nch) exactly as PerceptionLMImageProcessorFast.resize chooses it for max_num_tiles.

    NB transformers' `resize` builds the candidate list from `self.max_num_tiles` (the attribute), and only
    checks the *argument* against 1; we therefore always set the attribute."""
    proc.max_num_tiles = max_num_tiles
    if max_num_tiles <= 1:
        return (1, 1)
    ar = proc._fit_image_to_canvas(img_width=width, img_height=height, tile_size=TILE)
    if ar is None:
        ar = proc._find_closest_aspect_ratio(img_width=width, img_height=height, tile_size=TILE)
    return tuple(int(x) for x in ar)


def process_image(proc, img: Image.Image, max_num_tiles: int):
    """Returns (pixel_values f32 [T,3,448,448], tiles_u8 [T,3,448,448], (ncw, nch))."""
    proc.max_num_tiles = max_num_tiles
    out = proc(images=img, return_tensors="pt", max_num_tiles=max_num_tiles)
    pv = out["pixel_values"][0]
    w, h = img.size
    ncw, nch = grid_for(proc, w, h, max_num_tiles)
    assert pv.shape[0] == 1 + ncw * nch, (pv.shape, ncw, nch)
    u8 = torch.round(pv * 127.5 + 127.5).clamp(0, 255).to(torch.uint8)
    # the fixture convention: pixel_values == (u8 - 127.5) / 127.5 in f32, bit for bit
    back = (u8.to(torch.float32) - 127.5) / 127.5
    assert torch.equal(back, pv), float((back - pv).abs().max())
    return pv, u8, (ncw, nch)


def process_label_map(proc, label_map: np.ndarray, max_num_tiles: int):
    """The label map through the processor's own resize/split with NEAREST: returns uint8 [T,448,448]."""
    from transformers.image_utils import PILImageResampling

    proc.max_num_tiles = max_num_tiles
    t = torch.from_numpy(label_map)[None, None].expand(1, 3, *label_map.shape).contiguous()  # RGB replicate
    thumb, _ = proc.resize(t, TILE, max_num_tiles=1, resample=PILImageResampling.NEAREST)
    canvas, (ncw, nch) = proc.resize(t, TILE, max_num_tiles=max_num_tiles, resample=PILImageResampling.NEAREST)
    tiles = proc._split(canvas, ncw, nch)
    stacked = torch.cat([thumb.unsqueeze(1), tiles], dim=1)[0]  # [T,3,448,448]
    assert torch.equal(stacked[:, 0], stacked[:, 1]) and torch.equal(stacked[:, 0], stacked[:, 2])
    return stacked[:, 0].contiguous(), (int(ncw), int(nch))


def stacked_rgb(tiles_u8: torch.Tensor) -> np.ndarray:
    """[T,3,448,448] → HWC image of T*448 rows."""
    T = tiles_u8.shape[0]
    return tiles_u8.permute(0, 2, 3, 1).reshape(T * TILE, TILE, 3).numpy()


def stacked_gray(labels: torch.Tensor) -> np.ndarray:
    T = labels.shape[0]
    return labels.reshape(T * TILE, TILE).numpy()


def thumbnail_and_canvas_info(img: Image.Image, ncw: int, nch: int) -> dict:
    w, h = img.size
    return {
        "image_size": [w, h],
        "image_mode": img.mode,
        "thumbnail_resize": {"from": [w, h], "to": [TILE, TILE], "interpolation": "bicubic antialias"},
        "canvas_resize": {"from": [w, h], "to": [ncw * TILE, nch * TILE], "interpolation": "bicubic antialias"},
        "aspect_ratio": [ncw, nch],
        "num_tiles": 1 + ncw * nch,
    }
