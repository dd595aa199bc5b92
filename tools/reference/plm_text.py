"""Text-side constants of Perception-LM / GAR (gar-spec §7) shared by every generator."""

# Pre-tokenizer regex of the Llama-3 tokenizer.json (checked against the real file in
# make_tokenizer_fixture.py).
LLAMA3_SPLIT_REGEX = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)

BOS = "<|begin_of_text|>"
EOS_TEXT = "<|end_of_text|>"
IMAGE = "<|image|>"
VIDEO = "<|video|>"
EOT = "<|eot_id|>"


def plm_special_tokens(num_reserved_upto: int = 250) -> list:
    """Llama-3 special tokens in the PLM order of gar-spec §7.1 (ids 128000.. in the real tokenizer).

    `num_reserved_upto` = last `<|reserved_special_token_i|>` kept (250 for the real layout)."""
    head = [
        BOS,
        EOS_TEXT,
        IMAGE,
        VIDEO,
        "<|reserved_special_token_2|>",
        "<|reserved_special_token_3|>",
        "<|start_header_id|>",
        "<|end_header_id|>",
        "<|reserved_special_token_4|>",
        EOT,
    ]
    return head + [f"<|reserved_special_token_{i}|>" for i in range(5, num_reserved_upto + 1)]


def gar_prompt_tokens(prompt_numbers: int) -> list:
    return [f"<Prompt{k}>" for k in range(prompt_numbers)] + ["<NO_Prompt>"]


def crop_token(k: int) -> str:
    """Replay placeholder for <PromptK> (gar-spec §7.1)."""
    return f"<|reserved_special_token_{k + 2}|>"


DEFAULT_SYSTEM = (
    "You are a helpful language and vision assistant. You are able to understand the visual content that the "
    "user provides, and assist the user with a variety of tasks using natural language."
)

# The Perception-LM chat template (the one shipped with the PLM / GAR tokenizer configs, gar-spec §7.2).
PLM_CHAT_TEMPLATE = (
    "{{- bos_token }}"
    "{%- if messages[0]['role'] == 'system' -%}"
    "    {%- set system_message = messages[0]['content']|trim %}\n"
    "    {%- set messages = messages[1:] %}\n"
    "{%- else %}"
    "    {%- set system_message = '" + DEFAULT_SYSTEM + "' %}"
    "{%- endif %}"
    "{{- '<|start_header_id|>system<|end_header_id|>\\n\\n' }}"
    "{{- system_message }}"
    "{{- '<|eot_id|>' }}"
    "{%- for message in messages %}"
    "{{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' }}"
    "{%- for content in message['content'] | selectattr('type', 'equalto', 'image') %}"
    "{{ '<|image|>' }}"
    "{%- endfor %}"
    "{%- for content in message['content'] | selectattr('type', 'equalto', 'video') %}"
    "{{ '<|video|>' }}"
    "{%- endfor %}"
    "{%- for content in message['content'] | selectattr('type', 'equalto', 'text') %}"
    "{{- content['text'] | trim }}"
    "{%- endfor %}"
    "{{'<|eot_id|>' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}"
    "{{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}"
    "{%- endif %}"
)


def single_region_text(k: int = 1, instruction: str = "Describe this masked region in detail.") -> str:
    """GAR single-region user text (gar-spec §7.3; default prompt slot <Prompt1>)."""
    p = f"<Prompt{k}>"
    return f"There are some objects I am curious about: {p};\n{p}: " + crop_token(k) * 256 + instruction


def multi_region_text(prompt_indices, question: str) -> str:
    """GAR multi-region user text (gar-spec §7.3), prompts in the given (sorted) order."""
    ps = [f"<Prompt{k}>" for k in prompt_indices]
    text = "There are some objects I am curious about: " + "".join(f"{p}; " for p in ps) + "\n"
    for k, p in zip(prompt_indices, ps):
        text += f"{p}: " + crop_token(k) * 256 + "\n"
    return text + "\n" + question


def garbench_vqa_question(item) -> str:
    """GAR-Bench-VQA question block (benchmarks.md §4.2)."""
    return (
        "Question: "
        + item["question"]
        + "\nOptions:\n"
        + "\n".join(item["choices"])
        + "\nAnswer with the correct option's letter directly."
    )


def user_message(text: str) -> list:
    return [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": text}]}]
