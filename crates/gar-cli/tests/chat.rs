//! `gar chat`: two turns on the tiny checkpoints; the second turn is answered from the KV cache
//! (only the new tokens are prefilled) and must still equal the reference, which re-runs the whole
//! re-rendered conversation from scratch (fixtures/chat).

mod common;

use common::*;

#[test]
fn second_turn_reuses_the_cache_and_matches_the_reference() {
    let Some(data) = shared_data() else { return };
    let cases = fixture_cases("chat");
    assert!(!cases.is_empty(), "no chat fixtures");
    for case in cases {
        let meta = read_meta(&case);
        let ckpt = fixtures()
            .join("checkpoints")
            .join(meta["checkpoint"].as_str().expect("checkpoint"));
        let mut args: Vec<String> = vec![
            "chat".into(),
            "--model".into(),
            ckpt.display().to_string(),
            "--image".into(),
            data.join(meta["image"].as_str().expect("image"))
                .display()
                .to_string(),
            "--max-tiles".into(),
            meta["max_num_tiles"].to_string(),
            "--max-new-tokens".into(),
            meta["n_new_tokens"].to_string(),
            "--json".into(),
        ];
        args.extend(region_flags(&meta, &data));
        let turns = meta["turns"].as_array().expect("turns");
        let stdin: String = turns
            .iter()
            .map(|t| format!("{}\n", t["user"].as_str().expect("user text")))
            .collect();
        let out = gar_with_stdin(&args, &stdin);
        assert!(
            out.status.success(),
            "{}: {}",
            case.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        let stdout = String::from_utf8_lossy(&out.stdout);
        let answers: Vec<serde_json::Value> = stdout
            .lines()
            .filter(|l| l.starts_with('{'))
            .map(|l| serde_json::from_str(l).expect("JSON answer"))
            .collect();
        assert_eq!(
            answers.len(),
            turns.len(),
            "{}: one answer per turn",
            case.display()
        );
        for (i, (answer, turn)) in answers.iter().zip(turns).enumerate() {
            assert_eq!(
                json_tokens(&answer["tokens"]),
                json_tokens(&turn["tokens"]),
                "{} turn {i}: tokens",
                case.display()
            );
            assert_eq!(
                answer["text"],
                turn["text"],
                "{} turn {i}: text",
                case.display()
            );
            assert_eq!(
                answer["prompt_tokens"],
                turn["prompt_len"],
                "{} turn {i}",
                case.display()
            );
        }
        // Turn 2 prefilled only what was not already cached: the shared prefix came from the cache.
        let first = &turns[0];
        let generated = json_tokens(&first["tokens"]).len() as u64;
        let hit_max = generated == meta["n_new_tokens"].as_u64().expect("n_new_tokens");
        let fed = if hit_max { generated - 1 } else { generated };
        let cached_len = first["prompt_len"].as_u64().expect("len") + fed;
        let shared = turns[1]["shared_prefix_with_turn1"]
            .as_u64()
            .expect("shared");
        assert_eq!(answers[0]["cached_tokens"], 0);
        assert_eq!(
            answers[1]["cached_tokens"].as_u64(),
            Some(shared.min(cached_len)),
            "{}: turn 2 should reuse the cached prefix",
            case.display()
        );
        assert!(shared > 1000, "the shared prefix covers the image tokens");
    }
}
