//! The API on loopback with the tiny checkpoints: `/v1/describe` reproduces the reference tokens
//! (JSON and SSE), `/v1/chat/completions` has OpenAI's shapes and agrees with describe, DAM's RGBA
//! convention works, bad input is a 4xx JSON error, SAM segmentation caches embeddings.

mod common;

use std::sync::OnceLock;

use base64::Engine as _;
use common::*;
use serde_json::json;

fn server() -> &'static TestServer {
    static SERVER: OnceLock<TestServer> = OnceLock::new();
    SERVER.get_or_init(|| start(gar_server::Limits::default(), true))
}

/// The body of `gar describe` for fixture pe-l_demo1_single.
fn demo1_request(data: &std::path::Path, stream: bool) -> serde_json::Value {
    let meta = read_meta("pe-l_demo1_single");
    json!({
        "image": format!("data:image/png;base64,{}", b64_file(&data.join("assets/demo_image_1.png"))),
        "regions": [{"mask": b64_file(&data.join("assets/demo_mask_1.png"))}],
        "prompt": meta["instruction"],
        "max_new_tokens": meta["n_new_tokens"],
        "stream": stream,
    })
}

#[test]
fn describe_json_reproduces_the_reference_tokens() {
    let Some(data) = shared_data() else { return };
    let meta = read_meta("pe-l_demo1_single");
    let r = post(server().addr, "/v1/describe", &demo1_request(&data, false));
    assert_eq!(r.status, 200, "{}", r.text());
    let answer = r.json();
    assert_eq!(tokens(&answer["tokens"]), expected_tokens(&meta));
    assert_eq!(answer["text"], meta["decoded_text"]);
    assert_eq!(answer["stop_reason"], "max_tokens");
}

#[test]
fn describe_sse_streams_deltas_then_the_answer() {
    let Some(data) = shared_data() else { return };
    let meta = read_meta("pe-l_demo1_single");
    let r = post(server().addr, "/v1/describe", &demo1_request(&data, true));
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r
        .header("content-type")
        .unwrap_or("")
        .starts_with("text/event-stream"));
    let events = r.events();
    assert_eq!(events[0].0, "queued");
    let streamed: String = events
        .iter()
        .filter(|(n, _)| n == "token")
        .map(|(_, d)| {
            serde_json::from_str::<serde_json::Value>(d).expect("json")["text"]
                .as_str()
                .expect("text")
                .to_string()
        })
        .collect();
    let (name, last) = events.last().expect("events");
    assert_eq!(name, "done", "{events:?}");
    let answer: serde_json::Value = serde_json::from_str(last).expect("done is JSON");
    assert_eq!(tokens(&answer["tokens"]), expected_tokens(&meta));
    assert!(
        events.iter().filter(|(n, _)| n == "token").count() > 5,
        "text arrives in pieces"
    );
    assert_eq!(streamed, answer["text"].as_str().expect("text"));
}

#[test]
fn ask_with_several_regions_reproduces_the_reference_tokens() {
    let Some(data) = shared_data() else { return };
    let meta = read_meta("pe-l_demo3_multi_m4");
    let regions: Vec<_> = (0..3)
        .map(|k| json!({"mask": b64_file(&data.join(format!("assets/demo_mask_3_{k}.png")))}))
        .collect();
    let body = json!({
        "image": b64_file(&data.join("assets/demo_image_3.png")),
        "regions": regions,
        "question": meta["question"],
        "max_new_tokens": meta["n_new_tokens"],
        "max_tiles": meta["max_num_tiles"],
    });
    let r = post(server().addr, "/v1/describe", &body);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(tokens(&r.json()["tokens"]), expected_tokens(&meta));
}

fn chat_body(data: &std::path::Path, stream: bool) -> serde_json::Value {
    let meta = read_meta("pe-l_demo1_single");
    json!({
        "model": "gar",
        "messages": [{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": format!("data:image/png;base64,{}", b64_file(&data.join("assets/demo_image_1.png")))}},
            {"type": "text", "text": meta["instruction"]},
        ]}],
        "regions": [{"mask": b64_file(&data.join("assets/demo_mask_1.png"))}],
        "max_tokens": meta["n_new_tokens"],
        "stream": stream,
    })
}

#[test]
fn chat_completions_have_openai_shapes_and_match_describe() {
    let Some(data) = shared_data() else { return };
    let meta = read_meta("pe-l_demo1_single");
    let r = post(
        server().addr,
        "/v1/chat/completions",
        &chat_body(&data, false),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let c = r.json();
    assert_eq!(c["object"], "chat.completion");
    assert!(c["id"].as_str().expect("id").starts_with("chatcmpl-"));
    assert_eq!(c["choices"][0]["message"]["role"], "assistant");
    assert_eq!(c["choices"][0]["message"]["content"], meta["decoded_text"]);
    assert_eq!(c["choices"][0]["finish_reason"], "length");
    assert_eq!(c["usage"]["completion_tokens"], meta["n_new_tokens"]);

    let mut body = chat_body(&data, true);
    body["stream_options"] = json!({"include_usage": true});
    let r = post(server().addr, "/v1/chat/completions", &body);
    assert_eq!(r.status, 200, "{}", r.text());
    let events = r.events();
    assert_eq!(events.last().expect("events").1, "[DONE]");
    let chunks: Vec<serde_json::Value> = events[..events.len() - 1]
        .iter()
        .map(|(_, d)| serde_json::from_str(d).expect("chunk JSON"))
        .collect();
    assert!(chunks
        .iter()
        .all(|c| c["object"] == "chat.completion.chunk"));
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    let content: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(content, meta["decoded_text"].as_str().expect("text"));
    let finish: Vec<_> = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["finish_reason"].as_str())
        .collect();
    assert_eq!(finish, ["length"]);
    assert_eq!(
        chunks.last().expect("usage chunk")["usage"]["completion_tokens"],
        meta["n_new_tokens"]
    );
}

#[test]
fn multi_turn_chat_answers_the_follow_up() {
    let Some(data) = shared_data() else { return };
    let mut body = chat_body(&data, false);
    body["max_tokens"] = json!(8);
    let first = post(server().addr, "/v1/chat/completions", &body).json();
    let answer = first["choices"][0]["message"]["content"].clone();
    let msgs = body["messages"].as_array_mut().expect("messages");
    msgs.push(json!({"role": "assistant", "content": answer}));
    msgs.push(json!({"role": "user", "content": "What colour is it?"}));
    let r = post(server().addr, "/v1/chat/completions", &body);
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.json()["usage"]["prompt_tokens"].as_u64() > first["usage"]["prompt_tokens"].as_u64());
}

#[test]
fn dam_rgba_image_carries_the_mask_in_its_alpha_channel() {
    let Some(data) = shared_data() else { return };
    let meta = read_meta("pe-l_demo1_single");
    let img = image::open(data.join("assets/demo_image_1.png"))
        .expect("image")
        .to_rgba8();
    let mask = image::open(data.join("assets/demo_mask_1.png"))
        .expect("mask")
        .to_luma8();
    let mut rgba = img.clone();
    for (p, m) in rgba.pixels_mut().zip(mask.pixels()) {
        p.0[3] = if m.0[0] > 0 { 255 } else { 0 };
    }
    let mut png = std::io::Cursor::new(Vec::new());
    rgba.write_to(&mut png, image::ImageFormat::Png)
        .expect("png");
    let url = format!(
        "data:image/png;base64,{}",
        base64::engine::general_purpose::STANDARD.encode(png.into_inner())
    );
    let body = json!({
        "model": "gar",
        "messages": [{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": url}},
            {"type": "text", "text": format!("<image>\n{}", meta["instruction"].as_str().expect("instruction"))},
        ]}],
        "max_tokens": meta["n_new_tokens"],
    });
    let r = post(server().addr, "/v1/chat/completions", &body);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.json()["choices"][0]["message"]["content"],
        meta["decoded_text"]
    );
}

fn assert_client_error(r: &Response, status: u16, needle: &str) {
    assert_eq!(r.status, status, "{}", r.text());
    let e = r.json();
    let msg = e["error"]["message"]
        .as_str()
        .unwrap_or_else(|| panic!("no error message: {e}"));
    assert!(e["error"]["type"].is_string());
    assert!(msg.contains(needle), "{msg:?} should mention {needle:?}");
}

#[test]
fn bad_input_is_a_4xx_json_error() {
    let Some(data) = shared_data() else { return };
    let addr = server().addr;
    let image = b64_file(&data.join("assets/demo_image_1.png"));
    let mask = b64_file(&data.join("assets/demo_mask_1.png"));
    let describe = |body: serde_json::Value| post(addr, "/v1/describe", &body);

    assert_client_error(
        &describe(json!({"image": "%%%not base64", "regions": [{"mask": mask}]})),
        400,
        "base64",
    );
    let garbage = base64::engine::general_purpose::STANDARD.encode(b"this is not an image at all");
    assert_client_error(
        &describe(json!({"image": garbage, "regions": [{"mask": mask}]})),
        400,
        "image",
    );
    let empty = json!({"size": [770, 1024], "counts": [770 * 1024]});
    assert_client_error(
        &describe(json!({"image": image, "regions": [{"rle": empty}]})),
        400,
        "empty",
    );
    let six: Vec<_> = (0..6).map(|_| json!({"box": [10, 10, 50, 50]})).collect();
    assert_client_error(
        &describe(json!({"image": image, "regions": six, "question": "<Prompt0>?"})),
        400,
        "at most 5",
    );
    let r = describe(
        json!({"image": image, "regions": [{"mask": mask}], "question": "What is <Prompt7>?", "max_new_tokens": 2}),
    );
    assert_eq!(r.status, 400, "unknown <PromptK>: {}", r.text());
    assert_client_error(
        &describe(json!({"image": image, "regions": [{"box": [1, 2, 3]}]})),
        400,
        "JSON",
    );
    assert_client_error(
        &describe(json!({"image": image, "regions": [{"mask": mask}], "max_new_tokens": 0})),
        400,
        "max_new_tokens",
    );
    assert_client_error(
        &describe(json!({"image": image, "regions": [{"mask": mask}], "bogus": 1})),
        400,
        "bogus",
    );
    assert_client_error(
        &describe(json!({"image": image, "regions": [{"mask": mask}, {"mask": mask}]})),
        400,
        "exactly one region",
    );
    let r = request(addr, "POST", "/v1/describe", b"{not json", &[]);
    assert_client_error(&r, 400, "JSON");
    assert_client_error(&get(addr, "/nope"), 404, "no such endpoint");
    let chat = json!({"messages": [{"role": "user", "content": "hi"}]});
    assert_client_error(&post(addr, "/v1/chat/completions", &chat), 400, "image");
    let url = json!({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "https://example.com/a.png"}}]}]});
    assert_client_error(&post(addr, "/v1/chat/completions", &url), 400, "URL");
}

#[test]
fn points_need_sam_and_segment_caches_the_embedding() {
    let Some(data) = shared_data() else { return };
    let image = b64_file(&data.join("assets/demo_image_1.png"));
    let body = json!({"image": image, "points": [[780, 690, 1]], "format": "both"});
    let first = post(server().addr, "/v1/segment", &body);
    assert_eq!(first.status, 200, "{}", first.text());
    let a = first.json();
    assert_eq!(
        (a["width"].as_u64(), a["height"].as_u64()),
        (Some(1024), Some(770))
    );
    assert!(a["mask"].as_str().expect("png").len() > 10);
    assert_eq!(
        a["rle"]["counts"]
            .as_array()
            .expect("counts")
            .iter()
            .map(|c| c.as_u64().expect("n"))
            .sum::<u64>(),
        1024 * 770
    );
    let b = post(server().addr, "/v1/segment", &body).json();
    assert_eq!(
        b["cached_embedding"], true,
        "the second click reuses the image embedding"
    );
    assert_eq!(a["rle"], b["rle"]);
    let bad = json!({"image": image, "points": [[5000, 5, 1]]});
    assert_eq!(post(server().addr, "/v1/segment", &bad).status, 400);

    // Without --sam, point regions are refused with a clear message.
    let no_sam = start(gar_server::Limits::default(), false);
    let r = post(
        no_sam.addr,
        "/v1/describe",
        &json!({"image": image, "regions": [{"points": [[780, 690, 1]]}]}),
    );
    assert_client_error(&r, 400, "--sam");
}

#[test]
fn health_models_metrics_openapi_and_page() {
    let addr = server().addr;
    assert_eq!(get(addr, "/health").json()["status"], "ok");
    let models = get(addr, "/v1/models").json();
    assert_eq!(models["object"], "list");
    assert_eq!(models["data"][0]["prompt_numbers"], 5);
    let m = get(addr, "/metrics");
    assert!(
        m.text().contains("# TYPE gar_queue_depth gauge"),
        "{}",
        m.text()
    );
    assert!(get(addr, "/openapi.json").json()["paths"]["/v1/describe"].is_object());
    let page = get(addr, "/");
    assert!(page.text().contains("<canvas"));
    assert!(get(addr, "/app.js").text().contains("/v1/segment"));
}

#[test]
fn api_key_is_required_when_configured() {
    let limits = gar_server::Limits {
        api_key: Some("s3cret".into()),
        ..Default::default()
    };
    let s = start(limits, false);
    assert_client_error(&get(s.addr, "/v1/models"), 401, "API key");
    let ok = request(
        s.addr,
        "GET",
        "/v1/models",
        b"",
        &[("Authorization", "Bearer s3cret")],
    );
    assert_eq!(ok.status, 200);
    assert_eq!(get(s.addr, "/health").status, 200, "health stays public");
}

#[test]
fn oversized_body_is_413() {
    let limits = gar_server::Limits {
        body_limit: 1000,
        ..Default::default()
    };
    let s = start(limits, false);
    let big = json!({"image": "A".repeat(5000)});
    let r = post(s.addr, "/v1/describe", &big);
    assert_client_error(&r, 413, "");
}
