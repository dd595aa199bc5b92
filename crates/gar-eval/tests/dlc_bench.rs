//! DLC-Bench replay on the shipped judge caches, and the prompt builders checked against the
//! prompts those caches recorded.

mod common;

use gar_eval::dlc::{self, Protocol};
use gar_eval::prompts;

#[test]
fn replay_reproduces_published_scores() {
    let dir = data_or_skip!().join("DLC-Bench");
    let qa_path = dir.join("annotations/qa.json");
    let qa = dlc::read_qa(&qa_path).unwrap();
    // (file, protocol, pos, neg, avg, recognition failures). The 1B GPT cache is from another
    // judge run than the published 0.662 / 0.880 / 0.771 (benchmarks.md §3.3).
    for (file, protocol, pos, neg, avg, rec) in [
        ("gar_1b_eval.json", Protocol::Llama, 0.489, 0.870, 0.679, 5),
        ("gar_8b_eval.json", Protocol::Llama, 0.502, 0.846, 0.674, 5),
        (
            "gar_8b_eval_gpt.json",
            Protocol::Gpt,
            0.680,
            0.860,
            0.770,
            5,
        ),
        (
            "gar_1b_eval_gpt.json",
            Protocol::Gpt,
            0.658,
            0.876,
            0.767,
            4,
        ),
    ] {
        let cache = dlc::read_cache(&dir.join("model_outputs").join(file)).unwrap();
        for with_qa in [false, true] {
            let r = dlc::replay(
                &cache,
                with_qa.then_some((qa_path.as_path(), qa.as_slice())),
            )
            .unwrap();
            assert_eq!(r.protocol, protocol, "{file}");
            assert_eq!(
                (r.pos, r.neg, r.avg),
                (pos, neg, avg),
                "{file} qa={with_qa}"
            );
            assert_eq!((r.objects, r.recognition_failures), (100, rec), "{file}");
            assert!(
                r.cached_score_mismatches.is_empty(),
                "{file}: {:?}",
                r.cached_score_mismatches
            );
            if let (Some(p), Some(n)) = (r.cached_avg_pos, r.cached_avg_neg) {
                assert!(
                    (p - r.pos_raw).abs() < 1e-12 && (n - r.neg_raw).abs() < 1e-12,
                    "{file}"
                );
            }
        }
    }
}

#[test]
fn prompt_builders_match_cached_prompts() {
    let dir = data_or_skip!().join("DLC-Bench");
    let qa = dlc::read_qa(&dir.join("annotations/qa.json")).unwrap();
    let classes = dlc::read_string_map(&dir.join("annotations/class_names.json")).unwrap();
    for (file, protocol) in [
        ("gar_1b_eval.json", Protocol::Llama),
        ("gar_8b_eval.json", Protocol::Llama),
        ("gar_1b_eval_gpt.json", Protocol::Gpt),
        ("gar_8b_eval_gpt.json", Protocol::Gpt),
    ] {
        let cache = dlc::read_cache(&dir.join("model_outputs").join(file)).unwrap();
        let mut checked = 0;
        for (key, obj) in &cache.objects {
            let class = &classes.iter().find(|(k, _)| k == key).unwrap().1;
            let questions = &qa.iter().find(|(k, _)| k == key).unwrap().1;
            let all = prompts::dlc_questions(protocol, class, questions);
            assert_eq!(all.len(), obj.prompt.len(), "{file} {key}");
            for (q, cached) in all.iter().zip(&obj.prompt) {
                assert_eq!(
                    &prompts::dlc_prompt(protocol, &obj.pred, q),
                    cached,
                    "{file} {key} ({class})"
                );
                checked += 1;
            }
        }
        assert_eq!(checked, 100 + 892, "{file}");
    }
}

#[test]
fn predictions_are_the_cached_captions_and_masks_decode() {
    let dir = data_or_skip!().join("DLC-Bench");
    let preds = dlc::read_string_map(&dir.join("model_outputs/gar_8b.json")).unwrap();
    let cache = dlc::read_cache(&dir.join("model_outputs/gar_8b_eval_gpt.json")).unwrap();
    for (key, obj) in &cache.objects {
        assert_eq!(&preds.iter().find(|(k, _)| k == key).unwrap().1, &obj.pred);
    }
    let ann = dlc::read_annotations(&dir.join("annotations/annotations.json")).unwrap();
    assert_eq!((ann.images.len(), ann.annotations.len()), (77, 100));
    for a in &ann.annotations {
        let img = ann.images.iter().find(|i| i.id == a.image_id).unwrap();
        assert_eq!(a.segmentation.size, [img.height, img.width]);
        let b = a.segmentation.bbox().unwrap().unwrap();
        let crop = gar_eval::judge::focal_crop(b, img.width.into(), img.height.into(), 56);
        assert!(crop.x0 < crop.x1 && crop.y0 < crop.y1);
    }
}
