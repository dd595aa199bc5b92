//! Ferret-Bench referring description: readers, and replay of cached GPT reviews
//! (`gpt4_result/<model>/review_refer_desc.jsonl`).
//!
//! Each review's first line holds "gt_score model_score" (Assistant 1 is the GPT-4 reference
//! answer, Assistant 2 the model); `parse_score` splits it on spaces after turning commas into
//! spaces and yields `[-1, -1]` when that fails. `summarize_gpt_review.py` averages the pairs
//! per category and over all, rounds each mean to 3 decimals and reports
//! `round(model / gt * 100, 1)`.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{EvalError, Result};
use crate::io::read_jsonl;
use crate::published;
use crate::py_round;
use crate::report::{Report, Row};
use crate::rle::BoxXywh;

/// `annotations/box_refer_caption.json` item: the question and its box, also as a polygon.
#[derive(Debug, Clone, Deserialize)]
pub struct BoxReferItem {
    pub question_id: Value,
    pub image: String,
    pub category: String,
    pub text: String,
    pub annotation: BoxAnnotation,
}

#[derive(Debug, Clone, Deserialize)]
pub struct BoxAnnotation {
    /// `x, y, w, h` in pixels.
    pub bbox: [f64; 4],
    /// The same box as a 4-corner COCO polygon (rasterised to a filled rectangle mask).
    pub segmentation: Vec<Vec<f64>>,
}

impl BoxAnnotation {
    pub fn xywh(&self) -> BoxXywh {
        let [x, y, w, h] = self.bbox;
        BoxXywh { x, y, w, h }
    }
}

/// A record of `question.jsonl`, `context.jsonl`, `answer.jsonl` or `ferret_answer.jsonl`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TextRecord {
    pub question_id: Value,
    pub image: String,
    #[serde(default)]
    pub category: Option<String>,
    pub text: String,
}

/// A model output (`model_outputs/gar_*.json`): paired with the questions by position.
#[derive(Debug, Clone, Deserialize)]
pub struct ModelOutput {
    pub image_path: String,
    pub caption: String,
}

/// The judge's rule (`rule.json[category]`).
#[derive(Debug, Clone, Deserialize)]
pub struct Rule {
    pub role: String,
    pub prompt: String,
}

/// One cached review line.
#[derive(Debug, Clone, Deserialize)]
pub struct Review {
    #[serde(default)]
    pub question_id: Value,
    #[serde(default)]
    pub category: Option<String>,
    #[serde(default)]
    pub content: Option<String>,
    #[serde(default)]
    pub tuple: Option<Vec<f64>>,
    #[serde(default)]
    pub answer1: Option<String>,
    #[serde(default)]
    pub answer2: Option<String>,
}

pub fn read_text_records(path: &Path) -> Result<Vec<TextRecord>> {
    read_jsonl(path)
}

pub fn read_reviews(path: &Path) -> Result<Vec<Review>> {
    read_jsonl(path)
}

pub fn read_rules(path: &Path) -> Result<BTreeMap<String, Rule>> {
    crate::io::from_item(path, "(top level)", crate::io::read_json(path)?)
}

/// Port of `parse_score`: `None` where the Python falls back to `[-1, -1]`.
pub fn parse_score(review: &str) -> Option<(f64, f64)> {
    let first = review.split('\n').next().unwrap_or("").replace(',', " ");
    let mut sp = first.split(' ');
    // Python's float() accepts surrounding whitespace; an empty field (double space) fails.
    let num = |s: Option<&str>| {
        s.map(str::trim)
            .filter(|s| !s.is_empty())
            .and_then(|s| s.parse::<f64>().ok())
    };
    Some((num(sp.next())?, num(sp.next())?))
}

/// Mean reference and model scores and the relative score for one group of reviews.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Relative {
    pub reviews: usize,
    /// Mean score of Assistant 1 (the reference answer), rounded to 3 decimals.
    pub gt_mean: f64,
    /// Mean score of Assistant 2 (the model), rounded to 3 decimals.
    pub model_mean: f64,
    /// `model_mean / gt_mean × 100` (unrounded; callers round as their benchmark prints).
    pub ratio: f64,
}

/// Averages `[gt, model]` pairs like `np.asarray(v).mean(0)` followed by `round(x, 3)`.
pub fn relative(pairs: &[(f64, f64)], eps: f64) -> Relative {
    let n = pairs.len().max(1) as f64;
    let gt = py_round(pairs.iter().map(|p| p.0).sum::<f64>() / n, 3);
    let model = py_round(pairs.iter().map(|p| p.1).sum::<f64>() / n, 3);
    Relative {
        reviews: pairs.len(),
        gt_mean: gt,
        model_mean: model,
        ratio: model / (gt + eps) * 100.0,
    }
}

/// Pairs of a review file in file order with their category, each re-parsed from the judge's
/// reply (the stored `tuple` is used only when the reply text is absent).
#[derive(Debug, Clone, Default)]
pub struct ReviewPairs {
    pub pairs: Vec<(String, (f64, f64))>,
    /// Replies whose first line did not parse (scored `[-1, -1]`, as the reference does).
    pub parse_failures: usize,
    /// Re-parsed pairs that differ from the stored `tuple`.
    pub tuple_mismatches: usize,
}

impl ReviewPairs {
    /// The pairs of each category, in file order.
    pub fn by_category(&self) -> BTreeMap<String, Vec<(f64, f64)>> {
        let mut groups = BTreeMap::<String, Vec<(f64, f64)>>::new();
        for (c, p) in &self.pairs {
            groups.entry(c.clone()).or_default().push(*p);
        }
        groups
    }

    pub fn all(&self) -> Vec<(f64, f64)> {
        self.pairs.iter().map(|(_, p)| *p).collect()
    }
}

pub fn review_pairs(path: &Path, reviews: &[Review]) -> Result<ReviewPairs> {
    let mut out = ReviewPairs::default();
    for (i, r) in reviews.iter().enumerate() {
        let stored = r
            .tuple
            .as_deref()
            .and_then(|t| (t.len() == 2).then(|| (t[0], t[1])));
        let pair = match (&r.content, stored) {
            (Some(c), _) => parse_score(c).unwrap_or_else(|| {
                out.parse_failures += 1;
                (-1.0, -1.0)
            }),
            (None, Some(t)) => t,
            (None, None) => {
                return Err(EvalError::item(
                    path,
                    format!("line {}", i + 1),
                    "review has neither `content` nor a 2-number `tuple`",
                ))
            }
        };
        out.tuple_mismatches += usize::from(stored.is_some_and(|t| t != pair));
        out.pairs
            .push((r.category.clone().unwrap_or_else(|| "all".into()), pair));
    }
    Ok(out)
}

#[derive(Debug, Clone, Serialize)]
pub struct FerretReplay {
    pub bench: &'static str,
    pub protocol: &'static str,
    /// The "all" relative score, one decimal.
    pub score: f64,
    pub gt_mean: f64,
    pub model_mean: f64,
    pub reviews: usize,
    /// Per category, one decimal.
    pub categories: BTreeMap<String, f64>,
    pub parse_failures: usize,
    pub tuple_mismatches: usize,
}

pub fn replay(path: &Path) -> Result<FerretReplay> {
    let reviews = read_reviews(path)?;
    if reviews.is_empty() {
        return Err(EvalError::format(path, "no reviews"));
    }
    let pairs = review_pairs(path, &reviews)?;
    let overall = relative(&pairs.all(), 0.0);
    Ok(FerretReplay {
        bench: "ferret-bench",
        protocol: "gpt-4o-2024-11-20 text-only review, relative score = model/GT × 100",
        score: py_round(overall.ratio, 1),
        gt_mean: overall.gt_mean,
        model_mean: overall.model_mean,
        reviews: overall.reviews,
        categories: pairs
            .by_category()
            .iter()
            .map(|(k, v)| (k.clone(), py_round(relative(v, 0.0).ratio, 1)))
            .collect(),
        parse_failures: pairs.parse_failures,
        tuple_mismatches: pairs.tuple_mismatches,
    })
}

/// Ferret's `postprocess_answer` for `refer_desc` / `refer_reason`: drops every `" [..]"`
/// box (regex `\[.*?\]`, so a `[` without a `]` on the same line stays). Other categories are
/// returned unchanged (GAR is only evaluated on `refer_desc`).
pub fn postprocess_answer(answer: &str, category: &str) -> String {
    if category != "refer_desc" && category != "refer_reason" {
        return answer.to_string();
    }
    let mut matches = Vec::new();
    let mut rest = answer;
    while let Some(open) = rest.find('[') {
        let tail = &rest[open..];
        let line_end = tail.find('\n').unwrap_or(tail.len());
        match tail[..line_end].find(']') {
            Some(close) => {
                matches.push(tail[..=close].to_string());
                rest = &tail[close + 1..];
            }
            None => rest = &tail[1..],
        }
    }
    let mut out = answer.to_string();
    for m in matches {
        out = out.replace(&format!(" {m}"), "");
    }
    out
}

impl FerretReplay {
    pub fn report(&self) -> Report {
        let mut rows: Vec<Row> = self
            .categories
            .iter()
            .map(|(k, v)| {
                Row::new(k.clone(), Some(*v), "")
                    .published((k == "refer_desc").then_some(published::FERRET))
            })
            .collect();
        rows.push(
            Row::new(
                "all",
                Some(self.score),
                format!("model {} / GT {}", self.model_mean, self.gt_mean),
            )
            .published(Some(published::FERRET)),
        );
        Report {
            title: "Ferret-Bench referring description (cached reviews)".into(),
            metric: "relative score (model / GPT-4 answer × 100)".into(),
            decimals: 1,
            rows,
            notes: vec![
                self.protocol.to_string(),
                format!(
                    "{} reviews, {} unparsable first lines, {} differ from the stored tuple",
                    self.reviews, self.parse_failures, self.tuple_mismatches
                ),
            ],
            result: serde_json::to_value(self).unwrap_or_default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_score_follows_python() {
        assert_eq!(parse_score("7 4\n\nbecause"), Some((7.0, 4.0)));
        assert_eq!(parse_score("7 4  \nx"), Some((7.0, 4.0)));
        assert_eq!(parse_score("8,6"), Some((8.0, 6.0)));
        assert_eq!(parse_score("7.5, 6"), None); // "7.5", "", "6": the empty field fails
        assert_eq!(parse_score("Scores: 7 4"), None);
        assert_eq!(parse_score("7"), None);
    }

    #[test]
    fn relative_score_rounding() {
        // GAR-1B published: GT 7.100, model 3.975 -> 56.0
        let pairs: Vec<(f64, f64)> = (0..40)
            .map(|i| (7.1, if i < 39 { 4.0 } else { 3.025 }))
            .collect();
        let r = relative(&pairs, 0.0);
        assert_eq!((r.gt_mean, r.model_mean), (7.1, 3.976));
        assert_eq!(py_round(relative(&[(7.1, 3.975)], 0.0).ratio, 1), 56.0);
    }

    #[test]
    fn strips_boxes_like_the_regex() {
        assert_eq!(
            postprocess_answer("a sign [0.1, 0.2, 0.3, 0.4] on a wall", "refer_desc"),
            "a sign on a wall"
        );
        assert_eq!(postprocess_answer("x [a] [b]", "refer_desc"), "x");
        assert_eq!(postprocess_answer("[a] start", "refer_desc"), "[a] start"); // no leading space
        assert_eq!(
            postprocess_answer("open [ only\n] x", "refer_desc"),
            "open [ only\n] x"
        );
        assert_eq!(postprocess_answer("keep [a]", "ground_conv"), "keep [a]");
    }
}
