//! Quantization of linear layers at load time (llama.cpp block formats). Smaller weights are what bounds CPU
//! decode (every weight byte is read once per token). `q8` on an AVX2 CPU runs through [`super::w8a8`],
//! which keeps its own 8-bit form with Q8_0's rounding rule (one scale per output channel) and rounds the
//! activations to 8 bits as well (per 64-input block), for decode (as llama.cpp and candle's Q8_0 kernels
//! do) and for prefill, whose product then runs on 8-bit integers. Elsewhere the activations stay in the
//! compute dtype: candle's kernels for few rows, a dequantized weight through the GEMM for many.
//!
//! Formats: `q8` = Q8_0 (blocks of 32, one f16 scale, int8 values: ~8.5 bits/weight), `q4` = Q4_K (super-blocks
//! of 256 with 6-bit sub-block scales: ~4.5 bits/weight). A layer whose input width is not a multiple of the
//! format's block falls back to the next format that fits (Q4_K → Q4_0 → Q8_0) and, failing all, stays dense:
//! tiny test models have widths like 48.

use std::fmt;
use std::str::FromStr;

use candle_core::quantized::GgmlDType;

/// Which quantization to apply to the decoder's linear layers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Quant {
    /// Dense weights in the compute dtype (the reference-exact mode).
    #[default]
    None,
    /// Q8_0.
    Q8,
    /// Q4_K (Q4_0 / Q8_0 where the width does not allow it).
    Q4,
}

impl Quant {
    /// Formats to try for one layer, best first.
    pub fn candidates(self) -> &'static [GgmlDType] {
        match self {
            Quant::None => &[],
            Quant::Q8 => &[GgmlDType::Q8_0],
            Quant::Q4 => &[GgmlDType::Q4K, GgmlDType::Q4_0, GgmlDType::Q8_0],
        }
    }

    /// Format of the LM head. Kept at 8 bits even in `q4` mode: the output projection maps straight onto the
    /// logits and is the layer most sensitive to rounding (llama.cpp keeps it at ≥ 6 bits for the same reason).
    pub fn head_candidates(self) -> &'static [GgmlDType] {
        match self {
            Quant::None => &[],
            Quant::Q8 | Quant::Q4 => &[GgmlDType::Q8_0],
        }
    }

    pub fn is_none(self) -> bool {
        self == Quant::None
    }
}

impl fmt::Display for Quant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Quant::None => "none",
            Quant::Q8 => "q8",
            Quant::Q4 => "q4",
        })
    }
}

impl FromStr for Quant {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "none" | "f32" | "off" => Ok(Quant::None),
            "q8" | "q8_0" | "int8" => Ok(Quant::Q8),
            "q4" | "q4_k" | "int4" => Ok(Quant::Q4),
            other => Err(format!(
                "unknown quantization {other:?}: expected none, q8 or q4"
            )),
        }
    }
}

/// How many decoder linears ended up in which format (for logs and tests).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct QuantReport {
    pub quantized: usize,
    pub dense: usize,
    /// Distinct formats used, e.g. `["q4k", "q8_0"]`.
    pub formats: Vec<String>,
}

impl QuantReport {
    pub(crate) fn record(&mut self, format: Option<GgmlDType>) {
        match format {
            Some(f) => {
                self.quantized += 1;
                let name = format!("{f:?}").to_ascii_lowercase();
                if !self.formats.contains(&name) {
                    self.formats.push(name);
                    self.formats.sort();
                }
            }
            None => self.dense += 1,
        }
    }
}
