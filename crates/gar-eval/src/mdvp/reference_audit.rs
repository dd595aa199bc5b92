//! What the reference MDVP pipeline fed its judge (`mdvp_for_gpt4v_eval/`), and the check that
//! each published number is a ratio of two 10-item means.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::{published_row, ReviewInput, NOTE, PHASES};
use crate::error::Result;
use crate::io::read_list;
use crate::py_round;
use crate::report::Report;

/// What the reference pipeline actually fed its judge, read from `mdvp_for_gpt4v_eval/`.
#[derive(Debug, Clone, Serialize)]
pub struct PhaseAudit {
    pub questions: usize,
    pub answers: usize,
    pub predictions: usize,
    /// `zip()` stops at the shortest list.
    pub pairs_judged: usize,
    /// Distinct images the judged answer/prediction pairs came from.
    pub judged_pairs_from: Vec<String>,
    /// Judged pairs whose region image is the image shown with the question.
    pub pairs_matching_question_image: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct Audit {
    pub bench: &'static str,
    pub protocol: &'static str,
    pub folder: PathBuf,
    pub phases: BTreeMap<String, PhaseAudit>,
    /// Every phase received the same answer and prediction lists.
    pub identical_inputs_across_phases: bool,
    /// Each published per-domain number equals round(m / (g + 1e-6) × 100, 2) for some 10-item
    /// means g, m (multiples of 0.1 in [1, 10]): one example decomposition per number.
    pub published_as_10_item_ratios: BTreeMap<String, Vec<String>>,
    pub comparable_to_published: bool,
    pub note: &'static str,
}

pub fn audit(folder: &Path) -> Result<Audit> {
    let mut phases = BTreeMap::new();
    let mut first_inputs: Option<(Vec<ReviewInput>, Vec<ReviewInput>)> = None;
    let mut identical = true;
    for phase in PHASES {
        let dir = folder.join(phase);
        let q: Vec<ReviewInput> = read_list(&dir.join("question.json"))?;
        let a: Vec<ReviewInput> = read_list(&dir.join("answer.json"))?;
        let p: Vec<ReviewInput> = read_list(&dir.join("prediction.json"))?;
        let n = q.len().min(a.len()).min(p.len());
        let base = |s: &str| s.rsplit('/').next().unwrap_or(s).to_string();
        let mut from: Vec<String> = a[..n].iter().map(|r| base(&r.image)).collect();
        from.dedup();
        let matching = (0..n)
            .filter(|&i| base(&a[i].image) == base(&q[i].image))
            .count();
        phases.insert(
            phase.to_string(),
            PhaseAudit {
                questions: q.len(),
                answers: a.len(),
                predictions: p.len(),
                pairs_judged: n,
                judged_pairs_from: from,
                pairs_matching_question_image: matching,
            },
        );
        let texts = |v: &[ReviewInput]| v.iter().map(|r| r.text.clone()).collect::<Vec<_>>();
        match &first_inputs {
            None => first_inputs = Some((a, p)),
            Some((a0, p0)) => identical &= texts(a0) == texts(&a) && texts(p0) == texts(&p),
        }
    }
    Ok(Audit {
        bench: "mdvp-bench",
        protocol:
            "audit of the reference pipeline's cached judge inputs (no judge replies are cached)",
        folder: folder.to_path_buf(),
        phases,
        identical_inputs_across_phases: identical,
        published_as_10_item_ratios: published_decompositions(),
        comparable_to_published: false,
        note: NOTE,
    })
}

/// For each published per-domain number, every pair of 10-item means `model/gt` (multiples of
/// 0.1 in [1, 10]) that reproduces it under `summarize_gpt_score.py`'s formula.
pub fn published_decompositions() -> BTreeMap<String, Vec<String>> {
    let mut out = BTreeMap::new();
    for p in crate::published::MDVP {
        for (model, v) in [("GAR-1B", p.gar_1b), ("GAR-8B", p.gar_8b)] {
            let found: Vec<String> = (10..=100)
                .flat_map(|g| (10..=100).map(move |m| (f64::from(g) / 10.0, f64::from(m) / 10.0)))
                .filter(|&(g, m)| py_round(m / (g + 1e-6) * 100.0, 2) == v)
                .map(|(g, m)| format!("{m:.1}/{g:.1}"))
                .collect();
            let text = if found.is_empty() {
                format!("{model} {v}: no 10-item decomposition")
            } else {
                let more = found.len().saturating_sub(3);
                let tail = if more > 0 {
                    format!(" (+{more} more)")
                } else {
                    String::new()
                };
                format!(
                    "{model} {v} = {}{tail}",
                    found[..found.len().min(3)].join(" or ")
                )
            };
            out.entry(p.label.to_string())
                .or_insert_with(Vec::new)
                .push(text);
        }
    }
    out
}

impl Audit {
    pub fn report(&self) -> Report {
        let rows = self
            .phases
            .iter()
            .map(|(p, a)| {
                let detail = format!(
                    "{} pairs judged, from {}; {} match the question image",
                    a.pairs_judged,
                    a.judged_pairs_from.join(", "),
                    a.pairs_matching_question_image
                );
                published_row(p, None, detail)
            })
            .collect();
        let mut notes = vec![self.note.to_string()];
        notes.extend(self.published_as_10_item_ratios.values().flatten().cloned());
        Report {
            title: "MDVP-Bench: audit of the reference judge inputs".into(),
            metric: "relative score (published; not comparable)".into(),
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
    fn every_published_number_is_a_ratio_of_10_item_means() {
        let d = published_decompositions();
        assert_eq!(d.len(), 6);
        assert!(
            d.values().flatten().all(|s| !s.contains("no 10-item")),
            "{d:?}"
        );
        assert!(d["android_detailed_caption_box"][0].contains("80.65 ="));
    }
}
