//! Invalid input gives a clear error (never a panic), odd-but-usable input a warning.

mod common;

use gar_processor::{
    BinaryMask, Bos, CocoRle, GarProcessor, MaskResample, ProcessorError, ProcessorOptions, Prompt,
    Region, Request, RgbImage, RleCounts, Warning,
};

fn processor(opts: ProcessorOptions) -> GarProcessor {
    GarProcessor::from_dir_with_options(common::fixtures().join("checkpoints/tiny-pe-l"), opts)
        .unwrap()
}

fn image() -> RgbImage {
    let data = (0..40 * 30)
        .flat_map(|i| [(i % 40 * 6) as u8, (i / 40 * 8) as u8, 90])
        .collect();
    RgbImage::new(40, 30, data).unwrap()
}

/// A rectangle mask on the 40×30 test image.
fn rect(x0: usize, y0: usize, x1: usize, y1: usize) -> Region {
    let data = (0..40 * 30)
        .map(|i| (x0..x1).contains(&(i % 40)) && (y0..y1).contains(&(i / 40)))
        .collect();
    Region::Mask(BinaryMask::new(40, 30, data).unwrap())
}

#[test]
fn empty_region_is_rejected() {
    let p = processor(ProcessorOptions::default());
    let err = p
        .process(&image(), &[rect(5, 5, 5, 9)], &Request::describe())
        .unwrap_err();
    assert!(
        matches!(err, ProcessorError::EmptyRegion { index: 0 }),
        "{err}"
    );
}

#[test]
fn too_many_regions_names_the_limit() {
    let p = processor(ProcessorOptions::default());
    let regions: Vec<Region> = (0..6).map(|i| rect(i * 5, 0, i * 5 + 3, 3)).collect();
    let err = p
        .process(&image(), &regions, &Request::ask("<Prompt0>?"))
        .unwrap_err();
    assert!(
        matches!(err, ProcessorError::TooManyRegions { given: 6, limit: 5 }),
        "{err}"
    );
    assert!(err.to_string().contains("at most 5"), "{err}");
    // tiny-pe-g has prompt_numbers = 3.
    let g = GarProcessor::from_dir(common::fixtures().join("checkpoints/tiny-pe-g")).unwrap();
    let err = g
        .process(&image(), &regions[..4], &Request::ask("<Prompt0>?"))
        .unwrap_err();
    assert!(
        matches!(err, ProcessorError::TooManyRegions { given: 4, limit: 3 }),
        "{err}"
    );
}

#[test]
fn unknown_prompt_mention_is_rejected() {
    let p = processor(ProcessorOptions::default());
    let regions = [rect(0, 0, 5, 5), rect(10, 10, 15, 15)];
    let err = p
        .process(
            &image(),
            &regions,
            &Request::ask("Is <Prompt0> near <Prompt3>?"),
        )
        .unwrap_err();
    assert!(
        matches!(
            err,
            ProcessorError::UnknownPrompt {
                prompt: 3,
                regions: 2
            }
        ),
        "{err}"
    );
    let req = Request::ask("Is <Prompt0> near <Prompt1>?").follow_up("Yes.", "And <Prompt2>?");
    assert!(matches!(
        p.process(&image(), &regions, &req),
        Err(ProcessorError::UnknownPrompt { prompt: 2, .. })
    ));
    // Describe puts its region in slot 1: other slots do not exist.
    let err = p.process(
        &image(),
        &regions[..1],
        &Request::describe().follow_up("A cat.", "Is <Prompt0> big?"),
    );
    assert!(matches!(
        err,
        Err(ProcessorError::UnknownPrompt { prompt: 0, .. })
    ));
}

#[test]
fn request_shape_errors() {
    let p = processor(ProcessorOptions::default());
    let two = [rect(0, 0, 5, 5), rect(10, 10, 15, 15)];
    assert!(matches!(
        p.process(&image(), &two, &Request::describe()),
        Err(ProcessorError::InvalidRequest(_))
    ));
    let slot9 = Request::new(Prompt::Describe {
        instruction: "Describe.".into(),
        slot: 9,
    });
    assert!(matches!(
        p.process(&image(), &two[..1], &slot9),
        Err(ProcessorError::SlotOutOfRange { slot: 9, limit: 5 })
    ));
    let sneaky = Request::ask("<Prompt0> <|image|>");
    assert!(matches!(
        p.process(&image(), &two[..1], &sneaky),
        Err(ProcessorError::InvalidRequest(_))
    ));
    let dup = [(1, two[0].clone()), (1, two[1].clone())];
    assert!(matches!(
        p.process_with_prompts(&image(), &dup, &Request::ask("<Prompt1>")),
        Err(ProcessorError::InvalidRequest(_))
    ));
    let bad_box = Region::Box {
        x0: 5.0,
        y0: 5.0,
        x1: 2.0,
        y1: 9.0,
    };
    assert!(matches!(
        p.process(&image(), &[bad_box], &Request::describe()),
        Err(ProcessorError::InvalidRegion { index: 0, .. })
    ));
    let overrun = Region::Rle(CocoRle {
        size: [30, 40],
        counts: RleCounts::Uncompressed(vec![1000, 500]),
    });
    assert!(matches!(
        p.process(&image(), &[overrun], &Request::describe()),
        Err(ProcessorError::InvalidRegion { index: 0, .. })
    ));
}

#[test]
fn mismatched_mask_is_resized_with_a_warning() {
    let p = processor(ProcessorOptions::default());
    // Same rectangle drawn at half resolution.
    let data = (0..20 * 15)
        .map(|i| (5..10).contains(&(i % 20)) && (2..6).contains(&(i / 20)))
        .collect();
    let small = Region::Mask(BinaryMask::new(20, 15, data).unwrap());
    let out = p.process(&image(), &[small], &Request::describe()).unwrap();
    assert_eq!(
        out.warnings,
        vec![Warning::MaskResized {
            region: 0,
            from: (20, 15),
            to: (40, 30)
        }]
    );
    let full = p
        .process(&image(), &[rect(10, 4, 20, 12)], &Request::describe())
        .unwrap();
    assert_eq!(out.bboxes(), full.bboxes());
    assert_eq!(out.mask_labels, full.mask_labels);
}

#[test]
fn overlaps_keep_the_lower_prompt_and_each_region_has_its_own_box() {
    let p = processor(ProcessorOptions::default());
    let regions = [rect(0, 0, 20, 20), rect(10, 10, 40, 30)];
    let out = p
        .process(&image(), &regions, &Request::ask("<Prompt0> or <Prompt1>?"))
        .unwrap();
    assert_eq!(
        out.warnings,
        vec![Warning::RegionsOverlap {
            region: 1,
            pixels: 100
        }]
    );
    assert_eq!(
        out.bboxes(),
        vec![
            [0.0, 0.0, 19.0 / 40.0, 19.0 / 30.0],
            [10.0 / 40.0, 10.0 / 30.0, 39.0 / 40.0, 29.0 / 30.0]
        ]
    );
    assert_eq!(out.crop_token_ids(), vec![404, 405]);
    let labels: std::collections::BTreeSet<u8> = out.mask_labels.iter().copied().collect();
    assert_eq!(labels, [0, 1, 5].into_iter().collect());
    // Region mentioned nowhere: still placed, with a warning.
    let out = p
        .process(&image(), &regions, &Request::ask("What is <Prompt1>?"))
        .unwrap();
    assert!(out.warnings.contains(&Warning::RegionNotMentioned {
        region: 0,
        prompt: 0
    }));
}

#[test]
fn switches_bos_and_mask_resampling() {
    let double = processor(ProcessorOptions::default());
    let single = processor(ProcessorOptions {
        bos: Bos::Single,
        ..ProcessorOptions::default()
    });
    let r = [rect(3, 3, 17, 19)];
    let a = double.process(&image(), &r, &Request::describe()).unwrap();
    let b = single.process(&image(), &r, &Request::describe()).unwrap();
    assert_eq!(&a.input_ids[..2], &[400, 400]);
    assert_eq!(b.input_ids[0], 400);
    assert_ne!(b.input_ids[1], 400);
    assert_eq!(&a.input_ids[1..], b.input_ids.as_slice());
    let bicubic = processor(ProcessorOptions {
        mask_resample: MaskResample::Bicubic,
        ..ProcessorOptions::default()
    });
    let c = bicubic.process(&image(), &r, &Request::describe()).unwrap();
    assert!(c.mask_labels.iter().all(|&v| v <= 5));
    assert_ne!(
        c.mask_labels, a.mask_labels,
        "bicubic blurs the label edges"
    );
    assert_eq!(c.tiles_u8, a.tiles_u8);
}

#[test]
fn checkpoint_with_inconsistent_crop_tokens_is_rejected() {
    let src = common::fixtures().join("checkpoints/tiny-pe-l");
    let dir = std::env::temp_dir().join(format!("gar-processor-badckpt-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for f in [
        "tokenizer.json",
        "tokenizer_config.json",
        "preprocessor_config.json",
        "processor_config.json",
    ] {
        std::fs::copy(src.join(f), dir.join(f)).unwrap();
    }
    let mut cfg = common::read_json(&src.join("config.json"));
    cfg["crop_tokens_ids"] = serde_json::json!([404, 405, 406, 410, 411]);
    std::fs::write(dir.join("config.json"), cfg.to_string()).unwrap();
    let err = GarProcessor::from_dir(&dir).unwrap_err();
    std::fs::remove_dir_all(&dir).ok();
    assert!(
        matches!(
            err,
            ProcessorError::CropTokenMismatch {
                index: 2,
                config_id: 406,
                tokenizer_id: 408,
                ..
            }
        ),
        "{err}"
    );
    assert!(
        err.to_string().contains("<|reserved_special_token_4|>"),
        "{err}"
    );
}
