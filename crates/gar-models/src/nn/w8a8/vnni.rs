//! The AVX-512 VNNI kernel for the [`Packing::Quads`] layout: `vpdpbusd` multiplies 16 columns' 4 unsigned
//! weight bytes with 4 signed activation bytes (broadcast) and adds the four products into each column's
//! i32 lane, so one instruction does 64 multiply-adds with the accumulation included; the AVX2 form needs
//! `vpmaddwd` + `vpaddd` for 16. Measured on Zen 4 (this project's CPU from the ninth session on): one
//! 512-bit `vpdpbusd` per cycle against two 256-bit `vpmaddwd`, so twice the multiply-adds per cycle.
//!
//! The weights enter as `w + 128` (unsigned), the activations as plain Q8_0 bytes, packed per register tile
//! of rows by [`pack_tile`]: each group of 4 inputs holds the tile's rows' 4 bytes side by side, so the
//! kernel reads one stream of activations and broadcasts each row's 4 bytes straight from memory inside
//! the `vpdpbusd` (`{1to16}`), with no separate broadcast instruction. Each block's i32 sums start from
//! `-128 · Σ x` over the block's row (a broadcast load, which on Zen 4 takes no `vpdpbusd` slot; the
//! round-10 form started them from the weights' column sums, copied into each row's register, and a 512-bit
//! register copy does take a slot), so they end as the exact `Σ x · w`: the same integers, the same float
//! steps in the same order as [`super::avx2::tile`], hence bit for bit the same outputs.
//!
//! [`Packing::Quads`]: super::Packing::Quads

use super::{Epilogue, PANEL};
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

/// Quantizes `rows` (1 to [`TILE_ROWS`]) row-major rows of `inp` activations at `x` per block of
/// `act_block` inputs (Q8_0's rule, bit for bit [`crate::nn::q8::quantize_block_scalar`]) into one register
/// tile's operands: `q` (`rows · inp` bytes) holds, for each group of 4 inputs in turn, every row's 4
/// signed bytes; `d` and `sums` (`rows` rows of `inp / act_block` values) each block's scale and
/// `-128 · Σ q`. In AVX-512 (measured on a vision fc2's 1025 × 4096 input: 1.44 ms against 1.77 for
/// the AVX2 rounding followed by scalar sums and stores).
///
/// # Safety
/// [`available`]; `act_block` a multiple of 16 dividing `inp`; `x` holds `rows · inp` readable floats,
/// `q` `rows · inp` writable bytes, `d` and `sums` `rows · inp / act_block` writable values.
#[target_feature(enable = "avx512f")]
pub unsafe fn pack_tile(
    x: *const f32,
    rows: usize,
    inp: usize,
    act_block: usize,
    q: *mut i8,
    d: *mut f32,
    sums: *mut i32,
) {
    let nab = inp / act_block;
    let (half, one, sign) = (
        _mm512_set1_ps(0.5),
        _mm512_castps_si512(_mm512_set1_ps(1.0)),
        _mm512_set1_epi32(i32::MIN),
    );
    for r in 0..rows {
        for b in 0..nab {
            let xb = x.wrapping_add(r * inp + b * act_block);
            let load = |k: usize| unsafe { _mm512_loadu_ps(xb.add(16 * k)) };
            let mut amax = _mm512_setzero_ps();
            for k in 0..act_block / 16 {
                amax = _mm512_max_ps(amax, _mm512_abs_ps(load(k)));
            }
            // Q8_0: d = max|x| / 127, values times 1/d (0 for an all-zero block).
            let dx = _mm512_reduce_max_ps(amax) / 127.0;
            let inv = _mm512_set1_ps(if dx != 0.0 { 1.0 / dx } else { 0.0 });
            let mut sum = _mm512_setzero_si512();
            for k in 0..act_block / 16 {
                let y = _mm512_mul_ps(load(k), inv);
                // Half away from zero: truncate, then step away from zero where |y − t| ≥ ½ (exact, as
                // |y| ≤ 127).
                let t = _mm512_roundscale_ps::<{ _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC }>(y);
                let away =
                    _mm512_cmp_ps_mask::<_CMP_GE_OQ>(_mm512_abs_ps(_mm512_sub_ps(y, t)), half);
                // ±1 with y's sign (integer ops: the float forms need AVX-512DQ).
                let step = _mm512_castsi512_ps(_mm512_or_si512(
                    _mm512_and_si512(_mm512_castps_si512(y), sign),
                    one,
                ));
                let i = _mm512_cvttps_epi32(_mm512_mask_add_ps(t, away, t, step));
                sum = _mm512_add_epi32(sum, i);
                // |q| ≤ 127: the saturating narrowing is exact. Four groups of 4 inputs, each to its slot.
                let bytes = _mm512_cvtsepi32_epi8(i);
                let group = (b * act_block + 16 * k) / GROUP;
                let slot = |j: usize| q.wrapping_add(((group + j) * rows + r) * GROUP) as *mut i32;
                // SAFETY: group + 3 < inp / 4 and r < rows: within the tile's rows · inp bytes.
                unsafe {
                    std::ptr::write_unaligned(slot(0), _mm_cvtsi128_si32(bytes));
                    std::ptr::write_unaligned(slot(1), _mm_extract_epi32::<1>(bytes));
                    std::ptr::write_unaligned(slot(2), _mm_extract_epi32::<2>(bytes));
                    std::ptr::write_unaligned(slot(3), _mm_extract_epi32::<3>(bytes));
                }
            }
            // SAFETY: r · nab + b < rows · nab.
            unsafe {
                *d.add(r * nab + b) = dx;
                *sums.add(r * nab + b) = -128 * _mm512_reduce_add_epi32(sum);
            }
        }
    }
}

/// `c (rows × 16) = d_w[col] · Σ_b d_x[r, b] · Σ_{i∈b} x[r, i] · w[col, i]` over activation blocks `b`
/// of `act_block` inputs, for `1 ≤ rows ≤ 8`, weights in the `Quads` packing (`w + 128`) and activations
/// as [`pack_tile`] leaves them.
///
/// The tile is rows `r0..` and columns `col0..col0 + 16` of an `(m, ldc)` result; `epilogue`'s steps are
/// applied as the rows are stored ([`Epilogue::store_rows`]).
///
/// # Safety
/// [`available`]; `act_block` a multiple of 32; `a` the tile's `rows · nab · act_block` packed bytes, `ad`
/// and `sums` `rows` rows of `nab` values `ldad` apart, `w` the panel's `nab · act_block` inputs, `wd` its
/// 16 scales, `c` `rows` rows of 16 writable floats `ldc` apart, and `epilogue` fitting the result.
#[allow(clippy::too_many_arguments)]
pub unsafe fn tile(
    epilogue: &Epilogue,
    r0: usize,
    col0: usize,
    rows: usize,
    nab: usize,
    act_block: usize,
    a: *const i8,
    ad: *const f32,
    sums: *const i32,
    ldad: usize,
    w: *const i8,
    wd: *const f32,
    c: *mut f32,
    ldc: usize,
) {
    macro_rules! go {
        ($r:literal) => {
            unsafe {
                tile_r::<$r>(
                    epilogue, r0, col0, nab, act_block, a, ad, sums, ldad, w, wd, c, ldc,
                )
            }
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
    epilogue: &Epilogue,
    r0: usize,
    col0: usize,
    nab: usize,
    act_block: usize,
    a: *const i8,
    ad: *const f32,
    sums: *const i32,
    ldad: usize,
    w: *const i8,
    wd: *const f32,
    c: *mut f32,
    ldc: usize,
) {
    epilogue.prefetch(r0, R, col0, ldc, c);
    let mut acc = [_mm512_setzero_ps(); R];
    // An opaque trip count keeps the group loop rolled: unrolled, LLVM hoists all the block's broadcasts
    // ahead of the products and spills them to the stack.
    let groups = std::hint::black_box(act_block / GROUP);
    let (mut a, mut w) = (a, w);
    for b in 0..nab {
        // -128 · Σ x per row: cancels the weights' offset.
        let mut s: [__m512i; R] =
            std::array::from_fn(|r| _mm512_set1_epi32(unsafe { *sums.add(r * ldad + b) }));
        for _ in 0..groups {
            let wv = unsafe { _mm512_loadu_si512(w as *const __m512i) };
            for (r, s) in s.iter_mut().enumerate() {
                let x4 = unsafe { std::ptr::read_unaligned(a.add(r * GROUP) as *const i32) };
                *s = _mm512_dpbusd_epi32(*s, wv, _mm512_set1_epi32(x4));
            }
            a = a.wrapping_add(R * GROUP);
            w = w.wrapping_add(PANEL * GROUP);
        }
        // One FMA per (row, block); the columns' scales wait for the store (measured on Zen 4: an FMA or
        // a multiply takes a `vpdpbusd` slot, the convert does not).
        for ((acc, s), r) in acc.iter_mut().zip(&s).zip(0..) {
            let dx = _mm512_set1_ps(unsafe { *ad.add(r * ldad + b) });
            *acc = _mm512_fmadd_ps(_mm512_cvtepi32_ps(*s), dx, *acc);
        }
    }
    let dw = unsafe { _mm512_loadu_ps(wd) };
    let ys = acc.map(|acc| _mm512_mul_ps(acc, dw));
    // SAFETY: the tile's rows, inside the result the epilogue fits (the caller's contract).
    unsafe { epilogue.store_rows(&ys, r0, col0, ldc, c) };
}
