//! Several `image_url` parts in one chat message (what LLM judges send): the reference's
//! multi-image prompt (fixtures/multi_image), and the limits around it as 400 errors.

mod common;

use common::*;
use serde_json::{json, Value};

fn fixture() -> (Value, Vec<String>) {
    let dir = fixtures().join("multi_image");
    let meta: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("meta.json")).unwrap()).unwrap();
    let urls = meta["images"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| {
            format!(
                "data:image/png;base64,{}",
                b64_file(&dir.join(n.as_str().unwrap()))
            )
        })
        .collect();
    (meta, urls)
}

fn image_part(url: &str) -> Value {
    json!({"type": "image_url", "image_url": {"url": url}})
}

fn assert_client_error(r: &Response, needle: &str) {
    assert_eq!(r.status, 400, "{}", r.text());
    let msg = r.json()["error"]["message"].as_str().unwrap().to_string();
    assert!(msg.contains(needle), "{msg:?} should mention {needle:?}");
}

#[test]
fn two_images_in_one_message_answer_like_the_reference() {
    let (meta, urls) = fixture();
    let s = start(gar_server::Limits::default(), false);
    let mut content: Vec<Value> = urls.iter().map(|u| image_part(u)).collect();
    content.push(json!({"type": "text", "text": meta["text"]}));
    let body = json!({
        "messages": [{"role": "user", "content": content}],
        "max_tokens": meta["n_new_tokens"],
        "max_tiles": meta["max_num_tiles"],
    });
    let r = post(s.addr, "/v1/chat/completions", &body);
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    assert_eq!(v["usage"]["prompt_tokens"], meta["seq_len"]);
    assert_eq!(v["usage"]["completion_tokens"], meta["n_new_tokens"]);
    assert_eq!(v["choices"][0]["message"]["content"], meta["decoded_text"]);
    assert_eq!(v["choices"][0]["finish_reason"], "length");
}

#[test]
fn multi_image_limits_are_400s() {
    let (_, urls) = fixture();
    let limits = gar_server::Limits {
        max_images: 3,
        max_request_tiles: 12,
        ..Default::default()
    };
    let s = start(limits, false);
    let chat = |content: Vec<Value>, extra: Value| {
        let mut body = json!({"messages": [{"role": "user", "content": content}], "max_tokens": 1});
        for (k, v) in extra.as_object().unwrap() {
            body[k] = v.clone();
        }
        post(s.addr, "/v1/chat/completions", &body)
    };
    let text = json!({"type": "text", "text": "Same picture?"});
    let two = vec![image_part(&urls[0]), image_part(&urls[1]), text.clone()];

    assert_client_error(
        &chat(two.clone(), json!({"regions": [{"box": [1, 1, 9, 9]}]})),
        "regions refer to one image",
    );
    let four: Vec<Value> = (0..4)
        .map(|i| image_part(&urls[i % 2]))
        .chain([text.clone()])
        .collect();
    assert_client_error(&chat(four, json!({})), "at most 3");
    // 2 images × (1 + 8) tiles > 12.
    assert_client_error(
        &chat(two.clone(), json!({"max_tiles": 8})),
        "budget of 12 tiles",
    );
    let later = json!({"messages": [
        {"role": "user", "content": [image_part(&urls[0]), text.clone()]},
        {"role": "assistant", "content": "Yes."},
        {"role": "user", "content": [image_part(&urls[1]), text.clone()]},
    ]});
    assert_client_error(
        &post(s.addr, "/v1/chat/completions", &later),
        "first user message",
    );
    // Within the limits: the budget is shared (12 / 2 − 1 = 5 grid tiles at most per image).
    let r = chat(two, json!({}));
    assert_eq!(r.status, 200, "{}", r.text());
    let prompt = r.json()["usage"]["prompt_tokens"].as_u64().unwrap();
    assert!(prompt > 256 * 2 && prompt <= 256 * 12 + 100, "{prompt}");
}
