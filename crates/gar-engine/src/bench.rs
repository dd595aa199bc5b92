//! Deterministic end-to-end measurement inputs and one timed run (`gar bench`, docs/performance.md).
//!
//! The inputs are reproducible in Python (tools/reference/bench/bench_reference.py builds the same):
//! * image: `(448·ncw) × (448·nch)` pixels, `(ncw, nch)` the most square factorisation of `tiles − 1`
//!   (ncw ≥ nch), with `max_num_tiles = tiles − 1`, so the processor picks exactly that grid and
//!   `T = 1 + ncw·nch = tiles`; pixel (x, y, c) = [`pixel`];
//! * one region `<Prompt0>`: the half-open box `[w/4, 3w/4) × [h/4, 3h/4)`;
//! * the question [`BASE_QUESTION`] followed by `k` copies of [`FILLER`], `k` the smallest count that
//!   brings the prompt to at least the requested number of tokens (0 when the base prompt is longer).

use std::ops::ControlFlow;
use std::time::Instant;

use gar_models::GenerationConfig;
use gar_processor::{BinaryMask, Region, Request, RgbImage};

use crate::engine::{Engine, Timings};
use crate::error::EngineError;

pub const TILE: u32 = 448;
pub const SEED: u32 = 0x6761_7221;
pub const BASE_QUESTION: &str = "Describe <Prompt0> in detail.";
pub const FILLER: &str = " the";

/// `(ncw, nch)`: the most square grid with `tiles − 1` cells, wider than tall.
pub fn grid_for_tiles(tiles: usize) -> Result<(u32, u32), EngineError> {
    if tiles < 2 {
        return Err(EngineError::Usage(format!(
            "--tiles must be at least 2 (one thumbnail plus at least one grid tile), got {tiles}"
        )));
    }
    let g = (tiles - 1) as u32;
    let nch = (1..=g)
        .filter(|&d| g.is_multiple_of(d) && d * d <= g)
        .max()
        .unwrap_or(1);
    Ok((g / nch, nch))
}

/// A stateless integer hash of the pixel coordinates (wrapping u32 arithmetic, easy to mirror in numpy).
pub fn pixel(x: u32, y: u32, c: u32) -> u8 {
    let mut h = x
        .wrapping_mul(0x9E37_79B1)
        .wrapping_add(y.wrapping_mul(0x85EB_CA77))
        .wrapping_add(c.wrapping_mul(0xC2B2_AE3D))
        ^ SEED;
    h ^= h >> 15;
    h = h.wrapping_mul(0x2C1B_3C6D);
    h ^= h >> 12;
    (h >> 24) as u8
}

pub fn synthetic_image(width: u32, height: u32) -> Result<RgbImage, EngineError> {
    let mut data = Vec::with_capacity(width as usize * height as usize * 3);
    for y in 0..height {
        for x in 0..width {
            data.extend((0..3).map(|c| pixel(x, y, c)));
        }
    }
    RgbImage::new(width, height, data).map_err(|e| EngineError::Usage(e.to_string()))
}

pub fn synthetic_region(width: u32, height: u32) -> Result<Region, EngineError> {
    let (x0, x1, y0, y1) = (width / 4, 3 * width / 4, height / 4, 3 * height / 4);
    let data = (0..height)
        .flat_map(|y| (0..width).map(move |x| (x0..x1).contains(&x) && (y0..y1).contains(&y)))
        .collect();
    let mask =
        BinaryMask::new(width, height, data).map_err(|e| EngineError::Usage(e.to_string()))?;
    Ok(Region::Mask(mask))
}

/// The benchmark's inputs.
pub struct BenchInputs {
    pub image: RgbImage,
    pub regions: Vec<Region>,
    pub request: Request,
    pub grid: (u32, u32),
    pub filler_count: usize,
    /// Length of the prompt actually fed (≥ the request when padding was needed).
    pub prompt_tokens: usize,
}

fn request(grid: (u32, u32), k: usize) -> Request {
    let mut r = Request::ask(format!("{BASE_QUESTION}{}", FILLER.repeat(k)));
    r.max_num_tiles = Some((grid.0 * grid.1) as usize);
    r
}

/// Builds the inputs, checking that the processor gives `tiles` tiles.
pub fn bench_inputs(
    engine: &Engine,
    tiles: usize,
    prompt_tokens: usize,
) -> Result<BenchInputs, EngineError> {
    let grid = grid_for_tiles(tiles)?;
    let (w, h) = (grid.0 * TILE, grid.1 * TILE);
    let image = synthetic_image(w, h)?;
    let regions = vec![synthetic_region(w, h)?];
    let len = |k: usize| -> Result<(usize, usize), EngineError> {
        let inputs = engine.prepare(&image, &regions, &request(grid, k))?;
        Ok((inputs.input_ids.len(), inputs.num_tiles))
    };
    let (base, t) = len(0)?;
    if t != tiles {
        return Err(EngineError::Internal(
            "the synthetic image did not give the tile count",
        ));
    }
    let mut k = 0;
    let mut total = base;
    if prompt_tokens > base {
        let per = len(1)?.0.saturating_sub(base).max(1);
        k = (prompt_tokens - base).div_ceil(per);
        total = len(k)?.0;
        while total < prompt_tokens {
            k += 1;
            total = len(k)?.0;
        }
    }
    Ok(BenchInputs {
        image,
        regions,
        request: request(grid, k),
        grid,
        filler_count: k,
        prompt_tokens: total,
    })
}

/// One timed end-to-end answer.
#[derive(Debug, Clone)]
pub struct BenchRun {
    pub timings: Timings,
    pub end_to_end_s: f64,
    pub prompt_tokens: usize,
    pub new_tokens: usize,
}

/// Answers the bench request, decoding exactly `new_tokens` tokens (no stop token).
pub fn run_once(
    engine: &Engine,
    inputs: &BenchInputs,
    new_tokens: usize,
) -> Result<BenchRun, EngineError> {
    let generation = GenerationConfig {
        max_new_tokens: new_tokens,
        stop_tokens: Vec::new(),
        ..engine.generation_config()
    };
    let start = Instant::now();
    let answer = engine.answer(
        &inputs.image,
        &inputs.regions,
        &inputs.request,
        &generation,
        &mut |_| ControlFlow::Continue(()),
    )?;
    Ok(BenchRun {
        timings: answer.timings,
        end_to_end_s: start.elapsed().as_secs_f64(),
        prompt_tokens: answer.prompt_tokens,
        new_tokens: answer.tokens.len(),
    })
}

/// Peak resident set size (`VmHWM`) of this process in MiB, where /proc is available.
pub fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

/// Streaming-read bandwidth in GB/s (10⁹ bytes per second): best of `repeats` parallel passes summing a
/// freshly written `bytes`-long f32 buffer on the kernel thread pool. Decode reads every decoder weight once
/// per token, so `weight bytes / this` bounds decode time from below. Call it after reading
/// [`peak_rss_mib`]: the buffer raises the resident peak.
pub fn stream_read_gb_s(bytes: usize, repeats: usize) -> f64 {
    use rayon::prelude::*;
    let data: Vec<f32> = (0..bytes / 4).map(|i| (i % 251) as f32).collect();
    let mut best = f64::INFINITY;
    for _ in 0..repeats.max(1) {
        let start = Instant::now();
        // 16 independent accumulators per chunk so the adds vectorise and the loop is bound by memory,
        // not by one serial chain of float additions.
        let total: f32 = data
            .par_chunks(1 << 18)
            .map(|chunk| {
                let mut acc = [0f32; 16];
                let mut rows = chunk.chunks_exact(16);
                for row in &mut rows {
                    for (a, v) in acc.iter_mut().zip(row) {
                        *a += v;
                    }
                }
                acc.iter().sum::<f32>() + rows.remainder().iter().sum::<f32>()
            })
            .sum();
        std::hint::black_box(total);
        best = best.min(start.elapsed().as_secs_f64());
    }
    (data.len() * 4) as f64 / best / 1e9
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bandwidth_probe_reports_a_rate() {
        let gb_s = stream_read_gb_s(8 << 20, 2);
        assert!(gb_s.is_finite() && gb_s > 0.01, "{gb_s}");
    }

    #[test]
    fn grids() {
        assert_eq!(grid_for_tiles(2).unwrap(), (1, 1));
        assert_eq!(grid_for_tiles(5).unwrap(), (2, 2));
        assert_eq!(grid_for_tiles(7).unwrap(), (3, 2));
        assert_eq!(grid_for_tiles(8).unwrap(), (7, 1));
        assert_eq!(grid_for_tiles(17).unwrap(), (4, 4));
        assert!(grid_for_tiles(1).is_err());
    }

    #[test]
    fn pixels_match_python() {
        // Values printed by tools/reference/bench/bench_reference.py's `pixel` / `synthetic_image`.
        let v: Vec<u8> = (0..4).map(|x| pixel(x, 1, 2)).collect();
        assert_eq!(v, [136, 168, 66, 133]);
        let img = synthetic_image(896, 448).unwrap();
        assert_eq!(&img.as_raw()[..3], &[220, 26, 154]);
        let last = img.as_raw().len() - 3;
        assert_eq!(&img.as_raw()[last..], &[129, 129, 213]);
    }
}
