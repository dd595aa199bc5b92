//! `gar segment` contract on the tiny SAM fixture: the mask PNG at the image's resolution (0/255),
//! and a last stdout JSON line with `score`, `scores`, `area` that agree with transformers' output
//! recorded in fixtures/sam/cases.json; bad inputs give one `error:` line and exit 3 or 4.

mod common;

use common::*;

fn s(v: &str) -> String {
    v.to_string()
}

fn tiny_sam() -> String {
    fixtures().join("sam/tiny").display().to_string()
}

fn out_path(name: &str) -> std::path::PathBuf {
    std::env::temp_dir().join(format!("gar-cli-segment-{}-{name}", std::process::id()))
}

#[test]
fn segment_writes_the_reference_mask_and_json() {
    let Some(data) = shared_data() else { return };
    let cases: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixtures().join("sam/cases.json")).unwrap())
            .unwrap();
    let case = cases["cases"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "demo3_box")
        .unwrap()
        .clone();
    let image = data.join("assets/demo_image_3.png");
    let out = out_path("mask.png");
    let overlay = out_path("overlay.png");
    let args = vec![
        s("segment"),
        s("--sam"),
        tiny_sam(),
        s("--image"),
        image.display().to_string(),
        s("--box"),
        s("100,80,500,400"),
        s("--out"),
        out.display().to_string(),
        s("--overlay"),
        overlay.display().to_string(),
        s("--rle"),
        s("--json"),
    ];
    let res = gar(&args);
    assert!(
        res.status.success(),
        "{}",
        String::from_utf8_lossy(&res.stderr)
    );
    let json = last_json(&res);
    let want: Vec<f64> = serde_json::from_value(case["scores"].clone()).unwrap();
    let got: Vec<f64> = serde_json::from_value(json["scores"].clone()).unwrap();
    for (a, b) in got.iter().zip(&want) {
        assert!((a - b).abs() < 1e-4, "scores {got:?} vs {want:?}");
    }
    let best = case["best"].as_u64().unwrap() as usize;
    assert!((json["score"].as_f64().unwrap() - want[best]).abs() < 1e-4);
    let area = json["area"].as_u64().unwrap() as f64;
    let ref_area = case["area"].as_u64().unwrap() as f64;
    assert!(
        (area - ref_area).abs() <= 0.01 * ref_area,
        "area {area} vs {ref_area}"
    );

    let mask = image::open(&out).unwrap().to_luma8();
    assert_eq!(mask.dimensions(), (640, 427));
    assert!(mask.pixels().all(|p| p.0[0] == 0 || p.0[0] == 255));
    let on = mask.pixels().filter(|p| p.0[0] == 255).count();
    assert_eq!(on as f64, area);
    let counts: Vec<u64> = serde_json::from_value(json["rle"]["counts"].clone()).unwrap();
    assert_eq!(counts.iter().sum::<u64>(), 640 * 427);
    assert_eq!(
        image::open(&overlay).unwrap().to_rgb8().dimensions(),
        (640, 427)
    );
    let _ = std::fs::remove_file(out);
    let _ = std::fs::remove_file(overlay);
}

#[test]
fn segment_errors_are_one_line_with_meaningful_codes() {
    let Some(data) = shared_data() else { return };
    let image = data.join("assets/demo_image_3.png").display().to_string();
    let out = out_path("err.png").display().to_string();
    let base = |extra: &[&str], sam: &str| {
        let mut a = vec![
            s("segment"),
            s("--sam"),
            s(sam),
            s("--image"),
            image.clone(),
            s("--out"),
            out.clone(),
        ];
        a.extend(extra.iter().map(|v| s(v)));
        a
    };
    let cases: Vec<(Vec<String>, i32, &str)> = vec![
        (base(&["--point", "700,10"], &tiny_sam()), 3, "outside"),
        (
            base(&["--point", "7a,10"], &tiny_sam()),
            3,
            "malformed point",
        ),
        (
            base(&["--point", "1,2,5"], &tiny_sam()),
            3,
            "malformed point",
        ),
        (base(&["--box", "1,2,3"], &tiny_sam()), 3, "malformed box"),
        (base(&["--box", "50,50,10,10"], &tiny_sam()), 3, "x1 < x2"),
        (base(&[], &tiny_sam()), 3, "at least one"),
        (
            base(&["--point", "1,1"], "/nonexistent/sam"),
            4,
            "/nonexistent/sam",
        ),
        (
            base(&["--point", "1,1"], "org/absent-sam"),
            4,
            "not in the hugging face cache",
        ),
    ];
    for (args, code, needle) in cases {
        let res = gar(&args);
        let stderr = String::from_utf8_lossy(&res.stderr);
        assert_eq!(res.status.code(), Some(code), "{args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
        let lines: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error:")).collect();
        assert_eq!(lines.len(), 1, "{stderr}");
        assert!(
            lines[0].to_lowercase().contains(needle),
            "{needle}: {}",
            lines[0]
        );
    }
    let bad = out_path("not-an-image.png");
    std::fs::write(&bad, b"nope").unwrap();
    let mut args = base(&["--point", "1,1"], &tiny_sam());
    args[4] = bad.display().to_string();
    let res = gar(&args);
    assert_eq!(res.status.code(), Some(3));
    let _ = std::fs::remove_file(bad);
}
