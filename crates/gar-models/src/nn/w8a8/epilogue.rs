//! Element-wise steps applied to each tile of the int8 product right after the kernel stores it, while the
//! tile is still in L1: the layer's bias, the vision MLP's GELU, the block's LayerScale residual.
//!
//! Why: as separate passes each step reads and writes the whole `(rows, out)` result again (a GAR-1B vision
//! tile's fc1 output is 16 MiB); those passes and the activation quantization were ≈ 0.2 s of a 1.7 s tile
//! (docs/performance.md, round 11). The bias and residual steps compute exactly what the separate ops
//! compute (`y + b`; `x + y · γ`, two roundings); the GELU is [`vmath512::gelu_erf_in_place`] (within
//! 5e-7 · max(|x|, 1) of the exact form, like the separate op's 3e-7, and far below the int8 rounding of
//! the next layer's input).

use super::PANEL;
use crate::nn::vmath512;

/// What to apply to `y = x · Wᵀ`, in this order: `y + bias`, GELU (erf form), `residual + y · gamma`
/// (`residual + y` without `gamma`). Slices are indexed by output column (`bias`, `gamma`: `out` values)
/// or are row-major like the result (`residual`: `rows × out`).
#[derive(Clone, Copy, Debug, Default)]
pub struct Epilogue<'a> {
    pub bias: Option<&'a [f32]>,
    pub gelu: bool,
    pub residual: Option<&'a [f32]>,
    pub gamma: Option<&'a [f32]>,
}

impl Epilogue<'_> {
    /// Nothing to do.
    pub fn is_empty(&self) -> bool {
        self.bias.is_none() && !self.gelu && self.residual.is_none()
    }

    /// Whether the slices fit an `(m, out)` result.
    pub(super) fn fits(&self, m: usize, out: usize) -> bool {
        self.bias.is_none_or(|b| b.len() == out)
            && self.gamma.is_none_or(|g| g.len() == out)
            && self.residual.is_none_or(|r| r.len() == m * out)
            && (self.gamma.is_none() || self.residual.is_some())
    }

    /// Applies the steps to the tile of result rows `r0..r0 + rows`, panel `p`, stored at `c` (rows `out`
    /// apart) by the kernel.
    ///
    /// # Safety
    /// `c` points at the tile's first value in a result buffer of `(r0 + rows) × out` or more floats, its
    /// `rows × 16` values initialised and not aliased; [`Self::fits`] holds for that result.
    pub(super) unsafe fn apply(&self, c: *mut f32, out: usize, r0: usize, rows: usize, p: usize) {
        let col0 = p * PANEL;
        for r in 0..rows {
            // SAFETY: row r of the tile: 16 initialised, unaliased floats (the caller's contract).
            let y = unsafe { std::slice::from_raw_parts_mut(c.add(r * out), PANEL) };
            if let Some(b) = self.bias {
                for (y, &b) in y.iter_mut().zip(&b[col0..col0 + PANEL]) {
                    *y += b;
                }
            }
            if self.gelu {
                vmath512::gelu_erf_in_place(y);
            }
            if let Some(res) = self.residual {
                let x = &res[(r0 + r) * out + col0..][..PANEL];
                match self.gamma {
                    Some(g) => {
                        for ((y, &x), &g) in y.iter_mut().zip(x).zip(&g[col0..col0 + PANEL]) {
                            *y = x + *y * g;
                        }
                    }
                    None => {
                        for (y, &x) in y.iter_mut().zip(x) {
                            *y += x;
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::random as values;
    use super::super::{available, W8Matrix};
    use super::*;

    /// The bias and the residual step in the store give bit for bit the separate steps' values; the GELU
    /// stays within its bound of the exact-form kernel. Row counts cover whole and partial register tiles.
    #[test]
    fn epilogue_equals_the_separate_steps() {
        if !available() {
            return;
        }
        let (out, inp) = (48, 128);
        let w = W8Matrix::quantize(&values(out * inp, 1), out, inp).expect("quantize");
        let (bias, gamma) = (values(out, 2), values(out, 3));
        for m in [1, 7, 8, 19] {
            let x = values(m * inp, 4 + m as u64);
            let residual = values(m * out, 5 + m as u64);
            let plain = w.matmul(&x, m);
            let with_bias: Vec<f32> = plain
                .iter()
                .enumerate()
                .map(|(i, &y)| y + bias[i % out])
                .collect();
            let fused = w.matmul_then(
                &x,
                m,
                &Epilogue {
                    bias: Some(&bias),
                    residual: Some(&residual),
                    gamma: Some(&gamma),
                    ..Epilogue::default()
                },
            );
            for (i, (&f, &y)) in fused.iter().zip(&with_bias).enumerate() {
                let want = residual[i] + y * gamma[i % out];
                assert_eq!(f.to_bits(), want.to_bits(), "m {m}, value {i}");
            }
            let no_gamma = w.matmul_then(
                &x,
                m,
                &Epilogue {
                    residual: Some(&residual),
                    ..Epilogue::default()
                },
            );
            for (i, (&f, &y)) in no_gamma.iter().zip(&plain).enumerate() {
                assert_eq!(f.to_bits(), (residual[i] + y).to_bits(), "m {m}, value {i}");
            }
            let gelu = w.matmul_then(
                &x,
                m,
                &Epilogue {
                    bias: Some(&bias),
                    gelu: true,
                    ..Epilogue::default()
                },
            );
            let mut want = vec![0f32; with_bias.len()];
            crate::nn::vmath::gelu_erf(&with_bias, &mut want);
            for ((&g, &w), &y) in gelu.iter().zip(&want).zip(&with_bias) {
                assert!((g - w).abs() <= 8e-7 * y.abs().max(1.0), "{g} vs {w}");
            }
        }
    }
}
