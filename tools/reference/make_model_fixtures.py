"""Model parity cases fixtures/model/<case>/: the whole GAR ladder on the tiny checkpoints (f32, CPU)."""

import json
import re
import shutil
import sys

import torch

from common import CKPT_DIR, FIXTURES, save_tensors, setup_torch, shared_data, write_generated_by, write_json, write_png
from gar_reference import GARReference
from plm_text import crop_token, garbench_vqa_question, multi_region_text, single_region_text, user_message
from processor_reference import (
    build_label_map,
    decode_region,
    load_image,
    mask_bbox,
    process_image,
    process_label_map,
    stacked_gray,
    stacked_rgb,
    thumbnail_and_canvas_info,
)

OUT = FIXTURES / "model"
N_NEW = 40
LOGITS_FULL_LIMIT = 1_500_000
LOGITS_STRIDE = 7
TILE_SUBSET_ABOVE = 5
GB = "evaluation/GAR-Bench/annotations"


def garbench_item(file: str, index: int) -> dict:
    return json.loads((shared_data() / GB / file).read_text())[index]


def garbench_case(name, ckpt, file, index, max_num_tiles, bos="double"):
    it = garbench_item(file, index)
    if file.endswith("VQA.json"):
        question = garbench_vqa_question(it)
    else:
        question = it["question"]
    found = sorted({int(k) for k in re.findall(r"<Prompt(\d+)>", question)})
    assert found == list(range(len(it["mask_rles"]))), (found, len(it["mask_rles"]))
    regions = [{"prompt": k, "rle": it["mask_rles"][k]} for k in found]
    return dict(
        name=name,
        checkpoint=ckpt,
        image=f"{GB}/{it['image']}",
        regions=regions,
        kind="multi",
        question=question,
        source={"file": f"{GB}/{file}", "index": index},
        max_num_tiles=max_num_tiles,
        bos=bos,
    )


def cases():
    return [
        dict(
            name="pe-l_demo1_single",
            checkpoint="tiny-pe-l",
            image="assets/demo_image_1.png",
            regions=[{"prompt": 1, "mask_png": "assets/demo_mask_1.png"}],
            kind="single",
            instruction="Describe this masked region in detail.",
            max_num_tiles=None,
            bos="double",
        ),
        dict(
            name="pe-l_demo3_multi_m4",
            checkpoint="tiny-pe-l",
            image="assets/demo_image_3.png",
            regions=[{"prompt": k, "mask_png": f"assets/demo_mask_3_{k}.png"} for k in range(3)],
            kind="multi",
            question="What is the relationship between <Prompt0>, <Prompt1> and <Prompt2>?",
            max_num_tiles=4,
            bos="double",
        ),
        garbench_case("pe-l_garbench_vqa8_m4", "tiny-pe-l", "GAR-Bench-VQA.json", 8, 4),
        dict(
            name="pe-g_demo2_box",
            checkpoint="tiny-pe-g",
            image="assets/demo_image_2.jpg",
            regions=[{"prompt": 1, "box": [812, 356, 1391, 1102]}],
            kind="single",
            instruction="Describe this masked region in detail.",
            max_num_tiles=None,
            bos="double",
        ),
        garbench_case("pe-g_garbench_vqa384_m2", "tiny-pe-g", "GAR-Bench-VQA.json", 384, 2),
        dict(
            name="pe-g_demo1_single_bos_m1",
            checkpoint="tiny-pe-g",
            image="assets/demo_image_1.png",
            regions=[{"prompt": 1, "mask_png": "assets/demo_mask_1.png"}],
            kind="single",
            instruction="Describe this masked region in detail.",
            max_num_tiles=1,
            bos="single",
        ),
    ]


_MODELS = {}


def model_for(name):
    if name not in _MODELS:
        _MODELS[name] = GARReference(CKPT_DIR / name)
    return _MODELS[name]


def prepare_case(ref, c):
    """Processor + vision + projector + replay for one case (everything before the LLM)."""
    tok = ref.tokenizer
    N = ref.prompt_numbers
    M = c["max_num_tiles"] if c["max_num_tiles"] is not None else ref.default_max_num_tiles

    img = load_image(c["image"])
    w, h = img.size
    masks = {r["prompt"]: decode_region(r, h, w) for r in c["regions"]}
    prompts = sorted(masks)
    assert all(k < N for k in prompts)
    label_map = build_label_map(masks, h, w, N)
    bboxes = [mask_bbox(masks[k]) for k in prompts]  # each region its own box (stale-mask bug fixed)

    if c["kind"] == "single":
        assert len(prompts) == 1
        text = single_region_text(prompts[0], c["instruction"])
    else:
        text = multi_region_text(prompts, c["question"])
    rendered = tok.apply_chat_template(user_message(text), tokenize=False, add_generation_prompt=True)

    # processor: image tiles (transformers) + label map through the same grid with NEAREST
    pv, tiles_u8, (ncw, nch) = process_image(ref.image_processor, img, M)
    labels, grid2 = process_label_map(ref.image_processor, label_map, M)
    assert grid2 == (ncw, nch)
    T = pv.shape[0]
    ref.image_processor.max_num_tiles = M
    enc = ref.processor(images=img, text=rendered, return_tensors="pt", add_special_tokens=(c["bos"] == "double"))
    assert torch.equal(enc["pixel_values"][0], pv)
    input_ids = enc["input_ids"][0].to(torch.int64)
    bos_id = tok.bos_token_id
    n_bos = 2 if c["bos"] == "double" else 1
    assert input_ids[:n_bos].tolist() == [bos_id] * n_bos and int(input_ids[n_bos]) != bos_id
    n_img = int((input_ids == ref.image_token_id).sum())
    assert n_img == 256 * T

    with torch.no_grad():
        mask_emb = ref.mask_embeds(labels)  # [T,D,32,32]
        vision_out = ref.vision_forward(pv, mask_emb)
        unpooled, image_features = ref.projector(vision_out)
        fmap = ref.merge_tiles(image_features, ncw, nch)
        replays, rois, replay_by_cid = [], [], {}
        for k, bb in zip(prompts, bboxes):
            rep, roi = ref.replay_one(fmap, bb, ncw, nch)
            replays.append(rep)
            rois.append(roi)
            replay_by_cid[ref.crop_tokens_ids[k]] = rep
    # feature replay happens for every crop id present in input_ids, in crop_tokens_ids order
    present = [cid for cid in ref.crop_tokens_ids if bool((input_ids == cid).any())]
    assert present == [ref.crop_tokens_ids[k] for k in prompts], (present, prompts)
    return dict(
        img=img, M=M, prompts=prompts, bboxes=bboxes, text=text, rendered=rendered, pv=pv, tiles_u8=tiles_u8,
        ncw=ncw, nch=nch, labels=labels, T=T, input_ids=input_ids, n_img=n_img, mask_emb=mask_emb,
        vision_out=vision_out, unpooled=unpooled, image_features=image_features, replays=replays, rois=rois,
        replay_by_cid=replay_by_cid, present=present,
    )


def run_case(c):
    ref = model_for(c["checkpoint"])
    tok = ref.tokenizer
    N = ref.prompt_numbers
    p = prepare_case(ref, c)
    img, M, prompts, bboxes, text, rendered = p["img"], p["M"], p["prompts"], p["bboxes"], p["text"], p["rendered"]
    pv, tiles_u8, ncw, nch, labels, T = p["pv"], p["tiles_u8"], p["ncw"], p["nch"], p["labels"], p["T"]
    input_ids, n_img, mask_emb, vision_out = p["input_ids"], p["n_img"], p["mask_emb"], p["vision_out"]
    unpooled, image_features, replays, rois = p["unpooled"], p["image_features"], p["replays"], p["rois"]
    replay_by_cid, present = p["replay_by_cid"], p["present"]
    L = int(input_ids.shape[0])

    with torch.no_grad():
        inputs_embeds = ref.build_inputs_embeds(input_ids, image_features, replay_by_cid)
        final_hidden, logits = ref.prefill(inputs_embeds)
        gen, step_logits, margins = ref.greedy(inputs_embeds, N_NEW)
        d0 = float((step_logits[0] - logits[-1]).abs().max())
        assert d0 <= 1e-5 * float(logits[-1].abs().max()) + 1e-4, d0
        hf = ref.hf_generate(inputs_embeds, N_NEW)

        # sensitivity checks: mask conv and replay must matter
        no_mask = ref.vision_forward(pv, None)
        stock = ref.mllm.model.vision_tower(pv).last_hidden_state
        assert torch.allclose(no_mask, stock, atol=1e-5), "custom vision forward != transformers' tower"
        mask_effect = float((no_mask - vision_out).abs().max())
        emb_norep = ref.build_inputs_embeds(input_ids, image_features, {})
        _, logits_norep = ref.prefill(emb_norep)
        first_crop = int(min((input_ids == cid).nonzero().flatten()[0] for cid in present))
        replay_effect = float((logits_norep[first_crop:] - logits[first_crop:]).abs().max())
        replay_effect_last = float((logits_norep[-1] - logits[-1]).abs().max())
    assert mask_effect > 0.1 and replay_effect > 0.1, (mask_effect, replay_effect)

    eot = tok.eos_token_id
    eot_index = gen.index(eot) if eot in gen else None
    stop = gen[: eot_index + 1] if eot_index is not None else gen
    assert hf == stop, (hf, stop)
    V = logits.shape[1]
    if L * V <= LOGITS_FULL_LIMIT:
        positions = list(range(L))
        rule = "all"
    else:
        last_img = int((input_ids == ref.image_token_id).nonzero().flatten()[-1])
        positions = sorted(set(range(0, last_img + 1, LOGITS_STRIDE)) | set(range(last_img + 1, L)))
        rule = f"every {LOGITS_STRIDE}th position 0..={last_img} (last image token) + all positions after it"
    pos_t = torch.tensor(positions, dtype=torch.int64)

    H = image_features.shape[-1]
    # per-tile ladder tensors are stored for a subset of tiles when T > TILE_SUBSET_ABOVE (size budget)
    if T > TILE_SUBSET_ABOVE:
        tile_idx = sorted({0, 1, T // 2, T - 1})
    else:
        tile_idx = list(range(T))
    ti = torch.tensor(tile_idx, dtype=torch.int64)
    tensors = {
        "input_ids": input_ids,
        "bboxes": torch.tensor(bboxes, dtype=torch.float64),
        "replay_rois": torch.stack(rois),
        "tile_indices": ti,
        "vision_out": vision_out[ti],
        "mask_embeds": mask_emb.flatten(2).transpose(1, 2)[ti],
        "projector_unpooled": unpooled[ti],
        "image_features": image_features,
        "replay": torch.stack(replays),
        "inputs_embeds": inputs_embeds,
        "final_hidden": final_hidden,
        "prefill_logits": logits[pos_t],
        "logit_positions": pos_t,
        "generated_tokens": torch.tensor(gen, dtype=torch.int64),
        "decode_logits": step_logits,
    }
    out = OUT / c["name"]
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    save_tensors(out / "tensors.safetensors", tensors)
    write_png(out / "tiles.png", stacked_rgb(tiles_u8))
    write_png(out / "labels.png", stacked_gray(labels))
    meta = {
        "case": c["name"],
        "checkpoint": c["checkpoint"],
        "checkpoint_path": f"fixtures/checkpoints/{c['checkpoint']}",
        "image": c["image"],
        "regions": c["regions"],
        "region_prompt_indices": prompts,
        "region_crop_token_ids": [ref.crop_tokens_ids[k] for k in prompts],
        "region_crop_tokens": [crop_token(k) for k in prompts],
        "bboxes": bboxes,
        "prompt_kind": c["kind"],
        "instruction": c.get("instruction"),
        "question": c.get("question"),
        "source": c.get("source"),
        "user_text": text,
        "prompt_rendered": rendered,
        "bos_policy": c["bos"],
        "add_special_tokens": c["bos"] == "double",
        "max_num_tiles": M,
        "max_num_tiles_override": c["max_num_tiles"] is not None,
        "prompt_numbers": N,
        "image_token_id": ref.image_token_id,
        "num_image_tokens": n_img,
        "seq_len": L,
        "vocab_size": V,
        "hidden_size": H,
        "vision_tokens_per_tile": int(vision_out.shape[1]),
        "use_cls_token": bool(ref.use_cls),
        "logit_positions_rule": rule,
        "n_new_tokens": N_NEW,
        "generated_tokens": gen,
        "generated_token_strings": tok.convert_ids_to_tokens(gen),
        "eot_id": eot,
        "eot_index": eot_index,
        "hf_generate_tokens": hf,
        "decoded_text": tok.decode(stop, skip_special_tokens=True, clean_up_tokenization_spaces=True).strip(),
        "decoded_text_keep_special": tok.decode(stop, skip_special_tokens=False, clean_up_tokenization_spaces=True)
        .strip()
        .removesuffix(tok.eos_token)
        .strip(),
        "greedy_min_margin": min(margins),
        "greedy_margins": margins,
        "sensitivity": {"mask_effect_max_abs_vision": mask_effect, "replay_effect_max_abs_logits_after_first_crop": replay_effect,
            "replay_effect_max_abs_last_logit": replay_effect_last,
        },
        "tile_indices": tile_idx,
    }
    meta.update(thumbnail_and_canvas_info(img, ncw, nch))
    write_json(out / "meta.json", meta)
    distinct = len(set(gen))
    print(f"{c['name']}: T={T} L={L} V={V} eot={eot_index} distinct={distinct} min_margin={min(margins):.3f} "
          f"mask_eff={mask_effect:.3f} replay_eff={replay_effect:.3f}/{replay_effect_last:.4f}", flush=True)
    print("   text:", repr(meta["decoded_text"][:120]), flush=True)
    return out


def main(argv):
    setup_torch(2)
    wanted = set(argv[1:])
    if not wanted and OUT.exists():
        shutil.rmtree(OUT)
    OUT.mkdir(parents=True, exist_ok=True)
    for c in cases():
        if wanted and c["name"] not in wanted:
            continue
        run_case(c)
    if not wanted:
        write_generated_by(
            OUT,
            "tools/reference/.venv/bin/python tools/reference/make_model_fixtures.py",
            "Model parity ladder cases on the tiny checkpoints (f32, CPU). See fixtures/README.md for keys.",
        )


if __name__ == "__main__":
    main(sys.argv)
