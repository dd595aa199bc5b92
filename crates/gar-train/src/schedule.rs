//! Learning-rate schedule of training.md §5.5: linear warm-up from `base·start_factor` to `base`, then
//! cosine annealing to 0. The schedule counts *micro-iterations* (as mmengine does); an optimizer
//! step k with accumulation A uses the rate of micro-iteration `k·A + A − 1`.

/// Warm-up + cosine schedule over `total_micro` micro-iterations.
#[derive(Clone, Debug, PartialEq)]
pub struct WarmupCosine {
    pub base_lr: f64,
    /// Number of warm-up micro-iterations W = int(warmup_ratio · total_micro).
    pub warmup: usize,
    pub total_micro: usize,
    /// Factor of the first warm-up value (GAR: 1e-5).
    pub start_factor: f64,
}

impl WarmupCosine {
    /// GAR's schedule: `W = int(ratio · N)` (truncation, like Python's `int`), start factor 1e-5.
    pub fn from_ratio(base_lr: f64, warmup_ratio: f64, total_micro: usize) -> Self {
        Self {
            base_lr,
            warmup: (warmup_ratio * total_micro as f64) as usize,
            total_micro,
            start_factor: 1e-5,
        }
    }

    /// The rate in force during micro-iteration `g` (0-based).
    pub fn lr_at_micro(&self, g: usize) -> f64 {
        let (base, s, w) = (self.base_lr, self.start_factor, self.warmup);
        if g < w {
            // With a single warm-up iteration there is no slope: mmengine's first value is base·s.
            if w == 1 {
                return base * s;
            }
            return base * (s + (1.0 - s) * g as f64 / (w - 1) as f64);
        }
        let span = self.total_micro.saturating_sub(w).max(1);
        let t = (g - w) as f64 / span as f64;
        base * (1.0 + (std::f64::consts::PI * t).cos()) / 2.0
    }

    /// The rate of optimizer step `k` (0-based) with `accumulation` micro-iterations per step.
    pub fn lr_at_step(&self, k: usize, accumulation: usize) -> f64 {
        self.lr_at_micro(k * accumulation + accumulation - 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warmup_starts_tiny_and_reaches_base_then_anneals() {
        let s = WarmupCosine::from_ratio(1e-5, 0.03, 1000);
        assert_eq!(s.warmup, 30);
        assert!((s.lr_at_micro(0) - 1e-10).abs() < 1e-22);
        assert!((s.lr_at_micro(29) - 1e-5).abs() < 1e-20);
        assert!((s.lr_at_micro(30) - 1e-5).abs() < 1e-20);
        let last = s.lr_at_micro(999);
        let expect = 1e-5 * std::f64::consts::PI.powi(2) / (4.0 * 970f64.powi(2));
        assert!((last - expect).abs() / expect < 1e-3, "{last} vs {expect}");
        // Monotone decreasing after the warm-up.
        assert!((31..1000).all(|g| s.lr_at_micro(g) <= s.lr_at_micro(g - 1)));
        // Accumulation 2 picks the odd micro-iterations.
        assert_eq!(s.lr_at_step(3, 2), s.lr_at_micro(7));
    }
}
