//! An 8-bit × 8-bit product for any number of rows, with weights and activations both quantized per block
//! of 32 inputs: the vision tower's linears under `--vision-int8` (a tile's 1,025 tokens) and the decoder's
//! under `--quant q8` (prefill and decode from the one copy of the weights).
//!
//! Why: the f32 GEMM was 67 % of a GAR-1B vision tile after round 6 (docs/performance.md); integer
//! multiply-adds issue at twice (AVX2) to four times (AVX-512 VNNI) the f32 FMA rate. Two kernels, each
//! with its own packing of the weights, chosen once at quantization from the CPU ([`Packing::native`]):
//! - [`avx2`] (`Packing::Pairs`): `vpmaddwd` on 16-bit lanes, two inputs per lane;
//! - [`vnni`] (`Packing::Quads`): AVX-512 `vpdpbusd` on bytes, four inputs per lane, accumulation included.
//!
//! Both compute the same exact integer sums per block and the same float steps in the same order, so their
//! outputs are bit for bit equal (tested). The [`super::q8`] kernel cannot serve many rows: its quad layout
//! folds each block's sums horizontally, cheap for one row and dominant for a thousand.
//!
//! Layout: output columns in panels of 16; for each panel and 32-input block, 32 bytes per group of inputs
//! (`Pairs`: 2 inputs × 16 columns, columns 0–7 then 8–15, each column's 2 inputs side by side; `Quads`:
//! 4 inputs × 16 columns, each column's 4 inputs side by side), then the 16 columns' f32 scales. A register
//! tile of several rows shares every weight load, and a block ends with one convert and one FMA per (row,
//! column vector) with the scale `d_row · d_column`. (The round-6 AVX2 form multiplied bytes with
//! `vpmaddubsw`, which needs the weights' signs moved onto the activations first: two more instructions
//! per product vector, and 10–15 % slower in an interleaved kernel benchmark.)
//!
//! Numerics: llama.cpp's Q8_0 rounding for both operands (`d = max|x| / 127`, `q = round(x / d)`) with the
//! weight scales kept in f32; the integer sums are exact (a block's 32 products are at most 32 · 255 · 127
//! in absolute value, far inside i32).

use rayon::prelude::*;

use crate::nn::q8::quantize_block_scalar;

#[cfg(target_arch = "x86_64")]
mod avx2;
#[cfg(target_arch = "x86_64")]
mod vnni;

/// Inputs per quantization block.
pub const BLOCK: usize = 32;
/// Output columns per panel (two AVX2 vectors, one AVX-512 vector of i32 lanes).
pub const PANEL: usize = 16;
/// Bytes of one panel's weights for one block.
const PANEL_BLOCK_BYTES: usize = BLOCK * PANEL;
/// Activation blocks from which their quantization is spread over the thread pool.
const PARALLEL_BLOCKS: usize = 4096;
/// Bytes of quantized input rows per pass over a task's panels: with a panel's weights (≤ 128 KiB for the
/// decoder's 8192-wide input) they stay in a 512 KiB L2.
const ROW_CHUNK_BYTES: usize = 192 << 10;

/// How a matrix's weight bytes are packed, which fixes the kernel that multiplies them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Packing {
    /// AVX2 `vpmaddwd`: groups of 2 inputs; the activations are widened to i16.
    Pairs,
    /// AVX-512 VNNI `vpdpbusd`: groups of 4 inputs; the activations are bytes offset by 128.
    Quads,
}

impl Packing {
    /// The fastest packing this CPU runs: `Quads` with AVX-512 VNNI, else `Pairs`.
    pub fn native() -> Self {
        if Self::Quads.runs_here() {
            Self::Quads
        } else {
            Self::Pairs
        }
    }

    /// Whether this CPU has the packing's kernel.
    pub fn runs_here(self) -> bool {
        #[cfg(target_arch = "x86_64")]
        {
            match self {
                Self::Pairs => avx2_available(),
                Self::Quads => vnni::available(),
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            false
        }
    }

    /// Inputs side by side per column in a group.
    fn group(self) -> usize {
        match self {
            Self::Pairs => 2,
            Self::Quads => 4,
        }
    }

    /// Where input `i` of a block sits, for panel column `col`, in the panel's block bytes.
    fn slot(self, i: usize, col: usize) -> usize {
        let g = self.group();
        match self {
            // Per group, 16 bytes for columns 0–7 then 16 for columns 8–15.
            Self::Pairs => (i / g) * PANEL * g + (col / 8) * 8 * g + (col % 8) * g + i % g,
            Self::Quads => (i / g) * PANEL * g + col * g + i % g,
        }
    }
}

/// A `(out, in)` weight matrix in one of the packings above.
pub struct W8Matrix {
    out: usize,
    inp: usize,
    packing: Packing,
    qs: Vec<i8>,
    d: Vec<f32>,
    /// `Quads` only: `-128 · Σ w` per (panel, block, column), the start of each block's integer sums.
    offset_sums: Vec<i32>,
}

impl std::fmt::Debug for W8Matrix {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "W8Matrix({}×{}, {:?})", self.out, self.inp, self.packing)
    }
}

/// Whether this CPU runs some kernel (AVX2 + FMA; AVX-512 VNNI is used where present as well).
pub fn available() -> bool {
    avx2_available()
}

fn avx2_available() -> bool {
    crate::nn::single_query::avx2_available()
}

/// Q8_0's rounding of one block ([`quantize_block_scalar`]) with the values widened to i16, through the vectorised
/// form where the CPU has it.
pub(crate) fn quantize_block_wide(x: &[f32], q: &mut [i16; BLOCK]) -> f32 {
    assert_eq!(x.len(), BLOCK, "one block");
    #[cfg(target_arch = "x86_64")]
    if avx2_available() {
        // SAFETY: AVX2/FMA checked; `x` and `q` hold one block each.
        return unsafe { avx2::quantize_block_i16(x.as_ptr(), q.as_mut_ptr()) };
    }
    let mut block = [0i8; BLOCK];
    let d = quantize_block_scalar(x, &mut block);
    for (q, &b) in q.iter_mut().zip(&block) {
        *q = b.into();
    }
    d
}

/// Q8_0's rounding of one block with the values offset by 128 into bytes (the `Quads` kernel's operand).
fn quantize_block_offset(x: &[f32], q: &mut [u8; BLOCK]) -> f32 {
    assert_eq!(x.len(), BLOCK, "one block");
    #[cfg(target_arch = "x86_64")]
    if avx2_available() {
        // SAFETY: AVX2/FMA checked; `x` and `q` hold one block each.
        return unsafe { avx2::quantize_block_u8(x.as_ptr(), q.as_mut_ptr()) };
    }
    let mut block = [0i8; BLOCK];
    let d = quantize_block_scalar(x, &mut block);
    for (q, &b) in q.iter_mut().zip(&block) {
        *q = (b as u8) ^ 0x80;
    }
    d
}

/// Q8_0 rounding of row-major activations per block of 32 (`x.len()` a multiple of 32) through `block`,
/// which writes one block's values and returns its scale.
fn quantize_rows<T: Copy + Default + Send + Sync>(
    x: &[f32],
    block: impl Fn(&[f32], &mut [T; BLOCK]) -> f32 + Sync,
) -> (Vec<T>, Vec<f32>) {
    assert!(x.len().is_multiple_of(BLOCK), "whole blocks");
    let mut q = vec![T::default(); x.len()];
    let mut d = vec![0f32; x.len() / BLOCK];
    let quantize = |(d, (x, q)): (&mut f32, (&[f32], &mut [T]))| {
        *d = block(x, q.try_into().expect("chunks of one block"));
    };
    // A few rows are not worth a hand-off to the pool.
    if d.len() >= PARALLEL_BLOCKS {
        d.par_iter_mut()
            .zip(x.par_chunks_exact(BLOCK).zip(q.par_chunks_exact_mut(BLOCK)))
            .with_min_len(PARALLEL_BLOCKS / 4)
            .for_each(quantize);
    } else {
        d.iter_mut()
            .zip(x.chunks_exact(BLOCK).zip(q.chunks_exact_mut(BLOCK)))
            .for_each(quantize);
    }
    (q, d)
}

impl W8Matrix {
    /// Quantizes a row-major `(out, in)` f32 matrix in this CPU's [`Packing::native`]; needs
    /// `out % 16 == 0` and `in % 32 == 0`.
    pub fn quantize(w: &[f32], out: usize, inp: usize) -> Result<Self, String> {
        Self::quantize_packed(w, out, inp, Packing::native())
    }

    /// [`Self::quantize`] in a chosen packing (whether or not this CPU runs it).
    pub fn quantize_packed(
        w: &[f32],
        out: usize,
        inp: usize,
        packing: Packing,
    ) -> Result<Self, String> {
        if !out.is_multiple_of(PANEL) || !inp.is_multiple_of(BLOCK) || w.len() != out * inp {
            return Err(format!(
                "W8A8 needs a ({out}, {inp}) matrix with {PANEL} | out and {BLOCK} | in, got {} values",
                w.len()
            ));
        }
        let nb = inp / BLOCK;
        let mut qs = vec![0i8; out * inp];
        let mut d = vec![0f32; out * nb];
        qs.par_chunks_mut(nb * PANEL_BLOCK_BYTES)
            .zip(d.par_chunks_mut(nb * PANEL))
            .enumerate()
            .for_each(|(p, (qs, d))| {
                for col in 0..PANEL {
                    let row = &w[(p * PANEL + col) * inp..][..inp];
                    let mut block = [0i16; BLOCK];
                    for (b, x) in row.chunks_exact(BLOCK).enumerate() {
                        d[b * PANEL + col] = quantize_block_wide(x, &mut block);
                        let qs = &mut qs[b * PANEL_BLOCK_BYTES..][..PANEL_BLOCK_BYTES];
                        for (i, &q) in block.iter().enumerate() {
                            // |q| ≤ 127 by construction.
                            qs[packing.slot(i, col)] = q as i8;
                        }
                    }
                }
            });
        let offset_sums = match packing {
            Packing::Pairs => Vec::new(),
            // Per panel block, column `col` owns bytes col·4..col·4+4 of every 64-byte group.
            Packing::Quads => qs
                .par_chunks_exact(PANEL_BLOCK_BYTES)
                .flat_map_iter(|block| {
                    (0..PANEL).map(move |col| {
                        let sum: i32 = block
                            .chunks_exact(PANEL * 4)
                            .flat_map(|group| &group[col * 4..col * 4 + 4])
                            .map(|&q| i32::from(q))
                            .sum();
                        -128 * sum
                    })
                })
                .collect(),
        };
        Ok(Self {
            out,
            inp,
            packing,
            qs,
            d,
            offset_sums,
        })
    }

    pub fn rows(&self) -> usize {
        self.out
    }

    pub fn cols(&self) -> usize {
        self.inp
    }

    pub fn packing(&self) -> Packing {
        self.packing
    }

    /// The dense `(out, in)` matrix the blocks stand for.
    pub fn dequantize(&self) -> Vec<f32> {
        let nb = self.inp / BLOCK;
        let mut w = vec![0f32; self.out * self.inp];
        for (o, row) in w.chunks_exact_mut(self.inp).enumerate() {
            let (p, col) = (o / PANEL, o % PANEL);
            for (b, x) in row.chunks_exact_mut(BLOCK).enumerate() {
                let at = (p * nb + b) * PANEL_BLOCK_BYTES;
                let d = self.d[(p * nb + b) * PANEL + col];
                for (i, x) in x.iter_mut().enumerate() {
                    *x = self.qs[at + self.packing.slot(i, col)] as f32 * d;
                }
            }
        }
        w
    }

    /// `x · Wᵀ` for `m` row-major input rows of width `in`: an `(m, out)` row-major result. The rows are
    /// quantized per block first.
    ///
    /// # Panics
    /// When `x` is not `m × in`, or on a CPU without the packing's kernel (check [`Packing::runs_here`];
    /// [`Self::quantize`] picks one that does).
    pub fn matmul(&self, x: &[f32], m: usize) -> Vec<f32> {
        assert_eq!(x.len(), m * self.inp, "input is not (m, in)");
        assert!(
            self.packing.runs_here(),
            "W8Matrix::matmul: this CPU has no kernel for {:?}",
            self.packing
        );
        self.run(x, m)
    }

    #[cfg(target_arch = "x86_64")]
    fn run(&self, x: &[f32], m: usize) -> Vec<f32> {
        let (inp, out, nb) = (self.inp, self.out, self.inp / BLOCK);
        match self.packing {
            Packing::Pairs => {
                let (xq, xd) = quantize_rows(x, quantize_block_wide);
                self.for_each_tile(m, 2 * inp, avx2::TILE_ROWS, |r0, rows, p, c| {
                    // SAFETY: AVX2/FMA checked in `matmul`; rows r0..r0+rows of xq/xd hold `in` values
                    // and `nb` scales, panel p holds nb blocks, and `c` is (see `for_each_tile`) the
                    // tile's corner in a buffer of `m × out` floats.
                    unsafe {
                        avx2::tile(
                            rows,
                            nb,
                            xq[r0 * inp..].as_ptr(),
                            inp,
                            xd[r0 * nb..].as_ptr(),
                            nb,
                            self.qs[p * nb * PANEL_BLOCK_BYTES..].as_ptr(),
                            self.d[p * nb * PANEL..].as_ptr(),
                            c,
                            out,
                        )
                    }
                })
            }
            Packing::Quads => {
                let (xq, xd) = quantize_rows(x, quantize_block_offset);
                self.for_each_tile(m, inp, vnni::TILE_ROWS, |r0, rows, p, c| {
                    // SAFETY: as for `Pairs`, with AVX-512 VNNI checked and the panel's nb · 16 sums.
                    unsafe {
                        vnni::tile(
                            rows,
                            nb,
                            xq[r0 * inp..].as_ptr(),
                            inp,
                            xd[r0 * nb..].as_ptr(),
                            nb,
                            self.qs[p * nb * PANEL_BLOCK_BYTES..].as_ptr(),
                            self.offset_sums[p * nb * PANEL..].as_ptr(),
                            self.d[p * nb * PANEL..].as_ptr(),
                            c,
                            out,
                        )
                    }
                })
            }
        }
    }

    #[cfg(not(target_arch = "x86_64"))]
    fn run(&self, _: &[f32], _: usize) -> Vec<f32> {
        unreachable!("matmul checks for a kernel first")
    }

    /// Calls `tile(r0, rows, panel, corner)` once per (tile of ≤ `tile_rows` rows, 16-column panel) of the
    /// `(m, out)` result, in parallel over panels, and returns the result: `tile` must store the tile's
    /// `rows × 16` floats at `corner`, rows `out` apart. Rows go in chunks of `ROW_CHUNK_BYTES` quantized
    /// bytes (`row_bytes` each) so that a chunk and a panel's weights stay in L2 together.
    fn for_each_tile(
        &self,
        m: usize,
        row_bytes: usize,
        tile_rows: usize,
        tile: impl Fn(usize, usize, usize, *mut f32) + Sync,
    ) -> Vec<f32> {
        let out = self.out;
        // Not zeroed first: every value is stored exactly once by the tiles below (zeroing every linear's
        // output showed as `memset` in vision profiles).
        let mut y: Vec<f32> = Vec::with_capacity(m * out);
        let row_chunk = (ROW_CHUNK_BYTES / row_bytes).div_ceil(tile_rows).max(1) * tile_rows;
        let y_addr = y.spare_capacity_mut().as_mut_ptr() as usize;
        let panels = out / PANEL;
        let per_task = panels
            .div_ceil(4 * rayon::current_num_threads().max(1))
            .max(1);
        (0..panels.div_ceil(per_task))
            .into_par_iter()
            .for_each(|task| {
                let y = y_addr as *mut f32;
                for i0 in (0..m).step_by(row_chunk) {
                    let i1 = (i0 + row_chunk).min(m);
                    for p in task * per_task..((task + 1) * per_task).min(panels) {
                        for r0 in (i0..i1).step_by(tile_rows) {
                            // Tasks own disjoint panels, so they write disjoint 16-column strips of rows
                            // r0.. of `y`, which outlives the loop (`y_addr` is its buffer).
                            tile(
                                r0,
                                tile_rows.min(i1 - r0),
                                p,
                                y.wrapping_add(r0 * out + p * PANEL),
                            );
                        }
                    }
                }
            });
        // SAFETY: the tasks cover every panel and every row tile, and each (row, column) is stored by
        // exactly one tile, so all `m × out` values are initialised.
        unsafe { y.set_len(m * out) };
        y
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::q8::quantize_block;

    fn random(n: usize, seed: u64) -> Vec<f32> {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        (0..n).map(|_| rng.random_range(-2.0f32..2.0)).collect()
    }

    /// The kernel's arithmetic in scalar form: exact integer sums per block, scaled by `d_x · d_w`.
    fn reference(wq: &W8Matrix, x: &[f32], m: usize) -> Vec<f32> {
        let (inp, nb) = (wq.inp, wq.inp / BLOCK);
        let w = wq.dequantize();
        let mut y = vec![0f32; m * wq.out];
        for i in 0..m {
            for o in 0..wq.out {
                let mut acc = 0f32;
                for b in 0..nb {
                    let xb = &x[i * inp + b * BLOCK..][..BLOCK];
                    let mut xq = [0i8; BLOCK];
                    let dx = quantize_block(xb, &mut xq);
                    let dw = wq.d[(o / PANEL * nb + b) * PANEL + o % PANEL];
                    let isum: i32 = (0..BLOCK)
                        .map(|k| {
                            let wqk = if dw == 0.0 {
                                0
                            } else {
                                (w[o * inp + b * BLOCK + k] / dw).round() as i32
                            };
                            wqk * xq[k] as i32
                        })
                        .sum();
                    acc += isum as f32 * (dx * dw);
                }
                y[i * wq.out + o] = acc;
            }
        }
        y
    }

    #[test]
    fn dequantize_is_q8_0_rounding_per_row_block() {
        let (out, inp) = (32, 64);
        let w = random(out * inp, 1);
        let q = W8Matrix::quantize(&w, out, inp).unwrap();
        for (o, row) in q.dequantize().chunks(inp).enumerate() {
            for (b, got) in row.chunks(BLOCK).enumerate() {
                let x = &w[o * inp + b * BLOCK..][..BLOCK];
                let mut want = [0i8; BLOCK];
                let d = quantize_block(x, &mut want);
                for (g, &q) in got.iter().zip(&want) {
                    assert_eq!(*g, q as f32 * d);
                }
            }
        }
        assert!(W8Matrix::quantize(&w, 24, 64 + 40).is_err());
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn vectorised_block_quantization_is_the_scalar_one() {
        if !available() {
            return;
        }
        // Random blocks, an all-zero block, and exact halves (max 127 gives d = 1: 2.5 → 3, -3.5 → -4).
        let mut blocks: Vec<Vec<f32>> = (0..64).map(|s| random(BLOCK, 100 + s)).collect();
        blocks.push(vec![0.0; BLOCK]);
        blocks.push(
            (0..BLOCK)
                .map(|i| [127.0, 2.5, -3.5, 0.5, -0.5, 126.5][i % 6])
                .collect(),
        );
        for x in &blocks {
            let mut want = [0i8; BLOCK];
            let dw = quantize_block_scalar(x, &mut want);
            let mut got = [0i16; BLOCK];
            let mut got8 = [0u8; BLOCK];
            // SAFETY: AVX2 checked above; the buffers hold one block.
            let (dg, dg8) = unsafe {
                (
                    avx2::quantize_block_i16(x.as_ptr(), got.as_mut_ptr()),
                    avx2::quantize_block_u8(x.as_ptr(), got8.as_mut_ptr()),
                )
            };
            assert_eq!(dg.to_bits(), dw.to_bits());
            assert_eq!(dg8.to_bits(), dw.to_bits());
            assert!(
                got.iter().zip(&want).all(|(&g, &w)| g == i16::from(w)),
                "{x:?}"
            );
            assert!(
                got8.iter()
                    .zip(&want)
                    .all(|(&g, &w)| i32::from(g) == i32::from(w) + 128),
                "{x:?}"
            );
        }
    }

    #[test]
    fn matmul_matches_its_scalar_form_and_the_dense_product() {
        if !available() {
            return;
        }
        // Row counts with every tile tail of both kernels (6- and 8-row tiles) and, at a 4096-wide input,
        // more than one row chunk (24 rows of i16, 48 of bytes).
        for (m, out, inp) in [
            (1, 16, 32),
            (5, 48, 96),
            (7, 16, 64),
            (8, 16, 64),
            (9, 16, 32),
            (15, 32, 64),
            (130, 32, 256),
            (100, 32, 4096),
        ] {
            let w = random(out * inp, 2);
            let x = random(m * inp, 3);
            let pairs = W8Matrix::quantize_packed(&w, out, inp, Packing::Pairs).unwrap();
            let got = pairs.matmul(&x, m);
            let want = reference(&pairs, &x, m);
            for (g, r) in got.iter().zip(&want) {
                assert!((g - r).abs() <= 1e-4 * r.abs().max(1.0), "{g} vs {r}");
            }
            // The VNNI kernel sums the same integers and rounds the same float steps: equal bits.
            let quads = W8Matrix::quantize_packed(&w, out, inp, Packing::Quads).unwrap();
            assert_eq!(quads.dequantize(), pairs.dequantize());
            if Packing::Quads.runs_here() {
                let got_quads = quads.matmul(&x, m);
                assert!(
                    got_quads
                        .iter()
                        .zip(&got)
                        .all(|(a, b)| a.to_bits() == b.to_bits()),
                    "Quads differs from Pairs at ({m}, {out}, {inp})"
                );
            }
            // Against the unquantized product: both operands carry ≤ 0.4 % rounding per element.
            let mut err = 0f64;
            let mut norm = 0f64;
            for i in 0..m {
                for o in 0..out {
                    let dense: f32 = (0..inp).map(|k| x[i * inp + k] * w[o * inp + k]).sum();
                    err += ((got[i * out + o] - dense) as f64).powi(2);
                    norm += (dense as f64).powi(2);
                }
            }
            assert!(
                (err / norm).sqrt() < 0.01,
                "relative error {}",
                (err / norm).sqrt()
            );
        }
    }
}
