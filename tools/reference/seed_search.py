"""Offline helper (not part of regenerate.sh): search the LLM weight seed of a tiny checkpoint so that
greedy decoding on every model case of that checkpoint is varied (many distinct tokens, short runs) and has
large top-1/top-2 margins. The chosen seed is then hard-coded in make_checkpoints.SPECS[...]["llm_seed"].

usage: python seed_search.py tiny-pe-l 0 40
"""

import sys

import torch

from common import CKPT_DIR, setup_torch
from make_checkpoints import SPECS, init_value, postprocess_llm
from make_model_fixtures import cases, prepare_case


def main(argv):
    setup_torch(2)
    ckpt, lo, hi = argv[1], int(argv[2]), int(argv[3])
    spec = SPECS[ckpt]
    from gar_reference import GARReference

    ref = GARReference(CKPT_DIR / ckpt)
    prepared = []
    with torch.no_grad():
        for c in cases():
            if c["checkpoint"] != ckpt:
                continue
            p = prepare_case(ref, c)
            prepared.append((c["name"], p))
    lm_params = {("mllm." + k): v for k, v in ref.mllm.named_parameters() if "language_model" in k or "lm_head" in k}
    for s in range(lo, hi):
        with torch.no_grad():
            vals = {k: init_value(k, tuple(v.shape), spec, s) for k, v in lm_params.items()}
            postprocess_llm(vals)
            for k, v in lm_params.items():
                v.copy_(vals[k])
            res = []
            for name, p in prepared:
                emb = ref.build_inputs_embeds(p["input_ids"], p["image_features"], p["replay_by_cid"])
                gen, _, margins = ref.greedy(emb, 40)
                eot = ref.tokenizer.eos_token_id
                eot_i = gen.index(eot) if eot in gen else None
                run, best = 1, 1
                for a, b in zip(gen, gen[1:]):
                    run = run + 1 if a == b else 1
                    best = max(best, run)
                res.append((name, len(set(gen)), best, round(min(margins), 3), eot_i))
        score = min(r[1] for r in res)
        print(s, score, res, flush=True)


if __name__ == "__main__":
    main(sys.argv)
