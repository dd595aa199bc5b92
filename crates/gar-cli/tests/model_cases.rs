//! End to end: `gar describe` / `gar ask` on every model parity case of `fixtures/model/` must
//! generate exactly the reference's tokens and text (tiny random checkpoints, real images).

mod common;

use common::*;

fn case_args(meta: &serde_json::Value, data: &std::path::Path) -> Vec<String> {
    let ckpt = fixtures()
        .join("checkpoints")
        .join(meta["checkpoint"].as_str().expect("checkpoint"));
    let single = meta["prompt_kind"] == "single";
    let mut args: Vec<String> = vec![
        if single { "describe" } else { "ask" }.into(),
        "--model".into(),
        ckpt.display().to_string(),
        "--image".into(),
        data.join(meta["image"].as_str().expect("image"))
            .display()
            .to_string(),
    ];
    args.extend(region_flags(meta, data));
    args.extend([
        "--max-new-tokens".into(),
        meta["n_new_tokens"].to_string(),
        "--bos".into(),
        meta["bos_policy"].as_str().expect("bos").into(),
        "--json".into(),
    ]);
    if meta["max_num_tiles_override"].as_bool() == Some(true) {
        args.extend(["--max-tiles".into(), meta["max_num_tiles"].to_string()]);
    }
    if single {
        let region = &meta["regions"][0];
        args.extend([
            "--prompt".into(),
            meta["instruction"].as_str().expect("instruction").into(),
            "--slot".into(),
            prompt_of(region).to_string(),
        ]);
    } else {
        args.push(meta["question"].as_str().expect("question").into());
    }
    args
}

#[test]
fn cli_generates_the_reference_tokens_on_every_model_case() {
    let Some(data) = shared_data() else { return };
    let cases = fixture_cases("model");
    assert!(
        cases.len() >= 4,
        "expected the model parity cases, found {}",
        cases.len()
    );
    let mut failures = Vec::new();
    for case in cases {
        let meta = read_meta(&case);
        let args = case_args(&meta, &data);
        let out = gar(&args);
        assert!(
            out.status.success(),
            "{}: gar {:?} failed: {}",
            case.display(),
            &args[..1],
            String::from_utf8_lossy(&out.stderr)
        );
        let answer = last_json(&out);
        let (got, want) = (json_tokens(&answer["tokens"]), expected_tokens(&meta));
        if got != want {
            failures.push(format!(
                "{}: tokens {got:?}, reference {want:?}",
                case.display()
            ));
            continue;
        }
        if meta["eot_index"].is_null() {
            assert_eq!(
                answer["text"],
                meta["decoded_text"],
                "{}: text",
                case.display()
            );
        }
        assert_eq!(
            answer["prompt_tokens"].as_u64(),
            meta["seq_len"].as_u64(),
            "{}: prompt length",
            case.display()
        );
        for key in [
            "load_s",
            "preprocess_s",
            "vision_s",
            "prefill_s",
            "decode_s",
            "tokens_per_s",
        ] {
            assert!(answer["timings"][key].is_number(), "timings.{key} missing");
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
