//! SAM prompts on `gar describe` / `gar inspect`: `--point`, `--box-sam` + `--point` and
//! `--scribble` must give exactly what the two-step route gives (`gar segment` → mask.png →
//! `--mask mask.png`): the same generated tokens and byte-identical processor inputs.

mod common;

use common::*;

fn s(v: &str) -> String {
    v.to_string()
}

fn tmp(name: &str) -> std::path::PathBuf {
    std::env::temp_dir().join(format!("gar-cli-samprompt-{}-{name}", std::process::id()))
}

fn ok(out: &std::process::Output) {
    assert!(
        out.status.success(),
        "exit {:?}: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Runs both routes for one SAM prompt (`segment_flags` for `gar segment`, `region_flags` for
/// describe/inspect) and compares them.
fn same_as_two_step(name: &str, segment_flags: &[&str], region_flags: &[&str]) {
    let Some(data) = shared_data() else { return };
    let image = data.join("assets/demo_image_3.png").display().to_string();
    let sam = fixtures().join("sam/tiny").display().to_string();
    let model = fixtures()
        .join("checkpoints/tiny-pe-l")
        .display()
        .to_string();
    let mask = tmp(&format!("{name}.png"));

    let mut seg = vec![
        s("segment"),
        s("--sam"),
        sam.clone(),
        s("--image"),
        image.clone(),
    ];
    seg.extend(segment_flags.iter().map(|f| s(f)));
    seg.extend([s("--out"), mask.display().to_string(), s("--json")]);
    let seg_out = gar(&seg);
    ok(&seg_out);
    let seg_json = last_json(&seg_out);

    let base = |cmd: &str| {
        vec![
            s(cmd),
            s("--model"),
            model.clone(),
            s("--image"),
            image.clone(),
            s("--max-tiles"),
            s("1"),
        ]
    };
    let with_sam = |mut args: Vec<String>| {
        args.extend([s("--sam"), sam.clone()]);
        args.extend(region_flags.iter().map(|f| s(f)));
        args
    };
    let with_mask = |mut args: Vec<String>| {
        args.extend([s("--mask"), mask.display().to_string()]);
        args
    };

    let gen = [s("--max-new-tokens"), s("6"), s("--json")];
    let mut a = with_sam(base("describe"));
    a.extend(gen.clone());
    let mut b = with_mask(base("describe"));
    b.extend(gen);
    let (a, b) = (gar(&a), gar(&b));
    ok(&a);
    ok(&b);
    let (ja, jb) = (last_json(&a), last_json(&b));
    assert_eq!(
        json_tokens(&ja["tokens"]),
        json_tokens(&jb["tokens"]),
        "{name}"
    );
    assert_eq!(
        ja["sam"]["score"], seg_json["score"],
        "{name}: SAM's choice"
    );
    assert_eq!(ja["sam"]["area"], seg_json["area"], "{name}");
    assert!(jb.get("sam").is_none());

    // The processor inputs (mask labels included) are byte-identical, a stronger check than the
    // tiny checkpoint's few tokens.
    let (ia, ib) = (tmp(&format!("{name}-a.st")), tmp(&format!("{name}-b.st")));
    let mut a = with_sam(base("inspect"));
    a.extend([s("--out"), ia.display().to_string()]);
    let mut b = with_mask(base("inspect"));
    b.extend([s("--out"), ib.display().to_string()]);
    ok(&gar(&a));
    ok(&gar(&b));
    assert!(
        std::fs::read(&ia).unwrap() == std::fs::read(&ib).unwrap(),
        "{name}: processor inputs differ"
    );
    for p in [mask, ia, ib] {
        let _ = std::fs::remove_file(p);
    }
}

#[test]
fn point_prompt_equals_segment_then_mask() {
    same_as_two_step("point", &["--point", "300,200"], &["--point", "300,200"]);
}

#[test]
fn box_and_point_prompt_equals_segment_then_mask() {
    same_as_two_step(
        "box_point",
        &["--box", "100,80,500,400", "--point", "320,260"],
        &["--box-sam", "100,80,500,400", "--point", "320,260"],
    );
}

#[test]
fn scribble_prompt_equals_segment_then_mask() {
    same_as_two_step(
        "scribble",
        &["--scribble", "120,100;300,220;480,380"],
        &["--scribble", "120,100;300,220;480,380"],
    );
}

#[test]
fn a_point_outside_the_image_is_an_input_error() {
    let Some(data) = shared_data() else { return };
    let out = gar(&[
        s("describe"),
        s("--model"),
        fixtures()
            .join("checkpoints/tiny-pe-l")
            .display()
            .to_string(),
        // A SAM directory that does not exist: the click is rejected before anything loads.
        s("--sam"),
        s("/nonexistent/sam"),
        s("--image"),
        data.join("assets/demo_image_3.png").display().to_string(),
        s("--point"),
        s("3000,200"),
    ]);
    assert_eq!(out.status.code(), Some(3));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("outside the 640×427 image"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
}
