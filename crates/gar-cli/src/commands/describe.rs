//! `gar describe`: a detailed description of each region, streamed token by token.
//! One region at a time in the reference's single-region layout (slot `<Prompt1>`).

use anyhow::{bail, Result};
use clap::{ArgMatches, Args};
use gar_processor::{Prompt, Request, DEFAULT_INSTRUCTION};

use super::common::{self, GenerateArgs, InputArgs, ModelArgs};
use crate::exit::{Failure, Kind};

#[derive(Args, Debug)]
pub struct DescribeArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    #[command(flatten)]
    pub input: InputArgs,
    /// The instruction after the region's crop tokens.
    #[arg(long, default_value = DEFAULT_INSTRUCTION)]
    pub prompt: String,
    /// The `<PromptK>` slot the region takes (the reference uses 1).
    #[arg(long, default_value_t = 1)]
    pub slot: usize,
    #[command(flatten)]
    pub generate: GenerateArgs,
    /// Print one JSON object per answer (text, tokens, prompt_tokens, timings) instead of streaming.
    #[arg(long)]
    pub json: bool,
    /// Draw the regions on the image into this PNG.
    #[arg(long)]
    pub overlay: Option<std::path::PathBuf>,
}

/// The request `describe` sends for one region.
pub fn describe_request(args: &DescribeArgs) -> Request {
    let mut request = Request::new(Prompt::Describe {
        instruction: args.prompt.clone(),
        slot: args.slot,
    });
    request.max_num_tiles = args.input.process.max_tiles;
    request
}

pub fn run(args: DescribeArgs, matches: &ArgMatches) -> Result<()> {
    let (image, regions, sam) = common::read_inputs(&args.input, matches)?;
    if !args.json {
        super::sam_regions::report(&sam);
    }
    if regions.is_empty() {
        bail!(Failure::new(
            Kind::Input,
            anyhow::anyhow!(
                "describe needs at least one region (--mask, --rle, --polygon, --box, --point, --box-sam or --scribble)"
            )
        ));
    }
    if let Some(path) = &args.overlay {
        common::write_overlay(path, &image, &regions)?;
    }
    let engine = common::load_engine(&args.model, &args.input.process)?;
    let generation = common::generation_config(&engine, &args.generate)
        .map_err(|e| Failure::new(Kind::Input, e))?;
    let request = describe_request(&args);
    for (index, region) in regions.iter().enumerate() {
        let many = regions.len() > 1;
        if many && !args.json {
            println!("[region {index}]");
        }
        let answer = if args.json {
            engine.answer(
                &image,
                std::slice::from_ref(region),
                &request,
                &generation,
                &mut |_| std::ops::ControlFlow::Continue(()),
            )
        } else {
            engine.answer(
                &image,
                std::slice::from_ref(region),
                &request,
                &generation,
                &mut common::stdout_stream(),
            )
        }
        .map_err(Failure::from_engine)?;
        if args.json {
            let mut extra = serde_json::json!({ "region": index });
            if let Some(choice) = &sam[index] {
                extra["sam"] = serde_json::to_value(choice)?;
            }
            common::print_json(&answer, extra)?;
        } else {
            println!();
            for warning in &answer.warnings {
                eprintln!("warning: {warning}");
            }
        }
    }
    Ok(())
}
