//! `POST /v1/chat/completions`, OpenAI-compatible so the OpenAI SDKs work unchanged. The image is
//! an `image_url` data URL in the first user message; regions come from the `regions` extension
//! field (same format as `/v1/describe`) or, DAM-style, from the image's alpha channel.
//!
//! Several `image_url` parts in the first user message make a PLM multi-image prompt (as LLM
//! judges send): the images go first, in order, as the PLM template places them. Regions are then
//! refused, `<PromptK>` is plain text, and the images share a tile budget
//! ([`crate::Limits::max_request_tiles`]).
//!
//! The first user message becomes GAR's first prompt: an ask when it mentions `<PromptK>`, a
//! describe with the message as instruction when there is one region. Later turns are follow-ups.
//! Unlike OpenAI, an absent `temperature` means greedy decoding (the reference's setting).

use std::time::{SystemTime, UNIX_EPOCH};

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::Json;
use gar_engine::Answer;
use gar_processor::{mentioned_prompts, Prompt, Request, DEFAULT_INSTRUCTION};
use serde::Deserialize;
use serde_json::{json, Value};

use super::describe::{collect, submit, DEFAULT_MAX_NEW_TOKENS};
use super::{ApiJson, AppStateRef};
use crate::error::{ApiError, ApiResult};
use crate::prepare::{prepare, prepare_images};
use crate::sse;
use crate::wire::{decode_base64, RegionIn, SamplingIn};
use crate::worker::GenEvent;

#[derive(Debug, Deserialize)]
pub struct ChatIn {
    #[serde(default)]
    model: Option<String>,
    messages: Vec<Message>,
    #[serde(default)]
    stream: bool,
    stream_options: Option<StreamOptions>,
    temperature: Option<f64>,
    top_p: Option<f64>,
    max_tokens: Option<usize>,
    max_completion_tokens: Option<usize>,
    seed: Option<u64>,
    n: Option<usize>,
    /// Extensions.
    #[serde(default)]
    regions: Vec<RegionIn>,
    top_k: Option<usize>,
    repetition_penalty: Option<f32>,
    max_tiles: Option<usize>,
}

#[derive(Debug, Deserialize)]
struct StreamOptions {
    #[serde(default)]
    include_usage: bool,
}

#[derive(Debug, Deserialize)]
struct Message {
    role: String,
    #[serde(default)]
    content: Option<Content>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Content {
    Text(String),
    Parts(Vec<Part>),
}

#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Part {
    Text { text: String },
    ImageUrl { image_url: ImageUrl },
}

#[derive(Debug, Deserialize)]
struct ImageUrl {
    url: String,
}

/// The conversation split into what GAR needs.
struct Conversation {
    system: Option<String>,
    /// Image URLs in order (several only from the first user message).
    images: Vec<String>,
    /// User texts and the assistant answers between them: u0, a0, u1, a1, …, un.
    turns: Vec<String>,
}

fn text_and_images(content: &Option<Content>, images: &mut Vec<String>) -> String {
    match content {
        None => String::new(),
        Some(Content::Text(t)) => t.clone(),
        Some(Content::Parts(parts)) => {
            let mut texts = Vec::new();
            for p in parts {
                match p {
                    Part::Text { text } => texts.push(text.as_str()),
                    Part::ImageUrl { image_url } => images.push(image_url.url.clone()),
                }
            }
            texts.join("\n")
        }
    }
}

fn conversation(messages: &[Message]) -> ApiResult<Conversation> {
    let mut system: Vec<String> = Vec::new();
    let mut images = Vec::new();
    let mut turns: Vec<String> = Vec::new();
    // Images of the system and first user messages (later messages may not add any).
    let mut first_message_images = 0;
    for (i, m) in messages.iter().enumerate() {
        let text = text_and_images(&m.content, &mut images);
        if turns.is_empty() {
            first_message_images = images.len();
        }
        match m.role.as_str() {
            "system" | "developer" if turns.is_empty() => system.push(text),
            "user" | "assistant" => {
                let expected = if turns.len().is_multiple_of(2) {
                    "user"
                } else {
                    "assistant"
                };
                if m.role != expected {
                    return Err(ApiError::bad_request(format!(
                        "messages[{i}]: expected a {expected} message (user and assistant turns alternate, starting with user)"
                    )));
                }
                if m.role == "assistant" && !images.is_empty() && turns.is_empty() {
                    return Err(ApiError::bad_request(
                        "the image belongs in the first user message",
                    ));
                }
                turns.push(text);
            }
            other => {
                return Err(ApiError::bad_request(format!(
                    "messages[{i}]: role {other:?} is not supported here"
                )))
            }
        }
    }
    if turns.len().is_multiple_of(2) {
        return Err(ApiError::bad_request(
            "the last message must be a user message",
        ));
    }
    match images.len() {
        0 => {
            return Err(ApiError::bad_request(
                "GAR needs an image: add an image_url part (data URL) to the first user message",
            ))
        }
        1 => {}
        n if first_message_images != n => {
            return Err(ApiError::bad_request(format!(
                "with several images ({n}), all of them belong in the first user message"
            )))
        }
        _ => {}
    }
    // DAM-style prompts carry an `<image>` placeholder; the image has its own place in GAR's template.
    let first = turns[0].replace("<image>", "").trim().to_string();
    turns[0] = first;
    Ok(Conversation {
        system: (!system.is_empty()).then(|| system.join("\n")),
        images,
        turns,
    })
}

fn gar_request(
    conv: &Conversation,
    regions: usize,
    max_tiles: Option<usize>,
) -> ApiResult<Request> {
    let first = &conv.turns[0];
    let prompt = if !mentioned_prompts(first).is_empty() || regions == 0 {
        Prompt::ask(first.clone())
    } else if regions == 1 {
        let instruction = if first.is_empty() {
            DEFAULT_INSTRUCTION.to_string()
        } else {
            first.clone()
        };
        Prompt::Describe {
            instruction,
            slot: 1,
        }
    } else {
        return Err(ApiError::bad_request(format!(
            "with {regions} regions, mention them as <Prompt0>, <Prompt1>, … in the first message"
        )));
    };
    let mut request = Request::new(prompt);
    for pair in conv.turns[1..].chunks(2) {
        if let [assistant, user] = pair {
            request = request.follow_up(assistant.clone(), user.clone());
        }
    }
    request.system = conv.system.clone();
    request.max_num_tiles = max_tiles;
    Ok(request)
}

/// `max_tiles` for each of `n` images. Each image costs at most `1 + max_tiles` tiles; without an
/// explicit `max_tiles` the images share the budget evenly (capped at the checkpoint's default).
fn multi_image_tiles(state: &AppStateRef, n: usize, requested: Option<usize>) -> ApiResult<usize> {
    let (limit, budget) = (state.limits.max_images, state.limits.max_request_tiles);
    if n > limit {
        return Err(ApiError::bad_request(format!(
            "{n} images in one request; this server takes at most {limit}"
        )));
    }
    // With tiling off every image is one thumbnail, whatever max_tiles says.
    let per_image = |m: usize| {
        if state.workers.info.max_num_tiles == 0 {
            1
        } else {
            1 + m
        }
    };
    let max_tiles = match requested {
        Some(m) => m,
        None => (budget / n)
            .saturating_sub(1)
            .min(state.workers.info.max_num_tiles)
            .max(1),
    };
    if n * per_image(max_tiles) > budget {
        return Err(ApiError::bad_request(format!(
            "{n} images with up to {} tiles each exceed this server's budget of {budget} tiles per \
             request: lower max_tiles or send fewer images",
            per_image(max_tiles)
        )));
    }
    Ok(max_tiles)
}

fn finish_reason(answer: &Answer) -> &'static str {
    if answer.stop_reason == "max_tokens" {
        "length"
    } else {
        "stop"
    }
}

fn usage(answer: &Answer) -> Value {
    json!({
        "prompt_tokens": answer.prompt_tokens,
        "completion_tokens": answer.tokens.len(),
        "total_tokens": answer.prompt_tokens + answer.tokens.len(),
    })
}

pub async fn completions(
    State(state): State<AppStateRef>,
    ApiJson(body): ApiJson<ChatIn>,
) -> ApiResult<Response> {
    if body.n.unwrap_or(1) != 1 {
        return Err(ApiError::bad_request("n must be 1"));
    }
    if body.max_tiles == Some(0) {
        return Err(ApiError::bad_request("max_tiles must be ≥ 1"));
    }
    let conv = conversation(&body.messages)?;
    let max_new = body
        .max_completion_tokens
        .or(body.max_tokens)
        .unwrap_or(DEFAULT_MAX_NEW_TOKENS);
    let sampling = SamplingIn {
        temperature: body.temperature,
        top_p: body.top_p,
        top_k: body.top_k,
        seed: body.seed,
        repetition_penalty: body.repetition_penalty,
    };
    let params = sampling.to_params(max_new, state.limits.max_new_tokens)?;
    let prepared = if conv.images.len() == 1 {
        let bytes = decode_base64("image_url", &conv.images[0])?;
        prepare(&state, bytes, body.regions, true).await?
    } else {
        let images = conv
            .images
            .iter()
            .enumerate()
            .map(|(i, url)| decode_base64(&format!("image_url {i}"), url))
            .collect::<ApiResult<Vec<_>>>()?;
        prepare_images(&state, images, &body.regions).await?
    };
    let max_tiles = match conv.images.len() {
        1 => body.max_tiles,
        n => Some(multi_image_tiles(&state, n, body.max_tiles)?),
    };
    let request = gar_request(&conv, prepared.regions.len(), max_tiles)?;
    let (rx, _ahead) = submit(&state, prepared, request, params)?;

    let model = body.model.unwrap_or_else(|| state.workers.info.id.clone());
    let created = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let id = format!("chatcmpl-{created:x}{:08x}", rand_suffix());
    if !body.stream {
        let answer = collect(rx).await?;
        return Ok(Json(json!({
            "id": id,
            "object": "chat.completion",
            "created": created,
            "model": model,
            "choices": [{
                "index": 0,
                "message": {"role": "assistant", "content": answer.text},
                "finish_reason": finish_reason(&answer),
                "logprobs": null,
            }],
            "usage": usage(&answer),
        }))
        .into_response());
    }

    let include_usage = body.stream_options.is_some_and(|o| o.include_usage);
    let chunk = move |delta: Value, finish: Option<&str>| {
        json!({
            "id": id, "object": "chat.completion.chunk", "created": created, "model": model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": null}],
        })
    };
    let first = vec![sse::json(
        None,
        &chunk(json!({"role": "assistant", "content": ""}), None),
    )];
    let render = move |event: GenEvent| match event {
        GenEvent::Started => vec![],
        GenEvent::Text(text) => vec![sse::json(None, &chunk(json!({"content": text}), None))],
        GenEvent::Done(Ok(answer)) => {
            let mut last = chunk(json!({}), Some(finish_reason(&answer)));
            let mut events = Vec::new();
            if include_usage {
                last["usage"] = Value::Null;
                events.push(sse::json(None, &last));
                let mut u = chunk(json!({}), None);
                u["choices"] = json!([]);
                u["usage"] = usage(&answer);
                events.push(sse::json(None, &u));
            } else {
                events.push(sse::json(None, &last));
            }
            events.push(axum::response::sse::Event::default().data("[DONE]"));
            events
        }
        GenEvent::Done(Err(e)) => vec![
            sse::json(None, &e.body()),
            axum::response::sse::Event::default().data("[DONE]"),
        ],
    };
    Ok(sse::stream(rx, first, render).into_response())
}

/// A few bits of uniqueness for completion ids (not security relevant).
fn rand_suffix() -> u32 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    COUNTER.fetch_add(1, Ordering::Relaxed)
}
