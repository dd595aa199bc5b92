//! MDVP-Bench (box, detailed caption): per-question regrouping of GAR's per-region captions
//! (here), an audit of the reference pipeline's cached judge inputs (`reference_audit`), and
//! summaries of judge reviews (`reviews`).
//!
//! Why the published numbers are not comparable: GAR captions each of the 364 regions alone.
//! The reference `transfer.py` then writes all 364 region pairs into *every* domain's
//! `answer.json` / `prediction.json`, and `eval_gpt.py` zips them with that domain's 10
//! questions, so every domain is judged on the first 10 regions of one Android screenshot, next
//! to unrelated images. Here each question gets its own regions back, as
//! `<Region k>: caption` lines in box order, paired with the question's own `gt_answers`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{EvalError, Result};
use crate::io::read_list;
use crate::published;
use crate::report::{Report, Row};
use crate::rle::CocoRle;

mod reference_audit;
mod reviews;

pub use reference_audit::{audit, published_decompositions, Audit, PhaseAudit};
pub use reviews::{replay_reviews, ReviewReplay};

/// The six box detailed-caption phases, in the reference's order.
pub const PHASES: [&str; 6] = [
    "android_detailed_caption_box",
    "multipanel_detailed_caption_box",
    "natural_detailed_caption_box",
    "ocr_doc_detailed_caption_box",
    "ocr_spotting_detailed_caption_box",
    "web_detailed_caption_box",
];

/// `data/<domain>/<domain>_box.json` (or `_point.json`) item.
#[derive(Debug, Clone, Deserialize)]
pub struct QuestionItem {
    pub image_name: String,
    pub question: String,
    pub question_id: Value,
    pub dataset_name: String,
    pub gt_answers: String,
    #[serde(default)]
    pub bbox: Option<Vec<[f64; 4]>>,
    #[serde(default)]
    pub points: Option<Value>,
}

/// `annotations/mdvp_caption_mask.json` item: one region with its precomputed mask.
#[derive(Debug, Clone, Deserialize)]
pub struct RegionMask {
    pub image_path: String,
    pub mask_rle: CocoRle,
    pub dataset_name: String,
    pub question: String,
    pub caption: String,
}

/// `model_outputs/gar_*.json` item, aligned by position with `mdvp_caption_mask.json`.
#[derive(Debug, Clone, Deserialize)]
pub struct RegionOutput {
    pub image_path: String,
    pub caption: String,
    pub gt: String,
}

/// LLaVA review-input record (`mdvp_for_gpt4v_eval/<phase>/{question,answer,prediction}.json`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReviewInput {
    pub question_id: Value,
    pub image: String,
    pub category: String,
    pub text: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotation: Option<Value>,
}

/// The domain folder of a phase: `natural_detailed_caption_box` → `natural_detailed_caption`.
pub fn domain(phase: &str) -> &str {
    phase.split("_box").next().unwrap_or(phase)
}

/// The `[Context]` sentence `eval_gpt.py` picks from the phase name (first match wins).
pub fn context(phase: &str) -> &'static str {
    let rules = [
        ("natural", "The image is a natural image."),
        (
            "ocr",
            "The image contains text, and the user wishes to know the content of the text.",
        ),
        (
            "screen",
            "The image is a screenshot from a mobile phone or webpage.",
        ),
        ("panel", "The image is a multi-panel figure."),
        ("android", "The image is an andriod screenshot."),
        ("web", "The image is a webpage screenshot."),
    ];
    rules
        .iter()
        .find(|(k, _)| phase.contains(k))
        .map_or("", |(_, c)| c)
}

/// One question with its regions regrouped.
#[derive(Debug, Clone, Serialize)]
pub struct GroupedQuestion {
    pub phase: String,
    pub question: ReviewInput,
    /// The benchmark's reference answer (`gt_answers`, verbatim).
    pub answer: ReviewInput,
    /// The model's region captions as `<Region k>: …` lines.
    pub prediction: ReviewInput,
    pub regions: usize,
}

/// Regroups per-region outputs into per-question answers. `questions` maps each phase to its
/// question file's items. Regions of a question are matched by phase and image, in file order;
/// each region's reference caption must equal the question's `<Region k>` line, so a shuffled or
/// truncated file is caught rather than mis-paired.
pub fn group(
    outputs_path: &Path,
    outputs: &[RegionOutput],
    masks: &[RegionMask],
    questions: &BTreeMap<String, Vec<QuestionItem>>,
) -> Result<Vec<GroupedQuestion>> {
    if outputs.len() != masks.len() {
        return Err(EvalError::format(
            outputs_path,
            format!(
                "{} outputs for {} regions in mdvp_caption_mask.json",
                outputs.len(),
                masks.len()
            ),
        ));
    }
    let mut by_image: BTreeMap<(&str, &str), Vec<(&str, &str)>> = BTreeMap::new();
    for (i, (o, m)) in outputs.iter().zip(masks).enumerate() {
        if o.gt != m.caption || !o.image_path.ends_with(&m.image_path) {
            return Err(EvalError::item(
                outputs_path,
                i,
                format!(
                    "does not belong to region {i} of mdvp_caption_mask.json ({})",
                    m.image_path
                ),
            ));
        }
        by_image
            .entry((m.dataset_name.as_str(), m.image_path.as_str()))
            .or_default()
            .push((o.caption.as_str(), m.caption.as_str()));
    }
    let mut out = Vec::new();
    for (phase, items) in questions {
        for (qi, q) in items.iter().enumerate() {
            let image = format!("{}/images/{}", domain(phase), q.image_name);
            let captions = by_image
                .get(&(phase.as_str(), image.as_str()))
                .cloned()
                .unwrap_or_default();
            let gt_lines = region_lines(&q.gt_answers);
            let item = || format!("{phase} question {qi}");
            if captions.is_empty() || captions.len() != gt_lines.len() {
                return Err(EvalError::item(
                    outputs_path,
                    item(),
                    format!(
                        "{} region outputs for {} reference regions of {image}",
                        captions.len(),
                        gt_lines.len()
                    ),
                ));
            }
            if let Some(k) = captions
                .iter()
                .zip(&gt_lines)
                .position(|((_, gt), line)| gt.trim() != line)
            {
                return Err(EvalError::item(
                    outputs_path,
                    item(),
                    format!(
                        "region {} of {image} is not <Region {}> of the question",
                        k + 1,
                        k + 1
                    ),
                ));
            }
            let record = |text: String, annotation: Option<Value>| ReviewInput {
                question_id: q.question_id.clone(),
                image: q.image_name.clone(),
                category: phase.clone(),
                text,
                annotation,
            };
            let boxes = q
                .bbox
                .as_ref()
                .map(|b| serde_json::json!({"bbox": b, "segmentation": []}));
            let prediction = captions
                .iter()
                .enumerate()
                .map(|(k, (c, _))| format!("<Region {}>: {c}", k + 1))
                .collect::<Vec<_>>()
                .join("\n");
            out.push(GroupedQuestion {
                phase: phase.clone(),
                question: record(q.question.clone(), boxes),
                answer: record(q.gt_answers.clone(), None),
                prediction: record(prediction, None),
                regions: captions.len(),
            });
        }
    }
    Ok(out)
}

/// Splits `"<Region 1>: a\n<Region 2>: b"` into `["a", "b"]` (the colon may lack its space).
pub fn region_lines(answer: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for line in answer.split('\n') {
        let body = line
            .strip_prefix("<Region ")
            .and_then(|r| r.split_once('>'))
            .map(|(_, r)| r.trim_start_matches(':').trim());
        match (body, out.last_mut()) {
            (Some(b), _) => out.push(b.to_string()),
            (None, Some(last)) => {
                last.push('\n');
                last.push_str(line);
            }
            (None, None) => {}
        }
    }
    out
}

/// Reads the question files of every phase that exists under `data_dir` (`…/MDVP-Bench/data`).
pub fn read_questions(data_dir: &Path) -> Result<BTreeMap<String, Vec<QuestionItem>>> {
    let mut out = BTreeMap::new();
    for phase in PHASES {
        let d = domain(phase);
        let path = data_dir.join(d).join(format!("{d}_box.json"));
        out.insert(phase.to_string(), read_list(&path)?);
    }
    Ok(out)
}

pub const NOTE: &str = "The published MDVP-Bench numbers are not comparable: the reference transfer.py writes all 364 \
per-region pairs into every domain's answer/prediction files and eval_gpt.py zips them with the domain's 10 questions, \
so each domain was judged on the same first 10 regions (one Android screenshot) next to unrelated images. \
Here regions are regrouped per question (`<Region k>: …`) and each question is judged with its own image \
(gar eval judge --bench mdvp-bench).";

/// What regrouping found, per phase (no judge needed).
#[derive(Debug, Clone, Serialize)]
pub struct GroupingSummary {
    pub bench: &'static str,
    pub protocol: &'static str,
    pub questions: usize,
    pub regions: usize,
    /// Per phase: (questions, regions).
    pub domains: BTreeMap<String, DomainCount>,
    /// How many region captions equal the ones the reference pipeline judged
    /// (`mdvp_for_gpt4v_eval/*/prediction.json`), when that folder is found.
    pub same_as_reference_judged_captions: Option<(usize, usize)>,
    pub comparable_to_published: bool,
    pub note: &'static str,
}

#[derive(Debug, Clone, Serialize)]
pub struct DomainCount {
    pub questions: usize,
    pub regions: usize,
}

pub fn summarize_grouping(
    grouped: &[GroupedQuestion],
    reference: Option<(&[ReviewInput], &[RegionOutput])>,
) -> GroupingSummary {
    let mut domains: BTreeMap<String, DomainCount> = BTreeMap::new();
    for g in grouped {
        let d = domains.entry(g.phase.clone()).or_insert(DomainCount {
            questions: 0,
            regions: 0,
        });
        d.questions += 1;
        d.regions += g.regions;
    }
    let same = reference.map(|(cached, outputs)| {
        (
            cached
                .iter()
                .zip(outputs)
                .filter(|(c, o)| c.text == o.caption)
                .count(),
            outputs.len(),
        )
    });
    GroupingSummary {
        bench: "mdvp-bench",
        protocol: "per-question regrouping of per-region captions (judge inputs only; scoring needs the GPT-4o judge)",
        questions: grouped.len(),
        regions: grouped.iter().map(|g| g.regions).sum(),
        domains,
        same_as_reference_judged_captions: same,
        comparable_to_published: false,
        note: NOTE,
    }
}

/// Writes `<dir>/judge_inputs/<phase>/{question,answer,prediction}.json` in the LLaVA review
/// format `eval_gpt.py` reads, one record per question (not per region).
pub fn write_judge_inputs(dir: &Path, grouped: &[GroupedQuestion]) -> Result<PathBuf> {
    let root = dir.join("judge_inputs");
    for phase in PHASES {
        let of_phase: Vec<&GroupedQuestion> = grouped.iter().filter(|g| g.phase == phase).collect();
        if of_phase.is_empty() {
            continue;
        }
        let pdir = root.join(phase);
        std::fs::create_dir_all(&pdir).map_err(|source| EvalError::Write {
            path: pdir.clone(),
            source,
        })?;
        for (name, pick) in [
            (
                "question.json",
                (|g: &GroupedQuestion| g.question.clone()) as fn(&GroupedQuestion) -> ReviewInput,
            ),
            ("answer.json", |g| g.answer.clone()),
            ("prediction.json", |g| g.prediction.clone()),
        ] {
            let records: Vec<ReviewInput> = of_phase.iter().map(|g| pick(g)).collect();
            let path = pdir.join(name);
            let text = serde_json::to_string_pretty(&records).unwrap_or_default();
            std::fs::write(&path, text).map_err(|source| EvalError::Write { path, source })?;
        }
    }
    Ok(root)
}

pub(crate) fn published_row(phase: &str, value: Option<f64>, detail: String) -> Row {
    Row::new(phase, value, detail).published(published::lookup(published::MDVP, phase))
}

impl GroupingSummary {
    pub fn report(&self) -> Report {
        let rows = self
            .domains
            .iter()
            .map(|(p, d)| {
                published_row(
                    p,
                    None,
                    format!("{} questions / {} regions", d.questions, d.regions),
                )
            })
            .collect();
        let mut notes = vec![self.protocol.to_string(), self.note.to_string()];
        if let Some((same, total)) = self.same_as_reference_judged_captions {
            notes.push(format!(
                "{same}/{total} region captions equal those in the reference's cached judge inputs"
            ));
        }
        Report {
            title: "MDVP-Bench box detailed caption (regrouped)".into(),
            metric: "relative score (needs a judge)".into(),
            decimals: 2,
            rows,
            notes,
            result: serde_json::to_value(self).unwrap_or_default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn region_lines_tolerate_missing_space_and_wrapped_lines() {
        assert_eq!(
            region_lines("<Region 1>:a b\n<Region 2>: c\nmore"),
            vec!["a b", "c\nmore"]
        );
        assert!(region_lines("no regions").is_empty());
    }

    #[test]
    fn contexts_follow_reference_precedence() {
        assert_eq!(
            context("ocr_doc_detailed_caption_box"),
            "The image contains text, and the user wishes to know the content of the text."
        );
        assert_eq!(
            context("multipanel_detailed_caption_box"),
            "The image is a multi-panel figure."
        );
        assert_eq!(
            context("android_detailed_caption_box"),
            "The image is an andriod screenshot."
        );
        assert_eq!(domain("web_detailed_caption_box"), "web_detailed_caption");
    }
}
