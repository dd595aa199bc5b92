//! Summaries of MDVP judge reviews (one JSONL line per judged question, `category` = phase).

use std::collections::BTreeMap;
use std::path::Path;

use serde::Serialize;

use super::{published_row, NOTE, PHASES};
use crate::error::{EvalError, Result};
use crate::py_round;
use crate::report::{Report, Row};

/// Per-domain result of judge reviews, and the four groups the GAR paper reports.
#[derive(Debug, Clone, Serialize)]
pub struct ReviewReplay {
    pub bench: &'static str,
    pub protocol: &'static str,
    /// Per phase: `round(model / (gt + 1e-6) × 100, 2)` as `summarize_gpt_score.py` prints.
    pub domains: BTreeMap<String, crate::ferret::Relative>,
    pub scores: BTreeMap<String, f64>,
    /// Natural, OCR (mean of doc and spotting), Multi-Panel, Screenshot (mean of android and web).
    pub groups: BTreeMap<String, f64>,
    /// Every judged question pooled: `model / (gt + 1e-6) × 100` over all reviews.
    pub overall: crate::ferret::Relative,
    pub overall_score: f64,
    pub parse_failures: usize,
    pub comparable_to_published: bool,
    pub note: &'static str,
}

/// Summarises a review JSONL (one line per judged question, `category` = phase), the format
/// `eval_gpt.py` writes and a judge client should write.
pub fn replay_reviews(path: &Path) -> Result<ReviewReplay> {
    let reviews = crate::ferret::read_reviews(path)?;
    let pairs = crate::ferret::review_pairs(path, &reviews)?;
    let domains: BTreeMap<String, crate::ferret::Relative> = pairs
        .by_category()
        .iter()
        .map(|(k, v)| (k.clone(), crate::ferret::relative(v, 1e-6)))
        .collect();
    if domains.is_empty() {
        return Err(EvalError::format(path, "no reviews"));
    }
    let scores: BTreeMap<String, f64> = domains
        .iter()
        .map(|(k, r)| (k.clone(), py_round(r.ratio, 2)))
        .collect();
    let get = |k: &str| scores.get(k).copied();
    let mean2 = |a: Option<f64>, b: Option<f64>| Some((a? + b?) / 2.0);
    let mut groups = BTreeMap::new();
    for (name, v) in [
        ("Natural", get(PHASES[2])),
        ("OCR", mean2(get(PHASES[3]), get(PHASES[4]))),
        ("Multi-Panel", get(PHASES[1])),
        ("Screenshot", mean2(get(PHASES[0]), get(PHASES[5]))),
    ] {
        if let Some(v) = v {
            groups.insert(name.to_string(), py_round(v, 1));
        }
    }
    let overall = crate::ferret::relative(&pairs.all(), 1e-6);
    Ok(ReviewReplay {
        overall_score: py_round(overall.ratio, 2),
        overall,
        bench: "mdvp-bench",
        protocol: "gpt-4o-2024-11-20 reviews with painted boxes; score = model/(GT+1e-6) × 100",
        domains,
        scores,
        groups,
        parse_failures: pairs.parse_failures,
        comparable_to_published: false,
        note: NOTE,
    })
}

impl ReviewReplay {
    pub fn report(&self) -> Report {
        let mut rows: Vec<Row> = self
            .domains
            .iter()
            .map(|(p, r)| {
                published_row(
                    p,
                    self.scores.get(p).copied(),
                    format!(
                        "model {} / GT {} ({} reviews)",
                        r.model_mean, r.gt_mean, r.reviews
                    ),
                )
            })
            .collect();
        rows.extend(
            self.groups
                .iter()
                .map(|(g, v)| Row::new(g.clone(), Some(*v), "group")),
        );
        rows.push(Row::new(
            "overall",
            Some(self.overall_score),
            format!(
                "model {} / GT {} ({} reviews, all domains pooled)",
                self.overall.model_mean, self.overall.gt_mean, self.overall.reviews
            ),
        ));
        Report {
            title: "MDVP-Bench (judge reviews)".into(),
            metric: "relative score (model / GT × 100)".into(),
            decimals: 2,
            rows,
            notes: vec![self.protocol.to_string(), self.note.to_string()],
            result: serde_json::to_value(self).unwrap_or_default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn review_replay_scores_domains_and_groups() {
        let lines = [
            (PHASES[2], "8 6"),
            (PHASES[2], "6 6\nwhy"),
            (PHASES[3], "5 5"),
            (PHASES[4], "4 6"),
            (PHASES[0], "8 4"),
            (PHASES[5], "not a score"),
        ];
        let text: String = lines
            .iter()
            .map(|(p, c)| serde_json::json!({"category": p, "content": c}).to_string() + "\n")
            .collect();
        let path = std::env::temp_dir().join(format!("gar-eval-mdvp-{}.jsonl", std::process::id()));
        std::fs::write(&path, text).unwrap();
        let r = replay_reviews(&path).unwrap();
        std::fs::remove_file(&path).ok();
        assert_eq!(r.scores[PHASES[2]], 85.71); // 6 / (7 + 1e-6)
        assert_eq!(r.scores[PHASES[5]], 100.0); // unparsable: [-1, -1]
        assert_eq!(r.parse_failures, 1);
        assert_eq!(r.groups["OCR"], 125.0); // mean(100, 150)
        assert_eq!(r.groups["Screenshot"], 75.0); // mean(50, 100)
        assert!(!r.groups.contains_key("Multi-Panel"));
        // Pooled: GT (8+6+5+4+8-1)/6 = 5.0, model (6+6+5+6+4-1)/6 = 4.333.
        assert_eq!((r.overall.gt_mean, r.overall.model_mean), (5.0, 4.333));
        assert_eq!(r.overall_score, 86.66);
    }
}
