//! # gar-models
//!
//! Pure candle implementation of the Grasp Any Region (GAR) model and of plain Perception-LM: a Perception
//! Encoder ViT (timm `Eva`, 2D RoPE), a Linear-GELU-Linear projector with 2×2 average pooling, and a Llama 3
//! decoder; GAR adds a mask patch embedding inside the vision tower and RoI-Align feature replay of region
//! crops. Behaviour follows `docs/gar-spec.md` (sections cited in each module). No I/O beyond reading a
//! checkpoint directory, no tokenizer, no image decoding: those live in `gar-processor` / `gar-engine`.
//!
//! ## Using it
//!
//! ```no_run
//! use std::ops::ControlFlow;
//! use candle_core::{DType, Device, Tensor};
//! use gar_models::{generate, GarModel, GarQuirks, GenerationConfig, RegionBox};
//!
//! # fn main() -> anyhow::Result<()> {
//! let device = Device::Cpu;
//! // config.json + model.safetensors (or sharded with model.safetensors.index.json); any stored dtype.
//! let model = GarModel::load("/path/to/GAR-1B", DType::F32, &device, GarQuirks::default())?;
//!
//! // From gar-processor: tiles (T, 3, 448, 448) in [-1, 1], label maps (T, 448, 448) where
//! // value K marks <PromptK> and `prompt_numbers` (5) is background, the tile grid (ncw, nch),
//! // the token ids and one normalized box per region prompt.
//! # let (t, ncw, nch) = (7, 3, 2);
//! let pixels = Tensor::zeros((t, 3, 448, 448), DType::F32, &device)?;
//! let labels = Tensor::full(5u8, (t, 448, 448), &device)?;
//! let input_ids: Vec<u32> = vec![/* ... */];
//! let regions = [RegionBox { crop_token_id: 128005, bbox: [0.1, 0.2, 0.9, 0.8] }];
//!
//! let features = model.encode_image(&pixels, Some(&labels))?;            // (T, 256, H)
//! let embeds = model.embed_prompt(&input_ids, Some(&features), (ncw, nch), &regions)?; // (1, L, H)
//! let mut cache = model.new_cache(embeds.dim(1)? + 1024);
//! let out = generate(model.llama(), &embeds, &mut cache, &[], &GenerationConfig::default(),
//!                    &mut |tok| { print!("{tok} "); ControlFlow::Continue(()) })?;
//! println!("{:?} {:?}", out.tokens, out.stop_reason);
//! # Ok(()) }
//! ```
//!
//! Step by step instead of [`generate()`]: `let h = model.forward(&embeds, 0, &mut cache)?` returns the
//! final-norm hidden states of every position; `model.logits(&h)` gives f32 logits; then feed one token
//! embedding (`model.llama().embed(&[tok])`) at position `cache.seq_len()`.
//!
//! ## Public API
//! * [`GarModel`]: `load(dir, dtype, device, quirks)`, `from_checkpoint`, `new(cfg, vb, quirks)`,
//!   `encode_image(pixels, Option<labels>)`, `encode_image_stages` ([`VisionStages`]), `mask_embeds`,
//!   `embed_prompt(ids, Option<features>, (ncw, nch), &[RegionBox])`, `replay_features`, `replay_roi`,
//!   `new_cache(capacity)`, `forward(embeds, start, &mut cache)` (hidden states of all positions),
//!   `logits(hidden)`, `prefill(embeds, &mut cache)` / `decode_step(token, &mut cache)` (last logits), accessors
//!   `config() llama() vision_tower() projector() quirks() with_quirks()`.
//! * [`GarQuirks`] (`roi_double_scale`, default `true` = reference behaviour), [`RegionBox`].
//! * [`Llama`]: `new`, `embed`, `embed_ids`, `forward`, `logits`, `last_logits`, `new_cache`;
//!   [`KvCache`] (`new`, `seq_len`, `reset`).
//! * Quantization: [`Quant`] (`none`, `q8` = Q8_0, `q4` = Q4_K), applied layer by layer while
//!   loading with `GarModel::load_quantized` / `new_quantized` / `Llama::new_quantized` (load peak near the
//!   quantized size), or after loading with `GarModel::quantize_language_model` / `Llama::quantize`
//!   ([`QuantReport`] says what was converted).
//! * [`generate()`] / [`generate_simple`] with [`GenerationConfig`] (max_new_tokens, stop_tokens, sampling),
//!   [`GenerationOutput`], [`StopReason`]; [`Sampler`] / [`SamplingConfig`] (greedy default; temperature,
//!   top-k, top-p, repetition penalty, seed).
//! * [`GarConfig`] (`from_file`, `from_json_str`) with [`VisionConfig`], [`LlamaConfig`],
//!   [`GarRegionConfig`].
//! * [`weights::Checkpoint`]: safetensors single/sharded (mmap, pages released per tensor once copied) or in-memory tensors; lookups check names and
//!   shapes and fail with [`WeightError`] (surfaced as [`LoadError::Weight`]) naming the tensor.
//! * [`gguf::load_llama_gguf`] + [`gguf::llama_from_checkpoint`]: llama.cpp GGUF → HF-named f32 Llama.
//! * [`roi_align`]: the RoI Align used by feature replay (tensor path + kernel-port oracle).
//!
//! Compute dtype is chosen at load (f32 recommended on CPU; bf16/f16 on GPU). Norm statistics, softmax,
//! RoPE tables, pooling sums and RoI Align run in f32 whatever the compute dtype, as in the reference.

pub mod config;
pub mod error;
pub mod gar;
pub mod generate;
pub mod gguf;
pub mod llama;
pub mod nn;
pub mod projector;
pub mod roi_align;
pub mod sampling;
pub mod vision;
pub mod weights;

pub use config::{GarConfig, GarRegionConfig, LlamaConfig, RopeScaling, VisionConfig};
pub use error::{ConfigError, LoadError, WeightError};
pub use gar::{GarModel, GarQuirks, RegionBox, VisionStages};
pub use generate::{
    generate, generate_simple, GenerationConfig, GenerationOutput, StopReason, EOT_ID,
};
pub use llama::Llama;
pub use nn::kv_cache::KvCache;
pub use nn::quant::{Quant, QuantReport};
pub use sampling::{Sampler, SamplingConfig};
