"""Consistency checks that read ONLY the fixture files (as a Rust test would): the documented relations between
the files hold. Run by regenerate.sh after generation."""

import json
import sys

import numpy as np
import torch
from PIL import Image
from safetensors.torch import load_file

from common import FIXTURES


def check_model_case(d):
    meta = json.loads((d / "meta.json").read_text())
    t = load_file(str(d / "tensors.safetensors"))
    ck = FIXTURES / "checkpoints" / meta["checkpoint"]
    cfg = json.loads((ck / "config.json").read_text())
    w = load_file(str(ck / "model.safetensors"))
    T, L, H = meta["num_tiles"], meta["seq_len"], meta["hidden_size"]
    N = cfg["prompt_numbers"]
    tiles = np.array(Image.open(d / "tiles.png"))
    labels = np.array(Image.open(d / "labels.png"))
    assert tiles.shape == (T * 448, 448, 3) and labels.shape == (T * 448, 448)
    assert labels.max() <= N
    ids = t["input_ids"]
    assert ids.shape == (L,)
    n_bos = 2 if meta["bos_policy"] == "double" else 1
    bos = cfg["mllm_config"]["text_config"]["bos_token_id"]
    assert ids[:n_bos].tolist() == [bos] * n_bos and int(ids[n_bos]) != bos
    img_id = cfg["mllm_config"]["image_token_id"]
    assert int((ids == img_id).sum()) == 256 * T
    emb = w["mllm.model.language_model.embed_tokens.weight"]
    ie = t["inputs_embeds"]
    is_img = ids == img_id
    assert torch.equal(ie[is_img], t["image_features"].reshape(-1, H))
    special = is_img.clone()
    for r, cid in enumerate(meta["region_crop_token_ids"]):
        m = ids == cid
        assert torch.equal(ie[m], t["replay"][r])
        special |= m
    assert torch.equal(ie[~special], emb[ids[~special]])
    # mask embeds from labels.png through the checkpoint's conv
    lab = torch.from_numpy(labels.reshape(T, 448, 448).astype(np.int64))
    ti = t["tile_indices"]
    binary = (lab[ti] != N).float()[:, None].expand(-1, 3, -1, -1)
    conv = torch.nn.functional.conv2d(binary, w["mask_patch_embedding.weight"], stride=14)
    me = conv.flatten(2).transpose(1, 2)
    assert torch.allclose(me, t["mask_embeds"], atol=1e-5), float((me - t["mask_embeds"]).abs().max())
    # pooled = 2x2 mean of unpooled on the stored tiles
    up = t["projector_unpooled"]
    pooled = torch.nn.functional.avg_pool2d(up.transpose(1, 2).reshape(len(ti), H, 32, 32), 2).flatten(2).transpose(1, 2)
    assert torch.allclose(pooled, t["image_features"][ti], atol=1e-5)
    # logits = lm_head(final_hidden)
    head = w.get("mllm.lm_head.weight", emb)
    lg = t["final_hidden"][t["logit_positions"]] @ head.T
    assert torch.allclose(lg, t["prefill_logits"], atol=1e-3, rtol=1e-4)
    assert torch.equal(t["generated_tokens"], torch.tensor(meta["generated_tokens"]))
    assert t["decode_logits"].argmax(-1).tolist() == meta["generated_tokens"]
    assert torch.allclose(t["decode_logits"][0], lg[-1], atol=1e-3, rtol=1e-4)
    assert torch.equal(t["bboxes"], torch.tensor(meta["bboxes"], dtype=torch.float64))
    return meta["case"]


def main(argv):
    done = [check_model_case(d) for d in sorted((FIXTURES / "model").iterdir()) if d.is_dir()]
    print("model cases consistent:", done)
    tiling = json.loads((FIXTURES / "processor" / "tiling.json").read_text())["cases"]
    assert len(tiling) > 1000
    for d in sorted((FIXTURES / "processor" / "images").iterdir()):
        meta = json.loads((d / "meta.json").read_text())
        rows = np.array(Image.open(d / "rows.png"))
        assert rows.shape == (meta["rows_png_rows"], 448, 3)
        assert meta["stacked_rows"] == 448 * meta["num_tiles"]
        assert meta["num_tiles"] == 1 + meta["aspect_ratio"][0] * meta["aspect_ratio"][1]
        if meta["regions"]:
            lab = np.array(Image.open(d / "labels.png"))
            assert lab.shape == (meta["stacked_rows"], 448)
    print("processor fixtures consistent")


if __name__ == "__main__":
    main(sys.argv)
