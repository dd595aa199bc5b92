//! Flags shared by describe / ask / chat / inspect, and turning them into engine inputs.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use candle_core::{DType, Device};
use clap::{ArgMatches, Args, ValueEnum};
use gar_engine::{Answer, Engine, EngineOptions};
use gar_models::{GarQuirks, GenerationConfig, Quant, SamplingConfig};
use gar_processor::{
    load_image, load_mask, Bos, CocoRle, LoadOptions, MaskResample, ProcessorOptions, Region,
    RgbImage,
};

use super::sam_regions::{self, SamArgs, SamChoice};
use crate::exit::{Failure, Kind};
use crate::regions::{regions_in_order, RegionSpec};

#[derive(Args, Debug, Clone)]
pub struct ModelArgs {
    /// Checkpoint: a local directory or a hub id (resolved through the Hugging Face cache).
    #[arg(long, env = "GAR_MODEL", default_value = gar_engine::DEFAULT_MODEL)]
    pub model: String,
    /// Hub revision (branch, tag or commit) when --model is a hub id.
    #[arg(long, default_value = "main")]
    pub revision: String,
    /// Compute dtype. f32 is the reference-exact mode on CPU.
    #[arg(long, value_enum, default_value_t = DTypeArg::F32)]
    pub dtype: DTypeArg,
    /// CPU threads for the tensor kernels (default: all cores).
    #[arg(long, env = "GAR_THREADS")]
    pub threads: Option<usize>,
    /// Where the model runs: `cpu`, or `cuda` / `cuda:N` in builds with the `cuda` feature.
    #[arg(long, env = "GAR_DEVICE", default_value = "cpu")]
    pub device: String,
    /// Quantization of the language model's linears, done at load: `none` (reference-exact), `q8` (Q8_0,
    /// ~8.5 bits/weight; on an AVX2 CPU the activations are rounded to 8 bits too, so prefill runs as an
    /// int8 product) or `q4` (Q4_K, ~4.5 bits/weight; LM head kept at Q8_0). Faster prefill and decode,
    /// smaller memory, not token-exact (see docs/performance.md for measured agreement).
    #[arg(long, env = "GAR_QUANT", default_value = "none")]
    pub quant: String,
    /// Run the vision tower's and the projector's linears with 8-bit weights and activations (CPU with AVX2;
    /// elsewhere a no-op): faster image encoding, not reference-exact (see docs/performance.md for the
    /// measured feature cosine).
    /// Env `GAR_VISION_INT8`: anything but empty, 0, false, no or off turns it on.
    #[arg(long, env = "GAR_VISION_INT8", value_parser = clap::builder::FalseyValueParser::new())]
    pub vision_int8: bool,
    /// Run the attention products (vision tower and prompt prefill) on bf16 operands with f32 sums (CPU with
    /// AVX-512 BF16, e.g. Zen 4 or Sapphire Rapids; elsewhere a no-op): faster long prompts and image
    /// encoding, not reference-exact (see docs/performance.md). Env `GAR_BF16_ATTENTION` as for
    /// `GAR_VISION_INT8`.
    #[arg(long, env = "GAR_BF16_ATTENTION", value_parser = clap::builder::FalseyValueParser::new())]
    pub bf16_attention: bool,
}

/// The `--quant` flag.
pub fn parse_quant(spec: &str) -> Result<Quant> {
    spec.parse::<Quant>()
        .map_err(|e| anyhow::anyhow!("--quant: {e}"))
}

/// The `--device` flag as a candle device; a CUDA request in a CPU-only build is a clear error.
pub fn parse_device(spec: &str) -> Result<Device> {
    let spec = spec.trim();
    if spec.eq_ignore_ascii_case("cpu") {
        return Ok(Device::Cpu);
    }
    let ordinal = match spec.strip_prefix("cuda") {
        Some("") => 0,
        Some(rest) => match rest.strip_prefix(':').and_then(|n| n.parse::<usize>().ok()) {
            Some(n) => n,
            None => bail!("--device {spec:?}: expected cpu, cuda or cuda:N"),
        },
        None => bail!("--device {spec:?}: expected cpu, cuda or cuda:N"),
    };
    if !candle_core::utils::cuda_is_available() {
        bail!(
            "--device {spec}: this gar was built without CUDA support \
             (build it with `--features cuda`, see scripts/build-cuda.sh)"
        );
    }
    Device::new_cuda(ordinal).with_context(|| format!("--device {spec}: cannot open the GPU"))
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum DTypeArg {
    F32,
    Bf16,
    F16,
}

impl From<DTypeArg> for DType {
    fn from(d: DTypeArg) -> Self {
        match d {
            DTypeArg::F32 => DType::F32,
            DTypeArg::Bf16 => DType::BF16,
            DTypeArg::F16 => DType::F16,
        }
    }
}

#[derive(Args, Debug, Clone)]
pub struct ProcessArgs {
    /// Override the checkpoint's max_num_tiles (fewer tiles is faster but off-reference).
    #[arg(long)]
    pub max_tiles: Option<usize>,
    /// BOS policy: `double` is what the reference inference path feeds; `single` the training path.
    #[arg(long, value_enum, default_value_t = BosArg::Double)]
    pub bos: BosArg,
    /// How the region label map is resized onto the tiles.
    #[arg(long, value_enum, default_value_t = ResampleArg::Nearest)]
    pub mask_resample: ResampleArg,
    /// Sample the replayed region crops where the box really is, instead of the reference's
    /// double-scaled corner (gar-spec §8.4); the released weights were trained with the quirk.
    #[arg(long)]
    pub fix_roi_scale: bool,
    /// Apply the EXIF orientation of JPEG images (the reference does not).
    #[arg(long)]
    pub exif: bool,
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum BosArg {
    Single,
    Double,
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResampleArg {
    Nearest,
    Bicubic,
}

#[derive(Args, Debug, Clone)]
pub struct GenerateArgs {
    /// Maximum number of new tokens.
    #[arg(long, default_value_t = 1024)]
    pub max_new_tokens: usize,
    /// Sampling temperature; 0 (the default) decodes greedily like the reference.
    #[arg(long, default_value_t = 0.0)]
    pub temperature: f64,
    /// Nucleus sampling: keep the smallest set of tokens whose probability reaches this.
    #[arg(long)]
    pub top_p: Option<f64>,
    /// Keep only the k most likely tokens when sampling.
    #[arg(long)]
    pub top_k: Option<usize>,
    /// Seed of the sampler.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Repetition penalty (1 = none).
    #[arg(long, default_value_t = 1.0)]
    pub repeat_penalty: f32,
}

/// Region flags. Their values are read back in command-line order through [`regions_in_order`].
#[derive(Args, Debug, Clone)]
pub struct RegionArgs {
    /// A binary mask image (non-zero = inside). Repeat for several regions.
    #[arg(long, value_name = "PNG")]
    pub mask: Vec<String>,
    /// A COCO RLE mask: a JSON file or inline JSON {"size": [h, w], "counts": ...}.
    #[arg(long, value_name = "JSON")]
    pub rle: Vec<String>,
    /// A polygon "x,y;x,y;..." in image pixels.
    #[arg(long, value_name = "POINTS")]
    pub polygon: Vec<String>,
    /// A box "x1,y1,x2,y2" in image pixels (a filled rectangle, as Ferret-Bench uses boxes).
    #[arg(long = "box", value_name = "X1,Y1,X2,Y2")]
    pub boxes: Vec<String>,
    /// A click for SAM "x,y[,label]" (label 1 foreground, the default; 0 background). Clicks
    /// right after a --box-sam or --scribble refine it; other consecutive clicks form one region.
    #[arg(long, value_name = "X,Y[,LABEL]", allow_hyphen_values = true)]
    pub point: Vec<String>,
    /// A box for SAM "x1,y1,x2,y2": SAM's mask of it is the region (unlike --box, a rectangle).
    #[arg(long, value_name = "X1,Y1,X2,Y2", allow_hyphen_values = true)]
    pub box_sam: Vec<String>,
    /// A polyline for SAM "x,y;x,y;..." (5 clicks spaced along it); one region.
    #[arg(long, value_name = "X,Y;X,Y;...", allow_hyphen_values = true)]
    pub scribble: Vec<String>,
    #[command(flatten)]
    pub sam: SamArgs,
}

#[derive(Args, Debug, Clone)]
pub struct InputArgs {
    /// The image (PNG, JPEG, WebP, BMP, GIF, TIFF).
    #[arg(long)]
    pub image: PathBuf,
    #[command(flatten)]
    pub regions: RegionArgs,
    #[command(flatten)]
    pub process: ProcessArgs,
}

/// Applies `--threads` before any kernel spawns its thread pool.
pub fn configure_threads(model: &ModelArgs) {
    if let Some(n) = model.threads.filter(|&n| n > 0) {
        // candle's CPU kernels size their pools from RAYON_NUM_THREADS.
        std::env::set_var("RAYON_NUM_THREADS", n.to_string());
    }
}

/// Resolves and loads the checkpoint.
pub fn load_engine(model: &ModelArgs, process: &ProcessArgs) -> Result<Engine> {
    configure_threads(model);
    let dir = gar_engine::resolve_model(&model.model, &model.revision)
        .map_err(|e| Failure::new(Kind::Checkpoint, e))?;
    let device = parse_device(&model.device).map_err(|e| Failure::new(Kind::Input, e))?;
    let options = EngineOptions {
        dtype: model.dtype.into(),
        device,
        quirks: GarQuirks {
            roi_double_scale: !process.fix_roi_scale,
        },
        processor: processor_options(process),
        quant: parse_quant(&model.quant).map_err(|e| Failure::new(Kind::Input, e))?,
        vision_int8: model.vision_int8,
        bf16_attention: model.bf16_attention,
    };
    Engine::load(&dir, &options).map_err(|e| Failure::from_engine(e).into())
}

/// Processor switches from the flags.
pub fn processor_options(process: &ProcessArgs) -> ProcessorOptions {
    ProcessorOptions {
        bos: match process.bos {
            BosArg::Single => Bos::Single,
            BosArg::Double => Bos::Double,
        },
        mask_resample: match process.mask_resample {
            ResampleArg::Nearest => MaskResample::Nearest,
            ResampleArg::Bicubic => MaskResample::Bicubic,
        },
        max_num_tiles: process.max_tiles,
        ..ProcessorOptions::default()
    }
}

pub fn load_options(process: &ProcessArgs) -> LoadOptions {
    LoadOptions {
        apply_exif_orientation: process.exif,
        ..LoadOptions::default()
    }
}

/// Reads the image and every region named on the command line, in command-line order. SAM
/// prompts are segmented here (SAM is loaded only if there is one); the third element says,
/// per region, what SAM chose (`None` for regions given as masks, RLEs, polygons or boxes).
pub fn read_inputs(
    input: &InputArgs,
    matches: &ArgMatches,
) -> Result<(RgbImage, Vec<Region>, Vec<Option<SamChoice>>)> {
    let options = load_options(&input.process);
    // Flags first: a typo in --box should not wait for a large image to decode.
    let specs = regions_in_order(matches).map_err(|e| Failure::new(Kind::Input, e))?;
    let image = load_image(&input.image, &options).map_err(|e| Failure::new(Kind::Input, e))?;
    let sam_prompts: Vec<(usize, &gar_sam::Prompt)> = specs
        .iter()
        .enumerate()
        .filter_map(|(i, s)| match s {
            RegionSpec::Sam(p) => Some((i, p)),
            _ => None,
        })
        .collect();
    sam_regions::validate(&sam_prompts, &image)?;
    let mut regions: Vec<Option<Region>> = Vec::with_capacity(specs.len());
    for spec in &specs {
        let region = to_region(spec, &options).map_err(|e| Failure::new(Kind::Input, e))?;
        regions.push(region);
    }
    let mut choices = vec![None; specs.len()];
    if !sam_prompts.is_empty() {
        let segmented = sam_regions::segment_all(&input.regions.sam, &image, &sam_prompts)?;
        for ((index, _), (region, choice)) in sam_prompts.iter().zip(segmented) {
            regions[*index] = Some(region);
            choices[*index] = Some(choice);
        }
    }
    let regions = regions
        .into_iter()
        .map(|r| r.context("a SAM region was not segmented"))
        .collect::<Result<Vec<_>>>()?;
    Ok((image, regions, choices))
}

/// The region a non-SAM flag names; `None` for SAM prompts (segmented later, all at once).
fn to_region(spec: &RegionSpec, options: &LoadOptions) -> Result<Option<Region>> {
    Ok(Some(match spec {
        RegionSpec::Sam(_) => return Ok(None),
        RegionSpec::Mask(path) => Region::Mask(
            load_mask(path, options).with_context(|| format!("mask {}", path.display()))?,
        ),
        RegionSpec::Rle(text) => {
            let json = if text.trim_start().starts_with('{') {
                text.clone()
            } else {
                std::fs::read_to_string(text).with_context(|| format!("reading RLE file {text}"))?
            };
            let rle: CocoRle = serde_json::from_str(&json)
                .context("an RLE must be JSON {\"size\": [h, w], \"counts\": ...}")?;
            Region::Rle(rle)
        }
        RegionSpec::Polygon(points) => {
            Region::Polygon(vec![points.iter().flat_map(|p| [p[0], p[1]]).collect()])
        }
        RegionSpec::Box([x0, y0, x1, y1]) => Region::Box {
            x0: *x0,
            y0: *y0,
            x1: *x1,
            y1: *y1,
        },
    }))
}

/// Generation settings from the flags, with the checkpoint's stop token.
pub fn generation_config(engine: &Engine, args: &GenerateArgs) -> Result<GenerationConfig> {
    if args.temperature < 0.0 || !args.temperature.is_finite() {
        bail!("--temperature must be ≥ 0");
    }
    if let Some(p) = args.top_p {
        if !(p > 0.0 && p <= 1.0) {
            bail!("--top-p must be in (0, 1]");
        }
    }
    if args.repeat_penalty <= 0.0 {
        bail!("--repeat-penalty must be > 0");
    }
    let mut cfg = engine.generation_config();
    cfg.max_new_tokens = args.max_new_tokens;
    cfg.sampling = SamplingConfig {
        temperature: args.temperature,
        top_k: args.top_k,
        top_p: args.top_p,
        repetition_penalty: args.repeat_penalty,
        seed: args.seed,
    };
    Ok(cfg)
}

/// Prints one answer as a single JSON line (the contract's last stdout line).
pub fn print_json(answer: &Answer, extra: serde_json::Value) -> Result<()> {
    let mut value = serde_json::to_value(answer)?;
    if let (Some(obj), serde_json::Value::Object(extra)) = (value.as_object_mut(), extra) {
        obj.extend(extra);
    }
    let mut out = std::io::stdout().lock();
    writeln!(out, "{}", serde_json::to_string(&value)?)?;
    out.flush()?;
    Ok(())
}

/// A streaming sink that writes text pieces to stdout as they arrive.
pub fn stdout_stream() -> impl FnMut(&str) -> std::ops::ControlFlow<()> {
    |piece: &str| {
        let mut out = std::io::stdout().lock();
        // A closed pipe (e.g. `| head`) stops generation instead of panicking.
        if out
            .write_all(piece.as_bytes())
            .and_then(|_| out.flush())
            .is_err()
        {
            return std::ops::ControlFlow::Break(());
        }
        std::ops::ControlFlow::Continue(())
    }
}

/// Writes the region overlay when `--overlay` is given.
pub fn write_overlay(path: &std::path::Path, image: &RgbImage, regions: &[Region]) -> Result<()> {
    let (w, h) = (image.width(), image.height());
    let masks = regions
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let m = r.to_mask(w, h, i)?;
            Ok(if m.width() == w && m.height() == h {
                m
            } else {
                m.resize_nearest(w, h)
            })
        })
        .collect::<Result<Vec<_>, gar_processor::ProcessorError>>()
        .map_err(|e| Failure::new(Kind::Input, e))?;
    let overlay_regions: Vec<_> = masks
        .iter()
        .enumerate()
        .map(|(i, m)| gar_engine::overlay::OverlayRegion {
            mask: m.as_slice(),
            prompt_index: i,
        })
        .collect();
    let rgb =
        image::RgbImage::from_raw(w, h, image.as_raw().to_vec()).context("image buffer size")?;
    gar_engine::overlay::draw_overlay(&rgb, &overlay_regions)
        .save(path)
        .with_context(|| format!("writing overlay {}", path.display()))?;
    Ok(())
}
