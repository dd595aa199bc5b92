//! Multi-turn prompts (`fixtures/chat`): the second turn re-renders the whole conversation, earlier
//! answer included, and must give the reference's text and sequence length.

mod common;

use gar_processor::{GarProcessor, Prompt, Request};

#[test]
fn two_turn_chats_match_reference() {
    let Some(data) = common::shared_data("two_turn_chats_match_reference") else {
        return;
    };
    let root = common::fixtures().join("chat");
    let mut n = 0;
    for entry in std::fs::read_dir(&root)
        .unwrap()
        .flatten()
        .filter(|e| e.path().is_dir())
    {
        let meta = common::read_json(&entry.path().join("meta.json"));
        let name = meta["case"].as_str().unwrap();
        assert_eq!(meta["bos_policy"], "double");
        let ckpt = common::fixtures()
            .join("checkpoints")
            .join(meta["checkpoint"].as_str().unwrap());
        let p = GarProcessor::from_dir(&ckpt).unwrap();
        let image = common::load_rgb(&data, meta["image"].as_str().unwrap());
        let regions: Vec<_> = meta["regions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| common::region(&data, r))
            .collect();
        let prompt = match meta["prompt_kind"].as_str().unwrap() {
            "single" => Prompt::Describe {
                instruction: meta["instruction"].as_str().unwrap().to_string(),
                slot: regions[0].0,
            },
            _ => Prompt::ask(meta["question"].as_str().unwrap()),
        };
        let turns = meta["turns"].as_array().unwrap();
        let mut req = Request::new(prompt);
        req.max_num_tiles = meta["max_num_tiles"].as_u64().map(|m| m as usize);
        let mut previous: Vec<u32> = Vec::new();
        for (i, turn) in turns.iter().enumerate() {
            if i > 0 {
                let answer = turns[i - 1]["text"].as_str().unwrap();
                req = req.follow_up(answer, turn["user"].as_str().unwrap());
            }
            let out = p.process_with_prompts(&image, &regions, &req).unwrap();
            assert_eq!(
                out.input_ids.len() as u64,
                turn["prompt_len"].as_u64().unwrap(),
                "{name} turn {i}: length"
            );
            if let Some(r) = turn["prompt_rendered"].as_str() {
                assert_eq!(out.prompt_text, r, "{name} turn {i}: rendered conversation");
            }
            // Turn 1's prompt plus its generated tokens, as the reference compares.
            if let Some(shared) = turn["shared_prefix_with_turn1"].as_u64() {
                let common_len = out
                    .input_ids
                    .iter()
                    .zip(&previous)
                    .take_while(|(a, b)| a == b)
                    .count();
                assert_eq!(
                    common_len as u64, shared,
                    "{name} turn {i}: prefix shared with turn 1"
                );
            }
            // The recorded answer decodes back to the recorded text.
            let toks: Vec<u32> = turn["tokens"]
                .as_array()
                .unwrap()
                .iter()
                .map(|t| t.as_u64().unwrap() as u32)
                .collect();
            assert_eq!(
                p.decode(&toks).unwrap(),
                turn["text"].as_str().unwrap(),
                "{name} turn {i}: decode"
            );
            previous = out.input_ids;
            previous.extend(&toks);
        }
        n += 1;
    }
    assert!(n >= 2);
}
