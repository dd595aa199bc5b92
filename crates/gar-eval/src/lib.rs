//! gar-eval: readers, scorers and judge-replay for the benchmarks GAR is evaluated on.
//!
//! Everything here runs offline on the files of the reference repository's `evaluation/`
//! folder: GAR-Bench-VQA is scored by exact match; DLC-Bench, the GAR-Bench captions and
//! Ferret-Bench are re-scored from cached judge replies with the reference's parsing rules;
//! MDVP-Bench answers are regrouped per question (the reference pipeline mixes domains).
//! The judge prompts are built by pure functions ([`prompts`]) for a later judge client.

pub mod dlc;
pub mod error;
pub mod ferret;
pub mod garbench;
pub mod io;
pub mod judge;
pub mod mcq;
pub mod mdvp;
pub mod prompts;
pub mod published;
pub mod report;
pub mod rle;

pub use error::{EvalError, Result};

/// Python's `round(x, digits)`: the exact binary value rounded to nearest, ties to even.
/// Rust's fixed-precision formatting rounds the same way, so format and parse back.
pub fn py_round(x: f64, digits: usize) -> f64 {
    format!("{x:.digits$}").parse().unwrap_or(x)
}

#[cfg(test)]
mod tests {
    use super::py_round;

    #[test]
    fn rounds_like_python() {
        assert_eq!(py_round(203.0 / 424.0 * 100.0, 1), 47.9);
        assert_eq!(py_round(66.0 / 101.0 * 100.0, 1), 65.3); // EVALUATION.md prints 65.4
        assert_eq!(py_round(0.125, 2), 0.12);
        assert_eq!(py_round(2.675, 2), 2.67);
        assert_eq!(py_round(0.25, 1), 0.2);
    }
}
