//! Whole-pipeline parity on the tiny checkpoints (`fixtures/model/<case>`): tiles, label maps, boxes,
//! rendered prompt and input ids must equal the PyTorch reference exactly.

mod common;

use gar_processor::{Bos, GarProcessor, ProcessorOptions, Prompt, Request};
use safetensors::{Dtype, SafeTensors};
use serde_json::Value;

fn tensor_i64(st: &SafeTensors<'_>, name: &str) -> Vec<i64> {
    let t = st.tensor(name).expect(name);
    assert_eq!(t.dtype(), Dtype::I64, "{name}");
    t.data()
        .chunks_exact(8)
        .map(|b| i64::from_le_bytes(b.try_into().unwrap()))
        .collect()
}

fn tensor_f64(st: &SafeTensors<'_>, name: &str) -> Vec<f64> {
    let t = st.tensor(name).expect(name);
    assert_eq!(t.dtype(), Dtype::F64, "{name}");
    t.data()
        .chunks_exact(8)
        .map(|b| f64::from_le_bytes(b.try_into().unwrap()))
        .collect()
}

/// The request a fixture's meta.json describes.
pub fn request(meta: &Value) -> Request {
    let prompt = match meta["prompt_kind"].as_str().unwrap() {
        "single" => Prompt::Describe {
            instruction: meta["instruction"].as_str().unwrap().to_string(),
            slot: meta["region_prompt_indices"][0].as_u64().unwrap() as usize,
        },
        _ => Prompt::ask(meta["question"].as_str().unwrap()),
    };
    let mut r = Request::new(prompt);
    r.max_num_tiles = meta["max_num_tiles"].as_u64().map(|m| m as usize);
    r
}

#[test]
fn model_cases_match_reference_inputs() {
    let Some(data) = common::shared_data("model_cases_match_reference_inputs") else {
        return;
    };
    let root = common::fixtures().join("model");
    let mut cases: Vec<_> = std::fs::read_dir(&root)
        .unwrap()
        .flatten()
        .filter(|e| e.path().is_dir())
        .collect();
    cases.sort_by_key(|e| e.file_name());
    assert!(
        cases.len() >= 6,
        "expected the model fixtures in {}",
        root.display()
    );
    for entry in cases {
        let dir = entry.path();
        let meta = common::read_json(&dir.join("meta.json"));
        let name = meta["case"].as_str().unwrap().to_string();
        let bos = match meta["bos_policy"].as_str().unwrap() {
            "single" => Bos::Single,
            _ => Bos::Double,
        };
        let ckpt = common::fixtures()
            .join("checkpoints")
            .join(meta["checkpoint"].as_str().unwrap());
        let opts = ProcessorOptions {
            bos,
            ..ProcessorOptions::default()
        };
        let p = GarProcessor::from_dir_with_options(&ckpt, opts).unwrap();
        let image = common::load_rgb(&data, meta["image"].as_str().unwrap());
        let regions: Vec<_> = meta["regions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| common::region(&data, r))
            .collect();
        let out = p
            .process_with_prompts(&image, &regions, &request(&meta))
            .unwrap();

        let grid = (
            meta["aspect_ratio"][0].as_u64().unwrap() as u32,
            meta["aspect_ratio"][1].as_u64().unwrap() as u32,
        );
        assert_eq!(out.aspect_ratio, grid, "{name}: grid");
        assert_eq!(
            out.num_tiles as u64,
            meta["num_tiles"].as_u64().unwrap(),
            "{name}: T"
        );
        assert_eq!(
            out.prompt_text,
            meta["prompt_rendered"].as_str().unwrap(),
            "{name}: rendered prompt"
        );

        let bytes = std::fs::read(dir.join("tensors.safetensors")).unwrap();
        let st = SafeTensors::deserialize(&bytes).unwrap();
        let want_ids: Vec<u32> = tensor_i64(&st, "input_ids")
            .iter()
            .map(|&v| v as u32)
            .collect();
        assert_eq!(
            out.input_ids.len(),
            want_ids.len(),
            "{name}: sequence length"
        );
        assert_eq!(out.input_ids, want_ids, "{name}: input_ids");

        let want_boxes = tensor_f64(&st, "bboxes");
        let got_boxes: Vec<f64> = out.bboxes().concat();
        assert_eq!(
            got_boxes, want_boxes,
            "{name}: per-region boxes (prompt order)"
        );
        let crops: Vec<u64> = meta["region_crop_token_ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap())
            .collect();
        assert_eq!(
            out.crop_token_ids()
                .iter()
                .map(|&c| c as u64)
                .collect::<Vec<_>>(),
            crops,
            "{name}: crop ids"
        );

        let (_, _, tiles) = common::png(&dir.join("tiles.png"));
        let got = common::stack_hwc(&out.tiles_u8, 3, out.tile_size);
        let same = got.iter().zip(&tiles).filter(|(a, b)| a == b).count();
        assert_eq!(got.len(), tiles.len(), "{name}: tile stack size");
        assert_eq!(
            same,
            tiles.len(),
            "{name}: uint8 tiles ({same} / {} values equal)",
            tiles.len()
        );
        // pixel_values is the fused normalisation of exactly these bytes.
        for (&u, &v) in out.tiles_u8.iter().zip(&out.pixel_values).step_by(997) {
            assert_eq!(v, (u as f32 - 127.5) / 127.5);
        }

        let (_, _, labels) = common::png(&dir.join("labels.png"));
        assert_eq!(out.mask_labels, labels, "{name}: label tiles");
        println!(
            "{name}: T={} L={} ids, tiles and labels identical",
            out.num_tiles,
            out.input_ids.len()
        );
    }
}

/// The generated tokens decode to the reference's answer text, one-shot and streamed, with both
/// `skip_special_tokens` settings.
#[test]
fn generated_tokens_decode_like_reference() {
    let root = common::fixtures().join("model");
    let mut n = 0;
    for entry in std::fs::read_dir(&root)
        .unwrap()
        .flatten()
        .filter(|e| e.path().is_dir())
    {
        let meta = common::read_json(&entry.path().join("meta.json"));
        let name = meta["case"].as_str().unwrap();
        let ckpt = common::fixtures()
            .join("checkpoints")
            .join(meta["checkpoint"].as_str().unwrap());
        let p = GarProcessor::from_dir(&ckpt).unwrap();
        let mut toks: Vec<u32> = meta["generated_tokens"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as u32)
            .collect();
        if let Some(eot) = meta["eot_index"].as_u64() {
            toks.truncate(eot as usize + 1);
        }
        let answer = p.decode(&toks).unwrap();
        assert_eq!(
            answer,
            meta["decoded_text"].as_str().unwrap(),
            "{name}: decode"
        );
        let mut stream = p.stream();
        let mut streamed = String::new();
        for &t in &toks {
            streamed.extend(stream.step(t).unwrap());
        }
        streamed.extend(stream.finish().unwrap());
        assert_eq!(streamed, answer, "{name}: streamed");
        // GAR-Bench style: keep special tokens, strip, drop the final <|eot_id|>.
        let keep = p.decode_raw(&toks, false).unwrap();
        let keep = gar_processor::py_strip(&keep);
        let keep = keep.strip_suffix("<|eot_id|>").unwrap_or(keep);
        assert_eq!(
            keep,
            meta["decoded_text_keep_special"].as_str().unwrap(),
            "{name}: keep special"
        );
        n += 1;
    }
    assert!(n >= 6);
}
