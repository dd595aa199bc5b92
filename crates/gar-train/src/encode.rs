//! One constructed sample ([`SampleSpec`]) into model inputs, as GAR's dataset does after sample
//! construction (training.md §2.6–§2.9): tiles and the resampled label map through the processor, one
//! box per region, the conversation through the checkpoint's chat template with a single BOS, crop
//! markers expanded to their 256 crop tokens, and `labels` by the `parse_label` rule.

use crate::conversation::{crop_marker, SampleSpec};
use gar_processor::{
    crop_token_name, BinaryMask, Bos, GarProcessor, MaskResample, Region, RegionInput, Request,
    CROP_TOKENS_PER_REGION,
};
use serde_json::json;

/// The label of a position that is not supervised (PyTorch's `ignore_index`).
pub const IGNORE_INDEX: i64 = -100;

/// Samples whose image is narrower or lower than this are dropped by GAR's dataset (§2.7 item 1).
const MIN_IMAGE_SIDE: u32 = 10;

/// Everything that makes a sample unusable, with a message a user can act on.
#[derive(Debug, thiserror::Error)]
pub enum EncodeError {
    #[error(
        "the processor must tokenise with a single BOS for training \
         (build it with ProcessorOptions {{ bos: Bos::Single, .. }}, see training_processor)"
    )]
    DoubleBos,
    #[error("image is {width}x{height}; training needs both sides >= {MIN_IMAGE_SIDE} pixels")]
    ImageTooSmall { width: u32, height: u32 },
    #[error("mask of <Prompt{prompt}> is {mask_w}x{mask_h}, the image is {image_w}x{image_h}")]
    MaskSizeMismatch {
        prompt: usize,
        mask_w: u32,
        mask_h: u32,
        image_w: u32,
        image_h: u32,
    },
    #[error("the sample has no turns")]
    NoTurns,
    #[error("turn {turn}: {msg}")]
    BadTurn { turn: usize, msg: String },
    #[error("no assistant answer is supervised (every label is ignored)")]
    NothingSupervised,
    #[error(transparent)]
    Processor(#[from] gar_processor::ProcessorError),
}

/// Switches of the encoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct EncodeOptions {
    /// Resampling of the label map onto the tiles. GAR training sent it through the image's bicubic
    /// processor (§2.7 item 5), so bicubic is the default here (unlike inference).
    pub mask_resample: TrainMaskResample,
    /// Caps the tile grid (`max_num_tiles` of the training config); `None` keeps the checkpoint's.
    pub max_num_tiles: Option<usize>,
}

/// [`MaskResample`] with the training default.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TrainMaskResample {
    #[default]
    Bicubic,
    Nearest,
}

impl From<TrainMaskResample> for MaskResample {
    fn from(r: TrainMaskResample) -> Self {
        match r {
            TrainMaskResample::Bicubic => MaskResample::Bicubic,
            TrainMaskResample::Nearest => MaskResample::Nearest,
        }
    }
}

/// The processor of a checkpoint set up as training uses it: single BOS, the chosen mask resampling.
pub fn training_processor(
    dir: impl AsRef<std::path::Path>,
    options: EncodeOptions,
) -> Result<GarProcessor, EncodeError> {
    let opts = gar_processor::ProcessorOptions {
        bos: Bos::Single,
        mask_resample: options.mask_resample.into(),
        ..Default::default()
    };
    Ok(GarProcessor::from_dir_with_options(dir, opts)?)
}

/// One sample ready for the training forward (training.md §2.9).
#[derive(Debug, Clone)]
pub struct EncodedSample {
    pub input_ids: Vec<u32>,
    /// Same length as `input_ids`; [`IGNORE_INDEX`] where not supervised. Not yet shifted.
    pub labels: Vec<i64>,
    /// T = 1 + ncw·nch.
    pub num_tiles: usize,
    /// `(ncw, nch)`.
    pub aspect_ratio: (u32, u32),
    /// T × 3 × 448 × 448, `(u8 − 127.5) / 127.5`.
    pub pixel_values: Vec<f32>,
    /// T × 448 × 448 labels the model recovers from `global_mask_values` (already clamped to
    /// `background_label`, exactly as `clamp(round((v+1)/2·255), 0, prompt_numbers)` does).
    pub mask_labels: Vec<u8>,
    /// `prompt_numbers`: the label outside every region.
    pub background_label: u8,
    /// Regions in prompt order with crop token id and box (x1, y1, x2, y2) / (W, H).
    pub regions: Vec<RegionInput>,
    /// The rendered conversation before `<|image|>` expansion (for debugging and tests).
    pub text: String,
}

impl EncodedSample {
    /// Positions the loss averages over: labels that stay supervised after the shift by one.
    pub fn supervised_tokens(&self) -> usize {
        self.labels
            .iter()
            .skip(1)
            .filter(|&&l| l != IGNORE_INDEX)
            .count()
    }

    /// The model's binary mask image (label ≠ background as 0/1), T × 448 × 448.
    pub fn region_mask(&self) -> Vec<f32> {
        self.mask_labels
            .iter()
            .map(|&l| f32::from(u8::from(l != self.background_label)))
            .collect()
    }
}

/// Encodes one sample. `processor` must come from [`training_processor`] (or equivalent options);
/// `options.mask_resample` is the processor's and is not read again here.
pub fn encode(
    spec: &SampleSpec,
    processor: &GarProcessor,
    options: EncodeOptions,
) -> Result<EncodedSample, EncodeError> {
    if processor.options().bos != Bos::Single {
        return Err(EncodeError::DoubleBos);
    }
    let (w, h) = spec.image.dimensions();
    if w < MIN_IMAGE_SIDE || h < MIN_IMAGE_SIDE {
        return Err(EncodeError::ImageTooSmall {
            width: w,
            height: h,
        });
    }
    // Training masks come at the image's resolution; the inference processor would silently resize a
    // mismatching one, which would hide a data error here.
    let mut regions = Vec::with_capacity(spec.regions.len());
    for r in &spec.regions {
        let (mw, mh) = r.mask.dimensions();
        if (mw, mh) != (w, h) {
            return Err(EncodeError::MaskSizeMismatch {
                prompt: r.prompt_index,
                mask_w: mw,
                mask_h: mh,
                image_w: w,
                image_h: h,
            });
        }
        let mask = BinaryMask::from_luma(mw, mh, r.mask.as_raw())?;
        regions.push((r.prompt_index, Region::Mask(mask)));
    }
    let image = gar_processor::RgbImage::new(w, h, spec.image.as_raw().clone())?;

    // Tiles, label map and boxes come from the processor; its inference prompt is not used (an empty
    // question keeps its text checks out of the way).
    let mut request = Request::ask("");
    if let Some(n) = options.max_num_tiles {
        request = request.with_max_num_tiles(n);
    }
    let inputs = processor.process_with_prompts(&image, &regions, &request)?;

    let text = render_conversation(spec, processor, &inputs.regions)?;
    let input_ids = tokenize(&text, processor, inputs.num_tiles)?;
    let mut labels = parse_labels(
        &input_ids,
        &assistant_header(processor)?,
        eot_id(processor)?,
    );
    // The replay ignores crop positions again (training.md §2.8 last line); they are user text, so this
    // only guards against a crop token inside an answer.
    for (l, id) in labels.iter_mut().zip(&input_ids) {
        if inputs.regions.iter().any(|r| r.crop_token_id == *id) {
            *l = IGNORE_INDEX;
        }
    }
    let sample = EncodedSample {
        input_ids,
        labels,
        num_tiles: inputs.num_tiles,
        aspect_ratio: inputs.aspect_ratio,
        pixel_values: inputs.pixel_values,
        mask_labels: inputs.mask_labels,
        background_label: inputs.background_label,
        regions: inputs.regions,
        text,
    };
    if sample.supervised_tokens() == 0 {
        return Err(EncodeError::NothingSupervised);
    }
    Ok(sample)
}

/// Renders the turns with the checkpoint's template, `add_generation_prompt=False` (§2.7 items 2–3).
fn render_conversation(
    spec: &SampleSpec,
    processor: &GarProcessor,
    regions: &[RegionInput],
) -> Result<String, EncodeError> {
    if spec.turns.is_empty() {
        return Err(EncodeError::NoTurns);
    }
    let image_token = &processor.special_tokens().image_token;
    let mut messages = Vec::with_capacity(2 * spec.turns.len());
    let mut seen_crops = std::collections::BTreeSet::new();
    for (i, turn) in spec.turns.iter().enumerate() {
        let bad = |msg: String| EncodeError::BadTurn { turn: i, msg };
        // The dataset strips `<image>\n` from the first turn; the template then places the image item.
        let user = if i == 0 {
            turn.user.replace("<image>\n", "")
        } else {
            turn.user.clone()
        };
        for (who, t) in [("user", &user), ("assistant", &turn.assistant)] {
            for forbidden in ["<image>", image_token.as_str(), "<|reserved_special_token_"] {
                if t.contains(forbidden) {
                    return Err(bad(format!("{who} text contains {forbidden:?}")));
                }
            }
        }
        let user = expand_crop_markers(&user, regions, &mut seen_crops).map_err(bad)?;
        if turn.assistant.contains("[[crop ") {
            return Err(bad("crop markers belong in user text only".into()));
        }
        let mut content = Vec::new();
        if i == 0 {
            content.push(json!({"type": "image"}));
        }
        content.push(json!({"type": "text", "text": user}));
        messages.push(json!({"role": "user", "content": content}));
        messages.push(json!({
            "role": "assistant",
            "content": [{"type": "text", "text": turn.assistant}],
        }));
    }
    let special = processor.tokenizer_config().template_specials();
    Ok(processor
        .chat_template()
        .render(&messages, false, &special)?)
}

/// Replaces every `[[crop K]]` by the 256 crop tokens of `<PromptK>`; K must have a region and must not
/// be in `seen` (the markers of earlier turns), to which it is added.
fn expand_crop_markers(
    text: &str,
    regions: &[RegionInput],
    seen: &mut std::collections::BTreeSet<usize>,
) -> Result<String, String> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("[[crop ") {
        out.push_str(&rest[..at]);
        let tail = &rest[at + "[[crop ".len()..];
        let end = tail
            .find("]]")
            .ok_or_else(|| format!("unterminated crop marker in {text:?}"))?;
        let k: usize = tail[..end]
            .trim()
            .parse()
            .map_err(|_| format!("bad crop marker [[crop {}]]", &tail[..end]))?;
        // GAR's replay takes a crop token's first and last position as one 256-token run; a second
        // marker of the same region (in any turn) would make that run longer.
        if !seen.insert(k) {
            return Err(format!(
                "{} appears more than once in the conversation",
                crop_marker(k)
            ));
        }
        if !regions.iter().any(|r| r.prompt_index == k) {
            return Err(format!(
                "{} refers to <Prompt{k}>, which has no mask",
                crop_marker(k)
            ));
        }
        out.push_str(&crop_token_name(k).repeat(CROP_TOKENS_PER_REGION));
        rest = &tail[end + 2..];
    }
    out.push_str(rest);
    Ok(out)
}

/// `<|image|>` → 256·T copies, then the tokenizer without special tokens: the template's own
/// `<|begin_of_text|>` is the only BOS (§2.7 items 3–4).
fn tokenize(
    text: &str,
    processor: &GarProcessor,
    num_tiles: usize,
) -> Result<Vec<u32>, EncodeError> {
    let tokens = processor.special_tokens();
    let n_images = text.matches(tokens.image_token.as_str()).count();
    if n_images != 1 {
        return Err(gar_processor::ProcessorError::Template(format!(
            "the rendered conversation holds {n_images} image placeholders instead of 1"
        ))
        .into());
    }
    let n = processor.tokens_per_tile() * num_tiles;
    let expanded = text.replacen(&tokens.image_token, &tokens.image_token.repeat(n), 1);
    let enc = processor
        .tokenizer()
        .encode(expanded, false)
        .map_err(|e| gar_processor::ProcessorError::Tokenizer(e.to_string()))?;
    Ok(enc.get_ids().to_vec())
}

/// The ids of `<|start_header_id|>assistant<|end_header_id|>\n\n` under this tokenizer (four with the
/// Llama-3 vocabulary, more where `assistant` splits): the pattern `parse_label` looks for.
fn assistant_header(processor: &GarProcessor) -> Result<Vec<u32>, EncodeError> {
    let enc = processor
        .tokenizer()
        .encode("<|start_header_id|>assistant<|end_header_id|>\n\n", false)
        .map_err(|e| gar_processor::ProcessorError::Tokenizer(e.to_string()))?;
    Ok(enc.get_ids().to_vec())
}

fn eot_id(processor: &GarProcessor) -> Result<u32, EncodeError> {
    processor
        .tokenizer()
        .token_to_id("<|eot_id|>")
        .ok_or_else(|| gar_processor::ProcessorError::MissingToken("<|eot_id|>".into()).into())
}

/// GAR's `parse_label` (training.md §2.8): after each assistant header, supervise up to and including
/// the first `<|eot_id|>`; everything else is ignored. A header with no `<|eot_id|>` after it ends the
/// scan.
pub fn parse_labels(ids: &[u32], header: &[u32], eot: u32) -> Vec<i64> {
    let mut labels = vec![IGNORE_INDEX; ids.len()];
    let mut i = 0;
    while i < ids.len() {
        if !header.is_empty() && ids[i..].starts_with(header) {
            let start = i + header.len();
            let Some(off) = ids[start..].iter().position(|&t| t == eot) else {
                break;
            };
            let end = start + off;
            for p in start..=end {
                labels[p] = i64::from(ids[p]);
            }
            i = end + 1;
        } else {
            i += 1;
        }
    }
    labels
}

#[cfg(test)]
mod tests {
    use super::*;

    const H: [u32; 4] = [128006, 78191, 128007, 271];
    const EOT: u32 = 128009;

    #[test]
    fn supervises_answers_and_their_eot_only() {
        let ids = [
            128000, 128006, 882, 128007, 271, 5, 128009, 128006, 78191, 128007, 271, 7, 8, EOT, 9,
        ];
        let l = parse_labels(&ids, &H, EOT);
        let want: Vec<i64> = ids
            .iter()
            .enumerate()
            .map(|(p, &t)| {
                if (11..=13).contains(&p) {
                    i64::from(t)
                } else {
                    IGNORE_INDEX
                }
            })
            .collect();
        assert_eq!(l, want);
    }

    #[test]
    fn header_without_eot_stops_the_scan() {
        let ids = [128006, 78191, 128007, 271, 7, 8];
        assert!(parse_labels(&ids, &H, EOT)
            .iter()
            .all(|&l| l == IGNORE_INDEX));
    }

    #[test]
    fn several_answers_are_all_supervised() {
        let mut ids = vec![1u32];
        ids.extend(H);
        ids.extend([10, EOT, 2]);
        ids.extend(H);
        ids.extend([11, 12, EOT]);
        let l = parse_labels(&ids, &H, EOT);
        let kept: Vec<i64> = l.into_iter().filter(|&x| x != IGNORE_INDEX).collect();
        assert_eq!(kept, vec![10, EOT as i64, 11, 12, EOT as i64]);
    }

    #[test]
    fn crop_markers_need_a_region() {
        let r = RegionInput {
            prompt_index: 2,
            region: 0,
            crop_token_id: 128008,
            bbox: [0.0; 4],
            area: 1,
        };
        let s = expand_crop_markers(
            "a [[crop 2]] b",
            std::slice::from_ref(&r),
            &mut Default::default(),
        )
        .unwrap();
        assert_eq!(
            s.matches(&crop_token_name(2)).count(),
            CROP_TOKENS_PER_REGION
        );
        assert!(s.starts_with("a <|reserved") && s.ends_with("|> b"));
        for bad in [
            "[[crop 1]]",
            "[[crop x]]",
            "[[crop 2",
            "[[crop 2]] [[crop 2]]",
        ] {
            assert!(
                expand_crop_markers(bad, std::slice::from_ref(&r), &mut Default::default())
                    .is_err(),
                "{bad} was accepted"
            );
        }
        let mut seen = std::collections::BTreeSet::from([2]);
        assert!(expand_crop_markers("[[crop 2]]", std::slice::from_ref(&r), &mut seen).is_err());
    }
}
