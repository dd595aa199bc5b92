"""Write a GAR-1B-shaped random-weight checkpoint (for speed measurements only) to a directory.

    tools/reference/.venv/bin/python tools/reference/bench/make_gar1b_checkpoint.py OUT_DIR [--dtype bf16|f32]

Same HF layout and machinery as tools/reference/make_checkpoints.py (imported, not copied): GAR-1B dims
(gar-spec §1: PE-L D=1024, 23 layers, 16 heads, mlp 4096, class token; LLM 2048 hidden, 16 layers, 32/8 heads,
head_dim 64, intermediate 8192, tied, llama3 rope scaling with original 8192) and the real vocabulary size
128262, with the tiny GAR tokenizer (its ids fit in the vocabulary). Tensors are generated one at a time (shapes from an
uninitialised skeleton) and stored in bf16 by default (~3 GB; ~6 GB in f32). NEVER commit the output.
"""

import argparse
import copy
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

import torch  # noqa: E402
from safetensors.torch import save_file  # noqa: E402

import make_checkpoints as mc  # noqa: E402
from common import setup_torch, write_json  # noqa: E402
from plm_text import BOS, EOS_TEXT  # noqa: E402
from tiny_tokenizer import build_gar_tokenizer, save_hf_tokenizer  # noqa: E402

VOCAB = 128262
SPEC = copy.deepcopy(mc.SPECS["tiny-pe-l"])
SPEC.update(
    vision=dict(embed_dim=1024, depth=23, num_heads=16, mlp_ratio=4.0),
    max_num_tiles=16,
    seed=11,
    llm_seed=12,
)
SPEC["text"].update(
    hidden_size=2048,
    num_hidden_layers=16,
    num_attention_heads=32,
    num_key_value_heads=8,
    head_dim=64,
    intermediate_size=8192,
)
SPEC["text"]["rope_scaling"]["original_max_position_embeddings"] = 8192


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--dtype", choices=["bf16", "f32"], default="bf16")
    args = ap.parse_args()
    setup_torch(2)
    torch.use_deterministic_algorithms(False)
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    tok = build_gar_tokenizer(SPEC["prompt_numbers"])
    save_hf_tokenizer(tok, out)
    mllm_config = mc.build_configs(SPEC, tok)
    mllm_config.text_config.vocab_size = VOCAB
    D = SPEC["vision"]["embed_dim"]
    from transformers.modeling_utils import no_init_weights

    with no_init_weights():  # uninitialised (untouched) storage: only the shapes are used
        model = mc.TinyGAR(mllm_config, D)
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    del model
    dtype = torch.bfloat16 if args.dtype == "bf16" else torch.float32
    tensors = {}
    for k in sorted(shapes):
        if k == "mllm.lm_head.weight":  # tied
            continue
        is_llm = "language_model" in k or "lm_head" in k
        v = mc.init_value(k, shapes[k], SPEC, SPEC["llm_seed"] if is_llm else SPEC["seed"])
        if k.endswith("embed_tokens.weight"):
            v[:256] *= 0.7  # mc.postprocess_llm
        tensors[k] = v.to(dtype).contiguous()
        print(f"{k} {list(shapes[k])}", file=sys.stderr)
    save_file(tensors, str(out / "model.safetensors"), metadata={"format": "pt"})
    cfg = mc.gar_config_dict(SPEC, mllm_config, tok)
    cfg["torch_dtype"] = "bfloat16" if args.dtype == "bf16" else "float32"
    write_json(out / "config.json", cfg, indent=2)
    write_json(out / "preprocessor_config.json", mc.preprocessor_config(SPEC["max_num_tiles"]), indent=2)
    write_json(
        out / "processor_config.json",
        {"patch_size": 14, "pooling_ratio": 2, "processor_class": "PerceptionLMProcessor"},
        indent=2,
    )
    write_json(
        out / "generation_config.json",
        {"bos_token_id": tok.token_to_id(BOS), "do_sample": False, "eos_token_id": [tok.token_to_id(EOS_TEXT)]},
        indent=2,
    )
    n = sum(t.numel() for t in tensors.values())
    print(f"wrote {out} ({n / 1e9:.3f} B parameters, {args.dtype})")


if __name__ == "__main__":
    main()
