//! `gar ask`: a question about one or several regions, which are `<Prompt0>`, `<Prompt1>`, … in
//! the order given (the reference's multi-region layout, gar-spec §7.3).

use anyhow::{bail, Result};
use clap::{ArgMatches, Args};
use gar_processor::Request;

use super::common::{self, GenerateArgs, InputArgs, ModelArgs};
use crate::exit::{Failure, Kind};

/// GAR-Bench's closing line for multiple-choice questions.
pub const CHOICE_SUFFIX: &str = "Answer with the correct option's letter directly.";

#[derive(Args, Debug)]
pub struct AskArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    #[command(flatten)]
    pub input: InputArgs,
    /// An answer option ("A. ..." or plain text, lettered in order). Repeat for each option:
    /// the question becomes GAR-Bench's multiple-choice format.
    #[arg(long)]
    pub choice: Vec<String>,
    #[command(flatten)]
    pub generate: GenerateArgs,
    /// Print the answer as one JSON object (text, tokens, prompt_tokens, timings).
    #[arg(long)]
    pub json: bool,
    /// Draw the regions on the image into this PNG.
    #[arg(long)]
    pub overlay: Option<std::path::PathBuf>,
    /// The question, mentioning regions as <Prompt0>, <Prompt1>, …
    #[arg(
        long = "question",
        value_name = "QUESTION",
        conflicts_with = "question_pos"
    )]
    pub question_flag: Option<String>,
    #[arg(value_name = "QUESTION")]
    pub question_pos: Option<String>,
}

/// GAR-Bench's multiple-choice text: question, lettered options, then the answer instruction.
pub fn multiple_choice(question: &str, choices: &[String]) -> String {
    let mut text = format!("Question: {question}\nOptions:\n");
    for (i, choice) in choices.iter().enumerate() {
        let letter = (b'A' + i as u8) as char;
        let lettered = choice.starts_with(&format!("{letter}."));
        if lettered {
            text.push_str(choice);
        } else {
            text.push_str(&format!("{letter}. {choice}"));
        }
        text.push('\n');
    }
    text.push_str(CHOICE_SUFFIX);
    text
}

pub fn question_text(args: &AskArgs) -> Result<String> {
    let Some(question) = args.question_flag.as_ref().or(args.question_pos.as_ref()) else {
        bail!(Failure::new(
            Kind::Input,
            anyhow::anyhow!(
                "ask needs a question mentioning the regions as <Prompt0>, <Prompt1>, …"
            )
        ));
    };
    if args.choice.len() > 26 {
        bail!(Failure::new(
            Kind::Input,
            anyhow::anyhow!("at most 26 --choice options")
        ));
    }
    Ok(if args.choice.is_empty() {
        question.clone()
    } else {
        multiple_choice(question, &args.choice)
    })
}

pub fn run(args: AskArgs, matches: &ArgMatches) -> Result<()> {
    let question = question_text(&args)?;
    let (image, regions, sam) = common::read_inputs(&args.input, matches)?;
    if !args.json {
        super::sam_regions::report(&sam);
    }
    if let Some(path) = &args.overlay {
        common::write_overlay(path, &image, &regions)?;
    }
    let engine = common::load_engine(&args.model, &args.input.process)?;
    let generation = common::generation_config(&engine, &args.generate)
        .map_err(|e| Failure::new(Kind::Input, e))?;
    let mut request = Request::ask(question);
    request.max_num_tiles = args.input.process.max_tiles;
    let answer = if args.json {
        engine.answer(&image, &regions, &request, &generation, &mut |_| {
            std::ops::ControlFlow::Continue(())
        })
    } else {
        engine.answer(
            &image,
            &regions,
            &request,
            &generation,
            &mut common::stdout_stream(),
        )
    }
    .map_err(Failure::from_engine)?;
    if args.json {
        // Per region, what SAM chose (null for regions not given as SAM prompts).
        let extra = if sam.iter().any(Option::is_some) {
            serde_json::json!({ "sam": sam })
        } else {
            serde_json::json!({})
        };
        common::print_json(&answer, extra)?;
    } else {
        println!();
        for warning in &answer.warnings {
            eprintln!("warning: {warning}");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn choices_are_lettered_like_gar_bench() {
        let text = multiple_choice("Which is left?", &["A. the cat".into(), "the dog".into()]);
        assert_eq!(
            text,
            "Question: Which is left?\nOptions:\nA. the cat\nB. the dog\nAnswer with the correct option's letter directly."
        );
    }
}
