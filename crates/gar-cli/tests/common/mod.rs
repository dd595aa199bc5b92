//! Helpers shared by the CLI's end-to-end tests: paths, running the binary, fixture metadata.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// `../shared/data` beside the checkout, or `None` (tests then skip with a message).
pub fn shared_data() -> Option<PathBuf> {
    let dir = workspace_root().join("../shared/data");
    if dir.is_dir() {
        Some(dir)
    } else {
        eprintln!(
            "SKIP: ../shared/data is absent (benchmark and demo data are not in the repository)"
        );
        None
    }
}

pub fn fixtures() -> PathBuf {
    workspace_root().join("fixtures")
}

/// The case folders (those with a meta.json) of `fixtures/<sub>`, sorted.
pub fn fixture_cases(sub: &str) -> Vec<PathBuf> {
    let mut cases: Vec<PathBuf> = std::fs::read_dir(fixtures().join(sub))
        .unwrap_or_else(|e| panic!("fixtures/{sub}: {e}"))
        .map(|e| e.expect("entry").path())
        .filter(|p| p.join("meta.json").is_file())
        .collect();
    cases.sort();
    cases
}

pub fn gar(args: &[String]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_gar"))
        .args(args)
        .env("HF_HUB_OFFLINE", "1")
        .output()
        .expect("the gar binary runs")
}

pub fn gar_with_stdin(args: &[String], stdin: &str) -> Output {
    use std::io::Write;
    use std::process::Stdio;
    let mut child = Command::new(env!("CARGO_BIN_EXE_gar"))
        .args(args)
        .env("HF_HUB_OFFLINE", "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the gar binary runs");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(stdin.as_bytes())
        .expect("write stdin");
    child.wait_with_output().expect("gar finishes")
}

/// The last stdout line parsed as JSON (the command contract's output).
pub fn last_json(out: &Output) -> serde_json::Value {
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or_else(|| {
            panic!(
                "no stdout; stderr: {}",
                String::from_utf8_lossy(&out.stderr)
            )
        });
    serde_json::from_str(line).unwrap_or_else(|e| panic!("last line is not JSON ({e}): {line}"))
}

pub fn json_tokens(v: &serde_json::Value) -> Vec<u64> {
    v.as_array()
        .expect("a token list")
        .iter()
        .map(|t| t.as_u64().expect("token id"))
        .collect()
}

pub fn read_meta(case: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(case.join("meta.json")).expect("meta.json");
    serde_json::from_str(&text).expect("meta.json is JSON")
}

/// Command-line region flags for the regions of a fixture's meta.json, in prompt order.
pub fn region_flags(meta: &serde_json::Value, data: &Path) -> Vec<String> {
    let mut regions: Vec<&serde_json::Value> = meta["regions"]
        .as_array()
        .expect("regions")
        .iter()
        .collect();
    regions.sort_by_key(|r| prompt_of(r));
    let mut args = Vec::new();
    for r in regions {
        if let Some(png) = r.get("mask_png").and_then(|v| v.as_str()) {
            args.push("--mask".into());
            args.push(data.join(png).display().to_string());
        } else if let Some(rle) = r.get("rle") {
            args.push("--rle".into());
            args.push(serde_json::to_string(rle).expect("rle json"));
        } else if let Some(b) = r.get("box").and_then(|v| v.as_array()) {
            let nums: Vec<String> = b.iter().map(|n| n.to_string()).collect();
            args.push("--box".into());
            args.push(nums.join(","));
        } else {
            panic!("unsupported region in fixture: {r}");
        }
    }
    args
}

pub fn prompt_of(region: &serde_json::Value) -> u64 {
    match &region["prompt"] {
        serde_json::Value::Number(n) => n.as_u64().expect("prompt index"),
        serde_json::Value::String(s) => s.parse().expect("prompt index"),
        other => panic!("bad prompt index {other}"),
    }
}

/// The reference's generated tokens up to (not including) the end token.
pub fn expected_tokens(meta: &serde_json::Value) -> Vec<u64> {
    let all = json_tokens(&meta["generated_tokens"]);
    match meta["eot_index"].as_u64() {
        Some(i) => all[..i as usize].to_vec(),
        None => all,
    }
}

/// `gar serve` on a free port; killed on drop.
pub struct Server {
    child: Child,
    pub url: String,
}

impl Server {
    pub fn start(model: &str) -> Server {
        let mut child = Command::new(env!("CARGO_BIN_EXE_gar"))
            .args(["serve", "--model", model, "--port", "0", "--max-tiles", "1"])
            .env("HF_HUB_OFFLINE", "1")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("gar serve starts");
        let stdout = child.stdout.take().unwrap();
        let mut url = None;
        for line in BufReader::new(stdout).lines() {
            let line = line.unwrap();
            if let Some(u) = line.strip_prefix("gar serve: listening on ") {
                url = Some(u.trim().to_string());
                break;
            }
        }
        Server {
            child,
            url: url.expect("gar serve printed its address"),
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `&str` → `String`, for building argument lists.
pub fn s(v: &str) -> String {
    v.to_string()
}

/// The tiny checkpoint most end-to-end tests run.
pub fn tiny_pe_l() -> String {
    fixtures()
        .join("checkpoints/tiny-pe-l")
        .display()
        .to_string()
}

/// A temp path unique to this test process (`gar-cli-<tag>-<pid>-<name>`), removed if left over.
pub fn fresh_tmp(tag: &str, name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("gar-cli-{tag}-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// Asserts the command succeeded (showing its stderr otherwise) and returns its last JSON line.
pub fn ok(out: &Output) -> serde_json::Value {
    assert!(
        out.status.success(),
        "exit {:?}: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stderr)
    );
    last_json(out)
}
