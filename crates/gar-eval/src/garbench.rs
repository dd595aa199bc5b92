//! GAR-Bench: VQA exact-match scoring and replay of the cached GPT-4o caption verdicts.
//!
//! VQA rule (tail of the reference `GAR-Bench/inference.py`): an item is correct iff
//! `model_output.lower() == answer.lower()`, no letter extraction; per-category and overall
//! (micro) accuracy printed as `round(c / t * 100, 1)`. Captions: a verdict counts only when
//! the judge replied exactly `"True"` (`eval_simple.py` / `eval_detailed.py`).

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{EvalError, Result};
use crate::io::{from_item, read_json, read_list};
use crate::published;
use crate::py_round;
use crate::report::{Report, Row};
use crate::rle::CocoRle;

/// One GAR-Bench-VQA annotation item (`GAR-Bench-VQA.json`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct VqaItem {
    #[serde(default)]
    pub image_path: Option<String>,
    pub mask_rles: Vec<CocoRle>,
    pub question: String,
    /// `"A. <Prompt0>"`, … (2 or 4 options).
    pub choices: Vec<String>,
    pub answer: String,
    /// The category: color, texture/pattern, mirror, ordering, material, shape, relation.
    #[serde(rename = "type")]
    pub category: String,
    /// Relative image path, e.g. `images/vqa_0.png`; unique per item.
    pub image: String,
}

/// One Caption-Simple item; `*_simple.json` adds `model_output`, `*_simple_eval.json` adds `eval_result`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CaptionSimpleItem {
    #[serde(default)]
    pub image_path: Option<String>,
    pub mask_rles: Vec<CocoRle>,
    pub question: String,
    pub answer: String,
    pub image: String,
    #[serde(default)]
    pub model_output: Option<String>,
    #[serde(default)]
    pub eval_result: Option<String>,
}

/// One Caption-Detailed item (a PSG-style subject / predicate / object triple).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CaptionDetailedItem {
    pub image: String,
    pub subject_name: String,
    pub object_name: String,
    pub predicate_name: String,
    pub mask_rles: Vec<CocoRle>,
    #[serde(default)]
    pub model_output: Option<String>,
    #[serde(default)]
    pub eval_result: Option<String>,
}

/// A VQA item with the generated answer.
#[derive(Debug, Clone)]
pub struct VqaPrediction {
    pub item: VqaItem,
    pub model_output: String,
}

pub fn read_vqa_annotations(path: &Path) -> Result<Vec<VqaItem>> {
    read_list(path)
}

/// True when every record of a predictions file carries its own annotation fields (the
/// published `gar_*_vqa.json` layout), so no annotation file is needed.
pub fn vqa_predictions_self_contained(path: &Path) -> Result<bool> {
    let Value::Array(items) = read_json(path)? else {
        return Err(EvalError::format(
            path,
            "expected a JSON list of predictions",
        ));
    };
    Ok(items
        .iter()
        .all(|v| v.get("answer").is_some() && v.get("type").is_some()))
}

/// Reads VQA predictions: either full items with `model_output` (the published layout) or
/// `{"image": …, "model_output": …}` records joined to `annotations` by `image`.
pub fn read_vqa_predictions(
    path: &Path,
    annotations: Option<&[VqaItem]>,
) -> Result<Vec<VqaPrediction>> {
    let Value::Array(items) = read_json(path)? else {
        return Err(EvalError::format(
            path,
            "expected a JSON list of predictions",
        ));
    };
    let by_image: BTreeMap<&str, &VqaItem> = annotations
        .unwrap_or_default()
        .iter()
        .map(|a| (a.image.as_str(), a))
        .collect();
    let mut out = Vec::with_capacity(items.len());
    for (i, v) in items.into_iter().enumerate() {
        let model_output = match v.get("model_output") {
            Some(Value::String(s)) => s.clone(),
            _ => {
                return Err(EvalError::item(
                    path,
                    i,
                    "missing string field `model_output`",
                ))
            }
        };
        let item = if v.get("answer").is_some() && v.get("type").is_some() {
            from_item::<VqaItem>(path, i, v)?
        } else {
            let image = v.get("image").and_then(Value::as_str).unwrap_or_default();
            match by_image.get(image) {
                Some(a) => (*a).clone(),
                None if annotations.is_none() => {
                    return Err(EvalError::item(
                        path,
                        i,
                        "no `answer`/`type` fields and no annotations given",
                    ))
                }
                None => {
                    return Err(EvalError::item(
                        path,
                        i,
                        format!("image {image:?} not in the annotations"),
                    ))
                }
            }
        };
        out.push(VqaPrediction { item, model_output });
    }
    Ok(out)
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Count {
    pub correct: usize,
    pub total: usize,
    /// Percent, rounded to one decimal like the reference print.
    pub accuracy: f64,
    pub fraction: f64,
}

impl Count {
    fn new(correct: usize, total: usize) -> Self {
        let fraction = if total == 0 {
            0.0
        } else {
            correct as f64 / total as f64
        };
        Count {
            correct,
            total,
            accuracy: py_round(fraction * 100.0, 1),
            fraction,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct VqaScore {
    pub bench: &'static str,
    /// Overall (micro) accuracy in percent, one decimal.
    pub overall: f64,
    pub overall_fraction: f64,
    pub correct: usize,
    pub total: usize,
    /// Per category, sorted by name.
    pub categories: BTreeMap<String, Count>,
    /// Correct under a lenient first-letter reading (`"(A)"`, `"A."` count); equal to
    /// `correct` on the published outputs, which are bare letters.
    pub lenient_correct: usize,
    pub rule: &'static str,
}

/// The reference's rule: case-insensitive whole-string equality.
pub fn vqa_correct(model_output: &str, answer: &str) -> bool {
    model_output.to_lowercase() == answer.to_lowercase()
}

/// A forgiving reading of an answer letter, for diagnosing format drift only.
pub fn lenient_letter(output: &str) -> Option<char> {
    let s = output.trim_start_matches(|c: char| c.is_whitespace() || c == '(');
    let mut chars = s.chars();
    let first = chars.next()?.to_ascii_uppercase();
    let next_is_letter = chars.next().is_some_and(char::is_alphabetic);
    (first.is_ascii_uppercase() && !next_is_letter).then_some(first)
}

pub fn score_vqa(preds: &[VqaPrediction]) -> VqaScore {
    let mut cats: BTreeMap<String, (usize, usize)> = BTreeMap::new();
    let (mut correct, mut lenient) = (0, 0);
    for p in preds {
        let ok = vqa_correct(&p.model_output, &p.item.answer);
        let c = cats.entry(p.item.category.clone()).or_default();
        c.0 += usize::from(ok);
        c.1 += 1;
        correct += usize::from(ok);
        let gold = p
            .item
            .answer
            .trim()
            .chars()
            .next()
            .map(|c| c.to_ascii_uppercase());
        lenient += usize::from(
            lenient_letter(&p.model_output).is_some() && lenient_letter(&p.model_output) == gold,
        );
    }
    let overall = Count::new(correct, preds.len());
    VqaScore {
        bench: "gar-bench-vqa",
        overall: overall.accuracy,
        overall_fraction: overall.fraction,
        correct,
        total: preds.len(),
        categories: cats
            .into_iter()
            .map(|(k, (c, t))| (k, Count::new(c, t)))
            .collect(),
        lenient_correct: lenient,
        rule:
            "correct iff model_output.lower() == answer.lower() (reference GAR-Bench/inference.py)",
    }
}

/// Per-item letter agreement between two runs (e.g. this engine against the published outputs).
#[derive(Debug, Clone, Serialize)]
pub struct Agreement {
    pub same: usize,
    pub total: usize,
    pub fraction: f64,
}

/// Compares outputs item by item, matching items by `image`; items missing from either side
/// are not counted.
pub fn vqa_agreement(a: &[VqaPrediction], b: &[VqaPrediction]) -> Agreement {
    let other: BTreeMap<&str, &str> = b
        .iter()
        .map(|p| (p.item.image.as_str(), p.model_output.as_str()))
        .collect();
    let (mut same, mut total) = (0, 0);
    for p in a {
        if let Some(o) = other.get(p.item.image.as_str()) {
            total += 1;
            same += usize::from(o.trim().eq_ignore_ascii_case(p.model_output.trim()));
        }
    }
    let fraction = if total == 0 {
        0.0
    } else {
        same as f64 / total as f64
    };
    Agreement {
        same,
        total,
        fraction,
    }
}

/// Which caption split a cache belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum CaptionSplit {
    Simple,
    Detailed,
}

impl CaptionSplit {
    pub fn bench(self) -> &'static str {
        match self {
            CaptionSplit::Simple => "gar-bench-simple",
            CaptionSplit::Detailed => "gar-bench-detailed",
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct CaptionReplay {
    pub bench: &'static str,
    pub protocol: &'static str,
    /// Fraction of exact `"True"` verdicts, as the reference prints it.
    pub accuracy: f64,
    /// The same in percent, two decimals.
    pub accuracy_pct: f64,
    pub correct: usize,
    pub total: usize,
    /// How often each distinct judge reply occurred.
    pub replies: BTreeMap<String, usize>,
}

/// Replays cached caption verdicts (`*_simple_eval.json` / `*_detailed_eval.json`). The split
/// is checked against the file's fields so a wrong `--bench` is reported, not mis-scored.
pub fn replay_captions(path: &Path, split: CaptionSplit) -> Result<CaptionReplay> {
    let Value::Array(items) = read_json(path)? else {
        return Err(EvalError::format(
            path,
            "expected a JSON list of judged captions",
        ));
    };
    let (mut correct, mut replies) = (0, BTreeMap::new());
    for (i, v) in items.iter().enumerate() {
        let found = if v.get("subject_name").is_some() {
            CaptionSplit::Detailed
        } else if v.get("answer").is_some() {
            CaptionSplit::Simple
        } else {
            return Err(EvalError::item(path, i, "neither `answer` (simple) nor `subject_name` (detailed): not a GAR-Bench caption file"));
        };
        if found != split {
            return Err(EvalError::item(
                path,
                i,
                format!(
                    "this is a {} item but {} was asked for",
                    found.bench(),
                    split.bench()
                ),
            ));
        }
        let verdict = match v.get("eval_result") {
            Some(Value::String(s)) => s.as_str(),
            Some(_) => return Err(EvalError::item(path, i, "`eval_result` is not a string")),
            None => return Err(EvalError::item(
                path,
                i,
                "no `eval_result`: this is a predictions file, not a judged cache (`*_eval.json`)",
            )),
        };
        correct += usize::from(verdict == "True");
        *replies.entry(verdict.to_string()).or_insert(0) += 1;
    }
    let total = items.len();
    let accuracy = if total == 0 {
        0.0
    } else {
        correct as f64 / total as f64
    };
    Ok(CaptionReplay {
        bench: split.bench(),
        protocol: "gpt-4o-2024-11-20 with image and focal crops; a verdict counts iff the reply is exactly \"True\"",
        accuracy,
        accuracy_pct: py_round(accuracy * 100.0, 2),
        correct,
        total,
        replies,
    })
}

impl VqaScore {
    /// Categories in EVALUATION.md's order, then the overall score, next to the published values.
    pub fn report(&self) -> Report {
        let mut rows: Vec<Row> = Vec::new();
        let known: Vec<&str> = published::GAR_BENCH_VQA.iter().map(|p| p.label).collect();
        let extra = self
            .categories
            .keys()
            .filter(|k| !known.contains(&k.as_str()))
            .map(String::as_str);
        for cat in known
            .iter()
            .copied()
            .filter(|k| *k != "overall")
            .chain(extra)
        {
            if let Some(c) = self.categories.get(cat) {
                rows.push(
                    Row::new(cat, Some(c.accuracy), format!("{}/{}", c.correct, c.total))
                        .published(published::lookup(published::GAR_BENCH_VQA, cat)),
                );
            }
        }
        rows.push(
            Row::new(
                "overall",
                Some(self.overall),
                format!("{}/{}", self.correct, self.total),
            )
            .published(published::lookup(published::GAR_BENCH_VQA, "overall")),
        );
        Report {
            title: "GAR-Bench-VQA".into(),
            metric: "exact-match accuracy (%)".into(),
            decimals: 1,
            rows,
            notes: vec![
                self.rule.to_string(),
                "EVALUATION.md prints 65.4 for GAR-8B relation; 66/101 rounds to 65.3".into(),
            ],
            result: serde_json::to_value(self).unwrap_or_default(),
        }
    }
}

impl CaptionReplay {
    pub fn report(&self) -> Report {
        let published = match self.bench {
            "gar-bench-simple" => published::GAR_BENCH_SIMPLE,
            _ => published::GAR_BENCH_DETAILED,
        };
        Report {
            title: format!(
                "GAR-Bench {} (cached judge verdicts)",
                if self.bench == "gar-bench-simple" {
                    "Caption-Simple"
                } else {
                    "Caption-Detailed"
                }
            ),
            metric: "fraction of \"True\" verdicts".into(),
            decimals: 4,
            rows: vec![Row::new(
                "accuracy",
                Some(self.accuracy),
                format!("{}/{}", self.correct, self.total),
            )
            .published(Some(published))],
            notes: vec![self.protocol.to_string()],
            result: serde_json::to_value(self).unwrap_or_default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pred(cat: &str, answer: &str, out: &str, image: &str) -> VqaPrediction {
        let item = VqaItem {
            image_path: None,
            mask_rles: vec![],
            question: "q".into(),
            choices: vec!["A. x".into(), "B. y".into()],
            answer: answer.into(),
            category: cat.into(),
            image: image.into(),
        };
        VqaPrediction {
            item,
            model_output: out.into(),
        }
    }

    #[test]
    fn exact_match_is_strict() {
        assert!(vqa_correct("a", "A"));
        assert!(!vqa_correct("A.", "A"));
        assert!(!vqa_correct("(A)", "A"));
        assert_eq!(lenient_letter("(A)"), Some('A'));
        assert_eq!(lenient_letter("b. yes"), Some('B'));
        assert_eq!(lenient_letter("Apple"), None);
    }

    #[test]
    fn micro_average_and_rounding() {
        let preds = [
            pred("color", "A", "A", "1"),
            pred("color", "B", "A", "2"),
            pred("shape", "C", "c", "3"),
        ];
        let s = score_vqa(&preds);
        assert_eq!((s.correct, s.total, s.overall), (2, 3, 66.7));
        assert_eq!(s.categories["color"], Count::new(1, 2));
        assert_eq!(s.categories["shape"].accuracy, 100.0);
        let agree = vqa_agreement(
            &preds,
            &[pred("color", "A", "a", "1"), pred("x", "C", "D", "3")],
        );
        assert_eq!((agree.same, agree.total), (1, 2));
    }
}
