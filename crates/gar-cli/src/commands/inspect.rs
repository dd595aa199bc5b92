//! `gar inspect`: writes the processor's output for debugging and outside checks, without
//! running the model: pixel_values, mask_labels, input_ids, aspect_ratio and bboxes.

use std::collections::HashMap;
use std::path::PathBuf;

use anyhow::{Context, Result};
use candle_core::{Device, Tensor};
use clap::{ArgMatches, Args};
use gar_processor::{GarProcessor, Prompt, Request, DEFAULT_INSTRUCTION};

use super::common::{self, InputArgs, ModelArgs};
use crate::exit::{Failure, Kind};

#[derive(Args, Debug)]
pub struct InspectArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    #[command(flatten)]
    pub input: InputArgs,
    /// Describe-style instruction (single-region layout); ignored when --question is given.
    #[arg(long)]
    pub prompt: Option<String>,
    /// Ask-style question (multi-region layout).
    #[arg(long, conflicts_with = "prompt")]
    pub question: Option<String>,
    /// The `<PromptK>` slot of a describe-style request.
    #[arg(long, default_value_t = 1)]
    pub slot: usize,
    /// Output safetensors file.
    #[arg(long)]
    pub out: PathBuf,
    /// Also print a JSON summary (shapes, prompt text) as the last stdout line.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: InspectArgs, matches: &ArgMatches) -> Result<()> {
    let (image, regions, sam) = common::read_inputs(&args.input, matches)?;
    super::sam_regions::report(&sam);
    let dir = gar_engine::resolve_model(&args.model.model, &args.model.revision)
        .map_err(|e| Failure::new(Kind::Checkpoint, e))?;
    let options = common::processor_options(&args.input.process);
    let processor = GarProcessor::from_dir_with_options(&dir, options)
        .map_err(|e| Failure::new(Kind::Checkpoint, e))?;
    let mut request = match &args.question {
        Some(q) => Request::ask(q.clone()),
        None => Request::new(Prompt::Describe {
            instruction: args
                .prompt
                .clone()
                .unwrap_or_else(|| DEFAULT_INSTRUCTION.into()),
            slot: args.slot,
        }),
    };
    request.max_num_tiles = args.input.process.max_tiles;
    let inputs = processor
        .process(&image, &regions, &request)
        .map_err(|e| Failure::new(Kind::Input, e))?;

    let dev = Device::Cpu;
    let (t, ts) = (inputs.num_tiles, inputs.tile_size);
    let ids: Vec<i64> = inputs.input_ids.iter().map(|&i| i as i64).collect();
    let boxes: Vec<f32> = inputs
        .bboxes()
        .iter()
        .flatten()
        .map(|&v| v as f32)
        .collect();
    let mut tensors = HashMap::new();
    tensors.insert(
        "pixel_values".to_string(),
        Tensor::from_slice(&inputs.pixel_values, (t, 3, ts, ts), &dev)?,
    );
    tensors.insert(
        "mask_labels".to_string(),
        Tensor::from_slice(&inputs.mask_labels, (t, ts, ts), &dev)?,
    );
    tensors.insert(
        "input_ids".to_string(),
        Tensor::from_vec(ids, inputs.input_ids.len(), &dev)?,
    );
    let (ncw, nch) = inputs.aspect_ratio;
    tensors.insert(
        "aspect_ratio".to_string(),
        Tensor::from_vec(vec![ncw as i64, nch as i64], 2, &dev)?,
    );
    tensors.insert(
        "bboxes".to_string(),
        Tensor::from_vec(boxes, (inputs.regions.len(), 4), &dev)?,
    );
    candle_core::safetensors::save(&tensors, &args.out)
        .with_context(|| format!("writing {}", args.out.display()))?;
    for warning in &inputs.warnings {
        eprintln!("warning: {warning}");
    }
    if args.json {
        let summary = serde_json::json!({
            "out": args.out,
            "num_tiles": t,
            "aspect_ratio": [ncw, nch],
            "input_ids": inputs.input_ids.len(),
            "regions": inputs.regions.iter().map(|r| serde_json::json!({
                "prompt_index": r.prompt_index,
                "crop_token_id": r.crop_token_id,
                "bbox": r.bbox,
                "area": r.area,
            })).collect::<Vec<_>>(),
            "prompt_text": inputs.prompt_text,
        });
        println!("{}", serde_json::to_string(&summary)?);
    }
    Ok(())
}
