"""Build the tiny random-weight GAR checkpoints (fixtures/checkpoints/tiny-pe-{l,g}) in the published HF layout.

The model is transformers' PerceptionLMForConditionalGeneration (timm Eva vision tower via TimmWrapper,
projector, Llama) plus GAR's mask patch embedding; saved as `mllm.*` + `mask_patch_embedding.weight`
(gar-spec §1.4, §2.2). Weights are drawn per tensor from a generator seeded by the tensor name, with scales
chosen so that every stage (mask conv, replay, RoPE) visibly changes the logits and greedy decoding varies.
"""

import json
import math
import shutil
import sys

import torch
from safetensors.torch import save_file

from common import CKPT_DIR, name_seed, setup_torch, write_generated_by, write_json
from plm_text import BOS, EOS_TEXT, EOT, IMAGE, VIDEO, crop_token
from tiny_tokenizer import RESERVED_UPTO, build_gar_tokenizer, save_hf_tokenizer

SPECS = {
    "tiny-pe-l": dict(
        architecture="vit_pe_core_large_patch14_336",
        vision=dict(embed_dim=32, depth=2, num_heads=2, mlp_ratio=2.0),
        use_cls=True,
        text=dict(
            hidden_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            head_dim=16,
            intermediate_size=128,
            # llama3 scaling as PLM-1B/3B but with original_max_position_embeddings 512 so that, for head_dim
            # 16 and theta 5e5, all three branches (kept / smoothed / divided by factor) occur:
            # inv_freq 0,1 kept, 2 smoothed, 3..7 divided by 32.
            rope_scaling=dict(
                rope_type="llama3",
                factor=32.0,
                low_freq_factor=1.0,
                high_freq_factor=4.0,
                original_max_position_embeddings=512,
            ),
            tie_word_embeddings=True,
        ),
        prompt_numbers=5,
        max_num_tiles=16,
        seed=1,
        llm_seed=47,  # chosen with seed_search.py: varied greedy text on every tiny-pe-l model case
    ),
    "tiny-pe-g": dict(
        architecture="vit_pe_core_gigantic_patch14_448",
        vision=dict(embed_dim=48, depth=2, num_heads=2, mlp_ratio=112 / 48),
        use_cls=False,
        text=dict(
            hidden_size=48,
            num_hidden_layers=2,
            num_attention_heads=3,
            num_key_value_heads=1,
            head_dim=16,
            intermediate_size=96,
            rope_scaling=None,
            tie_word_embeddings=False,
        ),
        prompt_numbers=3,
        max_num_tiles=8,
        seed=2,
        llm_seed=6,  # chosen with seed_search.py (two cases hit <|eot_id|> within 40 steps)
    ),
}


def build_configs(spec, tok):
    from transformers import LlamaConfig, PerceptionLMConfig, TimmWrapperConfig

    v = spec["vision"]
    D = v["embed_dim"]
    model_args = {
        "embed_dim": D,
        "depth": v["depth"],
        "num_heads": v["num_heads"],
        "mlp_ratio": v["mlp_ratio"],
        "img_size": (448, 448),
        "global_pool": "",
        "use_post_transformer_norm": False,
        "init_values": 0.1,
        "ref_feat_shape": (32, 32),
    }
    vision_config = TimmWrapperConfig(
        architecture=spec["architecture"],
        model_args=model_args,
        num_features=D,
        global_pool="map",
        do_pooling=True,
        initializer_range=0.02,
    )
    t = spec["text"]
    bos_id = tok.token_to_id(BOS)
    eos_ids = [tok.token_to_id(EOS_TEXT), tok.token_to_id(EOT)]
    text_config = LlamaConfig(
        vocab_size=tok.get_vocab_size(),
        hidden_size=t["hidden_size"],
        intermediate_size=t["intermediate_size"],
        num_hidden_layers=t["num_hidden_layers"],
        num_attention_heads=t["num_attention_heads"],
        num_key_value_heads=t["num_key_value_heads"],
        head_dim=t["head_dim"],
        hidden_act="silu",
        max_position_embeddings=11520,
        rms_norm_eps=1e-5,
        rope_theta=500000.0,
        rope_scaling=t["rope_scaling"],
        attention_bias=False,
        mlp_bias=False,
        bos_token_id=bos_id,
        eos_token_id=eos_ids,
        tie_word_embeddings=t["tie_word_embeddings"],
    )
    mllm = PerceptionLMConfig(
        vision_config=vision_config.to_dict(),
        text_config=text_config.to_dict(),
        projector_pooling_ratio=2,
        vision_use_cls_token=spec["use_cls"],
        image_token_id=tok.token_to_id(IMAGE),
        video_token_id=tok.token_to_id(VIDEO),
        tie_word_embeddings=t["tie_word_embeddings"],
    )
    return mllm


def gar_config_dict(spec, mllm_config, tok):
    D = spec["vision"]["embed_dim"]
    N = spec["prompt_numbers"]
    return {
        "architectures": ["GARModel"],
        "model_type": "GAR",
        "mllm_config": mllm_config.to_diff_dict(),
        "prompt_numbers": N,
        "crop_tokens_ids": [tok.token_to_id(crop_token(k)) for k in range(N)],
        "kernel_size": [448 // 32, 448 // 32],
        "mask_path_embedding_out_channels": D,
        "torch_dtype": "float32",
        "transformers_version": __import__("transformers").__version__,
    }


def init_value(name: str, shape, cfg_spec, seed: int) -> torch.Tensor:
    """Deterministic random value of one tensor; the scale depends on the tensor's role."""
    g = torch.Generator().manual_seed(name_seed(name, seed))
    n = lambda: torch.randn(shape, generator=g, dtype=torch.float32)  # noqa: E731
    u = lambda: torch.rand(shape, generator=g, dtype=torch.float32)  # noqa: E731
    fan_in = shape[1] if len(shape) == 2 else (math.prod(shape[1:]) if len(shape) == 4 else None)
    base = name.rsplit(".", 1)[-1]
    if name.endswith("mask_patch_embedding.weight"):
        return n() * (1.5 / math.sqrt(fan_in))
    if "patch_embed.proj.weight" in name:
        return n() * (2.0 / math.sqrt(fan_in))
    if name.endswith("cls_token") or name.endswith("pos_embed"):
        return n() * 0.5
    if base in ("gamma_1", "gamma_2"):
        return 0.3 + 0.7 * u()
    if name.endswith("language_model.norm.weight"):
        # large final RMSNorm gain: scales all logits up, so greedy top-1/top-2 margins are large
        return 12.0 + 1.0 * n()
    if "norm" in name and base == "weight":
        return 1.0 + 0.2 * n()
    if base == "bias":
        return 0.1 * n()
    if "embed_tokens" in name:
        return n() * 1.0
    if name.endswith("lm_head.weight"):
        return n() * (1.0 / math.sqrt(fan_in)) * 4.0
    if "attn.qkv" in name:
        return n() * (1.5 / math.sqrt(fan_in))
    if "q_proj" in name or "k_proj" in name:
        # sharp, RoPE-position-dependent attention: the attended context changes every decoding step,
        # which keeps greedy decoding of a random model from collapsing onto one token
        return n() * (4.5 / math.sqrt(fan_in))
    if "o_proj" in name:
        return n() * (3.0 / math.sqrt(fan_in))
    if len(shape) == 2:
        return n() * (1.0 / math.sqrt(fan_in))
    raise ValueError(f"no init rule for {name} {shape}")


def postprocess_llm(tensors: dict) -> None:
    """Byte-level single-character tokens (ids < 256) get smaller embeddings (and, when tied, logits), so
    greedy text is mostly made of merged word pieces."""
    for k in ("mllm.model.language_model.embed_tokens.weight", "mllm.lm_head.weight"):
        if k in tensors:
            tensors[k][:256] *= 0.7


class TinyGAR(torch.nn.Module):
    """Our minimal GAR container: `mllm` (PerceptionLMForConditionalGeneration) + `mask_patch_embedding`."""

    def __init__(self, mllm_config, D):
        super().__init__()
        from transformers import PerceptionLMForConditionalGeneration

        self.mllm = PerceptionLMForConditionalGeneration(mllm_config)
        self.mask_patch_embedding = torch.nn.Conv2d(3, D, kernel_size=14, stride=14, bias=False)


def preprocessor_config(max_num_tiles: int) -> dict:
    return {
        "image_processor_type": "PerceptionLMImageProcessorFast",
        "processor_class": "PerceptionLMProcessor",
        "vision_input_type": "thumb+tile",
        "tile_size": 448,
        "max_num_tiles": max_num_tiles,
        "resample": 3,
        "do_resize": True,
        "do_center_crop": False,
        "do_rescale": True,
        "rescale_factor": 1 / 255,
        "do_normalize": True,
        "image_mean": [0.5, 0.5, 0.5],
        "image_std": [0.5, 0.5, 0.5],
        "do_convert_rgb": True,
        "size": {"height": 448, "width": 448},
        "data_format": "channels_first",
    }


def build(name: str):
    spec = SPECS[name]
    out = CKPT_DIR / name
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    tok = build_gar_tokenizer(spec["prompt_numbers"])
    save_hf_tokenizer(tok, out)
    mllm_config = build_configs(spec, tok)
    D = spec["vision"]["embed_dim"]
    model = TinyGAR(mllm_config, D)
    tied = spec["text"]["tie_word_embeddings"]
    sd = model.state_dict()
    tensors = {}
    for k in sorted(sd):
        if tied and k == "mllm.lm_head.weight":
            continue
        is_llm = "language_model" in k or "lm_head" in k
        tensors[k] = init_value(k, tuple(sd[k].shape), spec, spec["llm_seed"] if is_llm else spec["seed"]).contiguous()
    postprocess_llm(tensors)
    save_file(tensors, str(out / "model.safetensors"), metadata={"format": "pt"})
    write_json(out / "config.json", gar_config_dict(spec, mllm_config, tok), indent=2)
    write_json(out / "preprocessor_config.json", preprocessor_config(spec["max_num_tiles"]), indent=2)
    write_json(
        out / "processor_config.json",
        {"patch_size": 14, "pooling_ratio": 2, "processor_class": "PerceptionLMProcessor"},
        indent=2,
    )
    write_json(
        out / "generation_config.json",
        {
            "bos_token_id": tok.token_to_id(BOS),
            "do_sample": False,
            "eos_token_id": [tok.token_to_id(EOS_TEXT), tok.token_to_id(EOT)],
            "pad_token_id": tok.token_to_id(EOS_TEXT),
        },
        indent=2,
    )
    t = spec["text"]
    v = spec["vision"]
    write_generated_by(
        out,
        f"tools/reference/.venv/bin/python tools/reference/make_checkpoints.py {name}",
        f"""Tiny random-weight GAR checkpoint `{name}` in the published HF layout (gar-spec §1.4, §2.2).

* vision: timm `{spec['architecture']}` with model_args override: embed_dim {v['embed_dim']}, depth {v['depth']},
  num_heads {v['num_heads']} (head_dim {v['embed_dim'] // v['num_heads']}), mlp_ratio {v['mlp_ratio']!r}
  (fc1 out {int(v['embed_dim'] * v['mlp_ratio'])}), img 448, ref_feat_shape 32x32, init_values 0.1, no ln_post,
  class token: {spec['use_cls']} (vision_use_cls_token {spec['use_cls']}).
* LLM: hidden {t['hidden_size']}, layers {t['num_hidden_layers']}, heads {t['num_attention_heads']}, kv heads
  {t['num_key_value_heads']}, head_dim {t['head_dim']}, intermediate {t['intermediate_size']}, rope_theta 5e5,
  rope_scaling {json.dumps(t['rope_scaling'], sort_keys=True)}, tie_word_embeddings {t['tie_word_embeddings']}
  ({'no `mllm.lm_head.weight` in model.safetensors' if tied else 'own `mllm.lm_head.weight`'}).
* tokenizer: {tok.get_vocab_size()} tokens = {tok.token_to_id(BOS)} byte-level BPE tokens trained on GAR/GAR-Bench
  text + Llama-3/PLM specials in PLM order (reserved up to `<|reserved_special_token_{RESERVED_UPTO}|>`) +
  `<Prompt0>`..`<Prompt{spec['prompt_numbers'] - 1}>`, `<NO_Prompt>`. Ids are NOT 128xxx.
* prompt_numbers {spec['prompt_numbers']}, preprocessor max_num_tiles {spec['max_num_tiles']}.
* weights: f32, every tensor drawn from torch.Generator seeded with sha256("<seed>:" + key), seed
  {spec['seed']} for vision/projector/mask conv and {spec['llm_seed']} for the LLM (`llm_seed`); see
  `init_value` in make_checkpoints.py for the per-role scales (mask conv and RoPE-relevant q/k deliberately large).
* No `auto_map` (no remote code is shipped); `processor_class` is the stock `PerceptionLMProcessor`.
""",
    )
    return out


def main(argv):
    setup_torch(2)
    names = argv[1:] or sorted(SPECS)
    for n in names:
        p = build(n)
        print("wrote", p)


if __name__ == "__main__":
    main(sys.argv)
