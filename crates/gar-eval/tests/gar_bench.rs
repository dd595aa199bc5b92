//! GAR-Bench on the shipped files: VQA exact match reproduces EVALUATION.md count for count,
//! the cached caption verdicts reproduce the published accuracies, every mask decodes.

mod common;

use gar_eval::garbench::{self, CaptionSplit};
use gar_eval::published::GAR_BENCH_VQA_COUNTS;

#[test]
fn vqa_published_outputs_reproduce_every_count() {
    let dir = data_or_skip!().join("GAR-Bench");
    for (model, overall, correct) in [("1b", 47.9, 203), ("8b", 57.8, 245)] {
        let path = dir.join(format!("model_outputs/gar_{model}_vqa.json"));
        let preds = garbench::read_vqa_predictions(&path, None).unwrap();
        let s = garbench::score_vqa(&preds);
        assert_eq!(
            (s.overall, s.correct, s.total),
            (overall, correct, 424),
            "GAR-{model}"
        );
        assert_eq!(s.lenient_correct, correct, "outputs are bare letters");
        assert_eq!(s.categories.len(), 7);
        for &(cat, c1, c8, total) in GAR_BENCH_VQA_COUNTS {
            let c = &s.categories[cat];
            assert_eq!(
                (c.correct, c.total),
                (if model == "1b" { c1 } else { c8 }, total),
                "GAR-{model} {cat}"
            );
        }
    }
}

#[test]
fn vqa_predictions_join_annotations_by_image() {
    let dir = data_or_skip!().join("GAR-Bench");
    let ann = garbench::read_vqa_annotations(&dir.join("annotations/GAR-Bench-VQA.json")).unwrap();
    assert_eq!(ann.len(), 424);
    // A minimal {image, model_output} file scores the same as the full published one.
    let full =
        garbench::read_vqa_predictions(&dir.join("model_outputs/gar_8b_vqa.json"), None).unwrap();
    let minimal: Vec<_> = full
        .iter()
        .map(|p| serde_json::json!({"image": p.item.image, "model_output": p.model_output}))
        .collect();
    let tmp = std::env::temp_dir().join(format!("gar-eval-vqa-{}.json", std::process::id()));
    std::fs::write(&tmp, serde_json::to_string(&minimal).unwrap()).unwrap();
    let joined = garbench::read_vqa_predictions(&tmp, Some(&ann)).unwrap();
    assert_eq!(garbench::score_vqa(&joined).correct, 245);
    assert!(garbench::read_vqa_predictions(&tmp, None)
        .unwrap_err()
        .to_string()
        .contains("no annotations given"));
    std::fs::remove_file(tmp).ok();
    // 1B and 8B agree on most letters; identical files agree fully.
    let one =
        garbench::read_vqa_predictions(&dir.join("model_outputs/gar_1b_vqa.json"), None).unwrap();
    let a = garbench::vqa_agreement(&one, &full);
    assert_eq!(a.total, 424);
    assert!(a.same > 200 && a.same < 424);
    assert_eq!(garbench::vqa_agreement(&full, &full).same, 424);
}

#[test]
fn caption_verdicts_reproduce_published_accuracy() {
    let dir = data_or_skip!().join("GAR-Bench/model_outputs");
    for (file, split, correct, total, acc) in [
        (
            "gar_1b_simple_eval.json",
            CaptionSplit::Simple,
            54,
            97,
            0.5567010309278351,
        ),
        (
            "gar_8b_simple_eval.json",
            CaptionSplit::Simple,
            62,
            97,
            0.6391752577319587,
        ),
        (
            "gar_1b_detailed_eval.json",
            CaptionSplit::Detailed,
            71,
            107,
            0.6635514018691588,
        ),
        (
            "gar_8b_detailed_eval.json",
            CaptionSplit::Detailed,
            74,
            107,
            0.6915887850467289,
        ),
    ] {
        let r = garbench::replay_captions(&dir.join(file), split).unwrap();
        assert_eq!(
            (r.correct, r.total, r.accuracy),
            (correct, total, acc),
            "{file}"
        );
    }
    let e = garbench::replay_captions(&dir.join("gar_1b_simple_eval.json"), CaptionSplit::Detailed)
        .unwrap_err();
    assert!(
        e.to_string()
            .contains("gar-bench-simple item but gar-bench-detailed"),
        "{e}"
    );
    let e = garbench::replay_captions(&dir.join("gar_1b_simple.json"), CaptionSplit::Simple)
        .unwrap_err();
    assert!(e.to_string().contains("no `eval_result`"), "{e}");
}

#[test]
fn every_mask_decodes() {
    let dir = data_or_skip!().join("GAR-Bench/annotations");
    let vqa = garbench::read_vqa_annotations(&dir.join("GAR-Bench-VQA.json")).unwrap();
    let simple: Vec<garbench::CaptionSimpleItem> =
        gar_eval::io::read_list(&dir.join("GAR-Bench-Caption-Simple.json")).unwrap();
    let detailed: Vec<garbench::CaptionDetailedItem> =
        gar_eval::io::read_list(&dir.join("GAR-Bench-Caption-Detailed.json")).unwrap();
    assert_eq!((simple.len(), detailed.len()), (97, 107));
    let masks = vqa
        .iter()
        .flat_map(|i| &i.mask_rles)
        .chain(simple.iter().flat_map(|i| &i.mask_rles))
        .chain(detailed.iter().flat_map(|i| &i.mask_rles));
    for m in masks {
        let b = m.bbox().unwrap().expect("non-empty mask");
        assert!(m.area().unwrap() as f64 <= b.w * b.h);
    }
    // Ten VQA items carry more masks than GAR's five prompt slots.
    assert_eq!(vqa.iter().filter(|i| i.mask_rles.len() > 5).count(), 10);
}
