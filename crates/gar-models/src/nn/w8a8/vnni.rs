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
/// `act_block` inputs (Q8_0's rule, as [`super::avx2::quantize_u8`]) into one register tile's operands:
/// `q` (`rows · inp` bytes) holds, for each group of 4 inputs in turn, every row's 4 signed bytes; `d` and
/// `sums` (`rows` rows of `inp / act_block` values) each block's scale and `-128 · Σ q`.
///
/// # Safety
/// [`available`]; `act_block` 32 or 64 and dividing `inp`; `x` holds `rows · inp` readable floats, `q`
/// `rows · inp` writable bytes, `d` and `sums` `rows · inp / act_block` writable values.
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
    let mut block = [0u8; 64];
    for r in 0..rows {
        for b in 0..nab {
            let i = r * nab + b;
            // SAFETY: AVX2 (part of `available`); the block's act_block floats and bytes are in bounds.
            let dx = unsafe {
                super::avx2::quantize_u8(
                    x.add(r * inp + b * act_block),
                    act_block,
                    block.as_mut_ptr(),
                )
            };
            let offset_sum: i32 = block[..act_block].iter().map(|&u| i32::from(u)).sum();
            // SAFETY: i < rows · nab.
            unsafe {
                *d.add(i) = dx;
                *sums.add(i) = -128 * (offset_sum - 128 * act_block as i32);
            }
            for (g, quad) in block[..act_block].chunks_exact(GROUP).enumerate() {
                // `u - 128` per byte: flip the sign bits back.
                let signed = u32::from_le_bytes([quad[0], quad[1], quad[2], quad[3]]) ^ 0x8080_8080;
                let group = b * act_block / GROUP + g;
                // SAFETY: group < inp / 4 and r < rows, so the 4 bytes lie within `rows · inp`.
                unsafe {
                    std::ptr::write_unaligned(q.add((group * rows + r) * GROUP) as *mut u32, signed)
                };
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
