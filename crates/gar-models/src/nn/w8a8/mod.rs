//! An 8-bit × 8-bit product for any number of rows, with weights quantized per output channel and
//! activations per block of 64 inputs: the vision tower's linears under `--vision-int8` (a tile's 1,025
//! tokens) and the decoder's under `--quant q8` (prefill and decode from the one copy of the weights).
//!
//! Why: the f32 GEMM was 67 % of a GAR-1B vision tile after round 6 (docs/performance.md); integer
//! multiply-adds issue at twice (AVX2) to four times (AVX-512 VNNI) the f32 FMA rate. Two kernels, each
//! with its own packing of the weights, chosen once at quantization from the CPU ([`Packing::native`]):
//! - [`avx2`] (`Packing::Pairs`): `vpmaddwd` on 16-bit lanes, two inputs per lane;
//! - [`vnni`] (`Packing::Quads`): AVX-512 `vpdpbusd` on bytes, four inputs per lane, accumulation included;
//!   the activations are quantized straight into its register tiles' layout ([`vnni::pack_tile`]).
//!
//! Both compute the same exact integer sums per activation block and the same float steps in the same
//! order, so their outputs are bit for bit equal (tested). The [`super::q8`] kernel cannot serve many rows:
//! its quad layout folds each block's sums horizontally, cheap for one row and dominant for a thousand.
//!
//! Layout: output columns in panels of 16; for each panel and 32-input block, 32 bytes per group of inputs
//! (`Pairs`: 2 inputs × 16 columns, columns 0–7 then 8–15, each column's 2 inputs side by side; `Quads`:
//! 4 inputs × 16 columns, each column's 4 inputs side by side, stored as `w + 128`); the 16 columns' f32
//! scales apart. A
//! register tile of several rows shares every weight load; an activation block ends with one convert and
//! one FMA per (row, column vector) with the row's scale, and the tile's store multiplies by the columns'
//! scales. (The round-6 AVX2 form multiplied bytes with `vpmaddubsw`, which needs the weights' signs moved
//! onto the activations first: two more instructions per product vector, and 10–15 % slower in an
//! interleaved kernel benchmark.)
//!
//! Why these scale granularities (round 10, docs/performance.md): on Zen 4 a 512-bit FMA or multiply takes
//! the slot of a `vpdpbusd`, so the earlier form (weights and activations both per 32-block: a multiply
//! `d_row · d_column` and an FMA per 8 `vpdpbusd`) capped the kernel at 80 % of the integer peak; one FMA
//! per 16 `vpdpbusd` caps it at 94 %. Per-channel int8 weights are the usual W8A8 choice; activations keep
//! small blocks, which confine an outlier's coarser rounding to 64 inputs. Accuracy measured, not assumed
//! (docs/performance.md).
//!
//! Numerics: llama.cpp's Q8_0 rounding rule for both operands (`d = max|x| / 127`, `q = round(x / d)`),
//! over a whole weight row and over each activation block, scales kept in f32; the integer sums are exact
//! (an activation block's products are at most 64 · 255 · 127 in absolute value, and their sums convert to
//! f32 exactly below 2²⁴).

use rayon::prelude::*;

use crate::nn::q8::quantize_block_scalar;

#[cfg(target_arch = "x86_64")]
mod avx2;
mod epilogue;
pub use epilogue::Epilogue;
#[cfg(target_arch = "x86_64")]
mod vnni;

/// Inputs per packing block, and the smallest activation block: input widths must be multiples of it.
pub const BLOCK: usize = 32;
/// Inputs per activation scale where the input width is a multiple of it (else [`BLOCK`]).
pub const ACT_BLOCK: usize = 64;
/// Output columns per panel (two AVX2 vectors, one AVX-512 vector of i32 lanes).
pub const PANEL: usize = 16;
/// Bytes of one panel's weights for one packing block.
const PANEL_BLOCK_BYTES: usize = BLOCK * PANEL;
/// Activation values from which their quantization is spread over the thread pool.
const PARALLEL_VALUES: usize = 4096 * BLOCK;
/// Bytes of quantized input rows per pass over a task's panels: with a panel's weights (≤ 128 KiB for the
/// decoder's 8192-wide input) they stay in a 512 KiB L2.
const ROW_CHUNK_BYTES: usize = 192 << 10;

/// How a matrix's weight bytes are packed, which fixes the kernel that multiplies them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Packing {
    /// AVX2 `vpmaddwd`: groups of 2 inputs; the activations are widened to i16.
    Pairs,
    /// AVX-512 VNNI `vpdpbusd`: groups of 4 inputs; the weights are bytes offset by 128.
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

    /// The byte that stores weight `q`: `Quads` keeps `q + 128`, `vpdpbusd`'s unsigned operand (flipping
    /// the sign bit adds 128).
    fn store(self, q: i8) -> i8 {
        match self {
            Self::Pairs => q,
            Self::Quads => q ^ i8::MIN,
        }
    }

    /// The weight a stored byte stands for ([`Self::store`] undone).
    fn load(self, byte: i8) -> i8 {
        self.store(byte)
    }

    /// Where input `i` of a row sits, for panel column `col`, in the panel's bytes.
    fn panel_offset(self, i: usize, col: usize) -> usize {
        (i / BLOCK) * PANEL_BLOCK_BYTES + self.slot(i % BLOCK, col)
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
    /// Inputs per activation scale: [`ACT_BLOCK`] where it divides `inp`, else [`BLOCK`].
    act_block: usize,
    /// The packed weights (`Quads`: the bytes of `w + 128`).
    qs: Vec<i8>,
    /// One scale per output column.
    d: Vec<f32>,
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

/// Q8_0's rounding rule ([`quantize_block_scalar`]) over all of `x` (a multiple of 32 values) under one
/// scale, the values widened to i16 into `q` (as long as `x`), through the vectorised form where the CPU
/// has it; returns the scale.
pub(crate) fn quantize_wide(x: &[f32], q: &mut [i16]) -> f32 {
    assert!(
        x.len().is_multiple_of(BLOCK) && q.len() == x.len(),
        "whole blocks"
    );
    #[cfg(target_arch = "x86_64")]
    if avx2_available() {
        // SAFETY: AVX2/FMA checked; `x` and `q` hold x.len() values each.
        return unsafe { avx2::quantize_i16(x.as_ptr(), x.len(), q.as_mut_ptr()) };
    }
    let mut narrow = vec![0i8; x.len()];
    let d = quantize_block_scalar(x, &mut narrow);
    for (q, &b) in q.iter_mut().zip(&narrow) {
        *q = b.into();
    }
    d
}

/// Q8_0 rounding of row-major activations per block of `block` values (`x.len()` a multiple of it)
/// through `round`, which writes one block's values and returns its scale.
fn quantize_rows<T: Copy + Default + Send + Sync>(
    x: &[f32],
    block: usize,
    round: impl Fn(&[f32], &mut [T]) -> f32 + Sync,
) -> (Vec<T>, Vec<f32>) {
    assert!(x.len().is_multiple_of(block), "whole blocks");
    let mut q = vec![T::default(); x.len()];
    let mut d = vec![0f32; x.len() / block];
    let quantize = |(d, (x, q)): (&mut f32, (&[f32], &mut [T]))| {
        *d = round(x, q);
    };
    // A few rows are not worth a hand-off to the pool.
    if x.len() >= PARALLEL_VALUES {
        d.par_iter_mut()
            .zip(x.par_chunks_exact(block).zip(q.par_chunks_exact_mut(block)))
            .with_min_len(PARALLEL_VALUES / 4 / block)
            .for_each(quantize);
    } else {
        d.iter_mut()
            .zip(x.chunks_exact(block).zip(q.chunks_exact_mut(block)))
            .for_each(quantize);
    }
    (q, d)
}

/// The `Quads` kernel's activations: row-major rows of `inp` values quantized per block of `block` and
/// packed per register tile ([`vnni::pack_tile`]); returns the bytes, the blocks' scales and their
/// `-128 · Σ q`.
#[cfg(target_arch = "x86_64")]
fn pack_rows(x: &[f32], inp: usize, block: usize) -> (Vec<i8>, Vec<f32>, Vec<i32>) {
    use std::mem::MaybeUninit;
    let (tile, nab) = (vnni::TILE_ROWS, inp / block);
    // Not zeroed first: `pack_tile` writes every byte, scale and sum (the zeroing was ≈ 2 % of a vision
    // tile, on the calling thread alone).
    let mut q: Vec<i8> = Vec::with_capacity(x.len());
    let mut d: Vec<f32> = Vec::with_capacity(x.len() / block);
    let mut sums: Vec<i32> = Vec::with_capacity(x.len() / block);
    /// One register tile's rows: inputs, then room for the bytes, scales and sums.
    type Tile<'a> = (
        (&'a [f32], &'a mut [MaybeUninit<i8>]),
        (&'a mut [MaybeUninit<f32>], &'a mut [MaybeUninit<i32>]),
    );
    let pack = |((x, q), (d, sums)): Tile| {
        // SAFETY: `matmul` checked the CPU; the chunks hold one tile's rows of inputs and room for their
        // bytes, scales and sums, and `block` divides `inp`.
        unsafe {
            vnni::pack_tile(
                x.as_ptr(),
                x.len() / inp,
                inp,
                block,
                q.as_mut_ptr().cast(),
                d.as_mut_ptr().cast(),
                sums.as_mut_ptr().cast(),
            )
        }
    };
    let (values, scales) = (tile * inp, tile * nab);
    let (q_room, d_room, sums_room) = (
        &mut q.spare_capacity_mut()[..x.len()],
        &mut d.spare_capacity_mut()[..x.len() / block],
        &mut sums.spare_capacity_mut()[..x.len() / block],
    );
    // A few rows are not worth a hand-off to the pool.
    if x.len() >= PARALLEL_VALUES {
        x.par_chunks(values)
            .zip(q_room.par_chunks_mut(values))
            .zip(
                d_room
                    .par_chunks_mut(scales)
                    .zip(sums_room.par_chunks_mut(scales)),
            )
            .for_each(pack);
    } else {
        x.chunks(values)
            .zip(q_room.chunks_mut(values))
            .zip(d_room.chunks_mut(scales).zip(sums_room.chunks_mut(scales)))
            .for_each(pack);
    }
    // SAFETY: the tiles cover all rows, and `pack_tile` initialised every value of each.
    unsafe {
        q.set_len(x.len());
        d.set_len(x.len() / block);
        sums.set_len(x.len() / block);
    }
    (q, d, sums)
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
        let act_block = if inp.is_multiple_of(ACT_BLOCK) {
            ACT_BLOCK
        } else {
            BLOCK
        };
        let mut qs = vec![0i8; out * inp];
        let mut d = vec![0f32; out];
        qs.par_chunks_mut(inp * PANEL)
            .zip(d.par_chunks_mut(PANEL))
            .enumerate()
            .for_each(|(p, (qs, d))| {
                let mut row_q = vec![0i16; inp];
                for (col, d) in d.iter_mut().enumerate() {
                    // Q8_0's rule over the whole row: one scale per output channel.
                    *d = quantize_wide(&w[(p * PANEL + col) * inp..][..inp], &mut row_q);
                    for (i, &q) in row_q.iter().enumerate() {
                        // |q| ≤ 127 by construction.
                        qs[packing.panel_offset(i, col)] = packing.store(q as i8);
                    }
                }
            });
        Ok(Self {
            out,
            inp,
            packing,
            act_block,
            qs,
            d,
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

    /// Inputs per activation scale.
    pub fn act_block(&self) -> usize {
        self.act_block
    }

    /// The integer weight of output `o`, input `i`.
    fn weight_q(&self, o: usize, i: usize) -> i8 {
        let (p, col) = (o / PANEL, o % PANEL);
        self.packing
            .load(self.qs[p * self.inp * PANEL + self.packing.panel_offset(i, col)])
    }

    /// The dense `(out, in)` matrix the 8-bit weights stand for.
    pub fn dequantize(&self) -> Vec<f32> {
        let mut w = vec![0f32; self.out * self.inp];
        for (o, row) in w.chunks_exact_mut(self.inp).enumerate() {
            for (i, x) in row.iter_mut().enumerate() {
                *x = self.weight_q(o, i) as f32 * self.d[o];
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
        self.matmul_then(x, m, &Epilogue::default())
    }

    /// [`Self::matmul`] followed by `epilogue`'s element-wise steps, applied to each tile as it is stored.
    ///
    /// # Panics
    /// As [`Self::matmul`], and when the epilogue's slices do not fit an `(m, out)` result.
    pub fn matmul_then(&self, x: &[f32], m: usize, epilogue: &Epilogue) -> Vec<f32> {
        assert_eq!(x.len(), m * self.inp, "input is not (m, in)");
        assert!(
            self.packing.runs_here(),
            "W8Matrix::matmul: this CPU has no kernel for {:?}",
            self.packing
        );
        assert!(
            epilogue.fits(m, self.out),
            "W8Matrix::matmul_then: the epilogue does not fit a ({m}, {}) result",
            self.out
        );
        self.run(x, m, epilogue)
    }

    #[cfg(target_arch = "x86_64")]
    fn run(&self, x: &[f32], m: usize, epilogue: &Epilogue) -> Vec<f32> {
        let (inp, out, ab) = (self.inp, self.out, self.act_block);
        let nab = inp / ab;
        match self.packing {
            Packing::Pairs => {
                let (xq, xd) = quantize_rows(x, ab, quantize_wide);
                self.for_each_tile(m, 2 * inp, avx2::TILE_ROWS, |r0, rows, p, c| {
                    // SAFETY: AVX2/FMA checked in `matmul`; rows r0..r0+rows of xq/xd hold `in` values
                    // and `nab` scales, panel p holds `in` inputs and 16 scales, and `c` is (see
                    // `for_each_tile`) the tile's corner in a buffer of `m × out` floats.
                    unsafe {
                        avx2::tile(
                            rows,
                            nab,
                            ab,
                            xq[r0 * inp..].as_ptr(),
                            inp,
                            xd[r0 * nab..].as_ptr(),
                            nab,
                            self.qs[p * inp * PANEL..].as_ptr(),
                            self.d[p * PANEL..].as_ptr(),
                            c,
                            out,
                        )
                    };
                    if !epilogue.is_empty() {
                        // SAFETY: `c` is the tile the kernel has just stored (see `for_each_tile`), and
                        // `matmul_then` checked that the epilogue fits the result.
                        unsafe { epilogue.apply(c, out, r0, rows, p) }
                    }
                })
            }
            Packing::Quads => {
                let (xq, xd, sums) = pack_rows(x, inp, ab);
                self.for_each_tile(m, inp, vnni::TILE_ROWS, |r0, rows, p, c| {
                    // SAFETY: as for `Pairs`, with AVX-512 VNNI checked; row tiles start at multiples of
                    // TILE_ROWS (see `for_each_tile`), so the tile's packed bytes start at row r0's offset.
                    unsafe {
                        vnni::tile(
                            epilogue,
                            r0,
                            p * PANEL,
                            rows,
                            nab,
                            ab,
                            xq[r0 * inp..].as_ptr(),
                            xd[r0 * nab..].as_ptr(),
                            sums[r0 * nab..].as_ptr(),
                            nab,
                            self.qs[p * inp * PANEL..].as_ptr(),
                            self.d[p * PANEL..].as_ptr(),
                            c,
                            out,
                        )
                    };
                })
            }
        }
    }

    #[cfg(not(target_arch = "x86_64"))]
    fn run(&self, _: &[f32], _: usize, _: &Epilogue) -> Vec<f32> {
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

    pub(super) fn random(n: usize, seed: u64) -> Vec<f32> {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        (0..n).map(|_| rng.random_range(-2.0f32..2.0)).collect()
    }

    /// The kernel's arithmetic in scalar form: exact integer sums per activation block, scaled by the
    /// block's `d_x` into an f32 sum, times the column's `d_w`.
    fn reference(wq: &W8Matrix, x: &[f32], m: usize) -> Vec<f32> {
        let (inp, ab) = (wq.inp, wq.act_block);
        let mut y = vec![0f32; m * wq.out];
        for i in 0..m {
            for o in 0..wq.out {
                let mut acc = 0f32;
                for b in 0..inp / ab {
                    let xb = &x[i * inp + b * ab..][..ab];
                    let mut xq = vec![0i8; ab];
                    let dx = quantize_block_scalar(xb, &mut xq);
                    let isum: i32 = (0..ab)
                        .map(|k| i32::from(wq.weight_q(o, b * ab + k)) * i32::from(xq[k]))
                        .sum();
                    acc = (isum as f32).mul_add(dx, acc);
                }
                y[i * wq.out + o] = acc * wq.d[o];
            }
        }
        y
    }

    #[test]
    fn dequantize_is_q8_0_rounding_per_row() {
        for (out, inp, act_block) in [(32, 128, 64), (16, 96, 32)] {
            let w = random(out * inp, 1);
            let q = W8Matrix::quantize(&w, out, inp).unwrap();
            assert_eq!(q.act_block(), act_block);
            for (got, x) in q.dequantize().chunks(inp).zip(w.chunks(inp)) {
                let mut want = vec![0i8; inp];
                let d = quantize_block_scalar(x, &mut want);
                for (g, &q) in got.iter().zip(&want) {
                    assert_eq!(*g, q as f32 * d);
                }
            }
        }
        assert!(W8Matrix::quantize(&random(24 * 104, 1), 24, 104).is_err());
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn vectorised_block_quantization_is_the_scalar_one() {
        if !available() {
            return;
        }
        // Random blocks of 32 and 64, an all-zero block, and exact halves (max 127 gives d = 1: 2.5 → 3,
        // -3.5 → -4), the largest value in either half of a 64-block.
        let mut blocks: Vec<Vec<f32>> = (0..64)
            .map(|s| random(if s % 2 == 0 { 32 } else { 64 }, 100 + s))
            .collect();
        blocks.push(vec![0.0; 64]);
        for top in [0, 40] {
            blocks.push(
                (0..64)
                    .map(|i| {
                        if i == top {
                            127.0
                        } else {
                            [2.5, -3.5, 0.5, -0.5, 126.5][i % 5]
                        }
                    })
                    .collect(),
            );
        }
        for x in &blocks {
            let n = x.len();
            let mut want = vec![0i8; n];
            let dw = quantize_block_scalar(x, &mut want);
            let mut got = vec![0i16; n];
            // SAFETY: AVX2 checked above; the buffers hold n values.
            let dg = unsafe { avx2::quantize_i16(x.as_ptr(), n, got.as_mut_ptr()) };
            assert_eq!(dg.to_bits(), dw.to_bits());
            assert!(
                got.iter().zip(&want).all(|(&g, &w)| g == i16::from(w)),
                "{x:?}"
            );
            if Packing::Quads.runs_here() {
                // One row of one block: the tile layout is the plain order.
                let (mut q, mut d, mut sum) = (vec![0i8; n], [0f32], [0i32]);
                // SAFETY: VNNI checked; one row of n inputs, bytes, one scale and one sum.
                unsafe {
                    vnni::pack_tile(
                        x.as_ptr(),
                        1,
                        n,
                        n,
                        q.as_mut_ptr(),
                        d.as_mut_ptr(),
                        sum.as_mut_ptr(),
                    )
                };
                assert_eq!(d[0].to_bits(), dw.to_bits());
                assert_eq!(q, want, "{x:?}");
                assert_eq!(
                    sum[0],
                    -128 * want.iter().map(|&q| i32::from(q)).sum::<i32>()
                );
            }
        }
    }

    /// The VNNI operands of a partial register tile: every row's 4 bytes side by side per group of 4 inputs,
    /// each row's blocks rounded on their own.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn tile_packing_interleaves_the_rows_by_groups_of_four() {
        if !Packing::Quads.runs_here() {
            return;
        }
        let (rows, inp, block) = (3, 192, 64);
        let x = random(rows * inp, 9);
        let mut q = vec![0i8; rows * inp];
        let (mut d, mut sums) = (vec![0f32; rows * 3], vec![0i32; rows * 3]);
        // SAFETY: VNNI checked; 3 rows of 192 inputs, bytes, and 3 scales and sums each.
        unsafe {
            vnni::pack_tile(
                x.as_ptr(),
                rows,
                inp,
                block,
                q.as_mut_ptr(),
                d.as_mut_ptr(),
                sums.as_mut_ptr(),
            )
        };
        for r in 0..rows {
            for b in 0..inp / block {
                let mut want = vec![0i8; block];
                let dw = quantize_block_scalar(&x[r * inp + b * block..][..block], &mut want);
                assert_eq!(d[r * 3 + b].to_bits(), dw.to_bits());
                assert_eq!(
                    sums[r * 3 + b],
                    -128 * want.iter().map(|&q| i32::from(q)).sum::<i32>()
                );
                for (k, &w) in want.iter().enumerate() {
                    let i = b * block + k;
                    assert_eq!(q[((i / 4) * rows + r) * 4 + i % 4], w, "row {r}, input {i}");
                }
            }
        }
    }

    #[test]
    fn matmul_matches_its_scalar_form_and_the_dense_product() {
        if !available() {
            return;
        }
        // Row counts with every tile tail of both kernels (6- and 8-row tiles), activation blocks of 32
        // (widths 32, 96) and 64, and, at a 4096-wide input, more than one row chunk (24 rows of i16, 48 of
        // bytes).
        for (m, out, inp) in [
            (1, 16, 32),
            (5, 48, 96),
            (3, 16, 128),
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
            // Against the unquantized product: a weight row's rounding is up to 0.4 % of its largest value,
            // an activation block's of its own.
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
