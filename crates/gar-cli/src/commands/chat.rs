//! `gar chat`: a multi-turn conversation about the regions. The image is encoded once and the
//! KV cache is kept between turns, so each new message only prefills its own tokens.
//!
//! Messages are read from stdin, one per line (`/exit` or end of input stops). The first message
//! carries the regions: if it mentions `<PromptK>` it uses the multi-region layout, otherwise a
//! single region is described with the message as the instruction.

use std::io::{BufRead, IsTerminal, Write};

use anyhow::{bail, Result};
use clap::{ArgMatches, Args};
use gar_engine::Chat;
use gar_processor::{mentioned_prompts, Prompt, Request};

use super::common::{self, GenerateArgs, InputArgs, ModelArgs};
use crate::exit::{Failure, Kind};

#[derive(Args, Debug)]
pub struct ChatArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    #[command(flatten)]
    pub input: InputArgs,
    #[command(flatten)]
    pub generate: GenerateArgs,
    /// Print each answer as one JSON line instead of streaming text.
    #[arg(long)]
    pub json: bool,
}

/// The first request of a chat, from the first user message.
pub fn first_request(message: &str, num_regions: usize) -> Result<Request> {
    let prompt = if !mentioned_prompts(message).is_empty() {
        Prompt::ask(message)
    } else if num_regions == 1 {
        Prompt::Describe {
            instruction: message.to_string(),
            slot: 1,
        }
    } else {
        bail!("with {num_regions} regions, mention them as <Prompt0>, <Prompt1>, … in the first message");
    };
    Ok(Request::new(prompt))
}

pub fn run(args: ChatArgs, matches: &ArgMatches) -> Result<()> {
    let (image, regions, sam) = common::read_inputs(&args.input, matches)?;
    super::sam_regions::report(&sam);
    let engine = common::load_engine(&args.model, &args.input.process)?;
    let generation = common::generation_config(&engine, &args.generate)
        .map_err(|e| Failure::new(Kind::Input, e))?;
    let interactive = std::io::stdin().is_terminal();
    let mut chat: Option<Chat> = None;
    let stdin = std::io::stdin();
    let mut lines = stdin.lock().lines();
    loop {
        if interactive {
            eprint!("> ");
            std::io::stderr().flush()?;
        }
        let Some(line) = lines.next() else { break };
        let message = line?;
        let message = message.trim();
        if message == "/exit" || message == "/quit" {
            break;
        }
        if message.is_empty() {
            continue;
        }
        match chat.as_mut() {
            None => match first_request(message, regions.len()) {
                Ok(mut request) => {
                    request.max_num_tiles = args.input.process.max_tiles;
                    chat = Some(Chat::new(&engine, image.clone(), regions.clone(), request));
                }
                Err(e) if interactive => {
                    eprintln!("error: {e}");
                    continue;
                }
                Err(e) => return Err(Failure::new(Kind::Input, e).into()),
            },
            Some(c) => c.say(message).map_err(Failure::from_engine)?,
        }
        let Some(c) = chat.as_mut() else { continue };
        let answer = if args.json {
            c.respond(&generation, &mut |_| std::ops::ControlFlow::Continue(()))
        } else {
            c.respond(&generation, &mut common::stdout_stream())
        }
        .map_err(Failure::from_engine)?;
        if args.json {
            common::print_json(&answer, serde_json::json!({}))?;
        } else {
            println!();
        }
    }
    Ok(())
}
