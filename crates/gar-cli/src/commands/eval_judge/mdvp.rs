//! MDVP-Bench box detailed caption with the corrected protocol (benchmarks.md §3.5).
//!
//! The released pipeline judges every domain on the same 10 region pairs (zip truncation over
//! files that hold all 364 regions). Here the per-region captions of a run are regrouped into
//! their questions (`gar_eval::mdvp::group`: `<Region k>: caption` lines in box order, checked
//! against the question's own reference answer), and each question of each domain is reviewed
//! once with the reference's request (`eval_gpt.py`): the LLaVA review text with the domain's
//! context and the "box" rule, then the image with the question's numbered boxes painted on it
//! (`paint_util.paint_text_box`), sent as `data:image/jpeg` with `detail: high`. Scores are the
//! reference's `summarize_gpt_score.py`: model mean / (GT mean + 1e-6) × 100 per domain.

use std::collections::{BTreeMap, HashMap};
use std::io::Cursor;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, Context, Result};
use base64::Engine as _;
use gar_eval::ferret;
use gar_eval::judge::JudgeRequest;
use gar_eval::mdvp::{self, GroupedQuestion};
use image::{Rgb, RgbImage};
use serde_json::{json, Value};

/// One question to review, with what its review line records.
pub struct Job {
    pub grouped: GroupedQuestion,
    pub request: JudgeRequest,
    /// The question's image (`data/<domain>/images/<image>`).
    pub image: PathBuf,
    /// The question's boxes, `[x, y, w, h]` in pixels, numbered from 1 in this order.
    pub boxes: Vec<[f64; 4]>,
}

/// Regroups a run's per-region predictions and builds one review request per question.
pub fn jobs(predictions: &Path, root: &Path) -> Result<Vec<Job>> {
    let base = root.join("evaluation/MDVP-Bench");
    let outputs: Vec<mdvp::RegionOutput> = gar_eval::io::read_list(predictions)?;
    let masks: Vec<mdvp::RegionMask> =
        gar_eval::io::read_list(&base.join("annotations/mdvp_caption_mask.json"))?;
    let questions = mdvp::read_questions(&base.join("data"))?;
    let grouped = mdvp::group(predictions, &outputs, &masks, &questions).map_err(|e| {
        anyhow!("{e} (the MDVP judge needs a whole run: every region of every question)")
    })?;
    let rules = ferret::read_rules(&base.join("annotations/rule.json"))?;
    let rule = rules
        .get("box")
        .context("annotations/rule.json has no \"box\" rule")?;
    grouped
        .into_iter()
        .map(|g| {
            let boxes: Vec<[f64; 4]> = g
                .question
                .annotation
                .as_ref()
                .and_then(|a| a.get("bbox"))
                .map(|b| serde_json::from_value(b.clone()))
                .transpose()
                .ok()
                .flatten()
                .with_context(|| {
                    format!(
                        "{} question {}: no `bbox` list (only the box questions are judged)",
                        g.phase, g.question.question_id
                    )
                })?;
            let request = gar_eval::prompts::mdvp_request(
                &g.phase,
                &g.question.text,
                &g.answer.text,
                &g.prediction.text,
                rule,
            );
            Ok(Job {
                image: base
                    .join("data")
                    .join(mdvp::domain(&g.phase))
                    .join("images")
                    .join(&g.question.image),
                boxes,
                request,
                grouped: g,
            })
        })
        .collect()
}

/// The `image_url` object of a question's painted image: JPEG (OpenCV's default quality 95, as
/// `cv2.imwrite` writes it), `detail: high`.
pub fn painted_image_url(job: &Job) -> Result<Value> {
    let image = paint_boxes(super::garbench::load_rgb(&job.image)?, &job.boxes);
    let mut jpeg = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut Cursor::new(&mut jpeg), 95)
        .encode_image(&image)
        .context("JPEG encoding")?;
    Ok(json!({
        "url": format!(
            "data:image/jpeg;base64,{}",
            base64::engine::general_purpose::STANDARD.encode(jpeg)
        ),
        "detail": "high",
    }))
}

const GREEN: Rgb<u8> = Rgb([0, 255, 0]);
const BLACK: Rgb<u8> = Rgb([0, 0, 0]);
const WHITE: Rgb<u8> = Rgb([255, 255, 255]);

/// `paint_text_box`: the image darkened to 80 %, then per box (numbered from 1) OpenCV's
/// thickness-2 green outline from (x, y) to (x + w, y + h) after `int()` truncation, and its
/// number in white on a black label whose top-left corner is (x + 4, y − 2). The label's size is
/// OpenCV 4's `getTextSize(str(i), FONT_HERSHEY_SIMPLEX, 0.65, 2)` (15 px high with a 7 px
/// baseline, 13 px per digit + 2); the digits themselves are a built-in pixel font, not OpenCV's
/// Hershey strokes. Everything but the digits matches OpenCV 4.14 pixel for pixel
/// (fixtures/eval/mdvp_paint, tools/reference/make_mdvp_paint_fixture.py).
pub fn paint_boxes(mut image: RgbImage, boxes: &[[f64; 4]]) -> RgbImage {
    for p in image.pixels_mut() {
        for c in &mut p.0 {
            // cv2.addWeighted(img, 0.8, zeros, 0.2, 0): 0.8·v never ends in .5, so rounding is exact.
            *c = (f64::from(*c) * 0.8).round() as u8;
        }
    }
    for (n, b) in boxes.iter().enumerate() {
        let [x, y, w, h] = b.map(|v| v as i64);
        outline(&mut image, x, y, x + w, y + h);
        let label = (n + 1).to_string();
        let (tx, ty) = (x + 4, y + 20);
        let (text_w, text_h, baseline) = (13 * label.len() as i64 + 2, 15, 7);
        fill(
            &mut image,
            tx,
            ty - text_h - baseline,
            tx + text_w,
            ty + baseline,
            BLACK,
        );
        for (k, ch) in label.chars().enumerate() {
            digit(&mut image, ch, tx + 2 + 13 * k as i64, ty - 14);
        }
    }
    image
}

fn put(image: &mut RgbImage, x: i64, y: i64, c: Rgb<u8>) {
    if x >= 0 && y >= 0 && (x as u32) < image.width() && (y as u32) < image.height() {
        image.put_pixel(x as u32, y as u32, c);
    }
}

/// Filled rectangle with inclusive corners, clipped to the image.
fn fill(image: &mut RgbImage, x0: i64, y0: i64, x1: i64, y1: i64, c: Rgb<u8>) {
    for y in y0..=y1 {
        for x in x0..=x1 {
            put(image, x, y, c);
        }
    }
}

/// `cv2.rectangle(…, thickness=2)`: every pixel within distance 1 of an edge (a 3-px band with
/// rounded corners; checked against OpenCV on random rectangles and by the fixture).
fn outline(image: &mut RgbImage, x0: i64, y0: i64, x1: i64, y1: i64) {
    let edges = [
        (x0, y0, x1, y0),
        (x0, y1, x1, y1),
        (x0, y0, x0, y1),
        (x1, y0, x1, y1),
    ];
    for (ax, ay, bx, by) in edges {
        let (lx, hx, ly, hy) = (ax.min(bx), ax.max(bx), ay.min(by), ay.max(by));
        for y in ly - 1..=hy + 1 {
            for x in lx - 1..=hx + 1 {
                let dx = (lx - x).max(0).max(x - hx);
                let dy = (ly - y).max(0).max(y - hy);
                if dx * dx + dy * dy <= 1 {
                    put(image, x, y, GREEN);
                }
            }
        }
    }
}

/// 5×7 glyphs of the digits, one row per byte (bit 4 = leftmost column).
const DIGITS: [[u8; 7]; 10] = [
    [0x0E, 0x11, 0x13, 0x15, 0x19, 0x11, 0x0E],
    [0x04, 0x0C, 0x04, 0x04, 0x04, 0x04, 0x0E],
    [0x0E, 0x11, 0x01, 0x02, 0x04, 0x08, 0x1F],
    [0x1F, 0x02, 0x04, 0x02, 0x01, 0x11, 0x0E],
    [0x02, 0x06, 0x0A, 0x12, 0x1F, 0x02, 0x02],
    [0x1F, 0x10, 0x1E, 0x01, 0x01, 0x11, 0x0E],
    [0x06, 0x08, 0x10, 0x1E, 0x11, 0x11, 0x0E],
    [0x1F, 0x01, 0x02, 0x04, 0x08, 0x08, 0x08],
    [0x0E, 0x11, 0x11, 0x0E, 0x11, 0x11, 0x0E],
    [0x0E, 0x11, 0x11, 0x0F, 0x01, 0x02, 0x0C],
];

/// Draws one digit, each glyph cell 2×2 pixels (10×14), top-left at (x, y).
fn digit(image: &mut RgbImage, ch: char, x: i64, y: i64) {
    let Some(rows) = ch.to_digit(10).map(|d| DIGITS[d as usize]) else {
        return;
    };
    for (r, bits) in rows.iter().enumerate() {
        for col in 0..5 {
            if bits & (0x10 >> col) != 0 {
                let (px, py) = (x + 2 * col, y + 2 * r as i64);
                fill(image, px, py, px + 1, py + 1, WHITE);
            }
        }
    }
}

/// Reviews of an earlier run (this command's `mdvp_reviews.jsonl`, or the reference's
/// `gpt_score.jsonl`), by domain, question and reviewed answer: a review is reused only for the
/// very same model answer.
pub fn import(path: &Path) -> Result<HashMap<(String, String, String), String>> {
    let mut map = HashMap::new();
    for r in ferret::read_reviews(path)? {
        if let (Some(content), Some(answer2), Some(category)) = (r.content, r.answer2, r.category) {
            map.insert((category, super::qid(&r.question_id), answer2), content);
        }
    }
    if map.is_empty() {
        return Err(anyhow!("{}: no reviews to import", path.display()));
    }
    Ok(map)
}

/// The import key of a job.
pub fn import_key(job: &Job) -> (String, String, String) {
    (
        job.grouped.phase.clone(),
        super::qid(&job.grouped.question.question_id),
        job.grouped.prediction.text.clone(),
    )
}

/// Writes the review file in `eval_gpt.py`'s line format (ids count from 1 within each domain,
/// as the reference runs one domain at a time), the regrouped judge inputs, and scores it.
pub fn judged(
    jobs: &[Job],
    replies: &[String],
    out: &Path,
) -> Result<(PathBuf, mdvp::ReviewReplay)> {
    let path = out.join("mdvp_reviews.jsonl");
    let mut per_phase: BTreeMap<&str, usize> = BTreeMap::new();
    let mut text = String::new();
    for (job, reply) in jobs.iter().zip(replies) {
        let g = &job.grouped;
        let id = per_phase.entry(g.phase.as_str()).or_insert(0);
        *id += 1;
        let tuple = ferret::parse_score(reply).map_or(json!([-1, -1]), |(a, b)| json!([a, b]));
        let line = json!({
            "id": *id,
            "question_id": g.question.question_id,
            "answer1_id": g.answer.question_id,
            "answer2_id": g.prediction.question_id,
            "category": g.phase,
            "content": reply,
            "tuple": tuple,
            "answer1": g.answer.text,
            "answer2": g.prediction.text,
        });
        text.push_str(&serde_json::to_string(&line)?);
        text.push('\n');
    }
    std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))?;
    let grouped: Vec<GroupedQuestion> = jobs.iter().map(|j| j.grouped.clone()).collect();
    mdvp::write_judge_inputs(out, &grouped)?;
    let scored = mdvp::replay_reviews(&path)?;
    Ok((path, scored))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// OpenCV 4.14's painting of a synthetic picture (tools/reference/make_mdvp_paint_fixture.py):
    /// every pixel outside the number labels is equal; inside them both are black or white.
    #[test]
    fn painting_matches_opencv_outside_the_digits() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/eval/mdvp_paint");
        let meta: Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join("meta.json")).unwrap()).unwrap();
        let boxes: Vec<[f64; 4]> = serde_json::from_value(meta["boxes"].clone()).unwrap();
        let labels: Vec<[i64; 4]> =
            serde_json::from_value(meta["label_rects_inclusive_x0_y0_x1_y1"].clone()).unwrap();
        let input = image::open(dir.join("input.png")).unwrap().to_rgb8();
        let expected = image::open(dir.join("painted.png")).unwrap().to_rgb8();
        let painted = paint_boxes(input, &boxes);
        let bw = |p: &Rgb<u8>| *p == BLACK || *p == WHITE;
        let mut in_labels = 0;
        for (x, y, p) in painted.enumerate_pixels() {
            let e = expected.get_pixel(x, y);
            let (xi, yi) = (i64::from(x), i64::from(y));
            let in_label = labels
                .iter()
                .any(|r| (r[0]..=r[2]).contains(&xi) && (r[1]..=r[3]).contains(&yi));
            if in_label && bw(e) {
                in_labels += 1;
                assert!(bw(p), "({x}, {y}): {p:?} in a label");
            } else {
                assert_eq!(p, e, "({x}, {y})");
            }
        }
        assert!(in_labels > 10 * 15 * 25, "the labels were checked");
        assert!(painted.pixels().filter(|p| **p == WHITE).count() > 10 * 20);
    }

    #[test]
    fn boxes_past_the_border_are_clipped() {
        let painted = paint_boxes(RgbImage::new(20, 20), &[[-5.0, 15.0, 40.0, 40.0]]);
        assert_eq!(painted.dimensions(), (20, 20));
    }
}
