//! Element-wise steps applied to each tile of the int8 product as the kernel stores it: the layer's bias,
//! the vision MLP's GELU, the block's LayerScale residual. The VNNI kernel applies them to the tile in its
//! registers ([`Epilogue::store_rows`], with the residual's lines prefetched when the tile starts); the AVX2
//! kernel's tiles get them right after the store, while still in L1 ([`Epilogue::apply`]).
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

#[cfg(target_arch = "x86_64")]
impl Epilogue<'_> {
    /// Asks for the cache lines a tile's store will touch, `rows` result rows from `r0` at columns
    /// `col0..col0 + 16`: the residual it reads and the result it writes, both a row (`out` floats) apart
    /// and otherwise cold. Issued when a kernel starts a tile, they arrive during its products (measured:
    /// without them a third of the store's time was waiting on the residual's loads).
    #[inline]
    pub(super) fn prefetch(&self, r0: usize, rows: usize, col0: usize, out: usize, c: *const f32) {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        for r in 0..rows {
            // SAFETY: prefetches never fault; the addresses are those `store_rows` reads and writes.
            unsafe {
                _mm_prefetch::<_MM_HINT_T0>(c.wrapping_add(r * out) as *const i8);
                if let Some(res) = self.residual {
                    let row = res.as_ptr().wrapping_add((r0 + r) * out + col0);
                    _mm_prefetch::<_MM_HINT_T0>(row as *const i8);
                }
            }
        }
    }

    /// Stores `ys`, the result's rows `r0..r0 + R` at columns `col0..col0 + 16`, rows `out` apart from `c`,
    /// after the steps: the vector form of [`Self::apply`] for a kernel that holds the tile in registers (the
    /// same operations in the same order, so the same bits), which saves the tile's store and reload.
    ///
    /// # Safety
    /// AVX-512F; `c` `R` rows of 16 writable floats `out` apart; [`Self::fits`] holds for a result with at
    /// least `r0 + R` rows and `col0 + 16 ≤ out` columns.
    #[inline]
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn store_rows<const R: usize>(
        &self,
        ys: &[std::arch::x86_64::__m512; R],
        r0: usize,
        col0: usize,
        out: usize,
        c: *mut f32,
    ) {
        use std::arch::x86_64::*;
        let load = |v: &[f32]| unsafe { _mm512_loadu_ps(v[..PANEL].as_ptr()) };
        let bias = self.bias.map(|b| load(&b[col0..]));
        let gamma = self.gamma.map(|g| load(&g[col0..]));
        for (r, &y) in ys.iter().enumerate() {
            let mut y = y;
            if let Some(b) = bias {
                y = _mm512_add_ps(y, b);
            }
            if self.gelu {
                y = vmath512::kernels::gelu16(y);
            }
            if let Some(res) = self.residual {
                let x = load(&res[(r0 + r) * out + col0..]);
                // Two roundings, as the separate ops (no FMA).
                y = match gamma {
                    Some(g) => _mm512_add_ps(x, _mm512_mul_ps(y, g)),
                    None => _mm512_add_ps(x, y),
                };
            }
            unsafe { _mm512_storeu_ps(c.add(r * out), y) };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::random as values;
    use super::super::{available, Packing, W8Matrix};
    use super::*;

    /// The bias and the residual step in the store give bit for bit the separate steps' values; the GELU
    /// stays within its bound of the exact-form kernel. Row counts cover whole and partial register tiles,
    /// in both packings.
    #[test]
    fn epilogue_equals_the_separate_steps() {
        if !available() {
            return;
        }
        let (out, inp) = (48, 128);
        let (bias, gamma) = (values(out, 2), values(out, 3));
        // Both the tile-after-store form (`Pairs`) and the in-register one (`Quads`) where the CPU runs it.
        let packings = [Packing::Pairs, Packing::Quads];
        for (packing, m) in packings
            .into_iter()
            .filter(|p| p.runs_here())
            .flat_map(|p| [1, 7, 8, 19].map(|m| (p, m)))
        {
            let w = W8Matrix::quantize_packed(&values(out * inp, 1), out, inp, packing)
                .expect("quantize");
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
                assert_eq!(f.to_bits(), want.to_bits(), "{packing:?}, m {m}, value {i}");
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
                assert_eq!(
                    f.to_bits(),
                    (residual[i] + y).to_bits(),
                    "{packing:?}, m {m}, value {i}"
                );
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
