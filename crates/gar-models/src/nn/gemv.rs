//! `x · Wᵀ` for a few f32 input rows against a dense row-major f32 weight — the products of an f32 decode
//! step — streaming each weight row once.
//!
//! Why: a decode step is bound by reading the weights (4.9 GB per token for GAR-1B in f32), and the general
//! GEMM packs its operands for reuse that a single row cannot give. Here four weight rows are walked side by
//! side with a software prefetch ahead of each (two cores alone do not keep enough reads in flight, as
//! measured for [`crate::nn::q8`]), split over the thread pool by blocks of rows.

use rayon::prelude::*;

/// Largest number of input rows this path takes (each weight row is reused across them from cache).
pub const MAX_ROWS: usize = 4;

/// Whether this CPU runs the vector kernel (AVX2 + FMA).
pub fn available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// `(m, out)` row-major result of `x` `(m, cols)` times `w` `(out, cols)` transposed; `cols % 8 == 0`.
/// Callers check [`available`] first.
pub fn gemv(x: &[f32], m: usize, w: &[f32], cols: usize) -> Vec<f32> {
    assert!(
        cols > 0 && cols.is_multiple_of(8) && x.len() == m * cols && w.len().is_multiple_of(cols)
    );
    assert!(available(), "gemv called on a CPU without AVX2/FMA");
    let out_rows = w.len() / cols;
    let mut out = vec![0f32; m * out_rows];
    let out_addr = out.as_mut_ptr() as usize;
    let per_task = rows_per_task(out_rows);
    (0..out_rows.div_ceil(per_task))
        .into_par_iter()
        .for_each(|task| {
            let out = out_addr as *mut f32;
            let first = task * per_task;
            let last = (first + per_task).min(out_rows);
            let mut r = first;
            while r < last {
                let n = (last - r).min(4);
                for i in 0..m {
                    let xi = &x[i * cols..(i + 1) * cols];
                    let mut v = [0f32; 4];
                    // SAFETY: AVX2/FMA checked above; rows r..r+n exist and hold `cols` values, cols % 8 == 0.
                    unsafe { avx2::dots(xi, &w[r * cols..(r + n) * cols], n, &mut v) };
                    // SAFETY: tasks own disjoint output columns; `out` outlives the parallel loop.
                    unsafe {
                        std::ptr::copy_nonoverlapping(v.as_ptr(), out.add(i * out_rows + r), n)
                    };
                }
                r += n;
            }
        });
    out
}

/// Weight rows per parallel task: about 8 tasks per thread, at least 16 rows.
fn rows_per_task(rows: usize) -> usize {
    let tasks = 8 * rayon::current_num_threads().max(1);
    rows.div_ceil(tasks).next_multiple_of(4).max(16)
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    /// How far ahead (bytes) each weight row is prefetched.
    const PREFETCH_BYTES: usize = 1024;

    /// `out[k] = x · w_k` for the `n ≤ 4` consecutive rows in `w`.
    ///
    /// # Safety
    /// AVX2 and FMA available; `w` holds `n` rows of `x.len()` values, `x.len() % 8 == 0`.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn dots(x: &[f32], w: &[f32], n: usize, out: &mut [f32; 4]) {
        let cols = x.len();
        let mut acc = [_mm256_setzero_ps(); 4];
        let rows: [*const f32; 4] =
            std::array::from_fn(|k| w.as_ptr().wrapping_add(k.min(n - 1) * cols));
        for c in (0..cols).step_by(8) {
            let xv = unsafe { _mm256_loadu_ps(x.as_ptr().add(c)) };
            for k in 0..4 {
                if k < n {
                    let p = rows[k].wrapping_add(c);
                    if c % 16 == 0 {
                        _mm_prefetch::<_MM_HINT_T0>((p as *const i8).wrapping_add(PREFETCH_BYTES));
                    }
                    acc[k] = _mm256_fmadd_ps(xv, unsafe { _mm256_loadu_ps(p) }, acc[k]);
                }
            }
        }
        for k in 0..n {
            out[k] = crate::nn::vmath::hsum8(acc[k]);
        }
    }
}

#[cfg(not(target_arch = "x86_64"))]
mod avx2 {
    pub unsafe fn dots(_: &[f32], _: &[f32], _: usize, _: &mut [f32; 4]) {
        unreachable!("gemv checks for AVX2 first")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_plain_product() {
        if !available() {
            return;
        }
        // 4·5 + 3 output rows: full groups and a tail, 3 input rows.
        let (rows, cols, m) = (23, 136, 3);
        let w: Vec<f32> = (0..rows * cols)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) / 50.0)
            .collect();
        let x: Vec<f32> = (0..m * cols)
            .map(|i| ((i * 13 % 29) as f32 - 14.0) / 14.0)
            .collect();
        let got = gemv(&x, m, &w, cols);
        for i in 0..m {
            for r in 0..rows {
                let want: f64 = (0..cols)
                    .map(|c| x[i * cols + c] as f64 * w[r * cols + c] as f64)
                    .sum();
                let v = got[i * rows + r] as f64;
                assert!(
                    (v - want).abs() < 1e-4 * want.abs().max(1.0),
                    "({i},{r}): {v} vs {want}"
                );
            }
        }
    }
}
