"""Processor fixtures: fixtures/processor/tiling.json (grid choice) and fixtures/processor/images/<case>/
(tiles of real images + label maps, through transformers' PerceptionLMImageProcessorFast)."""

import hashlib
import json
import random
import shutil
import sys

import numpy as np

from common import CKPT_DIR, FIXTURES, setup_torch, shared_data, write_generated_by, write_json, write_png
from processor_reference import (
    build_label_map,
    decode_region,
    grid_for,
    image_processor_from,
    load_image,
    mask_bbox,
    process_image,
    process_label_map,
    stacked_gray,
    stacked_rgb,
    thumbnail_and_canvas_info,
)

OUT = FIXTURES / "processor"
ROW_STRIDE = 29
PROMPT_NUMBERS = 5
M_VALUES = (8, 16, 36)
TILING_M = (1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 12, 16, 20, 24, 25, 36, 48)
GB = "evaluation/GAR-Bench/annotations"
FERRET = "evaluation/Ferret-Bench/annotations"


def tiling_cases(proc):
    rnd = random.Random(20240607)
    sizes = set()
    for _ in range(2400):  # log-uniform sizes 1..12000
        w = int(round(10 ** rnd.uniform(0, 4.08)))
        h = int(round(10 ** rnd.uniform(0, 4.08)))
        sizes.add((max(1, w), max(1, h)))
    for _ in range(600):  # photo-like sizes
        sizes.add((rnd.randint(200, 2500), rnd.randint(200, 2500)))
    for _ in range(300):  # extreme aspect ratios
        a = rnd.randint(1, 60)
        b = rnd.randint(a * 8, a * 400)
        sizes.add((a, b))
        sizes.add((b, a))
    for i in range(1, 13):  # exact multiples of 448 and ±1
        for j in range(1, 13):
            for d in (-1, 0, 1):
                sizes.add((448 * i + d, 448 * j))
                sizes.add((448 * i, 448 * j + d))
    for s in (1, 2, 3, 13, 14, 447, 448, 449, 895, 896, 897, 16384, 20000):
        sizes.add((s, s))
        sizes.add((s, 1))
        sizes.add((1, s))
    sizes = sorted(sizes)
    cases = []
    for idx, (w, h) in enumerate(sizes):
        # every size with a few M values (always incl. one of 1/4/8/16/36 in rotation)
        ms = {TILING_M[idx % len(TILING_M)], (1, 4, 8, 16, 36)[idx % 5], rnd.choice(TILING_M)}
        for m in sorted(ms):
            ncw, nch = grid_for(proc, w, h, m)
            assert ncw * nch <= max(m, 1)
            cases.append([w, h, m, ncw, nch])
    return cases


def image_cases():
    """(name, image path, regions) — regions use the forms of processor_reference.decode_region."""
    ferret = json.loads((shared_data() / FERRET / "box_refer_caption.json").read_text())
    f0 = ferret[0]
    vqa = json.loads((shared_data() / GB / "GAR-Bench-VQA.json").read_text())
    simple = json.loads((shared_data() / GB / "GAR-Bench-Caption-Simple.json").read_text())

    def gb(items, i):
        return [{"prompt": k, "rle": r} for k, r in enumerate(items[i]["mask_rles"])]

    return [
        ("demo1", "assets/demo_image_1.png", [{"prompt": 1, "mask_png": "assets/demo_mask_1.png"}]),
        ("demo2_box", "assets/demo_image_2.jpg", [{"prompt": 1, "box": [812, 356, 1391, 1102]}]),
        ("demo3_multi", "assets/demo_image_3.png", [{"prompt": k, "mask_png": f"assets/demo_mask_3_{k}.png"} for k in range(3)]),
        ("ferret_69138_boxpoly", f"{FERRET}/coco/val2017/{f0['image']}", [{"prompt": 1, "polygon": f0["annotation"]["segmentation"]}]),
        (
            "ferret_18519_polygon",
            f"{FERRET}/coco/val2017/000000018519.jpg",
            [
                {"prompt": 0, "polygon": [[40.5, 600.25, 480.0, 520.75, 260.3, 60.1]]},
                {"prompt": 2, "polygon": [[300.0, 300.0, 500.0, 310.0, 510.0, 630.0, 310.0, 620.0, 420.0, 450.0]]},
            ],
        ),
        ("ferret_10764_noregion", f"{FERRET}/coco/val2017/000000010764.jpg", []),
        ("garbench_vqa0", f"{GB}/images/vqa_0.png", gb(vqa, 0)),
        ("garbench_vqa200", f"{GB}/images/vqa_200.png", gb(vqa, 200)),
        ("garbench_vqa264", f"{GB}/images/vqa_264.png", gb(vqa, 264)),
        ("garbench_vqa312", f"{GB}/images/vqa_312.png", gb(vqa, 312)),
        ("garbench_simple96", f"{GB}/images/caption_simple_96.png", gb(simple, 96)),
    ]


def main(argv):
    setup_torch(2)
    proc = image_processor_from(CKPT_DIR / "tiny-pe-l")
    if OUT.exists():
        shutil.rmtree(OUT)
    OUT.mkdir(parents=True)

    cases = tiling_cases(proc)
    write_json(OUT / "tiling.json", {"cases": cases, "columns": ["w", "h", "max_num_tiles", "ncw", "nch"]}, indent=None)
    print("tiling cases:", len(cases), flush=True)

    for name, path, regions in image_cases():
        img = load_image(path)
        w, h = img.size
        masks = {r["prompt"]: decode_region(r, h, w) for r in regions}
        prompts = sorted(masks)
        label_map = build_label_map(masks, h, w, PROMPT_NUMBERS) if masks else None
        bboxes = [mask_bbox(masks[k]) for k in prompts]
        for M in M_VALUES:
            pv, tiles_u8, (ncw, nch) = process_image(proc, img, M)
            rgb = stacked_rgb(tiles_u8)
            d = OUT / "images" / f"{name}_m{M}"
            d.mkdir(parents=True)
            write_png(d / "rows.png", np.ascontiguousarray(rgb[::ROW_STRIDE]))
            meta = {
                "case": f"{name}_m{M}",
                "image": path,
                "max_num_tiles": M,
                "row_stride": ROW_STRIDE,
                "rows_png_rows": int(rgb[::ROW_STRIDE].shape[0]),
                "stacked_rows": int(rgb.shape[0]),
                "tiles_u8_sha256": hashlib.sha256(np.ascontiguousarray(rgb).tobytes()).hexdigest(),
                "tile_means": [float(x) for x in tiles_u8.to(dtype=__import__("torch").float64).mean(dim=(1, 2, 3))],
                "regions": regions,
                "region_prompt_indices": prompts,
                "bboxes": bboxes,
                "prompt_numbers": PROMPT_NUMBERS,
            }
            meta.update(thumbnail_and_canvas_info(img, ncw, nch))
            if label_map is not None:
                labels, grid2 = process_label_map(proc, label_map, M)
                assert grid2 == (ncw, nch)
                lab = stacked_gray(labels)
                write_png(d / "labels.png", lab)
                meta["labels_u8_sha256"] = hashlib.sha256(np.ascontiguousarray(lab).tobytes()).hexdigest()
                meta["label_counts"] = {str(v): int((lab == v).sum()) for v in sorted(set(lab.flatten().tolist()))}
                meta["full_res_label_counts"] = {
                    str(v): int((label_map == v).sum()) for v in sorted(set(label_map.flatten().tolist()))
                }
            write_json(d / "meta.json", meta)
            print(f"{name}_m{M}: {w}x{h} -> ({ncw},{nch}) T={1 + ncw * nch}", flush=True)

    write_generated_by(
        OUT,
        "tools/reference/.venv/bin/python tools/reference/make_processor_fixtures.py",
        "Processor parity: tiling.json (grid choice of transformers' PerceptionLMImageProcessorFast, calling its own "
        "`_fit_image_to_canvas` / `_find_closest_aspect_ratio` with `max_num_tiles` set as the attribute) and "
        "images/<case>/ (rows of the stacked uint8 tiles, NEAREST label maps). See fixtures/README.md.",
    )


if __name__ == "__main__":
    main(sys.argv)
