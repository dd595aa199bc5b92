//! `gar train` as two processes (RANK 0/1, WORLD_SIZE 2, rendezvous on 127.0.0.1) trains exactly
//! what one process trains when its step covers both ranks' samples (accumulation 2): the TCP
//! all-reduce averages the two ranks' gradients. Only rank 0 writes outputs. A missing rank or
//! bad launch variables are clear errors.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap()
}

/// Tiny model in f32 on the 5-row Arrow fixture; 4 steps cross an epoch boundary (3 per rank).
/// The constant rate keeps the schedule out of it: it counts micro-iterations, which differ
/// between accumulation 1 and 2.
fn write_config(dir: &Path, out: &str, accumulation: usize) -> PathBuf {
    let r = repo();
    let text = format!(
        "out_dir = \"{out}\"\nseed = 5\n[model]\nkind = \"tiny\"\ndtype = \"f32\"\ndir = \"{}\"\n\
         [data]\narrow = [\"{}\"]\n[optim]\nlr = 0.05\nschedule = \"constant\"\n\
         [loop]\nsteps = 4\nmicro_batch = 1\naccumulation = {accumulation}\nsave_every = 2\n",
        r.join("fixtures/checkpoints/tiny-pe-l").display(),
        r.join("fixtures/train/arrow/dataset").display()
    );
    let p = dir.join(format!("{out}.toml"));
    std::fs::write(&p, text).unwrap();
    p
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn launch(config: &Path, env: &[(&str, String)]) -> Child {
    let mut c = Command::new(env!("CARGO_BIN_EXE_gar"));
    c.args(["train", "--config"])
        .arg(config)
        .env_remove("WORLD_SIZE")
        .env_remove("RANK")
        .env_remove("LOCAL_RANK")
        .env_remove("GAR_ALLREDUCE")
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    for (k, v) in env {
        c.env(k, v);
    }
    c.spawn().unwrap()
}

fn finish(child: Child) -> (bool, String) {
    let out = child.wait_with_output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

fn dist_env(rank: usize, world: usize, port: u16) -> Vec<(&'static str, String)> {
    vec![
        ("RANK", rank.to_string()),
        ("WORLD_SIZE", world.to_string()),
        ("MASTER_ADDR", "127.0.0.1".into()),
        ("MASTER_PORT", port.to_string()),
        ("GAR_DIST_TIMEOUT", "60".into()),
    ]
}

fn weights(path: &Path) -> Vec<(String, Vec<f32>)> {
    let bytes = std::fs::read(path).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut out: Vec<(String, Vec<f32>)> = st
        .tensors()
        .into_iter()
        .map(|(name, view)| {
            assert_eq!(view.dtype(), safetensors::Dtype::F32, "{name}");
            let v = view
                .data()
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect();
            (name, v)
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

#[test]
fn two_processes_equal_one_process_with_both_ranks_samples() {
    let dir = std::env::temp_dir().join(format!("gar-train-dist-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();

    let dist = write_config(&dir, "dist", 1);
    let port = free_port();
    // Rank 1 first: it must wait for rank 0 to listen.
    let r1 = launch(&dist, &dist_env(1, 2, port));
    let r0 = launch(&dist, &dist_env(0, 2, port));
    let (ok0, err0) = finish(r0);
    let (ok1, err1) = finish(r1);
    assert!(ok0 && ok1, "rank 0:\n{err0}\nrank 1:\n{err1}");
    assert!(err1.contains("rank 1 trained 4 steps"), "{err1}");

    let single = write_config(&dir, "single", 2);
    let (ok, err) = finish(launch(&single, &[]));
    assert!(ok, "{err}");

    let got = weights(&dir.join("dist/export/model.safetensors"));
    let want = weights(&dir.join("single/export/model.safetensors"));
    assert_eq!(
        got.iter().map(|w| &w.0).collect::<Vec<_>>(),
        want.iter().map(|w| &w.0).collect::<Vec<_>>()
    );
    // The same tolerance as the in-process check (training_loop.rs): the two differ only in the
    // summation order of the mean.
    let mut worst = 0f32;
    for ((_, a), (_, b)) in got.iter().zip(&want) {
        for (a, b) in a.iter().zip(b) {
            worst = worst.max((a - b).abs() / b.abs().max(1e-3));
        }
    }
    eprintln!("two ranks vs one: max relative weight difference {worst:e}");
    assert!(worst < 1e-4, "max relative difference {worst}");
    // The weights moved, so the comparison is not between two untouched initialisations.
    let init = weights(&dir.join("dist/checkpoint-2/model.safetensors"));
    assert!(init.iter().zip(&got).any(|(a, b)| a.1 != b.1));

    // Rank 0 alone wrote the log, with one line per step holding the loss of both ranks.
    let log = std::fs::read_to_string(dir.join("dist/log.jsonl")).unwrap();
    let single_log = std::fs::read_to_string(dir.join("single/log.jsonl")).unwrap();
    assert_eq!(log.lines().count(), 4);
    for (a, b) in log.lines().zip(single_log.lines()) {
        let loss = |l: &str| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["loss"]
                .as_f64()
                .unwrap()
        };
        assert!((loss(a) - loss(b)).abs() < 1e-4 * loss(b).abs(), "{a}\n{b}");
    }

    // Resuming with an out_dir that only rank 0 sees (rank 1 finds no checkpoint and would start
    // from step 0): the ranks compare their steps and both stop with an error.
    let elsewhere = write_config(&dir, "elsewhere", 1);
    let port = free_port();
    let r1 = launch(&elsewhere, &dist_env(1, 2, port));
    let r0 = launch(&dist, &dist_env(0, 2, port));
    let (ok0, err0) = finish(r0);
    let (ok1, err1) = finish(r1);
    assert!(!ok0 && !ok1, "rank 0:\n{err0}\nrank 1:\n{err1}");
    assert!(
        err1.contains("resumed from different checkpoints"),
        "{err1}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_missing_rank_or_bad_launch_variables_are_errors() {
    let dir = std::env::temp_dir().join(format!("gar-train-dist-bad-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let config = write_config(&dir, "run", 1);

    let mut env = dist_env(0, 2, free_port());
    env.push(("GAR_DIST_TIMEOUT", "1".into()));
    let (ok, err) = finish(launch(&config, &env));
    assert!(!ok && err.contains("rank(s) 1 did not connect"), "{err}");

    let (ok, err) = finish(launch(&config, &dist_env(2, 2, free_port())));
    assert!(!ok && err.contains("RANK=2 is out of range"), "{err}");

    let mut env = dist_env(1, 2, 0);
    env.retain(|(k, _)| *k != "MASTER_PORT");
    let (ok, err) = finish(launch(&config, &env));
    assert!(!ok && err.contains("MASTER_PORT is not set"), "{err}");

    let env = [("GAR_ALLREDUCE", "nccl".to_string())];
    let (ok, err) = finish(launch(&config, &env));
    assert!(
        !ok && err.contains("needs [model] device = \"cuda\""),
        "{err}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
