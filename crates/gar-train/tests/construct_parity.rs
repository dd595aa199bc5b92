//! Sample construction against an independent Python restatement run with recorded random draws
//! (fixtures/train/construct, made by tools/reference/train/make_construct_fixtures.py).

use gar_train::choices::{Draw, ScriptedChoices};
use gar_train::construct::{construct, ConstructConfig, Reject};
use gar_train::data::{Message, RawRow};
use gar_train::rle;
use image::{GrayImage, RgbImage};
use serde::Deserialize;
use std::path::PathBuf;

#[derive(Deserialize)]
struct Case {
    kind: String,
    width: u32,
    height: u32,
    mask_rle: Option<Vec<Rle>>,
    conversations: Vec<Message>,
    config: Cfg,
    draws: Vec<Draw>,
    expect: Expect,
}
#[derive(Deserialize)]
struct Rle {
    size: [u32; 2],
    counts: String,
}
#[derive(Deserialize)]
struct Cfg {
    prompt_augmentation: bool,
    negative_probability: f64,
}
#[derive(Deserialize)]
struct Expect {
    turns: Option<Vec<[String; 2]>>,
    regions: Option<Vec<(usize, i64)>>,
    reject: Option<String>,
}

fn reject_name(r: &Reject) -> &'static str {
    match r {
        Reject::NoImage => "no_image",
        Reject::NoRegions => "no_regions",
        Reject::TooSmall(..) => "too_small",
        Reject::MaskSize { .. } => "mask_size",
        Reject::EmptyMask(_) => "empty_mask",
        Reject::MissingCaption(..) => "missing_caption",
        Reject::TagBeyondMasks(..) => "tag_beyond_masks",
        Reject::BadTurns => "bad_turns",
        Reject::ImageInLaterTurn => "image_in_later_turn",
        Reject::Read(_) => "read",
    }
}

#[test]
fn construction_matches_python_restatement_with_the_same_draws() {
    let path =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/train/construct/cases.json");
    let all: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let cases: Vec<Case> = serde_json::from_value(all["cases"].clone()).unwrap();
    assert!(cases.len() >= 40);
    let mut paths_seen = std::collections::BTreeSet::new();
    for (i, case) in cases.into_iter().enumerate() {
        let masks: Option<Vec<GrayImage>> = case.mask_rle.as_ref().map(|ms| {
            ms.iter()
                .map(|m| rle::decode(m.size[0], m.size[1], &m.counts).expect("fixture RLE decodes"))
                .collect()
        });
        let row = RawRow {
            image: Some(RgbImage::new(case.width, case.height)),
            conversations: case.conversations,
            masks: masks.clone(),
        };
        let cfg = ConstructConfig {
            prompt_augmentation: case.config.prompt_augmentation,
            negative_probability: case.config.negative_probability,
            ..Default::default()
        };
        let mut ch = ScriptedChoices::new(case.draws);
        let got = construct(&row, &cfg, &mut ch);
        assert_eq!(ch.remaining(), 0, "case {i}: draws left over");
        match (got, case.expect.reject) {
            (Err(r), Some(want)) => assert_eq!(reject_name(&r), want, "case {i}"),
            (Ok(s), None) => {
                let turns: Vec<[String; 2]> = s
                    .turns
                    .iter()
                    .map(|t| [t.user.clone(), t.assistant.clone()])
                    .collect();
                assert_eq!(
                    turns,
                    case.expect.turns.unwrap(),
                    "case {i} ({})",
                    case.kind
                );
                let want_regions = case.expect.regions.unwrap();
                assert_eq!(s.regions.len(), want_regions.len(), "case {i}");
                for (r, (k, m)) in s.regions.iter().zip(want_regions) {
                    assert_eq!(r.prompt_index, k, "case {i}");
                    let want_mask = if m < 0 {
                        GrayImage::from_pixel(case.width, case.height, image::Luma([1]))
                    } else {
                        masks.as_ref().unwrap()[m as usize].clone()
                    };
                    assert_eq!(r.mask, want_mask, "case {i}: mask of <Prompt{k}>");
                }
                paths_seen.insert(case.kind);
            }
            (got, want) => panic!(
                "case {i}: got {:?}, want reject {want:?}",
                got.map(|s| s.turns.len())
            ),
        }
    }
    assert!(
        ["a", "b", "c"].iter().all(|k| paths_seen.contains(*k)),
        "{paths_seen:?}"
    );
}
