//! The engine: one loaded checkpoint (processor + model) answering region requests, with timings,
//! streaming text, and multi-turn chats that keep their KV cache between turns.

use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use gar_models::{
    GarModel, GarQuirks, GenerationConfig, KvCache, Quant, QuantReport, RegionBox, StopReason,
};
use gar_processor::{GarInputs, GarProcessor, ProcessorOptions, Region, Request, RgbImage};

use crate::error::EngineError;

/// Room reserved in a fresh KV cache beyond the prompt, so short answers never reallocate it.
const CACHE_HEADROOM: usize = 512;

/// How to load a checkpoint.
#[derive(Debug, Clone)]
pub struct EngineOptions {
    pub dtype: DType,
    pub device: Device,
    pub quirks: GarQuirks,
    pub processor: ProcessorOptions,
    /// Quantization of the language model's linears (`Quant::None` = reference-exact).
    pub quant: Quant,
    /// Run the vision tower's and the projector's linears with 8-bit weights and activations (CPU with
    /// AVX2; not reference-exact).
    pub vision_int8: bool,
    /// Run the attention products (vision tower and prefill) on bf16 operands, f32 sums (CPU with AVX-512
    /// BF16; elsewhere a no-op; not reference-exact).
    pub bf16_attention: bool,
}

impl Default for EngineOptions {
    fn default() -> Self {
        Self {
            dtype: DType::F32,
            device: Device::Cpu,
            quirks: GarQuirks::default(),
            processor: ProcessorOptions::default(),
            quant: Quant::None,
            vision_int8: false,
            bf16_attention: false,
        }
    }
}

/// Wall-clock seconds spent in each stage of one answer.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Timings {
    pub load_s: f64,
    pub preprocess_s: f64,
    pub vision_s: f64,
    pub prefill_s: f64,
    pub decode_s: f64,
    /// Decode throughput: new tokens after the first, per second of decode time.
    pub tokens_per_s: f64,
}

/// One generated answer.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Answer {
    pub text: String,
    /// Generated ids, the end token excluded.
    pub tokens: Vec<u32>,
    /// Length of the prompt fed to the model (whole conversation so far for chats).
    pub prompt_tokens: usize,
    /// Prompt positions served from the KV cache instead of being recomputed (chats).
    pub cached_tokens: usize,
    pub stop_reason: String,
    pub timings: Timings,
    pub warnings: Vec<String>,
}

/// A checkpoint ready to answer.
pub struct Engine {
    model: GarModel,
    processor: GarProcessor,
    stop_tokens: Vec<u32>,
    dir: PathBuf,
    load_s: f64,
    quant: Quant,
    quant_report: QuantReport,
    /// Vision linears converted by `EngineOptions::vision_int8`.
    vision_int8_linears: usize,
    /// Whether the attention products run on bf16 operands (`EngineOptions::bf16_attention` on a CPU that
    /// has the kernel).
    bf16_attention: bool,
}

impl Engine {
    /// Loads `dir` (config, weights, tokenizer, processor config) and checks they fit together.
    pub fn load(dir: &Path, options: &EngineOptions) -> Result<Self, EngineError> {
        let start = Instant::now();
        let processor = GarProcessor::from_dir_with_options(dir, options.processor)
            .map_err(EngineError::CheckpointFiles)?;
        // Quantized while loading, layer by layer: the dense decoder is never materialised as a whole.
        let (mut model, quant_report) = GarModel::load_quantized(
            dir,
            options.dtype,
            &options.device,
            options.quirks,
            options.quant,
        )?;
        let vision_int8_linears = if options.vision_int8 {
            model.quantize_vision_w8a8()?
        } else {
            0
        };
        let bf16_attention = options.bf16_attention
            && options.device.is_cpu()
            && model.set_attention_products(gar_models::nn::attention::Products::Bf16);
        let specials = processor.special_tokens();
        let vocab = model.config().text.vocab_size;
        if processor.tokenizer().get_vocab_size(true) > vocab {
            return Err(EngineError::Mismatch(format!(
                "the tokenizer has {} tokens but the model's vocabulary has only {vocab}",
                processor.tokenizer().get_vocab_size(true)
            )));
        }
        if specials.image != model.config().image_token_id {
            return Err(EngineError::Mismatch(format!(
                "config image_token_id {} is not the tokenizer's <|image|> id {}",
                model.config().image_token_id,
                specials.image
            )));
        }
        // The reference stops on the tokenizer's eos (`<|eot_id|>`) only (gar-spec §9).
        let stop_tokens = vec![specials.eos];
        Ok(Self {
            model,
            processor,
            stop_tokens,
            dir: dir.to_path_buf(),
            load_s: start.elapsed().as_secs_f64(),
            quant: options.quant,
            quant_report,
            vision_int8_linears,
            bf16_attention,
        })
    }

    pub fn model(&self) -> &GarModel {
        &self.model
    }

    pub fn processor(&self) -> &GarProcessor {
        &self.processor
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// How many vision-tower linears run in 8-bit (`EngineOptions::vision_int8`; 0 when off or unsupported).
    pub fn vision_int8_linears(&self) -> usize {
        self.vision_int8_linears
    }

    /// Whether the attention products run on bf16 operands (`EngineOptions::bf16_attention`; false when off,
    /// on a CPU without AVX-512 BF16, or when no head width is a multiple of 32).
    pub fn bf16_attention(&self) -> bool {
        self.bf16_attention
    }

    /// The quantization requested at load and what it converted.
    pub fn quantization(&self) -> (Quant, &QuantReport) {
        (self.quant, &self.quant_report)
    }

    pub fn load_seconds(&self) -> f64 {
        self.load_s
    }

    /// Generation settings with this checkpoint's stop token.
    pub fn generation_config(&self) -> GenerationConfig {
        GenerationConfig {
            stop_tokens: self.stop_tokens.clone(),
            ..GenerationConfig::default()
        }
    }

    /// Runs the processor: tiles, label maps, boxes and token ids for one request.
    pub fn prepare(
        &self,
        image: &RgbImage,
        regions: &[Region],
        request: &Request,
    ) -> Result<GarInputs, EngineError> {
        Ok(self.processor.process(image, regions, request)?)
    }

    /// Runs the processor on several images without regions (PLM multi-image prompt).
    pub fn prepare_images(
        &self,
        images: &[RgbImage],
        request: &Request,
    ) -> Result<GarInputs, EngineError> {
        Ok(self.processor.process_images(images, request)?)
    }

    /// Answers a single request from scratch (no cache reuse).
    pub fn answer(
        &self,
        image: &RgbImage,
        regions: &[Region],
        request: &Request,
        generation: &GenerationConfig,
        on_text: &mut dyn FnMut(&str) -> ControlFlow<()>,
    ) -> Result<Answer, EngineError> {
        let mut chat = Chat::new(self, image.clone(), regions.to_vec(), request.clone());
        chat.respond(generation, on_text)
    }

    /// Answers a request about several images (no regions) from scratch.
    pub fn answer_images(
        &self,
        images: &[RgbImage],
        request: &Request,
        generation: &GenerationConfig,
        on_text: &mut dyn FnMut(&str) -> ControlFlow<()>,
    ) -> Result<Answer, EngineError> {
        let mut chat = Chat::with_images(self, images.to_vec(), request.clone())?;
        chat.respond(generation, on_text)
    }
}

/// Image features of the chat's images + region set, computed once per chat.
struct EncodedImage {
    features: Tensor,
    aspect_ratio: (usize, usize),
    regions: Vec<RegionBox>,
}

/// A conversation about one image and its regions (or several images without regions). The vision
/// tower runs once; each turn prefills only the tokens after the longest prefix already in the KV
/// cache.
pub struct Chat<'e> {
    engine: &'e Engine,
    /// Never empty; regions refer to the first image and are only allowed with one.
    images: Vec<RgbImage>,
    regions: Vec<Region>,
    request: Request,
    encoded: Option<EncodedImage>,
    cache: Option<KvCache>,
    /// Token ids whose keys/values are in `cache`, in order.
    cached_ids: Vec<u32>,
    last_answer: Option<String>,
}

impl<'e> Chat<'e> {
    /// A chat whose first user message is `request` (describe or ask).
    pub fn new(
        engine: &'e Engine,
        image: RgbImage,
        regions: Vec<Region>,
        request: Request,
    ) -> Self {
        Self {
            engine,
            images: vec![image],
            regions,
            request,
            encoded: None,
            cache: None,
            cached_ids: Vec::new(),
            last_answer: None,
        }
    }

    /// A chat whose first user message shows several images (in order) and no regions.
    pub fn with_images(
        engine: &'e Engine,
        images: Vec<RgbImage>,
        request: Request,
    ) -> Result<Self, EngineError> {
        let mut rest = images.into_iter();
        let Some(first) = rest.next() else {
            return Err(EngineError::Usage("a chat needs at least one image".into()));
        };
        let mut chat = Self::new(engine, first, Vec::new(), request);
        chat.images.extend(rest);
        Ok(chat)
    }

    /// Adds the next user message after the last answer. Call [`Chat::respond`] to answer it.
    pub fn say(&mut self, user: &str) -> Result<(), EngineError> {
        let Some(answer) = self.last_answer.take() else {
            return Err(EngineError::Usage(
                "a follow-up needs an answer to the previous message first".into(),
            ));
        };
        self.request = self.request.clone().follow_up(answer, user);
        Ok(())
    }

    /// The request as it stands (first message plus follow-ups).
    pub fn request(&self) -> &Request {
        &self.request
    }

    /// Answers the last user message, streaming text pieces to `on_text` (return `Break` to stop).
    pub fn respond(
        &mut self,
        generation: &GenerationConfig,
        on_text: &mut dyn FnMut(&str) -> ControlFlow<()>,
    ) -> Result<Answer, EngineError> {
        let engine = self.engine;
        let mut timings = Timings {
            load_s: engine.load_s,
            ..Timings::default()
        };

        let t = Instant::now();
        let inputs = if self.images.len() == 1 {
            engine.prepare(&self.images[0], &self.regions, &self.request)?
        } else {
            engine.prepare_images(&self.images, &self.request)?
        };
        timings.preprocess_s = t.elapsed().as_secs_f64();

        let t = Instant::now();
        if self.encoded.is_none() {
            self.encoded = Some(encode(engine, &inputs)?);
        }
        let encoded = self
            .encoded
            .as_ref()
            .ok_or(EngineError::Internal("no image"))?;
        timings.vision_s = t.elapsed().as_secs_f64();

        let t = Instant::now();
        let ids = &inputs.input_ids;
        let model = &engine.model;
        let cache = self
            .cache
            .get_or_insert_with(|| model.new_cache(ids.len() + CACHE_HEADROOM));
        // Reuse the longest prefix whose keys/values are already cached; recompute the rest.
        let mut reuse = common_prefix(&self.cached_ids, ids);
        if reuse == ids.len() {
            reuse -= 1; // the last prompt token must be fed to get the next token's logits
        }
        cache.truncate(reuse)?;
        self.cached_ids.truncate(reuse);
        let embeds = model.embed_prompt(
            ids,
            Some(&encoded.features),
            encoded.aspect_ratio,
            &encoded.regions,
        )?;
        let suffix = embeds.narrow(1, reuse, ids.len() - reuse)?;
        self.cached_ids.extend_from_slice(&ids[reuse..]);

        let mut stream = engine.processor.stream();
        let mut first_token_at: Option<Instant> = None;
        let mut stream_error = None;
        let mut on_token = |token: u32| {
            first_token_at.get_or_insert_with(Instant::now);
            match stream.step(token) {
                Ok(Some(piece)) => on_text(&piece),
                Ok(None) => ControlFlow::Continue(()),
                Err(e) => {
                    stream_error = Some(e);
                    ControlFlow::Break(())
                }
            }
        };
        let out = gar_models::generate(
            model.llama(),
            &suffix,
            cache,
            &[],
            generation,
            &mut on_token,
        )?;
        if let Some(e) = stream_error {
            return Err(e.into());
        }
        if let Ok(Some(rest)) = stream.finish() {
            let _ = on_text(&rest);
        }
        let done = Instant::now();
        let first = first_token_at.unwrap_or(done);
        timings.prefill_s = (first - t).as_secs_f64();
        timings.decode_s = (done - first).as_secs_f64();
        let decoded_after_first = out.tokens.len().saturating_sub(1);
        if timings.decode_s > 0.0 {
            timings.tokens_per_s = decoded_after_first as f64 / timings.decode_s;
        }

        // Every token but the last sampled one has been fed through the model.
        let fed = out.tokens.len().saturating_sub(1);
        self.cached_ids.extend_from_slice(&out.tokens[..fed]);
        debug_assert_eq!(self.cached_ids.len(), cache.seq_len());

        let mut tokens = out.tokens;
        let stop_reason = match out.stop_reason {
            StopReason::StopToken(_) => {
                tokens.pop();
                "stop_token"
            }
            StopReason::MaxTokens => "max_tokens",
            StopReason::Cancelled => "cancelled",
        };
        let text = engine.processor.decode(&tokens)?;
        self.last_answer = Some(text.clone());
        Ok(Answer {
            text,
            tokens,
            prompt_tokens: ids.len(),
            cached_tokens: reuse,
            stop_reason: stop_reason.to_string(),
            timings,
            warnings: inputs.warnings.iter().map(|w| w.to_string()).collect(),
        })
    }
}

fn encode(engine: &Engine, inputs: &GarInputs) -> Result<EncodedImage, EngineError> {
    let model = &engine.model;
    let device = model.device();
    let (t, ts) = (inputs.num_tiles, inputs.tile_size);
    let pixels = Tensor::from_slice(&inputs.pixel_values, (t, 3, ts, ts), device)?;
    let has_regions = !inputs.regions.is_empty() && model.config().gar.is_some();
    let labels = if has_regions {
        Some(Tensor::from_slice(
            &inputs.mask_labels,
            (t, ts, ts),
            device,
        )?)
    } else {
        None
    };
    let features = model.encode_image(&pixels, labels.as_ref())?;
    let (ncw, nch) = inputs.aspect_ratio;
    let regions = inputs
        .regions
        .iter()
        .map(|r| RegionBox {
            crop_token_id: r.crop_token_id,
            bbox: r.bbox,
        })
        .collect();
    Ok(EncodedImage {
        features,
        aspect_ratio: (ncw as usize, nch as usize),
        regions,
    })
}

fn common_prefix(a: &[u32], b: &[u32]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}
