"""The GAR forward in f32 on CPU, built on transformers' PerceptionLMForConditionalGeneration, timm and
torchvision.ops.roi_align (gar-spec §3, §4, §5, §8.3, §8.4, §9). Our own code; no GAR source is used.
"""

import json
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from torchvision.ops import roi_align


class GARReference:
    def __init__(self, ckpt_dir: Path):
        from transformers import (
            PerceptionLMConfig,
            PerceptionLMForConditionalGeneration,
            PerceptionLMImageProcessorFast,
            PerceptionLMProcessor,
            PerceptionLMVideoProcessor,
            PreTrainedTokenizerFast,
        )

        self.ckpt_dir = Path(ckpt_dir)
        self.config = json.loads((self.ckpt_dir / "config.json").read_text())
        mllm_cfg = PerceptionLMConfig.from_dict(self.config["mllm_config"])
        self.mllm_config = mllm_cfg
        self.mllm = PerceptionLMForConditionalGeneration(mllm_cfg).eval()
        sd = load_file(str(self.ckpt_dir / "model.safetensors"))
        mllm_sd = {k[len("mllm.") :]: v for k, v in sd.items() if k.startswith("mllm.")}
        missing, unexpected = self.mllm.load_state_dict(mllm_sd, strict=False)
        tied = mllm_cfg.text_config.tie_word_embeddings
        assert not unexpected, unexpected
        assert missing == (["lm_head.weight"] if tied else []), missing
        if tied:
            assert self.mllm.lm_head.weight.data_ptr() == self.mllm.model.language_model.embed_tokens.weight.data_ptr()
        D = self.config["mask_path_embedding_out_channels"]
        k = tuple(self.config["kernel_size"])
        self.mask_patch_embedding = torch.nn.Conv2d(3, D, kernel_size=k, stride=k, bias=False).eval()
        self.mask_patch_embedding.weight.data.copy_(sd["mask_patch_embedding.weight"])
        extra = set(sd) - {"mllm." + k for k in mllm_sd} - {"mask_patch_embedding.weight"}
        assert not extra, extra
        self.prompt_numbers = self.config["prompt_numbers"]
        self.crop_tokens_ids = self.config["crop_tokens_ids"]
        self.tokenizer = PreTrainedTokenizerFast.from_pretrained(str(self.ckpt_dir))
        self.image_processor = PerceptionLMImageProcessorFast.from_pretrained(str(self.ckpt_dir))
        self.default_max_num_tiles = self.image_processor.max_num_tiles
        proc_cfg = json.loads((self.ckpt_dir / "processor_config.json").read_text())
        self.processor = PerceptionLMProcessor(
            video_processor=PerceptionLMVideoProcessor(),
            image_processor=self.image_processor,
            tokenizer=self.tokenizer,
            patch_size=proc_cfg["patch_size"],
            pooling_ratio=proc_cfg["pooling_ratio"],
            chat_template=self.tokenizer.chat_template,
        )
        self.use_cls = mllm_cfg.vision_use_cls_token
        self.image_token_id = mllm_cfg.image_token_id

    # ------------------------------------------------------------------------------------- vision
    @property
    def timm_model(self):
        return self.mllm.model.vision_tower.timm_model

    def mask_embeds(self, labels: torch.Tensor) -> torch.Tensor:
        """labels uint8 [T,448,448] → mask embeddings [T,D,32,32] (gar-spec §8.3, via the normalised values)."""
        N = self.prompt_numbers
        mask_values = (labels.to(torch.float32)[:, None].expand(-1, 3, -1, -1) - 127.5) / 127.5
        rec = torch.clamp(torch.round((mask_values + 1) / 2 * 255), 0, N).long()
        assert torch.equal(rec[:, 0], labels.long())
        binary = (rec != N).to(torch.float32)
        return self.mask_patch_embedding(binary)

    def vision_forward(self, pixel_values: torch.Tensor, mask_embeds) -> torch.Tensor:
        """timm Eva forward_features with GAR's mask embedding added after the patch embedding (gar-spec §3)."""
        tm = self.timm_model
        x = tm.patch_embed(pixel_values)  # [T, 1024, D], token n = r*32 + c
        if mask_embeds is not None:
            x = x + mask_embeds.flatten(2).transpose(1, 2)
        x, rope = tm._pos_embed(x)
        x = tm.norm_pre(x)
        for blk in tm.blocks:
            x = blk(x, rope=rope)
        return tm.norm(x)

    def projector(self, vision_out: torch.Tensor):
        """Returns (unpooled [T,1024,H], pooled image_features [T,256,H])."""
        feats = vision_out[:, 1:] if self.use_cls else vision_out
        proj = self.mllm.model.multi_modal_projector
        unpooled = proj.linear_2(proj.gelu(proj.linear_1(feats)))
        pooled = proj(feats)
        T, n, H = unpooled.shape
        manual = F.avg_pool2d(unpooled.transpose(1, 2).reshape(T, H, 32, 32), 2).flatten(2).transpose(1, 2)
        assert torch.allclose(manual, pooled, atol=1e-5, rtol=1e-5), float((manual - pooled).abs().max())
        return unpooled, pooled

    # ------------------------------------------------------------------------------------- replay
    @staticmethod
    def merge_tiles(image_features: torch.Tensor, ncw: int, nch: int) -> torch.Tensor:
        """Drop the thumbnail; tile t = r*ncw + c → rows 16r.., cols 16c.. of [1,H,16*nch,16*ncw]."""
        tiles = image_features[1:]
        n, _, H = tiles.shape
        assert n == ncw * nch
        grid = tiles.reshape(nch, ncw, 16, 16, H).permute(4, 0, 2, 1, 3).reshape(H, 16 * nch, 16 * ncw)
        return grid[None]

    @staticmethod
    def replay_rois(bbox, ncw: int, nch: int):
        """The reference's box arithmetic (gar-spec §8.4 step 4); returns (roi f32 [1,5], spatial_scale)."""
        feat_h, feat_w = 16 * nch, 16 * ncw
        orig_w, orig_h = feat_w * 28, feat_h * 28
        ss = feat_w / orig_w
        x1, y1, x2, y2 = bbox
        roi = torch.tensor([[0.0, x1 * orig_w * ss, y1 * orig_h * ss, x2 * orig_w * ss, y2 * orig_h * ss]], dtype=torch.float32)
        return roi, ss

    def replay_one(self, fmap: torch.Tensor, bbox, ncw: int, nch: int):
        """roi_align crop with the reference's DOUBLE spatial scaling → [256, H] and the roi used."""
        roi, ss = self.replay_rois(bbox, ncw, nch)
        roi = roi.to(fmap.device)
        out = roi_align(fmap.float(), roi, output_size=(16, 16), spatial_scale=ss, sampling_ratio=2, aligned=True)
        H = out.shape[1]
        return out[0].permute(1, 2, 0).reshape(256, H), roi[0]

    # ------------------------------------------------------------------------------------- LLM
    def embed(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.mllm.model.language_model.embed_tokens(input_ids)

    def build_inputs_embeds(self, input_ids, image_features, replays_by_crop_id: dict):
        emb = self.embed(input_ids[None])
        mask = (input_ids[None] == self.image_token_id)[..., None].expand_as(emb)
        assert int(mask[..., 0].sum()) == image_features.shape[0] * image_features.shape[1]
        emb = emb.masked_scatter(mask, image_features.to(emb.dtype))
        emb = emb[0].clone()
        for cid, rep in replays_by_crop_id.items():
            pos = (input_ids == cid).nonzero().flatten()
            head, tail = int(pos[0]), int(pos[-1])
            assert tail - head + 1 == 256 == len(pos), (cid, head, tail, len(pos))
            emb[head : tail + 1] = rep.to(emb.dtype)
        return emb

    def prefill(self, inputs_embeds: torch.Tensor):
        lm = self.mllm.model.language_model
        out = lm(inputs_embeds=inputs_embeds[None], use_cache=False)
        final_hidden = out.last_hidden_state[0]
        logits = self.mllm.lm_head(final_hidden)
        full = self.mllm(inputs_embeds=inputs_embeds[None], use_cache=False).logits[0]
        assert torch.allclose(full, logits, atol=1e-5, rtol=1e-5), float((full - logits).abs().max())
        return final_hidden, logits

    def greedy(self, inputs_embeds: torch.Tensor, n_new: int):
        """Plain greedy with KV cache and no stop: (tokens, step logits [n,V], top1-top2 margins)."""
        out = self.mllm(inputs_embeds=inputs_embeds[None], use_cache=True)
        past = out.past_key_values
        logits = out.logits[0, -1]
        toks, rows = [], []
        for i in range(n_new):
            rows.append(logits.clone())
            t = int(torch.argmax(logits))
            toks.append(t)
            if i == n_new - 1:
                break
            e = self.embed(torch.tensor([[t]]))
            out = self.mllm(inputs_embeds=e, past_key_values=past, use_cache=True)
            past = out.past_key_values
            logits = out.logits[0, -1]
        step_logits = torch.stack(rows)
        top2 = torch.topk(step_logits, 2, dim=-1).values
        margins = (top2[:, 0] - top2[:, 1]).tolist()
        return toks, step_logits, margins

    def hf_generate(self, inputs_embeds: torch.Tensor, max_new_tokens: int):
        """transformers' generate exactly as GAR calls it (greedy, stop at <|eot_id|>)."""
        from transformers import GenerationConfig

        tok = self.tokenizer
        gc = GenerationConfig(
            max_new_tokens=max_new_tokens,
            do_sample=False,
            eos_token_id=tok.eos_token_id,
            pad_token_id=tok.pad_token_id,
        )
        out = self.mllm.generate(
            inputs_embeds=inputs_embeds[None],
            attention_mask=torch.ones(1, inputs_embeds.shape[0], dtype=torch.long),
            generation_config=gc,
            use_cache=True,
            return_dict_in_generate=True,
        )
        return out.sequences[0].tolist()
