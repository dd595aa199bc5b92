//! DLC-Bench with the reference's judge protocols: per object, the recognition question then
//! qa.json's questions. Llama (`eval_llama_without_image.py`): each about the caption alone.
//! GPT (`eval_gpt_with_image.py`): "The image:", the focal crop of the object, "The mask of the
//! image:", the same crop of its mask (PNG, `data:image/jpeg` prefix), then the prompt. The judged
//! file has the reference's `gar_*_eval.json` / `gar_*_eval_gpt.json` shape, and is scored by the
//! same code as `gar eval replay --bench dlc-bench` (choice parsing, recognition clipping).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, Context, Result};
use gar_eval::dlc::{self, Cache, CachedObject, Protocol, QuestionKind};
use gar_eval::prompts;
use serde_json::{json, Map, Value};

/// One object's questions and the judge requests about them.
pub struct Object {
    pub key: String,
    pub caption: String,
    pub questions: Vec<dlc::Question>,
    pub requests: Vec<gar_eval::judge::JudgeRequest>,
    /// The reference's `prompt_item` of each question (what its judged file stores, and what
    /// `--import` matches on).
    pub prompts: Vec<String>,
}

pub struct Inputs {
    pub protocol: Protocol,
    pub root: PathBuf,
    /// annotations.json, read on the first crop (the GPT protocol only).
    annotations: std::cell::OnceCell<dlc::Annotations>,
    pub objects: Vec<Object>,
    pub qa_path: PathBuf,
    pub qa: Vec<(String, Vec<dlc::Question>)>,
}

/// Reads `{ann_id: caption}` predictions and builds every request, in the reference's order.
pub fn inputs(predictions: &Path, root: &Path, protocol: Protocol) -> Result<Inputs> {
    let ann = root.join("evaluation/DLC-Bench/annotations");
    let qa_path = ann.join("qa.json");
    let qa = dlc::read_qa(&qa_path)?;
    let classes: HashMap<String, String> = dlc::read_string_map(&ann.join("class_names.json"))?
        .into_iter()
        .collect();
    let preds = gar_eval::io::read_map(predictions)?;
    let mut objects = Vec::with_capacity(preds.len());
    for (key, caption) in preds {
        let caption = caption
            .as_str()
            .with_context(|| {
                format!(
                    "{}: {key}: the caption is not a string",
                    predictions.display()
                )
            })?
            .to_string();
        let class = classes
            .get(&key)
            .with_context(|| format!("{key} is not a DLC-Bench object (class_names.json)"))?;
        let own = qa
            .iter()
            .find(|(k, _)| k == &key)
            .map(|(_, q)| q.as_slice())
            .with_context(|| format!("{key} has no questions in qa.json"))?;
        let questions = prompts::dlc_questions(protocol, class, own);
        let requests = questions
            .iter()
            .map(|q| prompts::dlc_request(protocol, &caption, q))
            .collect();
        let prompts = questions
            .iter()
            .map(|q| prompts::dlc_prompt(protocol, &caption, q))
            .collect();
        objects.push(Object {
            key,
            caption,
            questions,
            requests,
            prompts,
        });
    }
    Ok(Inputs {
        protocol,
        root: root.to_path_buf(),
        annotations: std::cell::OnceCell::new(),
        objects,
        qa_path,
        qa,
    })
}

/// The GPT protocol's pictures of one object: its image (`images/<file_name>` of
/// annotations.json) and its mask, cropped around the mask as the reference does.
pub fn renderer(inputs: &Inputs, object: &Object) -> Result<super::garbench::Renderer> {
    let dir = inputs.root.join("evaluation/DLC-Bench");
    let path = dir.join("annotations/annotations.json");
    if inputs.annotations.get().is_none() {
        let _ = inputs.annotations.set(dlc::read_annotations(&path)?);
    }
    let annotations = inputs.annotations.get().expect("set above");
    let ann = annotations
        .annotations
        .iter()
        .find(|a| a.id.to_string() == object.key)
        .with_context(|| format!("{}: no annotation {}", path.display(), object.key))?;
    let info = annotations
        .images
        .iter()
        .find(|i| i.id == ann.image_id)
        .with_context(|| format!("{}: no image {}", path.display(), ann.image_id))?;
    let image = dir.join("images").join(&info.file_name);
    let r = super::garbench::Renderer::from_parts(&image, vec![ann.segmentation.clone()])?;
    let mask = (
        ann.segmentation.width() as u32,
        ann.segmentation.height() as u32,
    );
    if r.size() != mask {
        // The reference asserts the same.
        return Err(anyhow!(
            "{}: the image is {}x{} but the mask of {} is {}x{}",
            image.display(),
            r.size().0,
            r.size().1,
            object.key,
            mask.0,
            mask.1
        ));
    }
    Ok(r)
}

/// Replies of an earlier judge run in the reference format (`gar_*_eval.json`), by prompt text:
/// verdicts already paid for are reused instead of asked again.
pub fn import(path: &Path) -> Result<HashMap<String, String>> {
    let cache = dlc::read_cache(path)?;
    let mut map = HashMap::new();
    for (_, obj) in cache.objects {
        for (prompt, reply) in obj.prompt.iter().zip(&obj.response) {
            if let Some(reply) = reply {
                map.insert(prompt.clone(), reply.clone());
            }
        }
    }
    if map.is_empty() {
        return Err(anyhow!(
            "{}: no prompt/response pairs to import",
            path.display()
        ));
    }
    Ok(map)
}

/// Writes the judged file and scores it; `replies` are per object, per question.
pub fn judged(
    inputs: &Inputs,
    replies: &[Vec<String>],
    out: &Path,
) -> Result<(PathBuf, dlc::DlcReplay)> {
    let path = out.join(match inputs.protocol {
        Protocol::Llama => "dlc_eval.json",
        Protocol::Gpt => "dlc_eval_gpt.json",
    });
    let mut file = Map::new();
    let mut objects = Vec::new();
    for (o, r) in inputs.objects.iter().zip(replies) {
        let prompts = o.prompts.clone();
        let detail = |kind: QuestionKind| -> Vec<Value> {
            o.questions
                .iter()
                .enumerate()
                .filter(|(_, q)| q.kind == kind)
                .map(|(i, q)| {
                    let mut v = serde_json::to_value(q).unwrap_or(Value::Null);
                    // Index among qa.json's questions (the recognition question is not one).
                    v["question_index"] = json!(i.saturating_sub(1));
                    v["pred_answer"] = json!(r[i]);
                    v
                })
                .collect()
        };
        file.insert(
            o.key.clone(),
            json!({
                "pred": o.caption,
                "details_recognition": detail(QuestionKind::Recognition),
                "details_positives": detail(QuestionKind::Positive),
                "details_negatives": detail(QuestionKind::Negative),
                "prompt": prompts,
                "response": r,
            }),
        );
        objects.push((
            o.key.clone(),
            CachedObject {
                pred: o.caption.clone(),
                details_positives: Vec::new(),
                details_negatives: Vec::new(),
                details_recognition: vec![o.questions[0].clone()],
                question_index: Vec::new(),
                prompt: prompts,
                response: r.iter().cloned().map(Some).collect(),
                score_pos: None,
                score_neg: None,
            },
        ));
    }
    let cache = Cache {
        path: path.clone(),
        objects,
        avg_pos: None,
        avg_neg: None,
    };
    let scored = dlc::replay(&cache, Some((&inputs.qa_path, &inputs.qa)))?;
    file.insert("avg_pos".into(), json!(scored.pos));
    file.insert("avg_neg".into(), json!(scored.neg));
    std::fs::write(
        &path,
        serde_json::to_string_pretty(&Value::Object(file))? + "\n",
    )
    .with_context(|| format!("cannot write {}", path.display()))?;
    Ok((path, scored))
}
