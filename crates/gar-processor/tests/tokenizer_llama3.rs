//! The real Llama-3 tokenizer extended to GAR's layout (`fixtures/tokenizer-llama3`): chat template
//! rendering, token ids with both BOS policies, decoding and streaming must equal what transformers
//! produced.

mod common;

use std::io::Read;

use gar_processor::{
    py_strip, BinaryMask, ChatTemplate, GarFields, GarProcessor, MediaTokenConfig,
    PreprocessorConfig, ProcessorOptions, Region, Request, RgbImage, TokenizerConfig,
};
use serde_json::Value;
use tokenizers::Tokenizer;

fn processor() -> (GarProcessor, Value) {
    let dir = common::fixtures().join("tokenizer-llama3");
    let cases = common::read_json(&dir.join("cases.json"));
    let mut gz = Vec::new();
    flate2::read::GzDecoder::new(std::fs::File::open(dir.join("tokenizer.json.gz")).expect("gz"))
        .read_to_end(&mut gz)
        .expect("gunzip");
    let tokenizer = Tokenizer::from_bytes(&gz).expect("tokenizer.json");
    let cfg =
        TokenizerConfig::from_file(&dir.join("tokenizer_config.json")).expect("tokenizer_config");
    let template =
        ChatTemplate::new(cfg.chat_template.as_deref().expect("chat_template")).expect("template");
    let gar = GarFields {
        prompt_numbers: 5,
        crop_tokens_ids: Some(
            cases["crop_tokens_ids"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_u64().unwrap() as u32)
                .collect(),
        ),
        image_token_id: Some(cases["image_token_id"].as_u64().unwrap() as u32),
    };
    let p = GarProcessor::new(
        tokenizer,
        cfg,
        template,
        PreprocessorConfig::default(),
        MediaTokenConfig::default(),
        &gar,
        ProcessorOptions::default(),
    )
    .expect("processor");
    (p, cases)
}

fn ids(v: &Value) -> Vec<u32> {
    v.as_array()
        .expect("ids")
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

#[test]
fn special_tokens_resolve_by_name() {
    let (p, c) = processor();
    let t = p.special_tokens();
    assert_eq!(t.bos as u64, c["bos_token_id"].as_u64().unwrap());
    assert_eq!(t.eos as u64, c["eos_token_id"].as_u64().unwrap());
    assert_eq!(t.pad.map(u64::from), c["pad_token_id"].as_u64());
    assert_eq!(t.image as u64, c["image_token_id"].as_u64().unwrap());
    assert_eq!(t.crops, ids(&c["crop_tokens_ids"]));
    for (k, &id) in t.prompts.iter().enumerate() {
        assert_eq!(
            id as u64,
            c["prompt_token_ids"][format!("<Prompt{k}>")]
                .as_u64()
                .unwrap()
        );
    }
    assert_eq!(
        t.no_prompt as u64,
        c["prompt_token_ids"]["<NO_Prompt>"].as_u64().unwrap()
    );
}

#[test]
fn template_ids_and_decoding_match_transformers() {
    let (p, c) = processor();
    let cfg = p.tokenizer_config();
    let special = [
        ("bos_token", cfg.bos_token.as_str()),
        ("eos_token", cfg.eos_token.as_str()),
        ("pad_token", cfg.pad_token.as_deref().unwrap_or("")),
    ];
    let cases = c["cases"].as_array().unwrap();
    assert!(cases.len() >= 9);
    for case in cases {
        let name = case["name"].as_str().unwrap();
        let text = case["text"].as_str().unwrap();
        if !case["messages"].is_null() {
            let rendered = p
                .chat_template()
                .render(&case["messages"], true, &special)
                .unwrap();
            assert_eq!(rendered, text, "{name}: rendered chat template");
        }
        for (add, key) in [(true, "true"), (false, "false")] {
            let enc = p.tokenizer().encode(text, add).unwrap();
            let want = ids(&case[format!("ids_add_special_tokens_{key}")]);
            assert_eq!(
                enc.get_ids(),
                want.as_slice(),
                "{name}: ids with add_special_tokens={add}"
            );
            let skip = p.decode_raw(&want, true).unwrap();
            assert_eq!(
                skip,
                case[format!("decode_ids_{key}_skip_special")],
                "{name}: decode skip"
            );
            let keep = p.decode_raw(&want, false).unwrap();
            assert_eq!(
                keep,
                case[format!("decode_ids_{key}_keep_special")],
                "{name}: decode keep"
            );
            let raw = p.tokenizer().decode(&want, true).unwrap();
            assert_eq!(
                raw,
                case[format!("decode_ids_{key}_skip_special_no_cleanup")],
                "{name}: no clean-up"
            );
            // Streaming reproduces the reference answer text (decode + strip) piece by piece.
            let mut stream = p.stream();
            let mut streamed = String::new();
            for &id in &want {
                if let Some(piece) = stream.step(id).unwrap() {
                    streamed.push_str(&piece);
                }
            }
            if let Some(piece) = stream.finish().unwrap() {
                streamed.push_str(&piece);
            }
            assert_eq!(streamed, py_strip(&skip), "{name}: streamed text");
            assert_eq!(
                p.decode(&want).unwrap(),
                py_strip(&skip),
                "{name}: answer text"
            );
        }
        if name == "single_region" || name == "multi_region" {
            // With the 1-tile expansion skipped, the rendered text has exactly one <|image|>.
            assert_eq!(text.matches("<|image|>").count(), 1);
        }
    }
}

/// The high-level request builders produce the same rendered prompts as the hand-written messages.
#[test]
fn requests_render_like_the_fixture_messages() {
    let (p, c) = processor();
    let cases = c["cases"].as_array().unwrap();
    let case = |n: &str| {
        cases
            .iter()
            .find(|x| x["name"] == n)
            .unwrap_or_else(|| panic!("{n}"))
    };
    let image = RgbImage::new(64, 48, vec![128; 64 * 48 * 3]).unwrap();
    let square = |x0: usize| {
        let data = (0..64 * 48)
            .map(|i| (i % 64) >= x0 && (i % 64) < x0 + 8 && i / 64 < 20)
            .collect();
        Region::Mask(BinaryMask::new(64, 48, data).unwrap())
    };
    let user_text = |case: &Value, turn: usize| -> String {
        case["messages"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|m| m["role"] == "user")
            .nth(turn)
            .unwrap()["content"]
            .as_array()
            .unwrap()
            .iter()
            .find(|i| i["type"] == "text")
            .unwrap()["text"]
            .as_str()
            .unwrap()
            .to_string()
    };

    let single = case("single_region");
    let out = p
        .process(&image, &[square(3)], &Request::describe())
        .unwrap();
    assert_eq!(out.prompt_text, single["text"].as_str().unwrap());

    let multi = case("multi_region");
    let question = user_text(multi, 0)
        .rsplit_once("\n\n")
        .unwrap()
        .1
        .to_string();
    let out = p
        .process(
            &image,
            &[square(0), square(20), square(40)],
            &Request::ask(question),
        )
        .unwrap();
    assert_eq!(out.prompt_text, multi["text"].as_str().unwrap());

    let mc = case("garbench_mc");
    let question = user_text(mc, 0).split_once("\n\n").unwrap().1.to_string();
    let regions: Vec<Region> = (0..4).map(|i| square(i * 14)).collect();
    let out = p
        .process(&image, &regions, &Request::ask(question))
        .unwrap();
    assert_eq!(out.prompt_text, mc["text"].as_str().unwrap());

    let turn = case("multi_turn");
    let msgs = turn["messages"].as_array().unwrap();
    let first = user_text(turn, 0);
    let instruction = first
        .rsplit_once("<|reserved_special_token_3|>")
        .unwrap()
        .1
        .to_string();
    let mut req = Request::new(gar_processor::Prompt::Describe {
        instruction,
        slot: 1,
    })
    .follow_up(
        msgs[2]["content"][0]["text"].as_str().unwrap(),
        msgs[3]["content"][0]["text"].as_str().unwrap(),
    );
    req.system = Some(msgs[0]["content"].as_str().unwrap().to_string());
    let out = p.process(&image, &[square(3)], &req).unwrap();
    assert_eq!(out.prompt_text, turn["text"].as_str().unwrap());
    // Double BOS by default, as the reference inference path.
    assert_eq!(&out.input_ids[..2], &[128000, 128000]);
}
