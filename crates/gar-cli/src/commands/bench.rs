//! `gar bench`: end-to-end speed on deterministic synthetic inputs (gar_engine::bench, docs/performance.md).

use std::io::Write;

use anyhow::Result;
use clap::Args;
use gar_engine::bench::{
    bench_inputs, grid_for_tiles, peak_rss_mib, run_once, stream_read_gb_s, BenchRun,
};
use serde_json::json;

use super::common::{load_engine, BosArg, ModelArgs, ProcessArgs, ResampleArg};
use crate::exit::{Failure, Kind};

#[derive(Args, Debug, Clone)]
pub struct BenchArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Tiles fed to the vision tower, thumbnail included (T = 1 + ncw·nch, so at least 2).
    #[arg(long, default_value_t = 5)]
    pub tiles: usize,
    /// Pad the question so the prompt has at least this many tokens (no effect when already longer).
    #[arg(long, default_value_t = 0)]
    pub prompt_tokens: usize,
    /// Tokens to decode, the stop token ignored (at least 2: decode speed excludes the first).
    #[arg(long, default_value_t = 32)]
    pub new_tokens: usize,
    /// Run K times and report the best (smallest) time of each stage.
    #[arg(long, default_value_t = 1)]
    pub repeat: usize,
    /// Also report `stream_read_gb_s`: streaming-read bandwidth, best of 5 parallel passes over a 1 GiB
    /// buffer, measured after the RSS peak is read (decode reads every decoder weight once per token).
    #[arg(long)]
    pub bandwidth: bool,
    /// Print one JSON object as the last stdout line instead of a table.
    #[arg(long)]
    pub json: bool,
}

fn usage(msg: String) -> anyhow::Error {
    Failure::new(Kind::Input, anyhow::anyhow!(msg)).into()
}

pub fn run(args: BenchArgs) -> Result<()> {
    grid_for_tiles(args.tiles).map_err(|e| usage(e.to_string()))?;
    if args.new_tokens < 2 {
        return Err(usage(format!(
            "--new-tokens must be at least 2 (decode speed is measured after the first token), got {}",
            args.new_tokens
        )));
    }
    if args.repeat == 0 {
        return Err(usage("--repeat must be at least 1".into()));
    }
    let process = ProcessArgs {
        max_tiles: None,
        bos: BosArg::Double,
        mask_resample: ResampleArg::Nearest,
        fix_roi_scale: false,
        exif: false,
    };
    let engine = load_engine(&args.model, &process)?;
    let threads = candle_core::utils::get_num_threads();
    let inputs =
        bench_inputs(&engine, args.tiles, args.prompt_tokens).map_err(Failure::from_engine)?;
    let mut runs = Vec::with_capacity(args.repeat);
    for _ in 0..args.repeat {
        runs.push(run_once(&engine, &inputs, args.new_tokens).map_err(Failure::from_engine)?);
    }
    let best = |f: &dyn Fn(&BenchRun) -> f64| runs.iter().map(f).fold(f64::INFINITY, f64::min);
    let preprocess_s = best(&|r| r.timings.preprocess_s);
    let vision_s = best(&|r| r.timings.vision_s);
    let prefill_s = best(&|r| r.timings.prefill_s);
    let decode_s = best(&|r| r.timings.decode_s);
    let ttft_s = best(&|r| r.timings.preprocess_s + r.timings.vision_s + r.timings.prefill_s);
    let end_to_end_s = best(&|r| r.end_to_end_s);
    let rate = |n: usize, s: f64| if s > 0.0 { n as f64 / s } else { 0.0 };
    let mut value = json!({
        "engine": "gar",
        "model": args.model.model,
        "dtype": format!("{:?}", args.model.dtype).to_lowercase(),
        "device": args.model.device,
        "quant": engine.quantization().0.to_string(),
        "quantized_linears": engine.quantization().1.quantized,
        "quant_formats": engine.quantization().1.formats,
        "vision_int8_linears": engine.vision_int8_linears(),
        "bf16_attention": engine.bf16_attention(),
        "threads": threads,
        "tiles": args.tiles,
        "grid": [inputs.grid.0, inputs.grid.1],
        "image_size": [inputs.image.width(), inputs.image.height()],
        "prompt_tokens_requested": args.prompt_tokens,
        "prompt_tokens": inputs.prompt_tokens,
        "filler_count": inputs.filler_count,
        "new_tokens": args.new_tokens,
        "repeat": args.repeat,
        "load_s": engine.load_seconds(),
        "preprocess_s": preprocess_s,
        "vision_s": vision_s,
        "vision_s_per_tile": vision_s / args.tiles as f64,
        "prefill_s": prefill_s,
        "prefill_tokens_per_s": rate(inputs.prompt_tokens, prefill_s),
        "ttft_s": ttft_s,
        "decode_s": decode_s,
        "decode_tokens_per_s": rate(args.new_tokens - 1, decode_s),
        "end_to_end_s": end_to_end_s,
        "end_to_end_runs_s": runs.iter().map(|r| r.end_to_end_s).collect::<Vec<_>>(),
        "peak_rss_mib": peak_rss_mib().unwrap_or(0.0),
    });
    // After `peak_rss_mib` was read: the probe's buffer must not count in the model's peak.
    if args.bandwidth {
        value["stream_read_gb_s"] = json!(stream_read_gb_s(1 << 30, 5));
    }
    if let Some(r) = runs.iter().find(|r| r.new_tokens != args.new_tokens) {
        anyhow::bail!(
            "decoded {} tokens instead of {}",
            r.new_tokens,
            args.new_tokens
        );
    }
    let mut out = std::io::stdout().lock();
    if args.json {
        writeln!(out, "{}", serde_json::to_string(&value)?)?;
    } else if let Some(obj) = value.as_object() {
        for (k, v) in obj {
            writeln!(out, "{k:>24}  {v}")?;
        }
    }
    out.flush()?;
    Ok(())
}
