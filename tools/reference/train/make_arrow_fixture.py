"""A small training set in the layout `datasets.Dataset.save_to_disk` writes (training.md §1.2–1.3): dataset_info.json,
state.json and two Arrow IPC *stream* shards, the first holding two record batches. Columns `image` (HF Image
feature: struct<bytes, path>), `conversations` (list<struct<from, value>>), `mask_rle` (list<struct<size, counts>>,
null for a row without masks) and an ignored `id`. Images are real benchmark assets (shared/data/assets), downscaled;
masks are the assets' masks, RLE-encoded with the cocoapi restatement of make_construct_fixtures.py.
`expected.json` holds what a reader must recover (image sizes, conversations, per-mask area and box from numpy).

Writes fixtures/train/arrow/{dataset,expected.json,GENERATED_BY.md}."""

import io
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))
import numpy as np  # noqa: E402
import pyarrow as pa  # noqa: E402
from PIL import Image  # noqa: E402

from common import FIXTURES, shared_data  # noqa: E402
from make_construct_fixtures import rle_encode  # noqa: E402

OUT = FIXTURES / "train" / "arrow"
WIDTH = 96


def load(name, mode, size=None):
    im = Image.open(shared_data() / "assets" / name).convert(mode)
    if size is None:
        size = (WIDTH, max(1, round(im.height * WIDTH / im.width)))
    return im.resize(size, Image.BICUBIC if mode == "RGB" else Image.NEAREST)


def png(im):
    b = io.BytesIO()
    im.save(b, format="PNG", optimize=False, compress_level=9)
    return b.getvalue()


def rle(mask):
    h, w = mask.shape
    return {"size": [h, w], "counts": rle_encode([int(v) for v in mask.reshape(-1)], w, h)}


def main():
    rows, expected = [], []
    img1 = load("demo_image_1.png", "RGB")
    img3 = load("demo_image_3.png", "RGB")
    img2 = load("demo_image_2.jpg", "RGB")
    m1 = (np.array(load("demo_mask_1.png", "L", img1.size)) > 0).astype(np.uint8)
    m3 = [(np.array(load(f"demo_mask_3_{k}.png", "L", img3.size)) > 0).astype(np.uint8) for k in range(3)]
    specs = [
        (img1, [m1], [("human", "<image>\nDescribe it."), ("gpt", "A small object on a table.")]),
        (img3, m3, [("human", "<image>\nWhat is it?"), ("gpt", "The first thing. It is red."),
                    ("human", "And this?"), ("gpt", "The second thing."),
                    ("human", "And that?"), ("gpt", "The third thing!")]),
        (img3, m3[:2], [("human", "<image>\nHow does <Prompt1> relate to <Prompt0>?"),
                        ("gpt", "<Prompt1> is left of <Prompt0>.")]),
        (img2, None, [("human", "<image>\nDescribe the image."), ("gpt", "A scene.")]),
        (img1, [m1], [("human", "<image>\nDescribe."), ("gpt", "Again the object, café ünïcode.")]),
    ]
    for i, (img, masks, conv) in enumerate(specs):
        rows.append({
            "id": f"row-{i}",
            "image": {"bytes": png(img), "path": None},
            "conversations": [{"from": f, "value": v} for f, v in conv],
            "mask_rle": None if masks is None else [rle(m) for m in masks],
        })
        exp_masks = None
        if masks is not None:
            exp_masks = []
            for m in masks:
                ys, xs = np.nonzero(m)
                exp_masks.append({"area": int(m.sum()), "box": [int(xs.min()), int(ys.min()), int(xs.max()), int(ys.max())]})
        expected.append({"width": img.width, "height": img.height, "conversations": [[f, v] for f, v in conv],
                          "masks": exp_masks, "rgb_sum": int(np.asarray(img, dtype=np.int64).sum())})
    schema = pa.schema([
        ("id", pa.string()),
        ("image", pa.struct([("bytes", pa.binary()), ("path", pa.string())])),
        ("conversations", pa.list_(pa.struct([("from", pa.string()), ("value", pa.string())]))),
        ("mask_rle", pa.list_(pa.struct([("size", pa.list_(pa.int64())), ("counts", pa.string())]))),
    ])
    ds = OUT / "dataset"
    ds.mkdir(parents=True, exist_ok=True)
    shards = [rows[:3], rows[3:]]
    names = []
    for k, shard in enumerate(shards):
        name = f"data-{k:05d}-of-{len(shards):05d}.arrow"
        names.append(name)
        with pa.OSFile(str(ds / name), "wb") as f, pa.ipc.new_stream(f, schema) as w:
            for start in range(0, len(shard), 2):  # record batches of 2 rows: a batch boundary inside a shard
                w.write_batch(pa.RecordBatch.from_pylist(shard[start:start + 2], schema=schema))
    features = {
        "id": {"dtype": "string", "_type": "Value"},
        "image": {"_type": "Image"},
        "conversations": [{"from": {"dtype": "string", "_type": "Value"}, "value": {"dtype": "string", "_type": "Value"}}],
        "mask_rle": [{"size": [{"dtype": "int64", "_type": "Value"}], "counts": {"dtype": "string", "_type": "Value"}}],
    }
    (ds / "dataset_info.json").write_text(json.dumps({"citation": "", "description": "", "features": features,
                                                      "homepage": "", "license": ""}, indent=2, sort_keys=True) + "\n")
    state = {"_data_files": [{"filename": n} for n in names], "_fingerprint": "0123456789abcdef",
             "_format_columns": None, "_format_kwargs": {}, "_format_type": None, "_output_all_columns": False,
             "_split": "train"}
    (ds / "state.json").write_text(json.dumps(state, indent=2, sort_keys=True) + "\n")
    (OUT / "expected.json").write_text(json.dumps({"rows": expected}, indent=1, sort_keys=True, ensure_ascii=False) + "\n")
    (OUT / "GENERATED_BY.md").write_text(
        "# Generated file set — do not edit by hand\n\n"
        "A 5-row training set in the `datasets.save_to_disk` layout (two Arrow IPC stream shards, record batches of "
        "2 rows), written with pyarrow " + pa.__version__ + " from the benchmark assets demo_image_{1,2,3} and "
        "demo_mask_1 / demo_mask_3_{0,1,2} (downscaled to 96 px wide). Rows: path A with 1 and 3 masks, a relation "
        "row, a row without masks (null `mask_rle`), a non-ASCII caption. `expected.json`: image size and RGB sum, "
        "conversations, per-mask area and inclusive box (numpy).\n\n"
        "Command: `tools/reference/.venv/bin/python tools/reference/train/make_arrow_fixture.py` "
        "(or `tools/reference/regenerate.sh train`).\n"
    )


if __name__ == "__main__":
    main()
