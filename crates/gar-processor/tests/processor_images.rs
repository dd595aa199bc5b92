//! Processor-only parity on real images (`fixtures/processor`): the tile grid on ~12k sizes, and for 11
//! images × M ∈ {8, 16, 36} the whole uint8 tile stack (sha256 + sampled rows), the label maps and the
//! per-region boxes.

mod common;

use gar_processor::{select_grid, GarProcessor, Prompt, Request};

#[test]
fn tiling_matches_reference_on_all_sizes() {
    let v = common::read_json(&common::fixtures().join("processor/tiling.json"));
    let cases = v["cases"].as_array().unwrap();
    assert!(cases.len() > 10_000);
    let mut bad = Vec::new();
    for c in cases {
        let n: Vec<u64> = c
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_u64().unwrap())
            .collect();
        let got = select_grid(n[0] as u32, n[1] as u32, 448, n[2] as usize);
        if got != (n[3] as u32, n[4] as u32) {
            bad.push(format!(
                "{}x{} M={}: got {got:?}, want ({}, {})",
                n[0], n[1], n[2], n[3], n[4]
            ));
        }
    }
    println!(
        "tiling: {} / {} grids identical",
        cases.len() - bad.len(),
        cases.len()
    );
    assert!(
        bad.is_empty(),
        "{} mismatches, e.g. {:?}",
        bad.len(),
        &bad[..bad.len().min(10)]
    );
}

#[test]
fn image_cases_match_reference() {
    let Some(data) = common::shared_data("image_cases_match_reference") else {
        return;
    };
    let root = common::fixtures().join("processor/images");
    let mut cases: Vec<_> = std::fs::read_dir(&root)
        .unwrap()
        .flatten()
        .filter(|e| e.path().is_dir())
        .collect();
    cases.sort_by_key(|e| e.file_name());
    assert!(
        cases.len() >= 30,
        "expected the processor image fixtures in {}",
        root.display()
    );
    // prompt_numbers = 5 as in these fixtures; the grid comes from each case's max_num_tiles.
    let p = GarProcessor::from_dir(common::fixtures().join("checkpoints/tiny-pe-l")).unwrap();
    let (mut total, mut equal, mut label_total, mut label_equal) = (0usize, 0usize, 0usize, 0usize);
    let mut failures = Vec::new();
    for entry in &cases {
        let dir = entry.path();
        let meta = common::read_json(&dir.join("meta.json"));
        let name = meta["case"].as_str().unwrap().to_string();
        let image = common::load_rgb(&data, meta["image"].as_str().unwrap());
        let size = common::f64s(&meta["image_size"]);
        assert_eq!(
            (image.width() as f64, image.height() as f64),
            (size[0], size[1]),
            "{name}: image size"
        );
        let regions: Vec<_> = meta["regions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| common::region(&data, r))
            .collect();
        // No text in these fixtures: a question naming every region keeps the request valid.
        let question: String = regions
            .iter()
            .map(|(k, _)| format!("<Prompt{k}> "))
            .collect();
        let mut req = Request::new(Prompt::ask(question + "?"));
        req.max_num_tiles = meta["max_num_tiles"].as_u64().map(|m| m as usize);
        let out = p.process_with_prompts(&image, &regions, &req).unwrap();

        let grid = common::f64s(&meta["aspect_ratio"]);
        assert_eq!(
            (out.aspect_ratio.0 as f64, out.aspect_ratio.1 as f64),
            (grid[0], grid[1]),
            "{name}: grid"
        );
        assert_eq!(
            out.num_tiles as u64,
            meta["num_tiles"].as_u64().unwrap(),
            "{name}: T"
        );

        let stacked = common::stack_hwc(&out.tiles_u8, 3, out.tile_size);
        let row_bytes = out.tile_size * 3;
        let stride = meta["row_stride"].as_u64().unwrap() as usize;
        let (_, _, rows) = common::png(&dir.join("rows.png"));
        let sampled: Vec<u8> = stacked
            .chunks_exact(row_bytes)
            .step_by(stride)
            .flatten()
            .copied()
            .collect();
        total += rows.len();
        equal += sampled.iter().zip(&rows).filter(|(a, b)| a == b).count();
        if common::sha256_hex(&stacked) != meta["tiles_u8_sha256"].as_str().unwrap() {
            failures.push(format!("{name}: tile stack sha256 differs"));
        }

        if !regions.is_empty() {
            let (_, _, labels) = common::png(&dir.join("labels.png"));
            label_total += labels.len();
            label_equal += out
                .mask_labels
                .iter()
                .zip(&labels)
                .filter(|(a, b)| a == b)
                .count();
            if common::sha256_hex(&out.mask_labels) != meta["labels_u8_sha256"].as_str().unwrap() {
                failures.push(format!("{name}: label stack sha256 differs"));
            }
            let boxes = common::exact_numbers(&dir.join("meta.json"), "bboxes");
            let got: Vec<f64> = out.bboxes().concat();
            if got != boxes {
                failures.push(format!("{name}: boxes {got:?} != {boxes:?}"));
            }
        }
    }
    println!(
        "{} image cases: sampled tile bytes {equal} / {total} equal ({:.4} %), label bytes {label_equal} / {label_total}",
        cases.len(),
        100.0 * equal as f64 / total as f64
    );
    assert!(failures.is_empty(), "{failures:#?}");
    assert_eq!(equal, total);
    assert_eq!(label_equal, label_total);
}
