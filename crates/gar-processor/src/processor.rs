//! [`GarProcessor`]: the one entry point from (image, regions, request) to model inputs.

use std::path::{Path, PathBuf};

use tokenizers::Tokenizer;

use crate::config::{GarFields, MediaTokenConfig, PreprocessorConfig};
use crate::decode::{decode_raw, py_strip, TextStream};
use crate::error::{ProcessorError, Result, Warning};
use crate::image::RgbImage;
use crate::inputs::{Bos, GarInputs, ProcessorOptions, RegionInput};
use crate::mask::{label_map, resize_labels, Placed};
use crate::prompt::{
    conversation, first_message_text, mentioned_prompts, ChatTemplate, Prompt, Request,
    CROP_TOKENS_PER_REGION,
};
use crate::region::{BinaryMask, Region};
use crate::resize::resize_bicubic_aa;
use crate::tiling::select_grid;
use crate::tokens::{crop_token_name, SpecialTokens, TokenizerConfig};

/// Images, regions and prompts to GAR model inputs, configured from a checkpoint directory.
#[derive(Debug)]
pub struct GarProcessor {
    tokenizer: Tokenizer,
    tokenizer_config: TokenizerConfig,
    template: ChatTemplate,
    preprocessor: PreprocessorConfig,
    media: MediaTokenConfig,
    tokens: SpecialTokens,
    options: ProcessorOptions,
}

fn template_source(dir: &Path, cfg: &TokenizerConfig) -> Result<String> {
    let jinja = dir.join("chat_template.jinja");
    if jinja.is_file() {
        return std::fs::read_to_string(&jinja).map_err(|source| ProcessorError::Io {
            path: jinja,
            source,
        });
    }
    let json = dir.join("chat_template.json");
    if json.is_file() {
        let v = crate::config::read_json(&json)?;
        if let Some(t) = v.get("chat_template").and_then(|t| t.as_str()) {
            return Ok(t.to_string());
        }
    }
    cfg.chat_template.clone().ok_or_else(|| {
        ProcessorError::config(
            dir.join("tokenizer_config.json"),
            "no chat template (chat_template.jinja, chat_template.json or tokenizer_config.json)",
        )
    })
}

impl GarProcessor {
    /// Loads `tokenizer.json`, `tokenizer_config.json`, the chat template, `preprocessor_config.json`,
    /// `processor_config.json` and `config.json` from a checkpoint directory. Optional files fall back to
    /// the transformers defaults.
    pub fn from_dir(dir: impl AsRef<Path>) -> Result<Self> {
        Self::from_dir_with_options(dir, ProcessorOptions::default())
    }

    pub fn from_dir_with_options(dir: impl AsRef<Path>, options: ProcessorOptions) -> Result<Self> {
        let dir = dir.as_ref();
        let optional = |name: &str| -> Option<PathBuf> {
            let p = dir.join(name);
            p.is_file().then_some(p)
        };
        let tok_path = dir.join("tokenizer.json");
        let tokenizer =
            Tokenizer::from_file(&tok_path).map_err(|e| ProcessorError::config(&tok_path, e))?;
        let tokenizer_config = match optional("tokenizer_config.json") {
            Some(p) => TokenizerConfig::from_file(&p)?,
            None => TokenizerConfig::default(),
        };
        let template = ChatTemplate::new(&template_source(dir, &tokenizer_config)?)?;
        let preprocessor = match optional("preprocessor_config.json") {
            Some(p) => PreprocessorConfig::from_file(&p)?,
            None => PreprocessorConfig::default(),
        };
        let media = match optional("processor_config.json") {
            Some(p) => MediaTokenConfig::from_file(&p)?,
            None => MediaTokenConfig::default(),
        };
        let gar = match optional("config.json") {
            Some(p) => GarFields::from_file(&p)?,
            None => GarFields::default(),
        };
        Self::new(
            tokenizer,
            tokenizer_config,
            template,
            preprocessor,
            media,
            &gar,
            options,
        )
    }

    /// Builds a processor from already-loaded parts.
    pub fn new(
        tokenizer: Tokenizer,
        tokenizer_config: TokenizerConfig,
        template: ChatTemplate,
        preprocessor: PreprocessorConfig,
        media: MediaTokenConfig,
        gar: &GarFields,
        options: ProcessorOptions,
    ) -> Result<Self> {
        let tokens = SpecialTokens::resolve(&tokenizer, &tokenizer_config, gar)?;
        Ok(Self {
            tokenizer,
            tokenizer_config,
            template,
            preprocessor,
            media,
            tokens,
            options,
        })
    }

    pub fn tokenizer(&self) -> &Tokenizer {
        &self.tokenizer
    }

    pub fn special_tokens(&self) -> &SpecialTokens {
        &self.tokens
    }

    pub fn chat_template(&self) -> &ChatTemplate {
        &self.template
    }

    pub fn tokenizer_config(&self) -> &TokenizerConfig {
        &self.tokenizer_config
    }

    pub fn preprocessor_config(&self) -> &PreprocessorConfig {
        &self.preprocessor
    }

    pub fn options(&self) -> &ProcessorOptions {
        &self.options
    }

    /// `<|image|>` tokens per tile (256).
    pub fn tokens_per_tile(&self) -> usize {
        self.media.tokens_per_tile(self.preprocessor.tile_size)
    }

    /// The `max_num_tiles` a request would use.
    pub fn max_num_tiles(&self, request: &Request) -> usize {
        request
            .max_num_tiles
            .or(self.options.max_num_tiles)
            .unwrap_or(self.preprocessor.max_num_tiles)
    }

    /// `(ncw, nch)` for an image size under a request.
    pub fn grid(&self, width: u32, height: u32, request: &Request) -> (u32, u32) {
        if !self.preprocessor.uses_tiles() {
            return (1, 1);
        }
        select_grid(
            width,
            height,
            self.preprocessor.tile_size,
            self.max_num_tiles(request),
        )
    }

    /// Turns an image, its regions and a request into model inputs. Region i is `<Prompt i>` for
    /// [`Prompt::Ask`]; the single region of [`Prompt::Describe`] takes the request's slot.
    pub fn process(
        &self,
        image: &RgbImage,
        regions: &[Region],
        request: &Request,
    ) -> Result<GarInputs> {
        let prompts: Vec<usize> = match &request.prompt {
            Prompt::Describe { slot, .. } => vec![*slot; regions.len()],
            Prompt::Ask { .. } => (0..regions.len()).collect(),
        };
        let pairs: Vec<(usize, &Region)> = prompts.into_iter().zip(regions).collect();
        self.process_inner(&[image], &pairs, request)
    }

    /// Like [`GarProcessor::process`], with an explicit `<PromptK>` index for every region (for example
    /// regions 0 and 2 only). `Describe`'s slot is then the region's own index.
    pub fn process_with_prompts(
        &self,
        image: &RgbImage,
        regions: &[(usize, Region)],
        request: &Request,
    ) -> Result<GarInputs> {
        let pairs: Vec<(usize, &Region)> = regions.iter().map(|(k, r)| (*k, r)).collect();
        self.process_inner(&[image], &pairs, request)
    }

    /// Several images in the first user message, without regions: PLM's multi-image prompt. Each
    /// image is tiled on its own (same `max_num_tiles`), its `<|image|>` placeholder expands to
    /// `tokens_per_tile · T_i` tokens, and the tiles of all images follow each other in
    /// `pixel_values`, in message order (what `PerceptionLMForConditionalGeneration` scatters).
    /// GAR's regions (label map, RoI replay) are defined on one image, so they are refused here;
    /// `<PromptK>` in the text is then plain text. One image is exactly [`GarProcessor::process`]
    /// without regions.
    pub fn process_images(&self, images: &[RgbImage], request: &Request) -> Result<GarInputs> {
        if images.is_empty() {
            return Err(ProcessorError::InvalidRequest("no image given".into()));
        }
        let refs: Vec<&RgbImage> = images.iter().collect();
        self.process_inner(&refs, &[], request)
    }

    fn process_inner(
        &self,
        images: &[&RgbImage],
        regions: &[(usize, &Region)],
        request: &Request,
    ) -> Result<GarInputs> {
        let mut warnings = Vec::new();
        let image = images[0];
        if images.len() > 1 && !regions.is_empty() {
            return Err(ProcessorError::InvalidRequest(format!(
                "regions are defined on one image, but this request has {} images",
                images.len()
            )));
        }
        self.validate(regions, request, images.len() == 1, &mut warnings)?;
        let slots: Vec<usize> = regions.iter().map(|(k, _)| *k).collect();
        let (w, h) = (image.width(), image.height());
        let masks = regions
            .iter()
            .enumerate()
            .map(|(i, (_, r))| self.region_mask(r, i, w, h, &mut warnings))
            .collect::<Result<Vec<_>>>()?;

        // Label map and per-region boxes, in prompt order.
        let mut order: Vec<(usize, usize)> = slots
            .iter()
            .copied()
            .enumerate()
            .map(|(r, k)| (k, r))
            .collect();
        order.sort_unstable();
        let placed: Vec<Placed<'_>> = order
            .iter()
            .map(|&(k, r)| Placed {
                label: k as u8,
                region: r,
                mask: &masks[r],
            })
            .collect();
        let background = self.tokens.background_label();
        let labels = label_map(w, h, &placed, background, &mut warnings);
        let region_inputs = order
            .iter()
            .map(|&(k, r)| {
                let m = &masks[r];
                let b = m.bbox().ok_or(ProcessorError::EmptyRegion { index: r })?;
                let (fw, fh) = (w as f64, h as f64);
                Ok(RegionInput {
                    prompt_index: k,
                    region: r,
                    crop_token_id: self.tokens.crops[k],
                    bbox: [
                        b[0] as f64 / fw,
                        b[1] as f64 / fh,
                        b[2] as f64 / fw,
                        b[3] as f64 / fh,
                    ],
                    area: m.area(),
                })
            })
            .collect::<Result<Vec<_>>>()?;

        // Pixels: the first image carries the regions; later ones are all background.
        let grid = self.grid(w, h, request);
        let ts = self.preprocessor.tile_size as usize;
        let norm = self.preprocessor.normalization();
        let plane = ts * ts;
        let mut tiles_u8 = Vec::new();
        let mut mask_labels = Vec::new();
        let mut image_tiles = Vec::with_capacity(images.len());
        for (i, img) in images.iter().enumerate() {
            let (iw, ih) = (img.width(), img.height());
            // Without "thumb+tile" the processor returns the thumbnail alone.
            let tiles = self
                .preprocessor
                .uses_tiles()
                .then(|| self.grid(iw, ih, request));
            let size = (ih as usize, iw as usize);
            let pixels = tile_planes(&img.to_planes(), size, ts, tiles, |p, i, o| {
                resize_bicubic_aa(p, i, o, self.options.arith)
            });
            let count = pixels.len() / (3 * plane);
            if i == 0 {
                mask_labels = tile_planes(&labels, size, ts, tiles, |p, i, o| {
                    resize_labels(
                        p,
                        i,
                        o,
                        self.options.mask_resample,
                        background,
                        self.options.arith,
                    )
                });
            } else {
                mask_labels.resize(mask_labels.len() + count * plane, background);
            }
            tiles_u8.extend_from_slice(&pixels);
            image_tiles.push(count);
        }
        let pixel_values = tiles_u8
            .iter()
            .enumerate()
            .map(|(i, &v)| norm.apply((i / plane) % 3, v))
            .collect();
        let num_tiles = tiles_u8.len() / (3 * plane);

        // Text.
        let slot_tokens: Vec<(usize, String)> = order
            .iter()
            .map(|&(k, _)| (k, crop_token_name(k)))
            .collect();
        let slot_refs: Vec<(usize, &str)> =
            slot_tokens.iter().map(|(k, t)| (*k, t.as_str())).collect();
        let first = first_message_text(&request.prompt, &slot_refs);
        let prompt_text = self.render(&first, images.len(), request)?;
        let input_ids = self.tokenize(&prompt_text, &image_tiles, &region_inputs)?;

        Ok(GarInputs {
            tile_size: ts,
            num_tiles,
            image_tiles,
            aspect_ratio: grid,
            tiles_u8,
            pixel_values,
            mask_labels,
            background_label: background,
            input_ids,
            regions: region_inputs,
            prompt_text,
            warnings,
        })
    }

    /// Checks regions and texts against each other and against the checkpoint.
    /// `check_mentions`: `<PromptK>` must name a given region (off for multi-image prompts, where
    /// regions are refused and such text is plain text to the model).
    fn validate(
        &self,
        regions: &[(usize, &Region)],
        request: &Request,
        check_mentions: bool,
        warnings: &mut Vec<Warning>,
    ) -> Result<()> {
        let limit = self.tokens.prompt_numbers;
        if regions.len() > limit {
            return Err(ProcessorError::TooManyRegions {
                given: regions.len(),
                limit,
            });
        }
        let forbidden = [
            self.tokens.image_token.clone(),
            "<|reserved_special_token_".to_string(),
        ];
        let assistant = request.follow_ups.iter().map(|f| f.assistant.as_str());
        let system = request.system.iter().map(String::as_str);
        for t in request.user_texts().chain(assistant).chain(system) {
            if let Some(f) = forbidden.iter().find(|f| t.contains(f.as_str())) {
                return Err(ProcessorError::InvalidRequest(format!(
                    "texts may not contain {f:?}: the processor places these tokens itself"
                )));
            }
        }
        let mut seen = vec![false; limit];
        for &(k, _) in regions {
            if k >= limit {
                return Err(ProcessorError::SlotOutOfRange { slot: k, limit });
            }
            if std::mem::replace(&mut seen[k], true) {
                return Err(ProcessorError::InvalidRequest(format!(
                    "two regions claim <Prompt{k}>"
                )));
            }
        }
        if matches!(request.prompt, Prompt::Describe { .. }) && regions.len() != 1 {
            return Err(ProcessorError::InvalidRequest(format!(
                "Describe takes exactly one region, got {} (use Ask for several)",
                regions.len()
            )));
        }
        let mentioned: Vec<usize> = request.user_texts().flat_map(mentioned_prompts).collect();
        if let Some(&k) = mentioned
            .iter()
            .find(|&&k| check_mentions && (k >= limit || !seen[k]))
        {
            return Err(ProcessorError::UnknownPrompt {
                prompt: k,
                regions: regions.len(),
            });
        }
        if matches!(request.prompt, Prompt::Ask { .. }) {
            for (i, &(k, _)) in regions.iter().enumerate() {
                if !mentioned.contains(&k) {
                    warnings.push(Warning::RegionNotMentioned {
                        region: i,
                        prompt: k,
                    });
                }
            }
        }
        Ok(())
    }

    /// A region as a mask of the image's size (NEAREST-resized with a warning if needed), never empty.
    fn region_mask(
        &self,
        region: &Region,
        index: usize,
        w: u32,
        h: u32,
        warnings: &mut Vec<Warning>,
    ) -> Result<BinaryMask> {
        let mut m = region.to_mask(w, h, index)?;
        if (m.width(), m.height()) != (w, h) {
            warnings.push(Warning::MaskResized {
                region: index,
                from: (m.width(), m.height()),
                to: (w, h),
            });
            m = m.resize_nearest(w, h);
        }
        if m.area() == 0 {
            return Err(ProcessorError::EmptyRegion { index });
        }
        Ok(m)
    }

    /// Renders the conversation with the checkpoint's chat template (`add_generation_prompt=True`).
    pub(crate) fn render(
        &self,
        first_text: &str,
        images: usize,
        request: &Request,
    ) -> Result<String> {
        let messages = conversation(first_text, images, request);
        let special = self.tokenizer_config.template_specials();
        self.template.render(&messages, true, &special)
    }

    /// Expands the i-th `<|image|>` to `tokens_per_tile · T_i` copies and tokenises (`_expand_media_tokens`
    /// + the tokenizer call), then checks the token layout the model relies on.
    fn tokenize(
        &self,
        text: &str,
        image_tiles: &[usize],
        regions: &[RegionInput],
    ) -> Result<Vec<u32>> {
        let image_token = &self.tokens.image_token;
        let pieces: Vec<&str> = text.split(image_token.as_str()).collect();
        let n_images = pieces.len() - 1;
        if n_images != image_tiles.len() {
            return Err(ProcessorError::Template(format!(
                "the rendered prompt holds {n_images} {image_token} placeholders instead of {}",
                image_tiles.len()
            )));
        }
        let n_image_tokens = self.tokens_per_tile() * image_tiles.iter().sum::<usize>();
        let mut expanded = String::with_capacity(text.len() + n_image_tokens * image_token.len());
        for (piece, &tiles) in pieces.iter().zip(image_tiles) {
            expanded.push_str(piece);
            expanded.push_str(&image_token.repeat(self.tokens_per_tile() * tiles));
        }
        expanded.push_str(pieces[n_images]);
        let add_special = self.options.bos == Bos::Double;
        let enc = self
            .tokenizer
            .encode(expanded, add_special)
            .map_err(ProcessorError::tokenizer)?;
        let ids = enc.get_ids().to_vec();
        let count = |id: u32| ids.iter().filter(|&&t| t == id).count();
        if count(self.tokens.image) != n_image_tokens {
            return Err(ProcessorError::Tokenizer(format!(
                "expected {n_image_tokens} image tokens, the tokenizer produced {}",
                count(self.tokens.image)
            )));
        }
        for r in regions {
            let first = ids.iter().position(|&t| t == r.crop_token_id);
            let run_ok = first.is_some_and(|s| {
                ids.len() >= s + CROP_TOKENS_PER_REGION
                    && ids[s..s + CROP_TOKENS_PER_REGION]
                        .iter()
                        .all(|&t| t == r.crop_token_id)
            });
            if count(r.crop_token_id) != CROP_TOKENS_PER_REGION || !run_ok {
                return Err(ProcessorError::Tokenizer(format!(
                    "crop token {} of <Prompt{}> is not one run of {CROP_TOKENS_PER_REGION} tokens",
                    r.crop_token_id, r.prompt_index
                )));
            }
        }
        Ok(ids)
    }

    /// The reference's answer text: `decode(ids, skip_special_tokens=True)` with the tokenizer's clean-up
    /// setting, then `.strip()`.
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        let text = self.decode_raw(ids, true)?;
        Ok(py_strip(&text).to_string())
    }

    /// `tokenizer.decode(ids, skip_special_tokens)` with the clean-up setting, no strip (GAR-Bench decodes
    /// with `skip_special_tokens=False`).
    pub fn decode_raw(&self, ids: &[u32], skip_special_tokens: bool) -> Result<String> {
        decode_raw(
            &self.tokenizer,
            ids,
            skip_special_tokens,
            self.tokenizer_config.clean_up_tokenization_spaces,
        )
    }

    /// An incremental decoder whose pieces concatenate to [`GarProcessor::decode`]'s result.
    pub fn stream(&self) -> TextStream<'_> {
        TextStream::new(
            &self.tokenizer,
            true,
            self.tokenizer_config.clean_up_tokenization_spaces,
        )
    }
}

/// Thumbnail plus grid tiles of the planes of an `h × w` image: both are resized from the original (the
/// thumbnail ignoring aspect ratio), the canvas is split row-major. Output: T × planes × ts × ts.
/// `grid = None` gives the thumbnail alone.
fn tile_planes(
    planes: &[u8],
    (h, w): (usize, usize),
    ts: usize,
    grid: Option<(u32, u32)>,
    resize: impl Fn(&[u8], (usize, usize), (usize, usize)) -> Vec<u8>,
) -> Vec<u8> {
    let mut out = resize(planes, (h, w), (ts, ts));
    let Some((ncw, nch)) = grid else {
        return out;
    };
    let (ncw, nch) = (ncw as usize, nch as usize);
    let (ch, cw) = (nch * ts, ncw * ts);
    let canvas = resize(planes, (h, w), (ch, cw));
    out.reserve(canvas.len());
    for r in 0..nch {
        for c in 0..ncw {
            for p in canvas.chunks_exact(ch * cw) {
                for y in r * ts..(r + 1) * ts {
                    out.extend_from_slice(&p[y * cw + c * ts..y * cw + (c + 1) * ts]);
                }
            }
        }
    }
    out
}
