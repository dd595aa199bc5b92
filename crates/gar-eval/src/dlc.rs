//! DLC-Bench (DAM's detailed localized captioning benchmark): readers and replay of cached
//! judge runs. Scoring follows `evaluate()` of the reference scripts: each judge reply is mapped
//! to a choice ([`crate::mcq::parse_choice`]), the choice's score is taken (0 when unparsed), a
//! failed recognition question clips every score of that object to `min(0, s)`, and
//! `pos` / `neg` are means over objects of the per-object means. `avg = (pos + neg) / 2`.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{EvalError, Result};
use crate::io::{from_item, read_map};
use crate::mcq::parse_choice;
use crate::published;
use crate::py_round;
use crate::report::{Report, Row};
use crate::rle::CocoRle;

/// What picking a choice is worth: a score for positive / negative questions, a label for the
/// recognition question.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ChoiceValue {
    Score(f64),
    Label(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum QuestionKind {
    Recognition,
    Positive,
    Negative,
}

/// One multiple-choice question (`qa.json` entry, or a `details_*` record of a cache).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Question {
    pub question: String,
    pub choices: Vec<(String, ChoiceValue)>,
    #[serde(rename = "type")]
    pub kind: QuestionKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subtype: Option<String>,
}

/// Which judge produced a cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Protocol {
    /// `eval_llama_without_image.py`: Llama-3.1-8B-Instruct, caption text only.
    #[serde(rename = "llama-3.1-8b-text-only")]
    Llama,
    /// `eval_gpt_with_image.py`: GPT-4o with the focal crop and its mask.
    #[serde(rename = "gpt-4o-with-image")]
    Gpt,
}

/// One object of a cached judge run (`gar_*_eval.json` / `gar_*_eval_gpt.json`).
#[derive(Debug, Clone, Deserialize)]
pub struct CachedObject {
    pub pred: String,
    #[serde(default)]
    pub details_positives: Vec<Question>,
    #[serde(default)]
    pub details_negatives: Vec<Question>,
    #[serde(default)]
    pub details_recognition: Vec<Question>,
    /// Question indices of the Llama script's details (absent in the GPT script's).
    #[serde(skip)]
    pub question_index: Vec<Option<usize>>,
    #[serde(default)]
    pub prompt: Vec<String>,
    pub response: Vec<Option<String>>,
    #[serde(default)]
    pub score_pos: Option<f64>,
    #[serde(default)]
    pub score_neg: Option<f64>,
}

/// A cached judge run: objects in file order plus the stored averages (Llama script only).
#[derive(Debug, Clone)]
pub struct Cache {
    pub path: PathBuf,
    pub objects: Vec<(String, CachedObject)>,
    pub avg_pos: Option<f64>,
    pub avg_neg: Option<f64>,
}

pub fn read_cache(path: &Path) -> Result<Cache> {
    let mut cache = Cache {
        path: path.to_path_buf(),
        objects: Vec::new(),
        avg_pos: None,
        avg_neg: None,
    };
    for (key, value) in read_map(path)? {
        match (key.as_str(), &value) {
            ("avg_pos", Value::Number(n)) => cache.avg_pos = n.as_f64(),
            ("avg_neg", Value::Number(n)) => cache.avg_neg = n.as_f64(),
            _ => {
                let indices: Vec<Option<usize>> = ["details_positives", "details_negatives"]
                    .iter()
                    .flat_map(|f| {
                        value
                            .get(f)
                            .and_then(Value::as_array)
                            .cloned()
                            .unwrap_or_default()
                    })
                    .map(|d| {
                        d.get("question_index")
                            .and_then(Value::as_u64)
                            .map(|i| i as usize)
                    })
                    .collect();
                let mut obj: CachedObject = from_item(path, &key, value)?;
                obj.question_index = indices;
                cache.objects.push((key, obj));
            }
        }
    }
    if cache.objects.is_empty() {
        return Err(EvalError::format(
            path,
            "no objects: not a DLC-Bench judge cache",
        ));
    }
    Ok(cache)
}

/// `qa.json`: object id → its questions, in file order.
pub fn read_qa(path: &Path) -> Result<Vec<(String, Vec<Question>)>> {
    read_map(path)?
        .into_iter()
        .map(|(k, v)| Ok((k.clone(), from_item(path, k, v)?)))
        .collect()
}

/// `class_names.json` (object id → class) or a predictions file (object id → caption).
pub fn read_string_map(path: &Path) -> Result<Vec<(String, String)>> {
    read_map(path)?
        .into_iter()
        .map(|(k, v)| match v {
            Value::String(s) => Ok((k, s)),
            other => Err(EvalError::item(
                path,
                k,
                format!("expected a string, found {}", crate::io::kind(&other)),
            )),
        })
        .collect()
}

/// The COCO-style `annotations.json` (masks kept as RLE data).
#[derive(Debug, Clone, Deserialize)]
pub struct Annotations {
    pub images: Vec<ImageInfo>,
    pub annotations: Vec<Annotation>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct ImageInfo {
    pub id: u64,
    pub width: u32,
    pub height: u32,
    pub file_name: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Annotation {
    pub id: u64,
    pub image_id: u64,
    pub category_id: u64,
    pub bbox: [f64; 4],
    pub segmentation: CocoRle,
    #[serde(default)]
    pub area: f64,
}

pub fn read_annotations(path: &Path) -> Result<Annotations> {
    from_item(path, "(top level)", crate::io::read_json(path)?)
}

/// Tells the judge apart from the cached prompt text (the two scripts differ in "an image" /
/// "this image") or, failing that, from the recognition question.
pub fn detect_protocol(cache: &Cache) -> Result<Protocol> {
    for (_, obj) in &cache.objects {
        if let Some(p) = obj.prompt.first() {
            if p.contains("description of an object in this image") {
                return Ok(Protocol::Gpt);
            }
            if p.contains("description of an object in an image") {
                return Ok(Protocol::Llama);
            }
        }
        if let Some(r) = obj.details_recognition.first() {
            if r.question.starts_with("The object in the image is") {
                return Ok(Protocol::Gpt);
            }
            if r.question.starts_with("Is it likely that") {
                return Ok(Protocol::Llama);
            }
        }
    }
    Err(EvalError::format(
        &cache.path,
        "cannot tell which judge produced this cache (no prompt or recognition question)",
    ))
}

#[derive(Debug, Clone, Serialize)]
pub struct ObjectScore {
    pub key: String,
    pub score_pos: f64,
    pub score_neg: Option<f64>,
    pub recognized: bool,
    pub unparsed: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct DlcReplay {
    pub bench: &'static str,
    pub protocol: Protocol,
    pub judge: &'static str,
    /// Rounded to three decimals like the reference's summary line.
    pub pos: f64,
    pub neg: f64,
    pub avg: f64,
    pub pos_raw: f64,
    pub neg_raw: f64,
    pub avg_raw: f64,
    pub objects: usize,
    pub recognition_failures: usize,
    /// Replies no rule could map to a choice (scored 0).
    pub unparsed_replies: usize,
    /// Where the question lists came from: a `qa.json` path or the cache's own details.
    pub questions_from: String,
    /// Objects whose recomputed scores differ from the scores stored in the cache.
    pub cached_score_mismatches: Vec<String>,
    pub cached_avg_pos: Option<f64>,
    pub cached_avg_neg: Option<f64>,
    #[serde(skip)]
    pub per_object: Vec<ObjectScore>,
}

/// The question list the judge answered for one object: the cached recognition question first,
/// then `qa.json`'s questions, or the cache's own details in their original order.
fn questions_for(
    cache: &Cache,
    key: &str,
    obj: &CachedObject,
    qa: Option<&QaList>,
) -> Result<Vec<Question>> {
    let recognition = obj
        .details_recognition
        .first()
        .cloned()
        .ok_or_else(|| EvalError::item(&cache.path, key, "no `details_recognition` record"))?;
    let rest = match qa {
        Some(qa) => qa
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, q)| q.clone())
            .ok_or_else(|| EvalError::item(&cache.path, key, "object not in qa.json"))?,
        None => {
            let mut rest: Vec<(usize, Question)> = obj
                .details_positives
                .iter()
                .chain(&obj.details_negatives)
                .cloned()
                .enumerate()
                .map(|(i, q)| (obj.question_index.get(i).copied().flatten().unwrap_or(i), q))
                .collect();
            // The Llama cache stores each question's original index; the GPT cache does not,
            // and there positives precede negatives exactly as in qa.json.
            rest.sort_by_key(|(i, _)| *i);
            rest.into_iter().map(|(_, q)| q).collect()
        }
    };
    Ok(std::iter::once(recognition).chain(rest).collect())
}

/// Scores one object from its questions and the judge's replies (reference `evaluate()`).
pub fn score_object(
    path: &Path,
    key: &str,
    questions: &[Question],
    replies: &[Option<String>],
) -> Result<ObjectScore> {
    if replies.len() != questions.len() {
        return Err(EvalError::item(
            path,
            key,
            format!(
                "{} judge replies for {} questions",
                replies.len(),
                questions.len()
            ),
        ));
    }
    let (mut pos, mut neg, mut unparsed) = (Vec::new(), Vec::new(), 0);
    let mut recognized: Option<bool> = None;
    for (i, (q, reply)) in questions.iter().zip(replies).enumerate() {
        let reply = reply
            .as_deref()
            .ok_or_else(|| EvalError::item(path, key, format!("reply {i} is null")))?;
        let labels: Vec<&str> = q.choices.iter().map(|c| c.0.as_str()).collect();
        let picked = parse_choice(reply, &labels);
        unparsed += usize::from(picked.is_none());
        let value = picked.map(|p| &q.choices[p].1);
        match q.kind {
            QuestionKind::Recognition => {
                recognized = match value {
                    Some(ChoiceValue::Label(l)) if l == "correct" => Some(true),
                    Some(ChoiceValue::Label(l)) if l == "incorrect" => Some(false),
                    // The reference raises ValueError here; so do we, with the object named.
                    _ => {
                        return Err(EvalError::item(
                            path,
                            key,
                            format!("recognition reply {reply:?} matches neither Yes nor No"),
                        ))
                    }
                }
            }
            QuestionKind::Positive | QuestionKind::Negative => {
                let Some(rec) = recognized else {
                    return Err(EvalError::item(
                        path,
                        key,
                        "a scored question comes before the recognition question",
                    ));
                };
                let mut s = match value {
                    Some(ChoiceValue::Score(s)) => *s,
                    Some(ChoiceValue::Label(l)) => {
                        return Err(EvalError::item(
                            path,
                            key,
                            format!("choice value {l:?} is not a score"),
                        ))
                    }
                    None => 0.0,
                };
                if !rec {
                    s = s.min(0.0);
                }
                if q.kind == QuestionKind::Positive {
                    pos.push(s)
                } else {
                    neg.push(s)
                }
            }
        }
    }
    if pos.is_empty() {
        return Err(EvalError::item(
            path,
            key,
            "no positive questions (the reference divides by zero)",
        ));
    }
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    Ok(ObjectScore {
        key: key.to_string(),
        score_pos: mean(&pos),
        score_neg: (!neg.is_empty()).then(|| mean(&neg)),
        recognized: recognized.unwrap_or(false),
        unparsed,
    })
}

/// `qa.json` entries: object id → questions, in file order.
pub type QaList = [(String, Vec<Question>)];

/// Replays a cached judge run. `qa` (from `qa.json`) is optional: without it the questions are
/// rebuilt from the cache's own `details_*` records, which are copies of the same entries.
pub fn replay(cache: &Cache, qa: Option<(&Path, &QaList)>) -> Result<DlcReplay> {
    let protocol = detect_protocol(cache)?;
    let mut per_object = Vec::with_capacity(cache.objects.len());
    let mut mismatches = Vec::new();
    for (key, obj) in &cache.objects {
        let questions = questions_for(cache, key, obj, qa.map(|q| q.1))?;
        let s = score_object(&cache.path, key, &questions, &obj.response)?;
        let differs = |a: Option<f64>, b: Option<f64>| matches!((a, b), (Some(a), Some(b)) if (a - b).abs() > 1e-9);
        if differs(obj.score_pos, Some(s.score_pos)) || differs(obj.score_neg, s.score_neg) {
            mismatches.push(key.clone());
        }
        per_object.push(s);
    }
    let n = per_object.len() as f64;
    let pos_raw = per_object.iter().map(|o| o.score_pos).sum::<f64>() / n;
    let negs: Vec<f64> = per_object.iter().filter_map(|o| o.score_neg).collect();
    // The GPT script divides by the number of objects, the Llama script by those with
    // negatives; identical on DLC-Bench, where every object has negatives.
    let neg_den = match protocol {
        Protocol::Gpt => n,
        Protocol::Llama => negs.len() as f64,
    };
    let neg_raw = negs.iter().sum::<f64>() / neg_den;
    let avg_raw = (pos_raw + neg_raw) / 2.0;
    Ok(DlcReplay {
        bench: "dlc-bench",
        protocol,
        judge: match protocol {
            Protocol::Llama => "Llama-3.1-8B-Instruct (vLLM), caption text only, temperature 0",
            Protocol::Gpt => "gpt-4o-2024-11-20 with focal crop + mask crop, temperature 0",
        },
        pos: py_round(pos_raw, 3),
        neg: py_round(neg_raw, 3),
        avg: py_round(avg_raw, 3),
        pos_raw,
        neg_raw,
        avg_raw,
        objects: per_object.len(),
        recognition_failures: per_object.iter().filter(|o| !o.recognized).count(),
        unparsed_replies: per_object.iter().map(|o| o.unparsed).sum(),
        questions_from: qa.map_or_else(|| "cache details".into(), |q| q.0.display().to_string()),
        cached_score_mismatches: mismatches,
        cached_avg_pos: cache.avg_pos,
        cached_avg_neg: cache.avg_neg,
        per_object,
    })
}

impl DlcReplay {
    pub fn report(&self) -> Report {
        let table = match self.protocol {
            Protocol::Llama => published::DLC_LLAMA,
            Protocol::Gpt => published::DLC_GPT,
        };
        let rows = [("pos", self.pos), ("neg", self.neg), ("avg", self.avg)]
            .into_iter()
            .map(|(k, v)| Row::new(k, Some(v), "").published(published::lookup(table, k)))
            .collect();
        let mut notes = vec![
            format!("judge: {}", self.judge),
            format!("{} objects, {} failed recognition, {} replies matched no choice; questions from {}", self.objects, self.recognition_failures, self.unparsed_replies, self.questions_from),
        ];
        if !self.cached_score_mismatches.is_empty() {
            notes.push(format!(
                "recomputed scores differ from the cache for objects {:?}",
                self.cached_score_mismatches
            ));
        }
        if self.protocol == Protocol::Gpt {
            notes.push("the shipped GAR-1B GPT cache gives 0.658/0.876/0.767, not the published 0.662/0.880/0.771 (another judge run)".into());
        }
        Report {
            title: "DLC-Bench (cached judge replies)".into(),
            metric: "DAM MCQ score (pos, neg, avg)".into(),
            decimals: 3,
            rows,
            notes,
            result: serde_json::to_value(self).unwrap_or_default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(kind: QuestionKind, choices: &[(&str, ChoiceValue)]) -> Question {
        Question {
            question: "Which?".into(),
            choices: choices
                .iter()
                .map(|(t, v)| (t.to_string(), v.clone()))
                .collect(),
            kind,
            subtype: None,
        }
    }

    fn questions() -> Vec<Question> {
        use ChoiceValue::*;
        vec![
            q(
                QuestionKind::Recognition,
                &[
                    ("Yes", Label("correct".into())),
                    ("No", Label("incorrect".into())),
                ],
            ),
            q(
                QuestionKind::Positive,
                &[
                    ("not mentioned", Score(0.0)),
                    ("wrong colour", Score(-1.0)),
                    ("right colour", Score(1.0)),
                ],
            ),
            q(
                QuestionKind::Positive,
                &[("part only", Score(0.5)), ("absent", Score(0.0))],
            ),
            q(
                QuestionKind::Negative,
                &[
                    ("claws not mentioned", Score(1.0)),
                    ("claws mentioned", Score(-1.0)),
                ],
            ),
        ]
    }

    fn replies(r: &[&str]) -> Vec<Option<String>> {
        r.iter().map(|s| Some(s.to_string())).collect()
    }

    #[test]
    fn scores_and_unparsed_reply() {
        let s = score_object(
            Path::new("x"),
            "k",
            &questions(),
            &replies(&["A. Yes", "C. right colour", "???", "A"]),
        )
        .unwrap();
        assert_eq!(
            (s.score_pos, s.score_neg, s.unparsed, s.recognized),
            (0.5, Some(1.0), 1, true)
        );
    }

    #[test]
    fn failed_recognition_clips_to_zero() {
        let s = score_object(
            Path::new("x"),
            "k",
            &questions(),
            &replies(&["B. No", "C", "A", "B"]),
        )
        .unwrap();
        // 1 -> 0, 0.5 -> 0, -1 stays
        assert_eq!(
            (s.score_pos, s.score_neg, s.recognized),
            (0.0, Some(-1.0), false)
        );
    }

    #[test]
    fn errors_name_the_object() {
        let e = score_object(
            Path::new("f.json"),
            "42",
            &questions(),
            &replies(&["maybe", "A", "A", "A"]),
        )
        .unwrap_err();
        assert!(e.to_string().contains("f.json: item 42"), "{e}");
        let e =
            score_object(Path::new("f.json"), "42", &questions(), &replies(&["A"])).unwrap_err();
        assert!(
            e.to_string().contains("1 judge replies for 4 questions"),
            "{e}"
        );
    }
}
