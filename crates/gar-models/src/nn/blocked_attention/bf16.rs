//! The blocked attention with both products on bf16 operands ([`crate::nn::bf16_tiles`]): queries, keys,
//! probabilities and values are rounded to bf16, every sum and the softmax stay in f32. The task's steps
//! are the f32 path's; only the operands' packing differs:
//! - Kᵀ per (batch, kv head) in panels of 32 keys, each panel `d / 2` rows of 32 key pairs along `d`;
//! - V per (batch, kv head) as rows of key pairs: row `p` holds keys `2p` and `2p + 1` for each column;
//! - a task's query rows and probability rows as bf16 rows, which read two at a time are pairs already.
//!
//! (Pairs are `u32` with the first bf16 in the low half: a bf16 row viewed as `u32` on a little-endian CPU.)

use super::{Rows, Task, KEY_CHUNK};
use crate::nn::bf16_tiles::{self, TILE_COLS, TILE_ROWS};
use crate::nn::vmath;

/// Whether the bf16 products serve a head width `d` on this CPU.
pub(super) fn applies(d: usize) -> bool {
    crate::nn::attention::Products::Bf16.apply_to(d)
}

/// A `u32` buffer seen as its bf16 halves, in memory order.
fn halves(x: &mut [u32]) -> &mut [u16] {
    // SAFETY: u16 needs less alignment than u32 and the view covers exactly the same bytes.
    unsafe { std::slice::from_raw_parts_mut(x.as_mut_ptr() as *mut u16, x.len() * 2) }
}

/// Kᵀ of (batch `b`, kv head `g`) in bf16 panels of 32 keys (`dst`: `t_k` rounded up to 32, times
/// `d / 2` pairs; zero past `t_k`).
pub(super) fn pack_keys(k: &Rows, b: usize, g: usize, tk: usize, d: usize, dst: &mut [u32]) {
    let half_d = d / 2;
    let mut row = vec![0u32; half_d];
    for key in 0..tk {
        // SAFETY: `Rows` guarantees `d` readable values at every row pointer.
        let src = unsafe { std::slice::from_raw_parts(k.row_ptr(b, g, key), d) };
        bf16_tiles::convert(src, halves(&mut row));
        let panel = &mut dst[(key / TILE_COLS) * half_d * TILE_COLS..][..half_d * TILE_COLS];
        for (pair, &x) in row.iter().enumerate() {
            panel[pair * TILE_COLS + key % TILE_COLS] = x;
        }
    }
}

/// V of (batch `b`, kv head `g`) as bf16 key pairs (`dst`: `t_k / 2` rounded up, times `d`; zero past
/// `t_k`).
pub(super) fn pack_values(v: &Rows, b: usize, g: usize, tk: usize, d: usize, dst: &mut [u32]) {
    let mut row = vec![0u16; d];
    for key in 0..tk {
        // SAFETY: as in `pack_keys`.
        let src = unsafe { std::slice::from_raw_parts(v.row_ptr(b, g, key), d) };
        bf16_tiles::convert(src, &mut row);
        let shift = 16 * (key % 2);
        for (pair, &x) in dst[key / 2 * d..][..d].iter_mut().zip(&row) {
            *pair |= u32::from(x) << shift;
        }
    }
}

impl Task {
    /// [`Task::run`] with bf16 products: `kt` and `vp` are this task's kv head from [`pack_keys`] and
    /// [`pack_values`]; `pairs` is per-thread scratch like `scratch`.
    pub(super) fn run_bf16(
        &self,
        kt: &[u32],
        vp: &[u32],
        scratch: &mut Vec<f32>,
        pairs: &mut Vec<u32>,
    ) {
        let (rows, d, keys) = (self.rows, self.d, self.keys);
        let half_d = d / 2;
        let width = keys.next_multiple_of(TILE_COLS);
        let half_w = width / 2;
        // Grown only, never cleared: every value read is written first (as in `run`).
        if scratch.len() < rows * width {
            scratch.resize(rows * width, 0.0);
        }
        if pairs.len() < rows * (half_d + half_w) {
            pairs.resize(rows * (half_d + half_w), 0);
        }
        let scores = &mut scratch[..rows * width];
        let (queries, probs) = pairs[..rows * (half_d + half_w)].split_at_mut(rows * half_d);
        for (i, q) in queries.chunks_exact_mut(half_d).enumerate() {
            // SAFETY: the task's query rows hold `d` values `q_stride` apart.
            let src = unsafe { std::slice::from_raw_parts(self.queries.add(i * self.q_stride), d) };
            bf16_tiles::convert(src, halves(q));
        }
        // Scores: rows × panels of 32 keys, a chunk of panels at a time (reused from L2 by every row group).
        for chunk0 in (0..width).step_by(KEY_CHUNK) {
            let chunk = KEY_CHUNK.min(width - chunk0);
            for r0 in (0..rows).step_by(TILE_ROWS) {
                let m = TILE_ROWS.min(rows - r0);
                for p0 in (chunk0..chunk0 + chunk).step_by(TILE_COLS) {
                    // SAFETY: bf16 support checked by the caller; m query rows of d/2 pairs, the panel
                    // d/2 rows of 32 pairs, the score rows `width` apart.
                    unsafe {
                        bf16_tiles::tile(
                            m,
                            half_d,
                            queries[r0 * half_d..].as_ptr(),
                            half_d,
                            kt[p0 * half_d..].as_ptr(),
                            TILE_COLS,
                            scores[r0 * width + p0..].as_mut_ptr(),
                            width,
                            false,
                        )
                    };
                }
            }
        }
        // Unnormalised probabilities straight into bf16 rows, zero on masked keys and on an odd key count's
        // partner.
        let even_keys = keys.next_multiple_of(2);
        let sums: Vec<f32> = scores
            .chunks(width)
            .zip(probs.chunks_exact_mut(half_w))
            .enumerate()
            .map(|(i, (row, p))| {
                let visible = self.first_visible.map_or(keys, |f| (f + i).min(keys));
                let (seen, rest) = halves(p)[..even_keys].split_at_mut(visible);
                rest.fill(0);
                let max = vmath::max_of(&row[..visible]);
                bf16_tiles::exp_to_bf16(&row[..visible], self.scale, max * self.scale, seen)
            })
            .collect();
        // Values: out (rows × d) = probabilities · V, a chunk of keys at a time.
        for chunk0 in (0..keys).step_by(KEY_CHUNK) {
            let chunk_pairs = KEY_CHUNK.min(keys - chunk0).div_ceil(2);
            for r0 in (0..rows).step_by(TILE_ROWS) {
                let m = TILE_ROWS.min(rows - r0);
                for c in (0..d).step_by(TILE_COLS) {
                    // SAFETY: as above; V pair rows chunk0/2.. hold d pairs each (zero past t_k), the
                    // probability rows half_w pairs apart, out rows out_stride apart.
                    unsafe {
                        bf16_tiles::tile(
                            m,
                            chunk_pairs,
                            probs[r0 * half_w + chunk0 / 2..].as_ptr(),
                            half_w,
                            vp[chunk0 / 2 * d + c..].as_ptr(),
                            d,
                            self.out.add(r0 * self.out_stride + c),
                            self.out_stride,
                            chunk0 > 0,
                        )
                    };
                }
            }
        }
        self.normalise(&sums);
    }
}
