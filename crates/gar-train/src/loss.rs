//! The causal-LM loss of GAR training (training.md §4.5): shift labels left by one, f32 log-softmax over
//! the whole vocabulary, mean of the negative log-likelihood over supervised positions.
//!
//! Built only from candle ops that have a backward pass (no fused softmax), so gradients reach the logits.

use crate::encode::IGNORE_INDEX;
use candle_core::{DType, Result, Tensor, D};

/// `logits`: (L, V) in any float dtype (upcast to f32 here, as transformers does). `labels`: length L,
/// unshifted. Returns a scalar f32 tensor; errors when nothing is supervised (the reference would give
/// NaN, which a trainer should not silently step on).
pub fn causal_lm_loss(logits: &Tensor, labels: &[i64]) -> Result<Tensor> {
    let (len, vocab) = logits.dims2()?;
    if labels.len() != len {
        candle_core::bail!("{} labels for {len} logit rows", labels.len());
    }
    // Row p predicts labels[p + 1]; the last row predicts nothing.
    let mut rows = Vec::new();
    let mut targets = Vec::new();
    for (p, &y) in labels.iter().enumerate().skip(1) {
        if y == IGNORE_INDEX {
            continue;
        }
        if y < 0 || y as usize >= vocab {
            candle_core::bail!("label {y} at position {p} is outside the vocabulary of {vocab}");
        }
        rows.push((p - 1) as u32);
        targets.push(y as u32);
    }
    if rows.is_empty() {
        candle_core::bail!("no supervised position: the loss is undefined");
    }
    let device = logits.device();
    let n = rows.len();
    let rows = Tensor::new(rows, device)?;
    let targets = Tensor::new(targets, device)?.unsqueeze(1)?;
    let picked = logits.to_dtype(DType::F32)?.index_select(&rows, 0)?;
    // log-softmax = x − max − log Σ exp(x − max); the max is a constant for the gradient.
    let max = picked.max_keepdim(D::Minus1)?.detach();
    let shifted = picked.broadcast_sub(&max)?;
    let log_z = shifted.exp()?.sum_keepdim(D::Minus1)?.log()?;
    let target_logit = shifted.gather(&targets, D::Minus1)?;
    let nll = (log_z - target_logit)?;
    nll.sum_all()? / n as f64
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    /// Loss and gradient against the closed form: d loss / d logit = (softmax − onehot) / N on the
    /// supervised rows, zero elsewhere.
    #[test]
    fn matches_closed_form_value_and_gradient() -> Result<()> {
        let dev = Device::Cpu;
        let (l, v) = (5usize, 7usize);
        let data: Vec<f32> = (0..l * v)
            .map(|i| ((i * 37 % 11) as f32 - 5.0) * 0.3)
            .collect();
        let logits = Var::from_vec(data.clone(), (l, v), &dev)?;
        let labels = [IGNORE_INDEX, 3, IGNORE_INDEX, 6, 0];
        let loss = causal_lm_loss(logits.as_tensor(), &labels)?;
        let grads = loss.backward()?;
        let g = grads
            .get(&logits)
            .expect("logits gradient")
            .to_vec2::<f32>()?;

        let supervised = [(0usize, 3usize), (2, 6), (3, 0)];
        let mut want_loss = 0f64;
        let mut want_grad = vec![vec![0f64; v]; l];
        for &(row, y) in &supervised {
            let x: Vec<f64> = data[row * v..(row + 1) * v]
                .iter()
                .map(|&a| a as f64)
                .collect();
            let m = x.iter().cloned().fold(f64::MIN, f64::max);
            let z: f64 = x.iter().map(|a| (a - m).exp()).sum();
            want_loss += -(x[y] - m - z.ln());
            for c in 0..v {
                let p = (x[c] - m).exp() / z;
                want_grad[row][c] = (p - f64::from(u8::from(c == y))) / supervised.len() as f64;
            }
        }
        want_loss /= supervised.len() as f64;
        let got = loss.to_scalar::<f32>()? as f64;
        assert!(
            (got - want_loss).abs() < 1e-6 * want_loss.abs(),
            "{got} vs {want_loss}"
        );
        for r in 0..l {
            for c in 0..v {
                assert!(
                    (g[r][c] as f64 - want_grad[r][c]).abs() < 1e-6,
                    "grad[{r}][{c}]"
                );
            }
        }
        Ok(())
    }

    #[test]
    fn rejects_unsupervised_and_out_of_vocab() {
        let dev = Device::Cpu;
        let logits = Tensor::zeros((3, 4), DType::F32, &dev).unwrap();
        assert!(causal_lm_loss(&logits, &[IGNORE_INDEX; 3]).is_err());
        assert!(causal_lm_loss(&logits, &[IGNORE_INDEX, 9, IGNORE_INDEX]).is_err());
        assert!(causal_lm_loss(&logits, &[IGNORE_INDEX, 1]).is_err());
    }
}
