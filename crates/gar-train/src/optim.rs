//! AdamW with decoupled weight decay, exactly as `torch.optim.AdamW` (single tensor path), on fp32
//! master weights: a parameter stored in bf16/f16 keeps an f32 copy here, the update runs on that
//! copy, and the model weight is written back rounded to nearest even (training.md §5.3).

use candle_core::{DType, Result, Tensor, Var};

/// AdamW hyper-parameters (the rate comes per step from the schedule).
#[derive(Clone, Debug, PartialEq)]
pub struct AdamWConfig {
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
}

impl Default for AdamWConfig {
    /// GAR's settings: betas (0.9, 0.999), eps 1e-8, weight decay 0.
    fn default() -> Self {
        Self {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.0,
        }
    }
}

/// One trainable parameter with its optimiser state (all f32, on the parameter's device).
pub struct ParamState {
    pub name: String,
    pub var: Var,
    /// f32 master weight; `None` when the parameter itself is f32 (then the Var is the master).
    pub master: Option<Tensor>,
    pub exp_avg: Tensor,
    pub exp_avg_sq: Tensor,
}

impl ParamState {
    pub fn new(name: String, var: Var) -> Result<Self> {
        let master = match var.dtype() {
            DType::F32 => None,
            _ => Some(var.as_tensor().to_dtype(DType::F32)?.copy()?),
        };
        let exp_avg = var.as_tensor().zeros_like()?.to_dtype(DType::F32)?;
        let exp_avg_sq = exp_avg.clone();
        Ok(Self {
            name,
            var,
            master,
            exp_avg,
            exp_avg_sq,
        })
    }

    /// The f32 weight the optimiser updates.
    pub fn master_weight(&self) -> Result<Tensor> {
        match &self.master {
            Some(m) => Ok(m.clone()),
            None => Ok(self.var.as_tensor().copy()?),
        }
    }

    /// Replace the master weight and write it back into the model weight (rounded to its dtype).
    pub fn set_master(&mut self, w: Tensor) -> Result<()> {
        match &mut self.master {
            Some(m) => {
                self.var.set(&w.to_dtype(self.var.dtype())?)?;
                *m = w;
            }
            None => self.var.set(&w)?,
        }
        Ok(())
    }
}

/// AdamW over a set of parameters; `step` counts completed optimizer steps.
pub struct AdamW {
    pub config: AdamWConfig,
    pub params: Vec<ParamState>,
    pub step: u64,
}

impl AdamW {
    pub fn new(config: AdamWConfig, vars: Vec<(String, Var)>) -> Result<Self> {
        let params = vars
            .into_iter()
            .map(|(n, v)| ParamState::new(n, v))
            .collect::<Result<_>>()?;
        Ok(Self {
            config,
            params,
            step: 0,
        })
    }

    /// One update with rate `lr`; `grads[i]` belongs to `params[i]` (any float dtype; used as f32).
    pub fn apply(&mut self, grads: &[Tensor], lr: f64) -> Result<()> {
        if grads.len() != self.params.len() {
            candle_core::bail!(
                "{} gradients for {} parameters",
                grads.len(),
                self.params.len()
            );
        }
        self.step += 1;
        let c = &self.config;
        let t = self.step as i32;
        // Scalars in f64 like torch's Python-side arithmetic; tensors in f32.
        let bias1 = 1.0 - c.beta1.powi(t);
        let bias2_sqrt = (1.0 - c.beta2.powi(t)).sqrt();
        let step_size = lr / bias1;
        for (p, g) in self.params.iter_mut().zip(grads) {
            let g = g.to_dtype(DType::F32)?;
            let mut w = p.master_weight()?;
            if c.weight_decay != 0.0 {
                w = w.affine(1.0 - lr * c.weight_decay, 0.0)?;
            }
            // torch: exp_avg.lerp_(g, 1 − β1) = m + (1 − β1)(g − m).
            let m = (&p.exp_avg + ((&g - &p.exp_avg)? * (1.0 - c.beta1))?)?;
            let v = ((&p.exp_avg_sq * c.beta2)? + (g.sqr()? * (1.0 - c.beta2))?)?;
            let denom = ((v.sqrt()? / bias2_sqrt)? + c.eps)?;
            let w = (w - ((&m / &denom)? * step_size)?)?;
            p.exp_avg = m;
            p.exp_avg_sq = v;
            p.set_master(w)?;
        }
        Ok(())
    }
}
