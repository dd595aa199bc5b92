"""Two-turn chat fixtures fixtures/chat/<case>/: what the reference answers to a follow-up question.

The reference has no chat loop of its own; a second turn is the whole conversation re-rendered with the
PLM chat template (first user message with image + region crops, the decoded first answer as the assistant
message, the follow-up as a new user message), tokenised like the first turn and generated from scratch.
The Rust engine must produce the same tokens while reusing its KV cache, i.e. prefilling only the new part.
"""

import shutil
import sys

import torch

from common import FIXTURES, setup_torch, write_generated_by, write_json
from make_model_fixtures import model_for, prepare_case
from plm_text import user_message

OUT = FIXTURES / "chat"
N_NEW = 12

CASES = [
    dict(
        name="pe-l_demo1_two_turns_m4",
        checkpoint="tiny-pe-l",
        image="assets/demo_image_1.png",
        regions=[{"prompt": 1, "mask_png": "assets/demo_mask_1.png"}],
        kind="single",
        instruction="Describe this masked region in detail.",
        follow_up="What color is <Prompt1>, and what is it near?",
        max_num_tiles=4,
        bos="double",
    ),
    dict(
        name="pe-g_demo3_two_turns_m2",
        checkpoint="tiny-pe-g",
        image="assets/demo_image_3.png",
        regions=[
            {"prompt": 0, "mask_png": "assets/demo_mask_3_0.png"},
            {"prompt": 1, "mask_png": "assets/demo_mask_3_1.png"},
        ],
        kind="multi",
        question="What is the relationship between <Prompt0> and <Prompt1>?",
        follow_up="Which one is larger?",
        max_num_tiles=2,
        bos="double",
    ),
]


def generate(ref, input_ids, p):
    with torch.no_grad():
        emb = ref.build_inputs_embeds(input_ids, p["image_features"], p["replay_by_cid"])
        seq = ref.hf_generate(emb, N_NEW)
    eot = ref.tokenizer.eos_token_id
    tokens = seq[: seq.index(eot)] if eot in seq else seq
    text = ref.tokenizer.decode(tokens, skip_special_tokens=True).strip()
    return tokens, text


def run_case(c):
    ref = model_for(c["checkpoint"])
    tok = ref.tokenizer
    p = prepare_case(ref, c)
    ids1 = p["input_ids"]
    tokens1, text1 = generate(ref, ids1, p)

    conversation = user_message(p["text"]) + [
        {"role": "assistant", "content": [{"type": "text", "text": text1}]},
        {"role": "user", "content": [{"type": "text", "text": c["follow_up"]}]},
    ]
    rendered2 = tok.apply_chat_template(conversation, tokenize=False, add_generation_prompt=True)
    ref.image_processor.max_num_tiles = p["M"]
    enc = ref.processor(
        images=p["img"], text=rendered2, return_tensors="pt", add_special_tokens=(c["bos"] == "double")
    )
    ids2 = enc["input_ids"][0].to(torch.int64)
    tokens2, text2 = generate(ref, ids2, p)

    shared = 0
    for a, b in zip(ids1.tolist() + tokens1, ids2.tolist()):
        if a != b:
            break
        shared += 1
    meta = dict(
        case=c["name"],
        checkpoint=c["checkpoint"],
        image=c["image"],
        regions=c["regions"],
        prompt_kind=c["kind"],
        instruction=c.get("instruction"),
        question=c.get("question"),
        max_num_tiles=p["M"],
        max_num_tiles_override=True,
        bos_policy=c["bos"],
        n_new_tokens=N_NEW,
        turns=[
            dict(user=c.get("instruction") or c.get("question"), prompt_len=int(ids1.shape[0]),
                 tokens=tokens1, text=text1),
            dict(user=c["follow_up"], prompt_len=int(ids2.shape[0]), tokens=tokens2, text=text2,
                 prompt_rendered=rendered2, shared_prefix_with_turn1=shared),
        ],
    )
    out = OUT / c["name"]
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "meta.json", meta)
    print(f"{c['name']}: L1={ids1.shape[0]} L2={ids2.shape[0]} shared={shared} "
          f"t1={text1[:60]!r} t2={text2[:60]!r}", flush=True)


def main(argv):
    setup_torch(2)
    if OUT.exists():
        shutil.rmtree(OUT)
    OUT.mkdir(parents=True)
    for c in CASES:
        run_case(c)
    write_generated_by(
        OUT,
        "tools/reference/.venv/bin/python tools/reference/make_chat_fixture.py",
        "Two-turn chats on the tiny checkpoints: each turn generated from scratch by the reference (greedy, "
        f"{N_NEW} new tokens max, stop at <|eot_id|>) on the re-rendered conversation.",
    )


if __name__ == "__main__":
    main(sys.argv)
