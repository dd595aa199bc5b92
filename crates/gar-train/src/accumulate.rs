//! Gradient accumulation (training.md §5.4): every micro-iteration's loss is divided by the
//! accumulation count A before backward, so the step gradient is the mean of A per-sample gradients.

use candle_core::{backprop::GradStore, DType, Result, Tensor, Var};

/// Running sum of `grad(loss / A)` per parameter, in f32.
pub struct GradAccumulator {
    sums: Vec<Option<Tensor>>,
    count: usize,
    expected: usize,
}

impl GradAccumulator {
    pub fn new(n_params: usize, accumulation: usize) -> Self {
        Self {
            sums: vec![None; n_params],
            count: 0,
            expected: accumulation.max(1),
        }
    }

    /// Add one micro-iteration's gradients (already of `loss / A`). A parameter the loss does not
    /// reach gets an exact zero.
    pub fn add(&mut self, vars: &[&Var], grads: &GradStore) -> Result<()> {
        for (slot, var) in self.sums.iter_mut().zip(vars) {
            let Some(g) = grads.get(var.as_tensor()) else {
                continue;
            };
            let g = g.to_dtype(DType::F32)?;
            *slot = Some(match slot.take() {
                Some(s) => (s + g)?,
                None => g,
            });
        }
        self.count += 1;
        Ok(())
    }

    pub fn is_complete(&self) -> bool {
        self.count >= self.expected
    }

    /// The accumulated gradients (zeros where nothing arrived); resets the accumulator.
    pub fn take(&mut self, vars: &[&Var]) -> Result<Vec<Tensor>> {
        let out = self
            .sums
            .iter_mut()
            .zip(vars)
            .map(|(s, v)| match s.take() {
                Some(g) => Ok(g),
                None => v.as_tensor().zeros_like()?.to_dtype(DType::F32),
            })
            .collect();
        self.count = 0;
        out
    }
}
