"""Standalone op fixtures: fixtures/ops/roi_align/ (torchvision.ops.roi_align, plain and GAR double-scaled)
and fixtures/ops/pe_block/<ckpt>/ (one timm Eva PE block of each tiny checkpoint, with its RoPE table)."""

import shutil
import sys

import torch
from torchvision.ops import roi_align

from common import CKPT_DIR, FIXTURES, save_tensors, setup_torch, write_generated_by, write_json
from gar_reference import GARReference

OUT = FIXTURES / "ops"


def roi_align_fixture():
    g = torch.Generator().manual_seed(1234)
    ncw, nch, C = 3, 2, 8
    Hf, Wf = 16 * nch, 16 * ncw
    fmap = torch.randn(1, C, Hf, Wf, generator=g)
    # plain roi_align (spatial_scale 1): boxes in feature-cell coordinates, chosen to hit every branch of the
    # bilinear sampler (y < -1 / > H → 0, clamp to 0, y0 >= H-1, zero-size, inverted, beyond the map)
    plain = [
        [0, 2.3, 3.7, 20.1, 15.2],
        [0, -5.0, -5.0, 3.0, 3.0],
        [0, 40.0, 25.0, 60.0, 40.0],
        [0, 47.2, 31.4, 47.9, 31.9],
        [0, 10.0, 10.0, 10.0, 10.0],
        [0, -1.4, -1.4, 48.6, 32.6],
        [0, 20.0, 5.0, 10.0, 25.0],
        [0, 0.5, 0.5, 1.5, 1.5],
        [0, -0.5, -0.5, 0.5, 0.5],
        [0, 46.5, 30.5, 48.5, 32.5],
        [0, 0.0, 0.0, 48.0, 32.0],
    ]
    rnd = torch.rand(8, 4, generator=g) * torch.tensor([56.0, 40.0, 56.0, 40.0]) - torch.tensor([4.0, 4.0, 4.0, 4.0])
    for r in rnd.tolist():
        plain.append([0] + [r[0], r[1], max(r[0], r[2]), max(r[1], r[3])])
    plain_rois = torch.tensor(plain, dtype=torch.float32)
    plain_out = roi_align(fmap, plain_rois, output_size=(16, 16), spatial_scale=1.0, sampling_ratio=2, aligned=True)

    # GAR's replay path: normalised bbox → roi in "original" coordinates → roi_align(spatial_scale = 1/28)
    gar_bboxes = [
        [0.1, 0.2, 0.9, 0.8],
        [0.0, 0.0, 1.0, 1.0],
        [0.5, 0.5, 0.5, 0.5],
        [0.999, 0.999, 1.0, 1.0],
        [0.0, 0.0, 0.02, 0.03],
        [0.720703125, 0.8688311688311688, 0.7939453125, 0.9233766233766234],
        [0.25, 0.0, 0.3, 0.95],
    ]
    rois, outs = [], []
    for bb in gar_bboxes:
        roi, ss = GARReference.replay_rois(bb, ncw, nch)
        outs.append(roi_align(fmap, roi, output_size=(16, 16), spatial_scale=ss, sampling_ratio=2, aligned=True))
        rois.append(roi[0])
    d = OUT / "roi_align"
    if d.exists():
        shutil.rmtree(d)
    save_tensors(
        d / "tensors.safetensors",
        {
            "feature": fmap,
            "plain_rois": plain_rois,
            "plain_out": plain_out,
            "gar_bboxes": torch.tensor(gar_bboxes, dtype=torch.float64),
            "gar_rois": torch.stack(rois),
            "gar_out": torch.cat(outs),
        },
    )
    write_json(
        d / "meta.json",
        {
            "feature_shape": [1, C, Hf, Wf],
            "grid": {"ncw": ncw, "nch": nch},
            "output_size": [16, 16],
            "sampling_ratio": 2,
            "aligned": True,
            "plain_spatial_scale": 1.0,
            "gar_spatial_scale": 16 * ncw / (16 * ncw * 28),
            "gar_roi_formula": "feat_w=16*ncw, feat_h=16*nch, orig_w=28*feat_w, orig_h=28*feat_h, ss=feat_w/orig_w; "
            "roi=f32([0, x1*orig_w*ss, y1*orig_h*ss, x2*orig_w*ss, y2*orig_h*ss]) (Python f64 products, left to right); "
            "roi_align(feature, roi, (16,16), spatial_scale=ss, sampling_ratio=2, aligned=True) — box scaled twice",
        },
    )
    write_generated_by(
        d,
        "tools/reference/.venv/bin/python tools/reference/make_op_fixtures.py",
        "torchvision.ops.roi_align on a random feature map (seed 1234): plain boxes hitting every sampler branch, "
        "and GAR's double-scaled replay boxes.",
    )


def pe_block_fixture(ckpt: str):
    ref = GARReference(CKPT_DIR / ckpt)
    tm = ref.timm_model
    blk = tm.blocks[0]
    D = tm.embed_dim
    n_prefix = tm.num_prefix_tokens
    N = 1024 + n_prefix
    g = torch.Generator().manual_seed(4321)
    x = torch.randn(2, N, D, generator=g)
    with torch.no_grad():
        rope = tm.rope.get_embed()
        after_attn = x + blk.gamma_1 * blk.attn(blk.norm1(x), rope=rope)
        y = blk(x, rope=rope)
        y2 = after_attn + blk.gamma_2 * blk.mlp(blk.norm2(after_attn))
    assert torch.allclose(y, y2, atol=1e-5)
    d = OUT / "pe_block" / ckpt
    if d.exists():
        shutil.rmtree(d)
    save_tensors(
        d / "tensors.safetensors",
        {"input": x, "rope_embed": rope, "after_attn": after_attn, "output": y},
    )
    write_json(
        d / "meta.json",
        {
            "checkpoint": ckpt,
            "block": 0,
            "weights_prefix": "mllm.model.vision_tower.timm_model.blocks.0.",
            "embed_dim": D,
            "num_heads": blk.attn.num_heads,
            "head_dim": D // blk.attn.num_heads,
            "num_prefix_tokens": n_prefix,
            "rope_grid_offset": float(getattr(tm.rope, "grid_offset", 0.0)),
            "rope_embed_layout": "timm RotaryEmbeddingCat.get_embed(): [1024, 2*head_dim] = cat(sin, cos) per patch "
            "token (row-major r*32+c); applied to q,k of tokens after the prefix tokens",
        },
    )
    write_generated_by(
        d,
        "tools/reference/.venv/bin/python tools/reference/make_op_fixtures.py",
        f"Block 0 of the `{ckpt}` vision tower (timm EvaBlock + AttentionRope) on a random input (seed 4321).",
    )


def main(argv):
    setup_torch(2)
    if OUT.exists():
        shutil.rmtree(OUT)
    roi_align_fixture()
    for ck in ("tiny-pe-l", "tiny-pe-g"):
        pe_block_fixture(ck)


if __name__ == "__main__":
    main(sys.argv)
