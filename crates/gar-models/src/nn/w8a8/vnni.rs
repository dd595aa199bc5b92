//! The AVX-512 VNNI kernel for the [`Packing::Quads`] layout: `vpdpbusd` multiplies 4 unsigned activation
//! bytes (broadcast) with 16 columns' 4 signed weight bytes and adds the four products into each column's
//! i32 lane, so one instruction does 64 multiply-adds with the accumulation included; the AVX2 form needs
//! `vpmaddwd` + `vpaddd` for 16. Measured on Zen 4 (this project's CPU from the ninth session on): one
//! 512-bit `vpdpbusd` per cycle against two 256-bit `vpmaddwd`, so twice the multiply-adds per cycle.
//!
//! The activations enter as `q + 128` (unsigned); each block's i32 sums start from `-128 · Σ w` over the
//! block's column, so they end as the exact `Σ q · w`: the same integers, the same float steps in the same
//! order as [`super::avx2::tile`], hence bit for bit the same outputs.
//!
//! [`Packing::Quads`]: super::Packing::Quads

use super::PANEL;
use std::arch::x86_64::*;

/// Input rows per register tile: 8 i32 + 8 f32 accumulators, of 32 vector registers.
pub const TILE_ROWS: usize = 8;
/// Inputs per `vpdpbusd` lane.
const GROUP: usize = 4;

/// Whether this CPU runs the kernel (AVX-512F + VNNI, and AVX2/FMA for the activations' quantization).
pub fn available() -> bool {
    std::arch::is_x86_feature_detected!("avx512f")
        && std::arch::is_x86_feature_detected!("avx512vnni")
        && super::avx2_available()
}

/// `c (rows × 16) = d_w[col] · Σ_b d_x[r, b] · Σ_{i∈b} x[r, i] · w[col, i]` over activation blocks `b`
/// of `act_block` inputs, for `1 ≤ rows ≤ 8`, weights in the `Quads` packing and activations offset to
/// bytes (`x + 128`).
///
/// # Safety
/// [`available`]; `act_block` a multiple of 32; `a` holds `rows` rows of `nab · act_block` bytes `lda`
/// apart, `ad` `rows` rows of `nab` scales `ldad` apart, `w` the panel's `nab · act_block` inputs,
/// `wsum` its `nab · 16` offset sums, `wd` its 16 scales, `c` `rows` rows of 16 writable floats `ldc`
/// apart.
#[allow(clippy::too_many_arguments)]
pub unsafe fn tile(
    rows: usize,
    nab: usize,
    act_block: usize,
    a: *const u8,
    lda: usize,
    ad: *const f32,
    ldad: usize,
    w: *const i8,
    wsum: *const i32,
    wd: *const f32,
    c: *mut f32,
    ldc: usize,
) {
    macro_rules! go {
        ($r:literal) => {
            unsafe { tile_r::<$r>(nab, act_block, a, lda, ad, ldad, w, wsum, wd, c, ldc) }
        };
    }
    match rows {
        8 => go!(8),
        7 => go!(7),
        6 => go!(6),
        5 => go!(5),
        4 => go!(4),
        3 => go!(3),
        2 => go!(2),
        1 => go!(1),
        _ => unreachable!("tile of {rows} rows"),
    }
}

#[target_feature(enable = "avx512f,avx512vnni")]
#[allow(clippy::too_many_arguments)]
unsafe fn tile_r<const R: usize>(
    nab: usize,
    act_block: usize,
    a: *const u8,
    lda: usize,
    ad: *const f32,
    ldad: usize,
    w: *const i8,
    wsum: *const i32,
    wd: *const f32,
    c: *mut f32,
    ldc: usize,
) {
    let mut acc = [_mm512_setzero_ps(); R];
    // An opaque trip count keeps the group loop rolled: unrolled, LLVM hoists all the block's broadcasts
    // ahead of the products and spills them to the stack.
    let groups = std::hint::black_box(act_block / GROUP);
    for b in 0..nab {
        // -128 · Σ w per column: cancels the activations' offset.
        let start = unsafe { _mm512_loadu_si512(wsum.add(b * PANEL) as *const __m512i) };
        let mut s = [start; R];
        let wb = unsafe { w.add(b * act_block * PANEL) };
        for g in 0..groups {
            let wv = unsafe { _mm512_loadu_si512(wb.add(g * PANEL * GROUP) as *const __m512i) };
            for (r, s) in s.iter_mut().enumerate() {
                let x4 = unsafe {
                    std::ptr::read_unaligned(
                        a.add(r * lda + b * act_block + g * GROUP) as *const i32
                    )
                };
                *s = _mm512_dpbusd_epi32(*s, _mm512_set1_epi32(x4), wv);
            }
        }
        // One FMA per (row, block); the columns' scales wait for the store (measured on Zen 4: an FMA or
        // a multiply takes a `vpdpbusd` slot, the convert does not).
        for ((acc, s), r) in acc.iter_mut().zip(&s).zip(0..) {
            let dx = _mm512_set1_ps(unsafe { *ad.add(r * ldad + b) });
            *acc = _mm512_fmadd_ps(_mm512_cvtepi32_ps(*s), dx, *acc);
        }
    }
    let dw = unsafe { _mm512_loadu_ps(wd) };
    for (r, acc) in acc.iter().enumerate() {
        unsafe { _mm512_storeu_ps(c.add(r * ldc), _mm512_mul_ps(*acc, dw)) };
    }
}
