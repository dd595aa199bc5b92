//! `gar train loss`: one sample's loss and gradients.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use candle_core::Device;
use clap::{Args, ValueEnum};
use gar_train::conversation::{RegionMask, SampleSpec, Turn};
use gar_train::encode::{encode, training_processor, EncodeOptions, TrainMaskResample};
use gar_train::forward::TrainModel;

#[derive(Clone, Copy, ValueEnum)]
pub enum Resample {
    /// The image's antialiased bicubic, as GAR training did (training.md §2.7).
    Bicubic,
    /// Nearest neighbour, as inference does.
    Nearest,
}

#[derive(Args)]
pub struct LossArgs {
    /// Checkpoint directory (config.json, *.safetensors, tokenizer, processor configs).
    #[arg(long)]
    pub model: PathBuf,
    #[arg(long)]
    pub image: PathBuf,
    /// Region mask at the image's size (non-zero = inside); repeat for several regions.
    #[arg(long = "mask", required = true)]
    pub masks: Vec<PathBuf>,
    /// K of `<PromptK>` for each mask, comma-separated (default 0, 1, ...).
    #[arg(long, value_delimiter = ',')]
    pub prompts: Option<Vec<usize>>,
    /// JSON list of `[user, assistant]` turns; `[[crop K]]` marks the crop tokens of `<PromptK>`.
    #[arg(long)]
    pub conversation: PathBuf,
    #[arg(long, value_enum, default_value = "bicubic")]
    pub mask_resample: Resample,
    /// Write every parameter's gradient here (safetensors, checkpoint key names).
    #[arg(long)]
    pub grads: Option<PathBuf>,
    /// Print one JSON object as the last line.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: LossArgs) -> anyhow::Result<()> {
    let options = EncodeOptions {
        mask_resample: match args.mask_resample {
            Resample::Bicubic => TrainMaskResample::Bicubic,
            Resample::Nearest => TrainMaskResample::Nearest,
        },
        max_num_tiles: None,
    };
    let spec = read_sample(&args)?;
    let processor = training_processor(&args.model, options)
        .with_context(|| format!("loading the processor of {}", args.model.display()))?;
    let sample = encode(&spec, &processor, options).context("building the training sample")?;
    let model = TrainModel::load(&args.model, &Device::Cpu)
        .with_context(|| format!("loading {} for training", args.model.display()))?;
    let out = model.loss(&sample)?;
    let loss = out.loss.to_scalar::<f32>()?;
    let grads = out.loss.backward()?;
    let grads = model.gradients(&grads)?;
    let grad_norm = grads
        .iter()
        .map(|(_, g)| g.sqr()?.sum_all()?.to_scalar::<f32>().map(f64::from))
        .sum::<candle_core::Result<f64>>()?
        .sqrt();
    if let Some(path) = &args.grads {
        let map: HashMap<String, candle_core::Tensor> = grads.into_iter().collect();
        candle_core::safetensors::save(&map, path)
            .with_context(|| format!("writing gradients to {}", path.display()))?;
    }
    if args.json {
        let report = serde_json::json!({
            "loss": loss,
            "supervised_tokens": out.supervised_tokens,
            "tokens": sample.input_ids.len(),
            "num_tiles": sample.num_tiles,
            "grad_norm": grad_norm,
        });
        println!("{report}");
    } else {
        println!(
            "loss {loss:.6} over {} supervised tokens ({} tokens, {} tiles), gradient norm {grad_norm:.6}",
            out.supervised_tokens,
            sample.input_ids.len(),
            sample.num_tiles
        );
    }
    Ok(())
}

fn read_sample(args: &LossArgs) -> anyhow::Result<SampleSpec> {
    let image = open_image(&args.image)?.to_rgb8();
    let prompts = match &args.prompts {
        Some(p) if p.len() != args.masks.len() => bail!(
            "--prompts lists {} indices for {} masks",
            p.len(),
            args.masks.len()
        ),
        Some(p) => p.clone(),
        None => (0..args.masks.len()).collect(),
    };
    let regions = args
        .masks
        .iter()
        .zip(prompts)
        .map(|(path, prompt_index)| {
            Ok(RegionMask {
                prompt_index,
                mask: open_image(path)?.to_luma8(),
            })
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let text = std::fs::read_to_string(&args.conversation)
        .with_context(|| format!("cannot read {}", args.conversation.display()))?;
    let pairs: Vec<(String, String)> = serde_json::from_str(&text).with_context(|| {
        format!(
            "{} must be a JSON list of [user, assistant] string pairs",
            args.conversation.display()
        )
    })?;
    let turns = pairs
        .into_iter()
        .map(|(user, assistant)| Turn { user, assistant })
        .collect();
    Ok(SampleSpec {
        image,
        regions,
        turns,
    })
}

fn open_image(path: &Path) -> anyhow::Result<image::DynamicImage> {
    image::open(path).with_context(|| format!("cannot read image {}", path.display()))
}
