//! DLC-Bench and MDVP-Bench end to end without their real images: a synthetic benchmark root in
//! the exact reference layout (annotation JSON in the real format, generated JPEG/PNG images,
//! compressed COCO RLE masks) is written to a temp dir, `gar eval run` runs the tiny checkpoint
//! on it, an interrupted run (GAR_EVAL_STOP_AFTER) and a torn last line resume to byte-equal
//! files, and the judges run on the predictions: DLC-Bench's GPT protocol against a recording
//! API (checks the two crops of every request) and against `gar serve`, MDVP-Bench's regrouped questions against `gar serve`. Also
//! the GPT-protocol reproduction of the published DLC-Bench 0.770 from the published cache.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};

use base64::Engine as _;
use common::*;
use image::{GrayImage, Luma, Rgb, RgbImage};
use serde_json::{json, Value};

fn tmp(name: &str) -> PathBuf {
    fresh_tmp("evalmore", name)
}

fn read(p: &Path) -> Vec<u8> {
    std::fs::read(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn read_json(p: &Path) -> Value {
    serde_json::from_slice(&read(p)).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn write_json(p: &Path, v: &Value) {
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, serde_json::to_string_pretty(v).unwrap()).unwrap();
}

/// A colourful test picture (gradients, so crops differ from one another).
fn picture(w: u32, h: u32, seed: u8) -> RgbImage {
    RgbImage::from_fn(w, h, |x, y| {
        Rgb([
            (x * 255 / w) as u8 ^ seed,
            (y * 255 / h) as u8,
            ((x + y) as u8).wrapping_mul(seed | 1),
        ])
    })
}

/// An elliptic mask inside `[x0, x1) × [y0, y1)` as a COCO compressed RLE (`{size, counts}`).
fn ellipse_rle(w: u32, h: u32, (x0, y0, x1, y1): (u32, u32, u32, u32)) -> Value {
    let (cx, cy) = ((x0 + x1) as f64 / 2.0, (y0 + y1) as f64 / 2.0);
    let (rx, ry) = ((x1 - x0) as f64 / 2.0, (y1 - y0) as f64 / 2.0);
    let mask = GrayImage::from_fn(w, h, |x, y| {
        let (dx, dy) = ((x as f64 + 0.5 - cx) / rx, (y as f64 + 0.5 - cy) / ry);
        Luma([u8::from(dx * dx + dy * dy <= 1.0)])
    });
    json!({"size": [h, w], "counts": gar_train::rle::encode(&mask)})
}

fn run_args(bench: &str, root: &Path, out: &Path) -> Vec<String> {
    [
        "eval",
        "run",
        "--bench",
        bench,
        "--root",
        &root.display().to_string(),
        "--model",
        &tiny_pe_l(),
        "--max-tiles",
        "1",
        "--max-new-tokens",
        "4",
        "--out",
        &out.display().to_string(),
        "--json",
    ]
    .map(s)
    .to_vec()
}

/// Runs `bench` on `root` three ways — straight through, interrupted after one item then
/// resumed, and from a torn copy of the first run's items.jsonl — and checks the files are
/// byte-equal. Returns the uninterrupted run's folder.
fn run_and_resume(bench: &str, root: &Path, items: usize) -> PathBuf {
    let files = ["items.jsonl", "predictions.json", "run.json"];
    let whole = tmp(&format!("{bench}-whole"));
    let summary = ok(&gar(&run_args(bench, root, &whole)));
    assert_eq!(
        (summary["items"].as_u64(), summary["computed"].as_u64()),
        (Some(items as u64), Some(items as u64)),
        "{bench}"
    );

    let stopped = tmp(&format!("{bench}-stopped"));
    let status = Command::new(env!("CARGO_BIN_EXE_gar"))
        .args(run_args(bench, root, &stopped))
        .env("HF_HUB_OFFLINE", "1")
        .env("GAR_EVAL_STOP_AFTER", "1")
        .output()
        .unwrap();
    assert_eq!(status.status.code(), Some(75), "{bench}: stopped early");
    let done = std::fs::read_to_string(stopped.join("items.jsonl")).unwrap();
    assert_eq!(done.lines().count(), 1, "{bench}");
    assert!(!stopped.join("predictions.json").exists());
    let resumed = ok(&gar(&run_args(bench, root, &stopped)));
    assert_eq!(
        (
            resumed["already_done"].as_u64(),
            resumed["computed"].as_u64()
        ),
        (Some(1), Some(items as u64 - 1)),
        "{bench}"
    );

    let torn = tmp(&format!("{bench}-torn"));
    std::fs::create_dir_all(&torn).unwrap();
    std::fs::copy(whole.join("run.json"), torn.join("run.json")).unwrap();
    let text = std::fs::read_to_string(whole.join("items.jsonl")).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    std::fs::write(
        torn.join("items.jsonl"),
        format!("{}\n{}", lines[0], &lines[1][..lines[1].len() / 2]),
    )
    .unwrap();
    let resumed = ok(&gar(&run_args(bench, root, &torn)));
    assert_eq!(
        resumed["already_done"], 1,
        "{bench}: the torn line is redone"
    );

    for dir in [&stopped, &torn] {
        for f in files {
            assert!(
                read(&whole.join(f)) == read(&dir.join(f)),
                "{bench}: {f} differs after resuming in {}",
                dir.display()
            );
        }
        let _ = std::fs::remove_dir_all(dir);
    }
    whole
}

/// The item texts of a run, in item order.
fn texts(run: &Path) -> Vec<String> {
    std::fs::read_to_string(run.join("items.jsonl"))
        .unwrap()
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["text"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// DLC-Bench

/// `evaluation/DLC-Bench/{annotations/{annotations,class_names,qa}.json, images/*.jpg}` with
/// three objects on two images.
fn dlc_root(root: &Path) {
    let dir = root.join("evaluation/DLC-Bench");
    let images = [
        (1u64, 96u32, 72u32, "objects365_v2_00000001.jpg"),
        (2, 64, 80, "objects365_v2_00000002.jpg"),
    ];
    for (id, w, h, name) in images {
        let path = dir.join("images").join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        picture(w, h, id as u8 * 40).save(&path).unwrap();
    }
    let anns = [
        (2391001u64, 1u64, (10, 8, 40, 30)),
        (2391002, 1, (50, 30, 90, 70)),
        (2391003, 2, (5, 10, 25, 60)),
    ];
    let annotations: Vec<Value> = anns
        .iter()
        .map(|&(id, image_id, b)| {
            let (_, w, h, _) = images[(image_id - 1) as usize];
            json!({"id": id, "image_id": image_id, "category_id": 1,
                   "bbox": [b.0, b.1, b.2 - b.0, b.3 - b.1],
                   "segmentation": ellipse_rle(w, h, b), "area": 100.0, "iscrowd": 0,
                   "frequency": "F", "size": "M"})
        })
        .collect();
    write_json(
        &dir.join("annotations/annotations.json"),
        &json!({
            "images": images.iter().map(|(id, w, h, name)| json!({"id": id, "width": w, "height": h, "file_name": name})).collect::<Vec<_>>(),
            "annotations": annotations,
            "categories": [{"id": 1, "name": "apple"}],
            "licenses": [],
        }),
    );
    write_json(
        &dir.join("annotations/class_names.json"),
        &json!({"2391001": "apple", "2391002": "wild bird", "2391003": "scissors"}),
    );
    let qa = |class: &str| {
        json!([
            {"question": "Which of the following is applicable to the description?",
             "choices": [[format!("The colour of the {class} is not mentioned."), 0],
                         [format!("The {class} is mentioned, its colour is not."), 0.5],
                         [format!("The colour of the {class} is mentioned but is not red."), -1],
                         [format!("The colour of the {class} is mentioned and is red."), 1]],
             "type": "positive"},
            {"question": "Which of the following is applicable to the description?",
             "choices": [[format!("The stem of the {class} is not mentioned."), 1],
                         [format!("The stem of the {class} is mentioned."), -1],
                         [format!("The {class} is not mentioned."), 0]],
             "type": "negative", "subtype": "negative part"}
        ])
    };
    write_json(
        &dir.join("annotations/qa.json"),
        &json!({"2391001": qa("apple"), "2391002": qa("wild bird"), "2391003": qa("scissors")}),
    );
}

/// A minimal OpenAI-compatible API: records every request body, answers "A".
struct MockJudge {
    url: String,
    bodies: Arc<Mutex<Vec<Value>>>,
}

impl MockJudge {
    fn start() -> MockJudge {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/v1", listener.local_addr().unwrap());
        let bodies = Arc::new(Mutex::new(Vec::new()));
        let seen = bodies.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { return };
                let seen = seen.clone();
                std::thread::spawn(move || serve_connection(stream, &seen));
            }
        });
        MockJudge { url, bodies }
    }
}

/// HTTP/1.1 with keep-alive: requests with a Content-Length body, one JSON reply each.
fn serve_connection(stream: std::net::TcpStream, seen: &Mutex<Vec<Value>>) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut writer = stream;
    loop {
        let mut length = None;
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        loop {
            let mut header = String::new();
            reader.read_line(&mut header).unwrap();
            if header.trim().is_empty() {
                break;
            }
            let lower = header.to_ascii_lowercase();
            if let Some(v) = lower.strip_prefix("content-length:") {
                length = v.trim().parse::<usize>().ok();
            }
        }
        let mut body = vec![0u8; length.expect("the client sends a Content-Length")];
        reader.read_exact(&mut body).unwrap();
        seen.lock()
            .unwrap()
            .push(serde_json::from_slice(&body).unwrap());
        let reply =
            json!({"choices": [{"message": {"role": "assistant", "content": "A"}}]}).to_string();
        write!(
            writer,
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{reply}",
            reply.len()
        )
        .unwrap();
        writer.flush().unwrap();
    }
}

fn decode_data_url(url: &str) -> image::DynamicImage {
    let b64 = url
        .strip_prefix("data:image/jpeg;base64,")
        .expect("the reference's data:image/jpeg prefix");
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .unwrap();
    image::load_from_memory(&bytes).unwrap()
}

fn judge_args(bench: &str, preds: &Path, root: &Path, url: &str, out: &Path) -> Vec<String> {
    [
        "eval",
        "judge",
        "--bench",
        bench,
        "--predictions",
        &preds.display().to_string(),
        "--root",
        &root.display().to_string(),
        "--judge-url",
        url,
        "--judge-model",
        "judge",
        "--max-tokens",
        "6",
        "--concurrency",
        "2",
        "--out",
        &out.display().to_string(),
        "--json",
    ]
    .map(s)
    .to_vec()
}

#[test]
fn dlc_bench_synthetic_run_resumes_and_the_gpt_judge_sends_both_crops() {
    let root = tmp("dlc-root");
    dlc_root(&root);
    let run = run_and_resume("dlc-bench", &root, 3);
    // Reference format: {"<ann_id>": caption}, the captions of items.jsonl.
    let preds = read_json(&run.join("predictions.json"));
    let texts = texts(&run);
    for (id, text) in ["2391001", "2391002", "2391003"].iter().zip(&texts) {
        assert_eq!(preds[*id].as_str(), Some(text.as_str()), "{id}");
    }
    assert_eq!(preds.as_object().unwrap().len(), 3);

    let judge = MockJudge::start();
    let out = tmp("dlc-judge");
    let mut args = judge_args(
        "dlc-bench",
        &run.join("predictions.json"),
        &root,
        &judge.url,
        &out,
    );
    args.extend([s("--protocol"), s("gpt")]);
    let first = ok(&gar(&args));
    // 3 objects × (recognition + 2 questions).
    assert_eq!(
        (first["requests"].as_u64(), first["protocol"].as_str()),
        (Some(9), Some("gpt"))
    );
    let bodies = judge.bodies.lock().unwrap().clone();
    assert_eq!(bodies.len(), 9);
    let anns = read_json(&root.join("evaluation/DLC-Bench/annotations/annotations.json"));
    for body in &bodies {
        assert_eq!(
            (body["temperature"].as_f64(), body["top_p"].as_f64()),
            (Some(0.0), Some(1.0))
        );
        let parts = body["messages"][0]["content"].as_array().unwrap();
        let kinds: Vec<&str> = parts.iter().map(|p| p["type"].as_str().unwrap()).collect();
        assert_eq!(kinds, ["text", "image_url", "text", "image_url", "text"]);
        assert_eq!(parts[0]["text"], "The image:\n");
        assert_eq!(parts[2]["text"], "\nThe mask of the image:\n");
        let prompt = parts[4]["text"].as_str().unwrap();
        assert!(prompt.starts_with("\nAnswer the multiple-choice question based on the text description of an object in this image."));
        // Which object: its class is in every question (the tiny model's captions may repeat).
        let (key, _) = [
            ("2391001", "apple"),
            ("2391002", "wild bird"),
            ("2391003", "scissors"),
        ]
        .into_iter()
        .find(|(_, class)| prompt.contains(class))
        .expect("the prompt names one object's class");
        assert!(prompt.contains(&format!(
            "The description is:\n{}\n",
            preds[key].as_str().unwrap()
        )));
        let ann = anns["annotations"]
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["id"].as_u64().map(|id| id.to_string()).as_deref() == Some(key))
            .unwrap();
        let crop = decode_data_url(parts[1]["image_url"]["url"].as_str().unwrap()).to_rgb8();
        let mask = decode_data_url(parts[3]["image_url"]["url"].as_str().unwrap()).to_luma8();
        assert_eq!(crop.dimensions(), mask.dimensions());
        // The whole mask lies in its focal crop: as many 255 pixels as the mask's area.
        let rle: gar_eval::rle::CocoRle =
            serde_json::from_value(ann["segmentation"].clone()).unwrap();
        assert!(mask.pixels().all(|p| p.0[0] == 0 || p.0[0] == 255));
        assert_eq!(
            mask.pixels().filter(|p| p.0[0] == 255).count() as u64,
            rle.area().unwrap()
        );
    }
    // The judged file is the reference's *_eval_gpt.json: `gar eval replay` scores it the same.
    let replayed = ok(&gar(&[
        s("eval"),
        s("replay"),
        s("--bench"),
        s("dlc-bench"),
        s("--cache"),
        out.join("dlc_eval_gpt.json").display().to_string(),
        s("--json"),
    ]));
    assert_eq!(replayed["avg"], first["avg"]);
    // Cached: nothing is sent twice.
    let second = ok(&gar(&args));
    assert_eq!(
        (second["requests"].as_u64(), second["cache_hits"].as_u64()),
        (Some(0), Some(9))
    );
    assert_eq!(judge.bodies.lock().unwrap().len(), 9);
    // The same requests (two images each) against a real OpenAI-compatible server: `gar serve`
    // with the tiny checkpoint as the judge answers all 9 (all cached). Its
    // random-weight replies are no choice letters, so scoring stops, as the reference does
    // (ValueError), at the unparseable recognition reply — with the replies kept.
    let server = Server::start(&tiny_pe_l());
    let served_out = tmp("dlc-judge-served");
    let mut served_args = judge_args(
        "dlc-bench",
        &run.join("predictions.json"),
        &root,
        &format!("{}/v1", server.url),
        &served_out,
    );
    served_args.extend([s("--protocol"), s("gpt")]);
    let served = gar(&served_args);
    let stderr = String::from_utf8_lossy(&served.stderr);
    let cached = std::fs::read_to_string(served_out.join("judge_cache.jsonl")).unwrap_or_default();
    assert_eq!(cached.lines().count(), 9, "{stderr}");
    if served.status.success() {
        assert!(served_out.join("dlc_eval_gpt.json").is_file());
    } else {
        assert_eq!(served.status.code(), Some(3), "{stderr}");
        assert!(stderr.contains("matches neither Yes nor No"), "{stderr}");
    }
    drop(server);
    for d in [root, run, out, served_out] {
        let _ = std::fs::remove_dir_all(d);
    }
}

/// The GPT-protocol requests built for the published GAR-8B captions carry exactly the prompts
/// of the published GPT-4o run: all 100 × 8.9 replies are imported (a single differing prompt
/// would be sent to a closed port and fail), and the score is the published 0.770.
#[test]
fn dlc_gpt_judge_prompts_match_the_published_run_and_score_0_770() {
    let Some(data) = shared_data() else { return };
    let outputs = data.join("evaluation/DLC-Bench/model_outputs");
    let out = tmp("dlc-gpt-published");
    let mut args = judge_args(
        "dlc-bench",
        &outputs.join("gar_8b.json"),
        &data,
        "http://127.0.0.1:1/v1",
        &out,
    );
    args.extend([
        s("--protocol"),
        s("gpt"),
        s("--import"),
        outputs.join("gar_8b_eval_gpt.json").display().to_string(),
        s("--retries"),
        s("0"),
    ]);
    let summary = ok(&gar(&args));
    assert_eq!(summary["requests"], 0);
    assert_eq!(summary["imported"], summary["questions"]);
    assert_eq!(
        (
            summary["pos"].as_f64(),
            summary["neg"].as_f64(),
            summary["avg"].as_f64()
        ),
        (Some(0.68), Some(0.86), Some(0.77))
    );
    let _ = std::fs::remove_dir_all(out);
}

// ---------------------------------------------------------------------------------------------
// MDVP-Bench

const DOMAINS: [&str; 6] = [
    "android_detailed_caption",
    "multipanel_detailed_caption",
    "natural_detailed_caption",
    "ocr_doc_detailed_caption",
    "ocr_spotting_detailed_caption",
    "web_detailed_caption",
];
const QUESTION: &str = "Please provide a detailed description of each marked region in the image.";

/// `evaluation/MDVP-Bench/{annotations/{mdvp_caption_mask,rule}.json, data/<domain>/…}`: one
/// natural question with two regions and one web question with one region; the per-region file
/// interleaves them, as a regrouping has to undo.
fn mdvp_root(root: &Path) {
    let dir = root.join("evaluation/MDVP-Bench");
    let natural = ("natural_detailed_caption", "4010.jpg", 120u32, 90u32);
    let web = ("web_detailed_caption", "web_1.png", 80u32, 100u32);
    for (i, (domain, name, w, h)) in [natural, web].into_iter().enumerate() {
        let path = dir.join("data").join(domain).join("images").join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        picture(w, h, 7 + i as u8 * 50).save(&path).unwrap();
    }
    // (domain, image, region box, reference caption)
    let regions = [
        (
            natural,
            (10u32, 10u32, 60u32, 50u32),
            "A small brown wooden shed.",
        ),
        (web, (5, 5, 70, 30), "A search bar at the top of the page."),
        (natural, (70, 40, 115, 85), "A tree with thick foliage."),
    ];
    let masks: Vec<Value> = regions
        .iter()
        .map(|((domain, name, w, h), b, caption)| {
            json!({"image_path": format!("{domain}/images/{name}"),
                   "mask_rle": ellipse_rle(*w, *h, *b),
                   "dataset_name": format!("{domain}_box"),
                   "question": QUESTION, "caption": caption})
        })
        .collect();
    write_json(
        &dir.join("annotations/mdvp_caption_mask.json"),
        &Value::Array(masks),
    );
    write_json(
        &dir.join("annotations/rule.json"),
        &json!({"box": {"role": "Assistant", "prompt": "Rate both answers from 1 to 10; first line: two scores."}}),
    );
    for domain in DOMAINS {
        let questions = if domain == natural.0 {
            json!([{"image_name": natural.1, "question": QUESTION, "question_id": 1,
                    "dataset_name": format!("{domain}_box"),
                    "gt_answers": "<Region 1>: A small brown wooden shed.\n<Region 2>: A tree with thick foliage.",
                    "bbox": [[10, 10, 50, 40], [70, 40, 45, 45]]}])
        } else if domain == web.0 {
            json!([{"image_name": web.1, "question": QUESTION, "question_id": 3,
                    "dataset_name": format!("{domain}_box"),
                    "gt_answers": "<Region 1>: A search bar at the top of the page.",
                    "bbox": [[5, 5, 65, 25]]}])
        } else {
            json!([])
        };
        write_json(
            &dir.join("data")
                .join(domain)
                .join(format!("{domain}_box.json")),
            &questions,
        );
    }
}

#[test]
fn mdvp_bench_synthetic_run_resumes_and_the_judge_reviews_regrouped_questions() {
    let root = tmp("mdvp-root");
    mdvp_root(&root);
    let run = run_and_resume("mdvp-bench", &root, 3);
    // Reference format: [{"image_path", "caption", "gt"}] in annotation order.
    let preds = read_json(&run.join("predictions.json"));
    let texts = texts(&run);
    let list = preds.as_array().unwrap();
    assert_eq!(list.len(), 3);
    assert_eq!(
        list[0]["image_path"],
        "evaluation/MDVP-Bench/data/natural_detailed_caption/images/4010.jpg"
    );
    assert_eq!(list[1]["gt"], "A search bar at the top of the page.");
    for (p, t) in list.iter().zip(&texts) {
        assert_eq!(p["caption"].as_str(), Some(t.as_str()));
        assert_eq!(p.as_object().unwrap().len(), 3);
    }

    // A partial run cannot be regrouped: refused with the reason (exit 3), nothing sent.
    let partial = run.join("partial.json");
    write_json(&partial, &Value::Array(list[..2].to_vec()));
    let refused_out = tmp("mdvp-partial");
    let refused = gar(&judge_args(
        "mdvp-bench",
        &partial,
        &root,
        "http://127.0.0.1:1/v1",
        &refused_out,
    ));
    let _ = std::fs::remove_dir_all(refused_out);
    assert_eq!(refused.status.code(), Some(3));
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(err.contains("needs a whole run"), "{err}");

    // The tiny checkpoint behind `gar serve` as the judge (one image per question: the painted one).
    let server = Server::start(&tiny_pe_l());
    let url = format!("{}/v1", server.url);
    let out = tmp("mdvp-judge");
    let preds_path = run.join("predictions.json");
    let first = ok(&gar(&judge_args(
        "mdvp-bench",
        &preds_path,
        &root,
        &url,
        &out,
    )));
    assert_eq!(
        (
            first["questions"].as_u64(),
            first["regions"].as_u64(),
            first["requests"].as_u64()
        ),
        (Some(2), Some(3), Some(2))
    );
    let reviews: Vec<Value> = std::fs::read_to_string(out.join("mdvp_reviews.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(reviews.len(), 2);
    // Grouped by domain, each question with its own regions in box order.
    assert_eq!(reviews[0]["category"], "natural_detailed_caption_box");
    assert_eq!(
        reviews[0]["answer2"].as_str().unwrap(),
        format!("<Region 1>: {}\n<Region 2>: {}", texts[0], texts[2])
    );
    assert_eq!(
        reviews[0]["answer1"],
        "<Region 1>: A small brown wooden shed.\n<Region 2>: A tree with thick foliage."
    );
    assert_eq!(reviews[1]["category"], "web_detailed_caption_box");
    assert_eq!(reviews[1]["question_id"], 3);
    assert_eq!(
        reviews[1]["answer2"].as_str().unwrap(),
        format!("<Region 1>: {}", texts[1])
    );
    // Per domain and overall, with the note on the published numbers.
    let domains = first["domains"].as_object().unwrap();
    assert_eq!(domains.len(), 2);
    assert_eq!(domains["natural_detailed_caption_box"]["questions"], 1);
    assert!(first["overall"].is_number());
    assert!(first["note"].as_str().unwrap().contains("not comparable"));
    let md = std::fs::read_to_string(out.join("summary.md")).unwrap();
    assert!(
        md.contains("overall") && md.contains("natural_detailed_caption_box"),
        "{md}"
    );
    let inputs = read_json(&out.join("judge_inputs/web_detailed_caption_box/prediction.json"));
    assert_eq!(inputs[0]["text"], reviews[1]["answer2"]);

    // Cached, then importable into a fresh folder with nobody listening.
    let second = ok(&gar(&judge_args(
        "mdvp-bench",
        &preds_path,
        &root,
        &url,
        &out,
    )));
    assert_eq!(
        (second["requests"].as_u64(), second["cache_hits"].as_u64()),
        (Some(0), Some(2))
    );
    drop(server);
    let again = tmp("mdvp-judge-import");
    let mut args = judge_args(
        "mdvp-bench",
        &preds_path,
        &root,
        "http://127.0.0.1:1/v1",
        &again,
    );
    args.extend([
        s("--import"),
        out.join("mdvp_reviews.jsonl").display().to_string(),
        s("--retries"),
        s("0"),
    ]);
    let imported = ok(&gar(&args));
    assert_eq!(
        (imported["requests"].as_u64(), imported["imported"].as_u64()),
        (Some(0), Some(2))
    );
    assert_eq!(
        read(&again.join("mdvp_reviews.jsonl")),
        read(&out.join("mdvp_reviews.jsonl"))
    );
    for d in [root, run, out, again] {
        let _ = std::fs::remove_dir_all(d);
    }
}
