"""Measure the PyTorch reference end to end on the same synthetic inputs as `gar bench` (docs/performance.md).

    tools/reference/.venv/bin/python tools/reference/bench/bench_reference.py --model DIR --tiles N \
        --prompt-tokens N --new-tokens N [--dtype f32|bf16] [--gqa-fix] [--threads N] [--repeat K]

Inputs mirror crates/gar-engine/src/bench.rs: a (448·ncw)×(448·nch) hash image (`pixel`), ncw×nch the most
square factorisation of tiles−1 with max_num_tiles = tiles−1; region <Prompt0> = box [w/4,3w/4)×[h/4,3h/4);
question "Describe <Prompt0> in detail." + k×" the" (smallest k reaching --prompt-tokens); double BOS.
Stages: preprocess (transformers processor + label map), vision (mask conv + timm Eva + projector + replay),
prefill (embeds + one forward with cache, last-position logits), decode (new_tokens − 1 greedy steps, no stop).
Stock transformers passes `enable_gqa=True` to SDPA (math kernel on CPU); --gqa-fix repeats K/V instead so the
fused CPU kernel runs. The last stdout line is one JSON object with the keys of `gar bench --json`.
"""

import argparse
import json
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

from gar_reference import GARReference  # noqa: E402
from plm_text import multi_region_text, user_message  # noqa: E402
from processor_reference import build_label_map, mask_bbox, process_label_map  # noqa: E402

TILE = 448
SEED = 0x67617221
BASE_QUESTION = "Describe <Prompt0> in detail."
FILLER = " the"


def grid_for_tiles(tiles):
    if tiles < 2:
        sys.exit(f"error: --tiles must be at least 2 (one thumbnail plus at least one grid tile), got {tiles}")
    g = tiles - 1
    nch = max(d for d in range(1, g + 1) if g % d == 0 and d * d <= g)
    return g // nch, nch


def pixel(x, y, c):
    """Same u32 hash as gar_engine::bench::pixel (numpy arrays broadcast)."""
    u = np.uint32
    with np.errstate(over="ignore"):
        h = (x.astype(u) * u(0x9E3779B1) + y.astype(u) * u(0x85EBCA77) + c.astype(u) * u(0xC2B2AE3D)) ^ u(SEED)
        h ^= h >> u(15)
        h = h * u(0x2C1B3C6D)
        h ^= h >> u(12)
    return (h >> u(24)).astype(np.uint8)


def synthetic_image(w, h):
    y, x, c = np.meshgrid(np.arange(h), np.arange(w), np.arange(3), indexing="ij")
    return pixel(x, y, c)


def synthetic_mask(w, h):
    m = np.zeros((h, w), dtype=bool)
    m[h // 4 : 3 * h // 4, w // 4 : 3 * w // 4] = True
    return m


def peak_rss_mib():
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


class Bench:
    def __init__(self, ref, tiles, prompt_tokens, dtype, device):
        self.ref, self.dtype, self.device = ref, dtype, device
        self.grid = grid_for_tiles(tiles)
        ncw, nch = self.grid
        self.M = ncw * nch
        w, h = ncw * TILE, nch * TILE
        self.img = Image.fromarray(synthetic_image(w, h))
        self.mask = synthetic_mask(w, h)
        self.k = 0
        base = self.length(0)
        total = base
        if prompt_tokens > base:
            per = max(self.length(1) - base, 1)
            self.k = -(-(prompt_tokens - base) // per)
            total = self.length(self.k)
            while total < prompt_tokens:
                self.k += 1
                total = self.length(self.k)
        self.prompt_tokens = total

    def rendered(self, k):
        text = multi_region_text([0], BASE_QUESTION + FILLER * k)
        return self.ref.tokenizer.apply_chat_template(user_message(text), tokenize=False, add_generation_prompt=True)

    def encode(self, k):
        self.ref.image_processor.max_num_tiles = self.M
        return self.ref.processor(images=self.img, text=self.rendered(k), return_tensors="pt", add_special_tokens=True)

    def length(self, k):
        return int(self.encode(k)["input_ids"].shape[1])

    def sync(self):
        # GPU work is asynchronous: a stage ends when its kernels have finished.
        if self.device.type == "cuda":
            torch.cuda.synchronize()

    def run(self, new_tokens):
        ref, dt, dev = self.ref, self.dtype, self.device
        self.sync()
        t0 = time.perf_counter()
        enc = self.encode(self.k)
        labels, grid = process_label_map(ref.image_processor, build_label_map({0: self.mask}, *self.mask.shape, ref.prompt_numbers), self.M)
        bbox = mask_bbox(self.mask)
        pv, ids = enc["pixel_values"][0].to(dev, dt), enc["input_ids"][0].to(dev, torch.int64)
        labels = labels.to(dev)
        self.sync()
        t1 = time.perf_counter()
        with torch.inference_mode():
            T = pv.shape[0]
            N = ref.prompt_numbers
            binary = (labels != N).to(dt)[:, None].expand(-1, 3, -1, -1)
            mask_emb = ref.mask_patch_embedding(binary)
            vision_out = ref.vision_forward(pv, mask_emb)
            feats = vision_out[:, 1:] if ref.use_cls else vision_out
            image_features = ref.mllm.model.multi_modal_projector(feats)
            fmap = ref.merge_tiles(image_features, *self.grid)
            rep, _ = ref.replay_one(fmap, bbox, *self.grid)
            self.sync()
            t2 = time.perf_counter()
            emb = ref.build_inputs_embeds(ids, image_features, {ref.crop_tokens_ids[0]: rep})
            out = ref.mllm(inputs_embeds=emb[None], use_cache=True, logits_to_keep=1)
            tok = int(torch.argmax(out.logits[0, -1]))
            t3 = time.perf_counter()
            past, toks = out.past_key_values, [tok]
            for _ in range(new_tokens - 1):
                step = ref.embed(torch.tensor([[tok]], device=dev))
                out = ref.mllm(inputs_embeds=step, past_key_values=past, use_cache=True)
                past, tok = out.past_key_values, int(torch.argmax(out.logits[0, -1]))
                toks.append(tok)
            t4 = time.perf_counter()
        assert T == self.M + 1 and grid == self.grid and len(toks) == new_tokens
        return dict(preprocess_s=t1 - t0, vision_s=t2 - t1, prefill_s=t3 - t2, decode_s=t4 - t3, end_to_end_s=t4 - t0,
                    ttft_s=t3 - t0)


def main():
    ap = argparse.ArgumentParser(description="PyTorch reference end-to-end speed (same JSON keys as gar bench)")
    ap.add_argument("--model", required=True, type=Path)
    ap.add_argument("--tiles", type=int, default=5)
    ap.add_argument("--prompt-tokens", type=int, default=0)
    ap.add_argument("--new-tokens", type=int, default=32)
    ap.add_argument("--dtype", choices=["f32", "bf16"], default="f32")
    ap.add_argument("--gqa-fix", action="store_true")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--device", default="cpu", help="torch device, e.g. cuda")
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--json", action="store_true", help="accepted for symmetry; JSON is always the last line")
    a = ap.parse_args()
    grid_for_tiles(a.tiles)
    if a.new_tokens < 2:
        sys.exit(f"error: --new-tokens must be at least 2, got {a.new_tokens}")
    if a.repeat < 1:
        sys.exit("error: --repeat must be at least 1")
    if a.threads:
        torch.set_num_threads(a.threads)
    if a.gqa_fix:
        import transformers.integrations.sdpa_attention as sdpa

        sdpa.use_gqa_in_sdpa = lambda *args, **kw: False  # repeat_kv, then the fused kernel
    dt = torch.bfloat16 if a.dtype == "bf16" else torch.float32
    t = time.perf_counter()
    ref = GARReference(a.model)
    device = torch.device(a.device)
    ref.mllm.to(device, dt)
    ref.mask_patch_embedding.to(device, dt)
    load_s = time.perf_counter() - t
    bench = Bench(ref, a.tiles, a.prompt_tokens, dt, device)
    runs = [bench.run(a.new_tokens) for _ in range(a.repeat)]
    best = {k: min(r[k] for r in runs) for k in runs[0]}
    L = bench.prompt_tokens
    res = dict(
        engine="pytorch-gqa-fix" if a.gqa_fix else "pytorch",
        model=str(a.model), dtype=a.dtype, device=a.device, threads=torch.get_num_threads(), tiles=a.tiles, grid=list(bench.grid),
        image_size=list(bench.img.size), prompt_tokens_requested=a.prompt_tokens, prompt_tokens=L,
        filler_count=bench.k, new_tokens=a.new_tokens, repeat=a.repeat, load_s=load_s,
        attn_implementation=ref.mllm.config._attn_implementation, **best,
        vision_s_per_tile=best["vision_s"] / a.tiles,
        prefill_tokens_per_s=L / best["prefill_s"],
        decode_tokens_per_s=(a.new_tokens - 1) / best["decode_s"],
        end_to_end_runs_s=[r["end_to_end_s"] for r in runs], peak_rss_mib=peak_rss_mib(),
        peak_gpu_mib=torch.cuda.max_memory_allocated() / 2**20 if device.type == "cuda" else None,
        versions=dict(torch=torch.__version__, transformers=__import__("transformers").__version__),
    )
    print(json.dumps(res, sort_keys=True))


if __name__ == "__main__":
    main()
