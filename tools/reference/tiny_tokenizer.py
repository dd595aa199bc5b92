"""A small byte-level BPE in the Llama-3 / PLM / GAR layout for the tiny checkpoints.

Trained with the `tokenizers` library on a deterministic corpus (GAR captions and GAR-Bench questions from
shared/data). Regular tokens first (bytes + merges), then the Llama-3 special tokens in the PLM order of
gar-spec §7.1 (with only a few reserved tokens), then <Prompt0>..<Prompt{N-1}>, <NO_Prompt>.
"""

import json
from pathlib import Path

from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers, processors, trainers

from common import shared_data
from plm_text import (
    BOS,
    DEFAULT_SYSTEM,
    EOS_TEXT,
    EOT,
    IMAGE,
    LLAMA3_SPLIT_REGEX,
    PLM_CHAT_TEMPLATE,
    VIDEO,
    gar_prompt_tokens,
    plm_special_tokens,
)

# regular vocabulary size (256 byte symbols + merges)
REGULAR_VOCAB = 400
# keep <|reserved_special_token_5..10|> after <|eot_id|>
RESERVED_UPTO = 10


def training_corpus() -> list:
    """Deterministic list of training lines (sorted, de-duplicated)."""
    d = shared_data() / "evaluation"
    lines = set()
    for name in ("gar_1b.json", "gar_8b.json"):
        for v in json.loads((d / "DLC-Bench/model_outputs" / name).read_text()).values():
            lines.add(v)
    for name in ("GAR-Bench-VQA.json", "GAR-Bench-Caption-Simple.json"):
        for it in json.loads((d / "GAR-Bench/annotations" / name).read_text()):
            lines.add(it["question"])
            for c in it.get("choices", []):
                lines.add(c)
    for name in ("gar_1b_detailed.json",):
        for it in json.loads((d / "GAR-Bench/model_outputs" / name).read_text()):
            lines.add(it["model_output"])
    lines.add(DEFAULT_SYSTEM)
    lines.add("There are some objects I am curious about: Describe this masked region in detail.")
    lines.add("Question: Options: Answer with the correct option's letter directly.")
    return sorted(lines)


def build_base_tokenizer() -> Tokenizer:
    tok = Tokenizer(models.BPE(ignore_merges=True))
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(LLAMA3_SPLIT_REGEX), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel(add_prefix_space=True, trim_offsets=True, use_regex=True)
    trainer = trainers.BpeTrainer(
        vocab_size=REGULAR_VOCAB,
        min_frequency=2,
        show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        special_tokens=[],
    )
    tok.train_from_iterator(training_corpus(), trainer=trainer)
    return tok


def build_gar_tokenizer(prompt_numbers: int) -> Tokenizer:
    tok = build_base_tokenizer()
    assert tok.get_vocab_size() == REGULAR_VOCAB, tok.get_vocab_size()
    specials = plm_special_tokens(RESERVED_UPTO) + gar_prompt_tokens(prompt_numbers)
    tok.add_special_tokens(
        [AddedToken(t, single_word=False, lstrip=False, rstrip=False, normalized=False, special=True) for t in specials]
    )
    bos_id = tok.token_to_id(BOS)
    assert bos_id == REGULAR_VOCAB
    tok.post_processor = processors.Sequence(
        [
            processors.ByteLevel(add_prefix_space=True, trim_offsets=False, use_regex=True),
            processors.TemplateProcessing(
                single=f"{BOS}:0 $A:0",
                pair=f"{BOS}:0 $A:0 {BOS}:1 $B:1",
                special_tokens=[(BOS, bos_id)],
            ),
        ]
    )
    return tok


def save_hf_tokenizer(tok: Tokenizer, out_dir: Path):
    """Write tokenizer.json, tokenizer_config.json, special_tokens_map.json via transformers."""
    from transformers import PreTrainedTokenizerFast

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
    out_dir.mkdir(parents=True, exist_ok=True)
    hf.save_pretrained(str(out_dir))
    # keep the chat template inside tokenizer_config.json (as the published PLM files do) and sort keys
    cfg_path = out_dir / "tokenizer_config.json"
    cfg = json.loads(cfg_path.read_text())
    jinja = out_dir / "chat_template.jinja"
    if jinja.exists():
        jinja.unlink()
    cfg["chat_template"] = PLM_CHAT_TEMPLATE
    cfg_path.write_text(json.dumps(cfg, indent=2, sort_keys=True, ensure_ascii=False) + "\n")
    return hf
