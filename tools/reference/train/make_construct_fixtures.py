"""Sample-construction parity fixture (training.md §2.1–2.5): an independent Python restatement of GAR's
`_parse_annotations` conversation building, run on synthetic rows with Python's `random`, recording every draw.
The Rust test replays the recorded draws (kind, range and value) and must produce the same turns and the same
(prompt index, mask) regions, or the same rejection. Masks travel as COCO compressed RLE written by the encoder
below (a restatement of cocoapi's rleToString), so the Rust RLE decoder is checked on the way.

Writes fixtures/train/construct/{cases.json, GENERATED_BY.md}."""

import json
import random
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from common import FIXTURES  # noqa: E402

OUT = FIXTURES / "train" / "construct"
PROMPT_NUMBERS = 5
MARK = "[[crop {}]]"
TEMPLATES = [
    "Describe the masked region {S}.", "Describe the masked area {S}.",
    "What can you describe about the masked region {S}?", "Can you describe the masked region {S}?",
    "Provide an explanation of the masked region {S}.", "Depict the masked area {S}.", "Portray the masked area {S}.",
    "Describe what the masked region looks like {S}.", "Illustrate the masked region {S}.",
    "How would you explain the masked area {S}?", "What details can you provide about the masked region {S}?",
    "What does the masked region entail {S}?", "How would you illustrate the masked region {S}?",
    "How would you depict the masked area {S}?", "How would you portray the masked area {S}?",
    "Give a detailed description of the masked region.", "Provide a thorough description of the masked region.",
    "Can you explain the details of the masked area?", "Give a detailed account of the masked region.",
    "Describe the masked area comprehensively.", "Provide an in-depth description of the masked region.",
    "Explain the specifics of the masked area.", "Can you provide a thorough explanation of the masked region?",
    "What are the details of the masked area?", "Provide a comprehensive description of the masked area.",
    "What specific details can you provide about the masked region?",
    "Can you give an in-depth account of the masked section?",
    "What are the main characteristics of the masked region?",
    "Give a thorough description of the masked area's details.",
    "Provide detailed information about the masked area.",
]


class Recorder:
    """Python's random, with every draw logged."""

    def __init__(self, seed):
        self.r = random.Random(seed)
        self.log = []

    def permutation(self, n):
        p = list(range(n))
        self.r.shuffle(p)
        self.log.append({"kind": "permutation", "value": p})
        return p

    def random(self):
        v = self.r.random()
        self.log.append({"kind": "random", "value": v})
        return v

    def randint(self, lo, hi):
        v = self.r.randint(lo, hi)
        self.log.append({"kind": "randint", "lo": lo, "hi": hi, "value": v})
        return v

    def choice(self, options):
        i = self.r.randrange(len(options))
        self.log.append({"kind": "choice", "n": len(options), "value": i})
        return options[i]


def prompt_aug(caption, rng):
    r = rng.random()
    if r < 0.6:
        i = rng.randint(0, 29)
        return TEMPLATES[i].replace("{S}", "in detail")
    if r > 0.8:
        wc = len(caption.split())
        i = rng.randint(0, 14)
        if wc < 10:
            s = f"in {wc} words"
        elif wc > 200:
            s = "in more than 200 words"
        else:
            s = f"in {rng.choice(['about', 'around'])} {round(wc / 10) * 10} words"
        return TEMPLATES[i].replace("{S}", s)
    sc = len([p for p in re.split(r"[.!?]", caption) if p.strip()])
    i = rng.randint(0, 14)
    s = rng.choice(["in a sentence", "in one sentence", "in 1 sentence"]) if sc == 1 else f"in {sc} sentences"
    return TEMPLATES[i].replace("{S}", s)


class Reject(Exception):
    pass


def build(row, cfg, rng):
    """Returns (turns as [user, assistant] pairs, regions as [prompt_index, mask_index or -1 = full image])."""
    w, h = row["width"], row["height"]
    masks = row["masks"]
    if masks is not None:
        for m in masks:
            if (m["width"], m["height"]) != (w, h):
                raise Reject("mask_size")
            if not any(m["pixels"]):
                raise Reject("empty_mask")
    n_masks = 0 if masks is None else len(masks)
    perm = rng.permutation(PROMPT_NUMBERS)
    n_sel = min(n_masks, PROMPT_NUMBERS - 1)
    sel, not_sel = perm[:n_sel], perm[n_sel:]
    conv = row["conversations"]
    if masks is None:
        turns, regions = pairs(conv), [[perm[0], -1]]
    else:
        tags = sorted({int(k) for c in conv for k in re.findall(r"<Prompt(\d+)>", c["value"])})
        if not tags:
            turns, regions = path_a(conv, sel, not_sel, cfg, rng)
        else:
            turns, regions = path_b(conv, tags, n_masks)
    if w < 10 or h < 10:
        raise Reject("too_small")
    return turns, regions


def pairs(conv):
    if not conv or len(conv) % 2:
        raise Reject("bad_turns")
    out = []
    for n in range(0, len(conv), 2):
        u, a = conv[n], conv[n + 1]
        if u["from"] != "human" or a["from"] != "gpt":
            raise Reject("bad_turns")
        text = u["value"].replace("<image>\n", "") if n == 0 else u["value"]
        if n and "<image>" in text:
            raise Reject("image_in_later_turn")
        out.append([text, a["value"]])
    return out


def path_a(conv, sel, not_sel, cfg, rng):
    if conv and conv[0]["from"] != "human":
        raise Reject("bad_turns")
    caps = [c["value"] for c in conv if c["from"] == "gpt"]
    if len(caps) < len(sel):
        raise Reject("missing_caption")

    def q(c):
        return prompt_aug(c, rng) if cfg["prompt_augmentation"] else "Describe this masked region in detail."

    tags = [f"<Prompt{k}>" for k in sel]
    desc = "There are some objects I am curious about: " + "; ".join(tags) + "; "
    turns = [[desc + "\n" + tags[0] + ": " + MARK.format(sel[0]) + q(caps[0]), caps[0]]]
    neg = False
    for i in range(1, len(sel)):
        if not neg and rng.random() < cfg["negative_probability"]:
            t = f"<Prompt{not_sel[0]}>"
            turns.append([t + ": " + prompt_aug(caps[i], rng), t + " is not in the image."])
            neg = True
        turns.append([tags[i] + ": " + MARK.format(sel[i]) + q(caps[i]), caps[i]])
    return turns, [[k, i] for i, k in enumerate(sel)]


def path_b(conv, tags, n_masks):
    turns = pairs(conv)
    head = "There are some objects I am curious about: " + "".join(f"<Prompt{k}>; " for k in tags) + "\n"
    regions = []
    for k in tags:
        if k < PROMPT_NUMBERS:
            if k >= n_masks:
                raise Reject("tag_beyond_masks")
            regions.append([k, k])
            crops = MARK.format(k)
        else:
            crops = f"<|reserved_special_token_{k + 2}|>" * 256
        head += f"<Prompt{k}>: {crops}\n"
    turns[0][0] = head + "\n" + turns[0][0]
    return turns, regions


def rle_encode(pixels, w, h):
    """Column-major runs starting with zeros, cocoapi's compressed string."""
    runs, cur, n = [], 0, 0
    for x in range(w):
        for y in range(h):
            v = pixels[y * w + x]
            if v != cur:
                runs.append(n)
                cur, n = v, 0
            n += 1
    runs.append(n)
    out = []
    for i, x in enumerate(runs):
        if i > 2:
            x -= runs[i - 2]
        more = True
        while more:
            c = x & 0x1F
            x >>= 5
            more = (x != -1) if (c & 0x10) else (x != 0)
            if more:
                c |= 0x20
            out.append(chr(c + 48))
    return "".join(out)


WORDS = "red small dog cat sits on a wooden table near the window with light blue sky tree car".split()


def caption(rnd):
    n_sent = rnd.choice([1, 1, 2, 3])
    sents = []
    for _ in range(n_sent):
        k = rnd.choice([3, 5, 8, 12, 25, 35, 60])
        sents.append(" ".join(rnd.choice(WORDS) for _ in range(k)).capitalize() + rnd.choice([".", "!", "?"]))
    if rnd.random() < 0.1:
        return " ".join(rnd.choice(WORDS) for _ in range(230)) + "."
    return " ".join(sents)


def make_mask(rnd, w, h, empty=False):
    x0, y0 = rnd.randrange(w), rnd.randrange(h)
    x1, y1 = rnd.randrange(x0, w) + 1, rnd.randrange(y0, h) + 1
    px = [0] * (w * h)
    if not empty:
        for y in range(y0, y1):
            for x in range(x0, x1):
                px[y * w + x] = 1
    return {"width": w, "height": h, "pixels": px}


def make_row(rnd, kind):
    w, h = rnd.choice([(16, 12), (24, 20), (12, 10)]) if kind != "small" else (8, 20)
    n = rnd.randint(1, 6)
    masks = [make_mask(rnd, w, h) for _ in range(n)]
    if kind in ("a", "small"):
        conv = []
        for i in range(n + (1 if rnd.random() < 0.3 else 0)):
            conv += [{"from": "human", "value": "<image>\nWhat is it?"}, {"from": "gpt", "value": caption(rnd)}]
        if rnd.random() < 0.1:
            conv = conv[:2]  # too few captions for the masks → reject when n > 1
    elif kind == "b":
        ks = rnd.sample(range(min(n, 5)), rnd.randint(1, min(n, 5)))
        if rnd.random() < 0.3:
            ks.append(rnd.choice([5, 7]))
        if rnd.random() < 0.3:
            ks.append(n)  # beyond the mask list
        conv = [{"from": "human", "value": "<image>\nHow do " + " and ".join(f"<Prompt{k}>" for k in ks) + " relate?"},
                {"from": "gpt", "value": f"<Prompt{ks[0]}> is next to the other. " + caption(rnd)}]
        if rnd.random() < 0.5:
            conv += [{"from": "human", "value": "And then?"}, {"from": "gpt", "value": caption(rnd)}]
    elif kind == "c":
        masks = None
        conv = [{"from": "human", "value": "<image>\nDescribe the image."}, {"from": "gpt", "value": caption(rnd)}]
    elif kind == "bad_mask":
        masks[rnd.randrange(n)] = make_mask(rnd, w + 1, h)
        conv = [{"from": "human", "value": "q"}, {"from": "gpt", "value": "a"}] * n
    else:  # empty mask
        masks[rnd.randrange(n)] = make_mask(rnd, w, h, empty=True)
        conv = [{"from": "human", "value": "q"}, {"from": "gpt", "value": "a"}] * n
    return {"width": w, "height": h, "masks": masks, "conversations": conv}


def main():
    rnd = random.Random(7)
    kinds = ["a"] * 24 + ["b"] * 12 + ["c"] * 3 + ["small", "bad_mask", "empty"]
    cases = []
    for idx, kind in enumerate(kinds):
        row = make_row(rnd, kind)
        cfg = {
            "prompt_augmentation": idx % 6 != 5,
            # A high negative rate in some cases so that the negative-pair branch is exercised.
            "negative_probability": 0.5 if idx % 3 == 0 else 0.05,
        }
        rng = Recorder(1000 + idx)
        try:
            turns, regions = build(row, cfg, rng)
            result = {"turns": turns, "regions": regions}
        except Reject as e:
            result = {"reject": str(e)}
        masks = None
        if row["masks"] is not None:
            masks = [{"size": [m["height"], m["width"]], "counts": rle_encode(m["pixels"], m["width"], m["height"])}
                     for m in row["masks"]]
        cases.append({"kind": kind, "width": row["width"], "height": row["height"], "mask_rle": masks,
                      "conversations": row["conversations"], "config": cfg, "draws": rng.log, "expect": result})
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "cases.json").write_text(json.dumps({"cases": cases}, indent=None, sort_keys=True) + "\n")
    (OUT / "GENERATED_BY.md").write_text(
        "# Generated file set — do not edit by hand\n\n"
        "Sample construction (training.md §2.1–2.5) restated in Python, run on "
        f"{len(cases)} synthetic rows (paths A, B, C and rejections) with Python's `random` (seeds 1000+i); every "
        "draw is recorded. `cases.json`: per case the row (image size, COCO-RLE masks, conversations), the "
        "construction settings, the draws and the expected turns + regions (`[prompt index, mask index]`, −1 = whole "
        "image) or the rejection.\n\n"
        "Command: `tools/reference/.venv/bin/python tools/reference/train/make_construct_fixtures.py` "
        "(or `tools/reference/regenerate.sh train`).\n"
    )


if __name__ == "__main__":
    main()
