//! `POST /v1/describe`: the HTTP form of `gar describe` (one region, `prompt`, slot <Prompt1>) and
//! `gar ask` (`question`, regions <Prompt0>, <Prompt1>, … in order). Same defaults as the CLI, so
//! the same inputs give the same tokens.

use std::time::Instant;

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::Json;
use gar_engine::Answer;
use gar_processor::{Prompt, Request, DEFAULT_INSTRUCTION};
use serde::Deserialize;
use serde_json::json;
use tokio::sync::mpsc;

use super::{ApiJson, AppStateRef};
use crate::error::{ApiError, ApiResult};
use crate::prepare::prepare;
use crate::sse;
use crate::wire::{decode_base64, RegionIn, SamplingIn};
use crate::worker::{GenEvent, GenJob, GenParams};

/// The CLI's `--max-new-tokens` default.
pub const DEFAULT_MAX_NEW_TOKENS: usize = 1024;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DescribeIn {
    image: String,
    #[serde(default)]
    regions: Vec<RegionIn>,
    /// Describe instruction (default: the reference's).
    prompt: Option<String>,
    /// A question mentioning <Prompt0>, <Prompt1>, … (`gar ask`).
    question: Option<String>,
    /// Describe's `<PromptK>` slot (default 1, like the reference).
    slot: Option<usize>,
    /// Multiple-choice options for `question` (GAR-Bench format, like `gar ask --choice`).
    #[serde(default)]
    choices: Vec<String>,
    max_new_tokens: Option<usize>,
    #[serde(default)]
    stream: bool,
    max_tiles: Option<usize>,
    system: Option<String>,
    temperature: Option<f64>,
    top_p: Option<f64>,
    top_k: Option<usize>,
    seed: Option<u64>,
    repetition_penalty: Option<f32>,
}

/// GAR-Bench's multiple-choice text, as `gar ask --choice` builds it.
fn multiple_choice(question: &str, choices: &[String]) -> String {
    let mut text = format!("Question: {question}\nOptions:\n");
    for (i, choice) in choices.iter().enumerate() {
        let letter = (b'A' + i as u8) as char;
        if choice.starts_with(&format!("{letter}.")) {
            text.push_str(choice);
        } else {
            text.push_str(&format!("{letter}. {choice}"));
        }
        text.push('\n');
    }
    text.push_str("Answer with the correct option's letter directly.");
    text
}

impl DescribeIn {
    fn request(&self) -> ApiResult<Request> {
        let prompt = match (&self.prompt, &self.question) {
            (Some(_), Some(_)) => {
                return Err(ApiError::bad_request(
                    "give either prompt (describe) or question (ask), not both",
                ))
            }
            (_, Some(question)) => {
                if self.choices.len() > 26 {
                    return Err(ApiError::bad_request("at most 26 choices"));
                }
                if self.choices.is_empty() {
                    Prompt::ask(question.clone())
                } else {
                    Prompt::ask(multiple_choice(question, &self.choices))
                }
            }
            (instruction, None) => {
                if self.regions.len() != 1 {
                    return Err(ApiError::bad_request(format!(
                        "describe takes exactly one region ({} given); to ask about several, send a question mentioning <Prompt0>, <Prompt1>, …",
                        self.regions.len()
                    )));
                }
                Prompt::Describe {
                    instruction: instruction
                        .clone()
                        .unwrap_or_else(|| DEFAULT_INSTRUCTION.into()),
                    slot: self.slot.unwrap_or(1),
                }
            }
        };
        if self.max_tiles == Some(0) {
            return Err(ApiError::bad_request("max_tiles must be ≥ 1"));
        }
        let mut request = Request::new(prompt);
        request.max_num_tiles = self.max_tiles;
        request.system = self.system.clone();
        Ok(request)
    }

    fn sampling(&self) -> SamplingIn {
        SamplingIn {
            temperature: self.temperature,
            top_p: self.top_p,
            top_k: self.top_k,
            seed: self.seed,
            repetition_penalty: self.repetition_penalty,
        }
    }
}

pub async fn describe(
    State(state): State<AppStateRef>,
    ApiJson(body): ApiJson<DescribeIn>,
) -> ApiResult<Response> {
    let request = body.request()?;
    let max_new = body.max_new_tokens.unwrap_or(DEFAULT_MAX_NEW_TOKENS);
    let params = body
        .sampling()
        .to_params(max_new, state.limits.max_new_tokens)?;
    let bytes = decode_base64("image", &body.image)?;
    let stream = body.stream;
    let prepared = prepare(&state, bytes, body.regions, false).await?;
    let (rx, ahead) = submit(&state, prepared, request, params)?;
    let model = state.workers.info.id.clone();
    if !stream {
        let answer = collect(rx).await?;
        return Ok(Json(answer_json(&answer, &model)).into_response());
    }
    let first = vec![sse::json(Some("queued"), &json!({ "position": ahead }))];
    let render = move |event: GenEvent| match event {
        GenEvent::Started => vec![sse::json(Some("started"), &json!({}))],
        GenEvent::Text(text) => vec![sse::json(Some("token"), &json!({ "text": text }))],
        GenEvent::Done(Ok(answer)) => vec![sse::json(Some("done"), &answer_json(&answer, &model))],
        GenEvent::Done(Err(e)) => vec![sse::json(Some("error"), &e.body())],
    };
    Ok(sse::stream(rx, first, render).into_response())
}

/// Queues a generation; returns its event stream and the number of jobs ahead of it.
pub(super) fn submit(
    state: &AppStateRef,
    prepared: crate::prepare::Prepared,
    request: Request,
    params: GenParams,
) -> ApiResult<(mpsc::UnboundedReceiver<GenEvent>, u64)> {
    let (tx, rx) = mpsc::unbounded_channel();
    let now = Instant::now();
    let job = GenJob {
        images: prepared.images,
        regions: prepared.regions,
        request,
        params,
        events: tx,
        deadline: now + state.limits.request_timeout,
        enqueued: now,
    };
    let ahead = state.workers.submit(job)?;
    Ok((rx, ahead))
}

/// Waits for the whole answer (non-streaming requests). Dropping this future — the client went
/// away — drops the receiver, which stops the generation.
pub(super) async fn collect(mut rx: mpsc::UnboundedReceiver<GenEvent>) -> ApiResult<Answer> {
    while let Some(event) = rx.recv().await {
        if let GenEvent::Done(result) = event {
            return result;
        }
    }
    Err(ApiError::internal(
        "the engine thread stopped before answering",
    ))
}

/// The answer as `gar describe --json` prints it, plus the model name.
pub(super) fn answer_json(answer: &Answer, model: &str) -> serde_json::Value {
    let mut value = serde_json::to_value(answer).unwrap_or_else(|_| json!({}));
    if let Some(obj) = value.as_object_mut() {
        obj.insert("model".into(), json!(model));
    }
    value
}
