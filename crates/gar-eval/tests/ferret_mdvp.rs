//! Ferret-Bench review replay and MDVP-Bench regrouping / audit on the shipped files.

mod common;

use std::collections::BTreeMap;

use gar_eval::{ferret, mdvp, prompts};

#[test]
fn ferret_reviews_reproduce_published_scores() {
    let dir = data_or_skip!().join("Ferret-Bench/gpt4_result");
    for (model, score, gt, m) in [("gar_1b", 56.0, 7.1, 3.975), ("gar_8b", 64.8, 7.75, 5.025)] {
        let r = ferret::replay(&dir.join(model).join("review_refer_desc.jsonl")).unwrap();
        assert_eq!(
            (r.score, r.gt_mean, r.model_mean, r.reviews),
            (score, gt, m, 40),
            "{model}"
        );
        assert_eq!(r.categories["refer_desc"], score);
        assert_eq!((r.parse_failures, r.tuple_mismatches), (0, 0));
    }
}

#[test]
fn ferret_prompt_inputs_match_the_cached_reviews() {
    let root = data_or_skip!().join("Ferret-Bench");
    let data = root.join("ferret_gpt4_data");
    let questions = ferret::read_text_records(&data.join("refer_desc/question.jsonl")).unwrap();
    let contexts = ferret::read_text_records(&data.join("refer_desc/context.jsonl")).unwrap();
    let answers = ferret::read_text_records(&data.join("refer_desc/answer.jsonl")).unwrap();
    let rules = ferret::read_rules(&data.join("rule.json")).unwrap();
    let outputs: Vec<ferret::ModelOutput> =
        gar_eval::io::read_list(&root.join("model_outputs/gar_8b.json")).unwrap();
    let reviews =
        ferret::read_reviews(&root.join("gpt4_result/gar_8b/review_refer_desc.jsonl")).unwrap();
    assert_eq!(
        (questions.len(), outputs.len(), reviews.len()),
        (40, 40, 40)
    );
    let rule = &rules["refer_desc"];
    for (i, ((q, a), (o, r))) in questions
        .iter()
        .zip(&answers)
        .zip(outputs.iter().zip(&reviews))
        .enumerate()
    {
        // eval_gpt.py pairs by position and looks the context up by image.
        let ctx = contexts.iter().find(|c| c.image == q.image).unwrap();
        let req =
            prompts::ferret_request(&ctx.text, &q.text, &a.text, &o.caption, "refer_desc", rule);
        let text = req.user_text();
        assert!(
            text.starts_with(&format!(
                "[Context]\\{}\n\n[Question]\n{}",
                ctx.text, q.text
            )),
            "item {i}"
        );
        assert!(
            text.contains(&format!(
                "[Assistant 1]\n{}\n\n",
                r.answer1.as_deref().unwrap()
            )),
            "item {i}"
        );
        assert!(
            text.contains(&format!(
                "[Assistant 2]\n{}\n\n",
                r.answer2.as_deref().unwrap()
            )),
            "item {i}"
        );
        assert!(text.ends_with(&format!("[System]\n{}\n\n", rule.prompt)));
    }
    // Boxes are filled rectangles given both as bbox and as a polygon (corners rounded to 0.01).
    let boxes: Vec<ferret::BoxReferItem> =
        gar_eval::io::read_list(&root.join("annotations/box_refer_caption.json")).unwrap();
    for b in &boxes {
        let p = gar_eval::rle::polygon_bbox(&b.annotation.segmentation).unwrap();
        let x = b.annotation.xywh();
        assert!(
            (p.x - x.x).abs() < 1e-6 && (p.w - x.w).abs() < 0.02 && (p.h - x.h).abs() < 0.02,
            "{}",
            b.image
        );
    }
}

fn mdvp_inputs(
    root: &std::path::Path,
) -> (
    Vec<mdvp::RegionMask>,
    BTreeMap<String, Vec<mdvp::QuestionItem>>,
) {
    let masks = gar_eval::io::read_list(&root.join("annotations/mdvp_caption_mask.json")).unwrap();
    (masks, mdvp::read_questions(&root.join("data")).unwrap())
}

#[test]
fn mdvp_regions_regroup_into_their_questions() {
    let root = data_or_skip!().join("MDVP-Bench");
    let (masks, questions) = mdvp_inputs(&root);
    let path = root.join("model_outputs/gar_8b.json");
    let outputs: Vec<mdvp::RegionOutput> = gar_eval::io::read_list(&path).unwrap();
    let grouped = mdvp::group(&path, &outputs, &masks, &questions).unwrap();
    assert_eq!(grouped.len(), 60);
    let mut regions = BTreeMap::new();
    for g in &grouped {
        *regions.entry(g.phase.as_str()).or_insert(0) += g.regions;
        assert!(g.prediction.text.starts_with("<Region 1>: "));
        assert_eq!(g.prediction.text.matches("<Region ").count(), g.regions);
    }
    let expected = [
        ("android", 97),
        ("multipanel", 74),
        ("natural", 43),
        ("ocr_doc", 56),
        ("ocr_spotting", 37),
        ("web", 57),
    ];
    for (d, n) in expected {
        assert_eq!(
            regions[format!("{d}_detailed_caption_box").as_str()],
            n,
            "{d}"
        );
    }
    // A shifted file is caught instead of mis-paired.
    let e = mdvp::group(&path, &outputs[1..], &masks[1..], &questions).unwrap_err();
    assert!(e.to_string().contains("region outputs for"), "{e}");
    // Masks are segmentations, not boxes (benchmarks.md §4.3).
    let m = masks
        .iter()
        .find(|m| m.image_path.ends_with("000000107939.jpg"))
        .unwrap();
    let b = m.mask_rle.bbox().unwrap().unwrap();
    assert_eq!((b.x, b.y, b.w, b.h), (251.0, 146.0, 128.0, 136.0));
    assert!(masks.iter().all(|m| {
        let b = m.mask_rle.bbox().unwrap().unwrap();
        (m.mask_rle.area().unwrap() as f64) < b.w * b.h
    }));
}

#[test]
fn mdvp_audit_shows_the_reference_judged_the_same_ten_pairs() {
    let root = data_or_skip!().join("MDVP-Bench");
    let a = mdvp::audit(&root.join("mdvp_for_gpt4v_eval")).unwrap();
    assert!(a.identical_inputs_across_phases && !a.comparable_to_published);
    for (phase, p) in &a.phases {
        assert_eq!(
            (p.questions, p.answers, p.pairs_judged),
            (10, 364, 10),
            "{phase}"
        );
        assert_eq!(
            p.judged_pairs_from,
            vec!["web_shopping_251980.png".to_string()],
            "{phase}"
        );
        let expected = usize::from(phase.starts_with("android"));
        assert_eq!(p.pairs_matching_question_image, expected, "{phase}");
    }
    // The cached predictions are from another run than either shipped output file.
    let cached: Vec<mdvp::ReviewInput> = gar_eval::io::read_list(
        &root.join("mdvp_for_gpt4v_eval/natural_detailed_caption_box/prediction.json"),
    )
    .unwrap();
    for (model, same) in [("gar_8b", 293), ("gar_1b", 48)] {
        let outputs: Vec<mdvp::RegionOutput> =
            gar_eval::io::read_list(&root.join(format!("model_outputs/{model}.json"))).unwrap();
        assert_eq!(
            cached
                .iter()
                .zip(&outputs)
                .filter(|(c, o)| c.text == o.caption)
                .count(),
            same,
            "{model}"
        );
    }
}

#[test]
fn mdvp_prompt_uses_phase_context_and_box_rule() {
    let root = data_or_skip!().join("MDVP-Bench");
    let rules = ferret::read_rules(&root.join("annotations/rule.json")).unwrap();
    let req = prompts::mdvp_request(
        "natural_detailed_caption_box",
        "Describe.",
        "<Region 1>: a",
        "<Region 1>: b",
        &rules["box"],
    );
    let text = req.user_text();
    assert!(
        text.starts_with("[Context]\\The image is a natural image.\n\n[Question]\nDescribe.\n\n")
    );
    assert!(text.contains("(x1, y1, w, h)"));
    assert_eq!(req.user.len(), 2);
}

#[test]
fn mdvp_every_question_file_parses() {
    let data = data_or_skip!().join("MDVP-Bench/data");
    let mut items = 0;
    for domain in std::fs::read_dir(&data).unwrap() {
        for file in std::fs::read_dir(domain.unwrap().path()).unwrap() {
            let path = file.unwrap().path();
            if path.extension().is_some_and(|e| e == "json") {
                let qs: Vec<mdvp::QuestionItem> = gar_eval::io::read_list(&path).unwrap();
                assert!(
                    qs.iter().all(|q| q.bbox.is_some() != q.points.is_some()),
                    "{}",
                    path.display()
                );
                items += qs.len();
            }
        }
    }
    assert_eq!(items, 299);
}
