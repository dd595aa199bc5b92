//! Sample construction (training.md §2.1–2.5, §2.10): from a raw row to a `SampleSpec` — prompt
//! assignment, the three conversation paths, prompt augmentation — with every random choice taken
//! from an injected `Choices`.

use crate::choices::Choices;
use crate::conversation::{crop_marker, RegionMask, SampleSpec, Turn};
use crate::data::{RawRow, RowSource};
use image::GrayImage;

/// The 30 question templates of §2.2; `{S}` is the suffix placeholder (only in the first 15).
pub const TEMPLATES: [&str; 30] = [
    "Describe the masked region {S}.",
    "Describe the masked area {S}.",
    "What can you describe about the masked region {S}?",
    "Can you describe the masked region {S}?",
    "Provide an explanation of the masked region {S}.",
    "Depict the masked area {S}.",
    "Portray the masked area {S}.",
    "Describe what the masked region looks like {S}.",
    "Illustrate the masked region {S}.",
    "How would you explain the masked area {S}?",
    "What details can you provide about the masked region {S}?",
    "What does the masked region entail {S}?",
    "How would you illustrate the masked region {S}?",
    "How would you depict the masked area {S}?",
    "How would you portray the masked area {S}?",
    "Give a detailed description of the masked region.",
    "Provide a thorough description of the masked region.",
    "Can you explain the details of the masked area?",
    "Give a detailed account of the masked region.",
    "Describe the masked area comprehensively.",
    "Provide an in-depth description of the masked region.",
    "Explain the specifics of the masked area.",
    "Can you provide a thorough explanation of the masked region?",
    "What are the details of the masked area?",
    "Provide a comprehensive description of the masked area.",
    "What specific details can you provide about the masked region?",
    "Can you give an in-depth account of the masked section?",
    "What are the main characteristics of the masked region?",
    "Give a thorough description of the masked area's details.",
    "Provide detailed information about the masked area.",
];

/// The question when augmentation is off.
pub const PLAIN_QUESTION: &str = "Describe this masked region in detail.";
const OBJECTS_INTRO: &str = "There are some objects I am curious about: ";
/// Number of crop tokens GAR writes per region; only used for tags ≥ `prompt_numbers` (§2.4), which
/// have no `[[crop K]]` marker because they are never replayed.
const CROP_TOKENS_PER_REGION: usize = 256;

#[derive(Clone, Debug, PartialEq)]
pub struct ConstructConfig {
    /// Number of prompt ids (GAR: 5); at most `prompt_numbers − 1` regions per sample.
    pub prompt_numbers: usize,
    pub prompt_augmentation: bool,
    /// Probability of a negative pair per further region (GAR: 0.05).
    pub negative_probability: f64,
    /// Replacement attempts after a failed row (GAR: 1000 more, 1001 in all).
    pub max_attempts: usize,
}

impl Default for ConstructConfig {
    fn default() -> Self {
        Self {
            prompt_numbers: 5,
            prompt_augmentation: true,
            negative_probability: 0.05,
            max_attempts: 1001,
        }
    }
}

/// Why a row cannot become a sample; the caller replaces it by another row (§2.10).
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum Reject {
    #[error("row has no image")]
    NoImage,
    #[error("row has an empty mask list and no <PromptK> tags")]
    NoRegions,
    #[error("image {0}×{1} is smaller than 10 pixels on a side")]
    TooSmall(u32, u32),
    #[error("mask {index} is {mw}×{mh}, the image {iw}×{ih}")]
    MaskSize {
        index: usize,
        mw: u32,
        mh: u32,
        iw: u32,
        ih: u32,
    },
    #[error("mask {0} is empty")]
    EmptyMask(usize),
    #[error("{0} captions for {1} selected regions")]
    MissingCaption(usize, usize),
    #[error("tag <Prompt{0}> but only {1} masks")]
    TagBeyondMasks(usize, usize),
    #[error("conversation is not alternating human/gpt turns starting with human")]
    BadTurns,
    #[error("a later turn contains <image>")]
    ImageInLaterTurn,
    #[error("reading the row failed: {0}")]
    Read(String),
}

fn tag(k: usize) -> String {
    format!("<Prompt{k}>")
}

/// Python `round` (half to even) of a non-negative value.
fn round_half_even(x: f64) -> f64 {
    let r = x.round();
    if (x - x.trunc()).abs() == 0.5 && r % 2.0 != 0.0 {
        r - 1.0
    } else {
        r
    }
}

/// §2.2 `prompt_aug(caption)`.
pub fn prompt_aug(caption: &str, ch: &mut dyn Choices) -> String {
    let r = ch.random();
    let (index, suffix) = if r < 0.6 {
        let i = ch.randint(0, 29);
        (i, "in detail".to_string())
    } else if r > 0.8 {
        let wc = caption.split_whitespace().count();
        let i = ch.randint(0, 14);
        let s = if wc < 10 {
            format!("in {wc} words")
        } else if wc > 200 {
            "in more than 200 words".to_string()
        } else {
            let n = round_half_even(wc as f64 / 10.0) as usize * 10;
            let w = ["about", "around"][ch.choice(2)];
            format!("in {w} {n} words")
        };
        (i, s)
    } else {
        let sc = caption
            .split(['.', '!', '?'])
            .filter(|p| !p.trim().is_empty())
            .count();
        let i = ch.randint(0, 14);
        let s = if sc == 1 {
            ["in a sentence", "in one sentence", "in 1 sentence"][ch.choice(3)].to_string()
        } else {
            format!("in {sc} sentences")
        };
        (i, s)
    };
    TEMPLATES[index].replace("{S}", &suffix)
}

/// The `<PromptK>` numbers appearing anywhere in the conversation, ascending and without repeats.
/// (GAR iterates a Python set, whose order depends on the hash seed; ascending is our fixed choice.)
fn prompt_tags(texts: impl Iterator<Item = String>) -> Vec<usize> {
    let mut found = std::collections::BTreeSet::new();
    for t in texts {
        let mut rest = t.as_str();
        while let Some(p) = rest.find("<Prompt") {
            let after = &rest[p + 7..];
            let digits: String = after.chars().take_while(|c| c.is_ascii_digit()).collect();
            if !digits.is_empty() && after[digits.len()..].starts_with('>') {
                if let Ok(k) = digits.parse() {
                    found.insert(k);
                }
            }
            rest = after;
        }
    }
    found.into_iter().collect()
}

fn pair_turns(row: &RawRow) -> Result<Vec<Turn>, Reject> {
    let conv = &row.conversations;
    if conv.is_empty() || conv.chunks(2).any(|pair| pair.len() != 2) {
        return Err(Reject::BadTurns);
    }
    let mut turns = Vec::new();
    for (n, pair) in conv.chunks(2).enumerate() {
        if pair[0].from != "human" || pair[1].from != "gpt" {
            return Err(Reject::BadTurns);
        }
        let mut user = pair[0].value.clone();
        if n == 0 {
            user = user.replace("<image>\n", "");
        } else if user.contains("<image>") {
            return Err(Reject::ImageInLaterTurn);
        }
        turns.push(Turn {
            user,
            assistant: pair[1].value.clone(),
        });
    }
    Ok(turns)
}

/// Build one sample from a row (§2.1–2.5); `Err` = reject, resample.
pub fn construct(
    row: &RawRow,
    cfg: &ConstructConfig,
    ch: &mut dyn Choices,
) -> Result<SampleSpec, Reject> {
    let image = row.image.clone().ok_or(Reject::NoImage)?;
    let (iw, ih) = image.dimensions();
    let masks: Option<&Vec<GrayImage>> = row.masks.as_ref();
    // §2.1 step 3: every mask is checked (its box is computed), used or not.
    for (index, m) in masks.into_iter().flatten().enumerate() {
        let (mw, mh) = m.dimensions();
        if (mw, mh) != (iw, ih) {
            return Err(Reject::MaskSize {
                index,
                mw,
                mh,
                iw,
                ih,
            });
        }
        if m.as_raw().iter().all(|&v| v == 0) {
            return Err(Reject::EmptyMask(index));
        }
    }
    let n_masks = masks.map_or(0, Vec::len);
    let perm = ch.permutation(cfg.prompt_numbers);
    let num_selected = n_masks.min(cfg.prompt_numbers - 1);
    let (selected, not_selected) = perm.split_at(num_selected);

    let texts = row.conversations.iter().map(|m| m.value.clone());
    let (turns, regions) = match masks {
        None => path_c(row, perm[0], iw, ih)?,
        Some(masks) => {
            let tags = prompt_tags(texts);
            if tags.is_empty() {
                path_a(row, masks, selected, not_selected, cfg, ch)?
            } else {
                path_b(row, masks, &tags, cfg)?
            }
        }
    };
    // §2.7 item 1 comes after the conversation is built (no extra draws are affected either way).
    if iw < 10 || ih < 10 {
        return Err(Reject::TooSmall(iw, ih));
    }
    Ok(SampleSpec {
        image,
        regions,
        turns,
    })
}

type Built = (Vec<Turn>, Vec<RegionMask>);

/// §2.3: one caption per mask; the human turns are rebuilt.
fn path_a(
    row: &RawRow,
    masks: &[GrayImage],
    selected: &[usize],
    not_selected: &[usize],
    cfg: &ConstructConfig,
    ch: &mut dyn Choices,
) -> Result<Built, Reject> {
    if row.conversations.first().is_some_and(|m| m.from != "human") {
        return Err(Reject::BadTurns);
    }
    let captions: Vec<&str> = row
        .conversations
        .iter()
        .filter(|m| m.from == "gpt")
        .map(|m| m.value.as_str())
        .collect();
    if selected.is_empty() {
        return Err(Reject::NoRegions);
    }
    if captions.len() < selected.len() {
        return Err(Reject::MissingCaption(captions.len(), selected.len()));
    }
    let question = |caption: &str, ch: &mut dyn Choices| {
        if cfg.prompt_augmentation {
            prompt_aug(caption, ch)
        } else {
            PLAIN_QUESTION.to_string()
        }
    };
    let tags: Vec<String> = selected.iter().map(|&k| tag(k)).collect();
    let objects = format!("{OBJECTS_INTRO}{}; ", tags.join("; "));
    let q0 = question(captions[0], ch);
    let mut turns = vec![Turn {
        user: format!("{objects}\n{}: {}{q0}", tags[0], crop_marker(selected[0])),
        assistant: captions[0].to_string(),
    }];
    let mut negative_done = false;
    for i in 1..selected.len() {
        if !negative_done && ch.random() < cfg.negative_probability {
            // Always augmented, even with augmentation off; counts the *current* caption.
            let neg = tag(not_selected[0]);
            let q = prompt_aug(captions[i], ch);
            turns.push(Turn {
                user: format!("{neg}: {q}"),
                assistant: format!("{neg} is not in the image."),
            });
            negative_done = true;
        }
        let q = question(captions[i], ch);
        turns.push(Turn {
            user: format!("{}: {}{q}", tags[i], crop_marker(selected[i])),
            assistant: captions[i].to_string(),
        });
    }
    let regions = selected
        .iter()
        .zip(masks)
        .map(|(&k, m)| RegionMask {
            prompt_index: k,
            mask: m.clone(),
        })
        .collect();
    Ok((turns, regions))
}

/// §2.4: relation data; the conversation is kept and a header naming every tag is prepended.
fn path_b(
    row: &RawRow,
    masks: &[GrayImage],
    tags: &[usize],
    cfg: &ConstructConfig,
) -> Result<Built, Reject> {
    let mut turns = pair_turns(row)?;
    let mut header = String::from(OBJECTS_INTRO);
    for &k in tags {
        header += &format!("{}; ", tag(k));
    }
    header.push('\n');
    let mut regions = Vec::new();
    for &k in tags {
        let crops = if k < cfg.prompt_numbers {
            // A tag beyond the mask list raises in GAR (label map), unless it is background (k ≥ P).
            let mask = masks.get(k).ok_or(Reject::TagBeyondMasks(k, masks.len()))?;
            regions.push(RegionMask {
                prompt_index: k,
                mask: mask.clone(),
            });
            crop_marker(k)
        } else {
            // GAR writes this tag's reserved tokens too, but they are not crop ids: never replayed.
            format!("<|reserved_special_token_{}|>", k + 2).repeat(CROP_TOKENS_PER_REGION)
        };
        header += &format!("{}: {crops}\n", tag(k));
    }
    header.push('\n');
    turns[0].user = header + &turns[0].user;
    Ok((turns, regions))
}

/// §2.5: no masks; the whole image is the region of the first drawn prompt id. (With no masks no id
/// is "selected"; we take the first of the permutation.)
fn path_c(row: &RawRow, first: usize, w: u32, h: u32) -> Result<Built, Reject> {
    let turns = pair_turns(row)?;
    let full = GrayImage::from_pixel(w, h, image::Luma([1]));
    Ok((
        turns,
        vec![RegionMask {
            prompt_index: first,
            mask: full,
        }],
    ))
}

/// A sample and how it was found.
pub struct Resampled {
    pub sample: SampleSpec,
    /// The row it was built from.
    pub row: usize,
    /// The rows tried before, and why each was rejected.
    pub failures: Vec<(usize, Reject)>,
}

/// §2.10: try `index`; on any failure draw a replacement `randint(0, N)` (N wraps to row 0) and try
/// again, up to `max_attempts` rows in all. Returns the list of failures when every attempt failed.
pub fn construct_with_resampling(
    source: &dyn RowSource,
    index: usize,
    cfg: &ConstructConfig,
    ch: &mut dyn Choices,
) -> Result<Resampled, Vec<(usize, Reject)>> {
    let n = source.len();
    let mut failures = Vec::new();
    let mut current = index;
    for _ in 0..cfg.max_attempts.max(1) {
        let built = source
            .row(current)
            .map_err(|e| Reject::Read(e.to_string()))
            .and_then(|row| construct(&row, cfg, ch));
        match built {
            Ok(sample) => {
                return Ok(Resampled {
                    sample,
                    row: current,
                    failures,
                })
            }
            Err(e) => failures.push((current, e)),
        }
        if n == 0 {
            break;
        }
        current = ch.randint(0, n) % n;
    }
    Err(failures)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::choices::{Draw, ScriptedChoices};
    use crate::data::Message;

    fn aug(caption: &str, draws: Vec<Draw>) -> String {
        let mut ch = ScriptedChoices::new(draws);
        let q = prompt_aug(caption, &mut ch);
        assert_eq!(ch.remaining(), 0);
        q
    }

    #[test]
    fn word_counts_round_half_to_even_like_python() {
        let words = |n: usize| vec!["w"; n].join(" ");
        let r = |v| Draw::Random { value: v };
        let ri = |hi, v| Draw::Randint {
            lo: 0,
            hi,
            value: v,
        };
        let about = Draw::Choice { n: 2, value: 0 };
        assert_eq!(
            aug(&words(25), vec![r(0.9), ri(14, 0), about.clone()]),
            "Describe the masked region in about 20 words."
        );
        assert_eq!(
            aug(&words(35), vec![r(0.9), ri(14, 0), about]),
            "Describe the masked region in about 40 words."
        );
        assert_eq!(
            aug(&words(7), vec![r(0.85), ri(14, 1)]),
            "Describe the masked area in 7 words."
        );
        assert_eq!(
            aug(&words(201), vec![r(0.99), ri(14, 1)]),
            "Describe the masked area in more than 200 words."
        );
        assert_eq!(
            aug("A. B! ? C", vec![r(0.7), ri(14, 0)]),
            "Describe the masked region in 3 sentences."
        );
        assert_eq!(
            aug(
                "Only one",
                vec![r(0.6), ri(14, 0), Draw::Choice { n: 3, value: 2 }]
            ),
            "Describe the masked region in 1 sentence."
        );
        assert_eq!(aug("x", vec![r(0.1), ri(29, 15)]), TEMPLATES[15]);
        assert_eq!(
            aug("x", vec![r(0.1), ri(29, 3)]),
            "Can you describe the masked region in detail?"
        );
    }

    #[test]
    fn an_empty_mask_list_is_rejected_not_a_panic() {
        let row = RawRow {
            image: Some(image::RgbImage::new(20, 20)),
            conversations: vec![
                Message {
                    from: "human".into(),
                    value: "q".into(),
                },
                Message {
                    from: "gpt".into(),
                    value: "a".into(),
                },
            ],
            masks: Some(Vec::new()),
        };
        let mut ch = crate::choices::SeededChoices::new(0);
        assert_eq!(
            construct(&row, &ConstructConfig::default(), &mut ch).err(),
            Some(Reject::NoRegions)
        );
    }
}
