//! `gar train loss` through the binary: the JSON report and the gradient file agree with the library,
//! and bad inputs fail with a message instead of a panic.

use std::path::{Path, PathBuf};
use std::process::Command;

use candle_core::Device;
use gar_train::conversation::{RegionMask, SampleSpec, Turn};
use gar_train::encode::{encode, training_processor, EncodeOptions};
use gar_train::forward::TrainModel;
use image::{GrayImage, Luma, Rgb, RgbImage};

/// A scratch directory removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> Self {
        let p = std::env::temp_dir().join(format!("gar-train-loss-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&p).unwrap();
        Self(p)
    }
    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn checkpoint() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/checkpoints/tiny-pe-g")
}

const USER: &str = "<image>\nThere are some objects I am curious about: <Prompt2>;\n<Prompt2>: [[crop 2]]Describe this masked region in detail.";
const ANSWER: &str = "A red square.";

/// A 40×30 image (one grid tile plus thumbnail keeps the test fast) and one mask.
fn inputs(dir: &Path) -> (RgbImage, GrayImage) {
    let image = RgbImage::from_fn(40, 30, |x, y| Rgb([(x * 6) as u8, (y * 8) as u8, 90]));
    let mask = GrayImage::from_fn(40, 30, |x, y| {
        Luma([if x > 5 && x < 20 && y > 4 && y < 25 {
            255
        } else {
            0
        }])
    });
    image.save(dir.join("img.png")).unwrap();
    mask.save(dir.join("m.png")).unwrap();
    let conv = serde_json::json!([[USER, ANSWER]]);
    std::fs::write(dir.join("conv.json"), conv.to_string()).unwrap();
    (image, mask)
}

fn gar(dir: &Path, conv: &str, extra: &[&str]) -> std::process::Output {
    let ck = checkpoint();
    let mut args = vec![
        "train",
        "loss",
        "--model",
        ck.to_str().unwrap(),
        "--image",
        "img.png",
        "--mask",
        "m.png",
        "--conversation",
        conv,
        "--json",
    ];
    args.extend_from_slice(extra);
    Command::new(env!("CARGO_BIN_EXE_gar"))
        .current_dir(dir)
        .args(&args)
        .output()
        .unwrap()
}

#[test]
fn loss_and_gradients_match_the_library() {
    let dir = TempDir::new("ok");
    let (image, mask) = inputs(dir.path());
    let out = gar(
        dir.path(),
        "conv.json",
        &["--prompts", "2", "--grads", "g.safetensors"],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    let report: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();

    let proc = training_processor(checkpoint(), EncodeOptions::default()).unwrap();
    let spec = SampleSpec {
        image,
        regions: vec![RegionMask {
            prompt_index: 2,
            mask,
        }],
        turns: vec![Turn {
            user: USER.into(),
            assistant: ANSWER.into(),
        }],
    };
    let sample = encode(&spec, &proc, EncodeOptions::default()).unwrap();
    let model = TrainModel::load(checkpoint(), &Device::Cpu).unwrap();
    let out = model.loss(&sample).unwrap();
    let loss = out.loss.to_scalar::<f32>().unwrap();
    assert_eq!(report["loss"].as_f64().unwrap() as f32, loss);
    assert_eq!(
        report["supervised_tokens"].as_u64().unwrap() as usize,
        out.supervised_tokens
    );

    let grads = model.gradients(&out.loss.backward().unwrap()).unwrap();
    let file =
        candle_core::safetensors::load(dir.path().join("g.safetensors"), &Device::Cpu).unwrap();
    assert_eq!(file.len(), grads.len());
    for (name, g) in grads {
        let d = (&file[&name] - &g)
            .unwrap()
            .abs()
            .unwrap()
            .flatten_all()
            .unwrap()
            .max(0)
            .unwrap();
        assert_eq!(d.to_scalar::<f32>().unwrap(), 0.0, "{name}");
    }
}

#[test]
fn bad_inputs_fail_cleanly() {
    let dir = TempDir::new("bad");
    inputs(dir.path());
    let small = GrayImage::new(8, 8);
    small.save(dir.path().join("small.png")).unwrap();
    std::fs::write(dir.path().join("bad.json"), "{\"not\": \"a list\"}").unwrap();
    let cases: [(&str, &[&str], &str); 4] = [
        (
            "conv.json",
            &["--prompts", "2,1", "--mask", "missing.png"],
            "missing.png",
        ),
        ("conv.json", &["--prompts", "7"], "out of range"),
        (
            "conv.json",
            &["--prompts", "2,1", "--mask", "small.png"],
            "8x8",
        ),
        ("bad.json", &["--prompts", "2"], "[user, assistant]"),
    ];
    for (conv, extra, needle) in cases {
        let out = gar(dir.path(), conv, extra);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{extra:?} should fail");
        assert!(!err.contains("panicked"), "{extra:?}: {err}");
        assert!(err.contains(needle), "{extra:?}: {err}");
    }
}
