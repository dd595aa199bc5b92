//! Small building blocks shared by the vision tower and the decoder. They follow PyTorch's numerics where the
//! reference depends on them (norm statistics in f32, output rounding points), which candle's fused ops do
//! not always do for bf16/f16.

pub mod attention;
pub mod bf16_tiles;
pub mod blocked_attention;
pub mod fused;
pub mod gemv;
pub mod kv_cache;
pub mod norm;
pub mod q8;
pub mod quant;
pub mod rope;
pub mod single_query;
pub mod vmath;
pub mod vmath512;
pub mod w8a8;

use std::sync::Arc;

use candle_core::quantized::{GgmlDType, QMatMul, QTensor};
use candle_core::{DType, Module, Result, Tensor};
use candle_nn::VarBuilder;

/// `nn.Linear`: `y = x·Wᵀ (+ b)`, weight `(out, in)` under `<prefix>.weight`. After
/// [`Linear::quantize`] the weight lives only in block-quantized form.
#[derive(Debug, Clone)]
pub struct Linear {
    weight: Tensor,
    bias: Option<Tensor>,
    quantized: Option<Arc<Quantized>>,
}

/// A block-quantized weight. Q8_0 on an AVX2 CPU uses our own kernels: [`w8a8`] (8-bit activations too, any
/// number of rows) where the shape fits its 16-column panels, else [`q8`] for few rows and a dequantized
/// GEMM for many. Every other format or device keeps candle's: its kernel wrapper for few rows (decode) and
/// the tensor itself, dequantized per call for many rows (prefill, see [`DEQUANTIZE_ROWS`]).
#[derive(Debug)]
enum Quantized {
    Q8(q8::Q8Matrix),
    W8A8(w8a8::W8Matrix),
    Candle {
        matmul: QMatMul,
        tensor: Arc<QTensor>,
    },
}

/// From this many input rows on (CPU), a quantized layer is dequantized into a transient dense weight and run
/// through the GEMM: candle's quantized CPU kernels are dot-product loops that win when weight bandwidth
/// bounds the step (decode, a few rows) but lose badly to the blocked GEMM at prefill sizes, where one
/// dequantization (`out × in` work) is negligible next to the `rows × out × in` product.
pub const DEQUANTIZE_ROWS: usize = 32;

impl Linear {
    pub fn new(in_dim: usize, out_dim: usize, bias: bool, vb: VarBuilder) -> Result<Self> {
        let weight = vb.get((out_dim, in_dim), "weight")?;
        let bias = if bias {
            Some(vb.get(out_dim, "bias")?)
        } else {
            None
        };
        Ok(Self {
            weight,
            bias,
            quantized: None,
        })
    }

    /// A linear layer over an existing weight (used for a tied `lm_head`).
    pub fn from_weight(weight: Tensor, bias: Option<Tensor>) -> Self {
        Self {
            weight,
            bias,
            quantized: None,
        }
    }

    /// The dense weight `(out, in)`; after quantization, an empty placeholder of the same dtype.
    pub fn weight(&self) -> &Tensor {
        &self.weight
    }

    pub fn is_quantized(&self) -> bool {
        self.quantized.is_some()
    }

    /// Replaces the dense weight by the first format of `formats` its width allows (block sizes must divide
    /// the input width) and returns that format; `None` (layer left dense) when none fits or `formats` is
    /// empty. The dense weight is released, so quantizing layer by layer keeps the peak near the dense size.
    pub fn quantize(&mut self, formats: &[GgmlDType]) -> Result<Option<GgmlDType>> {
        if self.quantized.is_some() {
            candle_core::bail!("linear layer is already quantized");
        }
        let in_dim = self.weight.dim(1)?;
        let Some(&format) = formats
            .iter()
            .find(|f| in_dim.is_multiple_of(f.block_size()))
        else {
            return Ok(None);
        };
        let out_dim = self.weight.dim(0)?;
        if format == GgmlDType::Q8_0 && self.quantize_w8a8()? {
            return Ok(Some(format));
        }
        let quantized =
            if format == GgmlDType::Q8_0 && self.weight.device().is_cpu() && q8::kernel_available()
            {
                let w = self.weight.to_dtype(DType::F32)?.contiguous()?;
                let q = with_cpu_f32(&w, |w| q8::Q8Matrix::quantize(w, out_dim, in_dim))?;
                Quantized::Q8(q.map_err(candle_core::Error::msg)?)
            } else {
                let tensor = Arc::new(QTensor::quantize(&self.weight, format)?);
                Quantized::Candle {
                    matmul: QMatMul::from_arc(tensor.clone())?,
                    tensor,
                }
            };
        self.quantized = Some(Arc::new(quantized));
        self.release_dense_weight()?;
        Ok(Some(format))
    }

    /// Drops the dense weight once a quantized form holds it, keeping the shape queryable without the
    /// bytes: a zero-stride broadcast of one element.
    fn release_dense_weight(&mut self) -> Result<()> {
        let (out_dim, in_dim) = self.weight.dims2()?;
        self.weight = Tensor::zeros(1, self.weight.dtype(), self.weight.device())?
            .reshape((1, 1))?
            .broadcast_as((out_dim, in_dim))?;
        Ok(())
    }
}

impl Linear {
    /// Replaces the dense weight by 8-bit weights run with 8-bit activations ([`w8a8`]) when the layer is on
    /// an AVX2 CPU and its shape fits (16 | out, 32 | in); `false` (left dense) otherwise.
    pub fn quantize_w8a8(&mut self) -> Result<bool> {
        let (out_dim, in_dim) = self.weight.dims2()?;
        if self.quantized.is_some()
            || !self.weight.device().is_cpu()
            || !w8a8::available()
            || !out_dim.is_multiple_of(w8a8::PANEL)
            || !in_dim.is_multiple_of(w8a8::BLOCK)
        {
            return Ok(false);
        }
        let w = self.weight.to_dtype(DType::F32)?.contiguous()?;
        let q = with_cpu_f32(&w, |w| w8a8::W8Matrix::quantize(w, out_dim, in_dim))?
            .map_err(candle_core::Error::msg)?;
        self.quantized = Some(Arc::new(Quantized::W8A8(q)));
        self.release_dense_weight()?;
        Ok(true)
    }

    /// Whether `x2` `(rows, in)` goes through [`gemv`]: a few f32 rows against a dense f32 weight on an AVX2
    /// CPU, outside autograd (training keeps candle's differentiable matmul).
    fn takes_gemv(&self, x2: &Tensor) -> Result<bool> {
        let (rows, in_dim) = x2.dims2()?;
        Ok(rows <= gemv::MAX_ROWS
            && in_dim.is_multiple_of(8)
            && x2.device().is_cpu()
            && x2.dtype() == DType::F32
            && self.weight.dtype() == DType::F32
            && !x2.track_op()
            && !self.weight.track_op()
            && gemv::available())
    }
}

/// Element-wise steps after a linear layer's bias ([`Linear::forward_then`]).
#[derive(Clone, Copy, Debug, Default)]
pub struct Then<'a> {
    /// GELU (erf form, [`fused::gelu_erf`]) of the output.
    pub gelu: bool,
    /// `residual + y · gamma` (`residual + y` without `gamma`, [`fused::add_scaled`]); `residual` is shaped
    /// as the output, `gamma` is `(out)`.
    pub residual: Option<(&'a Tensor, Option<&'a Tensor>)>,
}

impl Linear {
    /// `then` applied to [`Module::forward`]'s output: fused into the product's store for an 8-bit layer
    /// ([`w8a8::Epilogue`]: the separate ops' values for the residual, the GELU within 5e-7 · max(|x|, 1) of
    /// the exact form), as separate ops otherwise.
    pub fn forward_then(&self, x: &Tensor, then: Then) -> Result<Tensor> {
        if let Some(y) = self.fused_w8a8(x, then)? {
            return Ok(y);
        }
        let mut y = self.forward(x)?;
        if then.gelu {
            y = fused::gelu_erf(&y)?;
        }
        if let Some((residual, gamma)) = then.residual {
            y = fused::add_scaled(residual, &y, gamma)?;
        }
        Ok(y)
    }

    /// The [`w8a8`] product with the bias and `then` applied in its store, for an f32 input on the CPU
    /// outside autograd and f32 operands of the right shapes; `None` otherwise.
    fn fused_w8a8(&self, x: &Tensor, then: Then) -> Result<Option<Tensor>> {
        let Some(Quantized::W8A8(q)) = self.quantized.as_deref() else {
            return Ok(None);
        };
        let (in_dim, out_dim) = (q.cols(), q.rows());
        let f32_cpu = |t: &Tensor| t.dtype() == DType::F32 && t.device().is_cpu() && !t.track_op();
        let mut out_dims = x.dims().to_vec();
        if !f32_cpu(x) || out_dims.pop() != Some(in_dim) {
            return Ok(None);
        }
        out_dims.push(out_dim);
        if let Some((residual, gamma)) = then.residual {
            let gamma_fits = gamma.is_none_or(|g| f32_cpu(g) && g.dims() == [out_dim]);
            if !(f32_cpu(residual) && residual.dims() == out_dims && gamma_fits) {
                return Ok(None);
            }
        }
        let to_vec = |t: Option<&Tensor>| -> Result<Option<Vec<f32>>> {
            t.map(|t| t.to_dtype(DType::F32)?.to_vec1()).transpose()
        };
        let bias = to_vec(self.bias.as_ref())?;
        let gamma = to_vec(then.residual.and_then(|(_, g)| g))?;
        let residual = then.residual.map(|(r, _)| r.contiguous()).transpose()?;
        let rows = x.elem_count() / in_dim;
        let xf = x.reshape((rows, in_dim))?.contiguous()?;
        let epilogue = w8a8::Epilogue {
            bias: bias.as_deref(),
            gelu: then.gelu,
            residual: None,
            gamma: gamma.as_deref(),
        };
        let y = with_cpu_f32(&xf, |xs| match &residual {
            Some(r) => with_cpu_f32(r, |rs| {
                let epilogue = w8a8::Epilogue {
                    residual: Some(rs),
                    ..epilogue
                };
                q.matmul_then(xs, rows, &epilogue)
            }),
            None => Ok(q.matmul_then(xs, rows, &epilogue)),
        })??;
        Ok(Some(Tensor::from_vec(y, out_dims, x.device())?))
    }
}

impl Module for Linear {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        if let Some(y) = self.fused_w8a8(x, Then::default())? {
            return Ok(y);
        }
        // Flatten leading dims into one matrix so a single GEMM runs against the (transposed, strided) weight.
        let dims = x.dims();
        let Some(&in_dim) = dims.last() else {
            candle_core::bail!("linear layer applied to a scalar");
        };
        let rows = x.elem_count() / in_dim.max(1);
        let x2 = x.reshape((rows, in_dim))?;
        let many_rows = rows >= DEQUANTIZE_ROWS && x.device().is_cpu();
        let y = match self.quantized.as_deref() {
            None if self.takes_gemv(&x2)? => {
                let x2 = x2.contiguous()?;
                let w = self.weight.contiguous()?;
                let out_dim = w.dim(0)?;
                let y = with_cpu_f32(&x2, |x| {
                    with_cpu_f32(&w, |w| gemv::gemv(x, rows, w, in_dim))
                })??;
                Tensor::from_vec(y, (rows, out_dim), x.device())?
            }
            None => x2.matmul(&self.weight.t()?)?,
            Some(Quantized::W8A8(q)) => {
                let xf = x2.to_dtype(DType::F32)?.contiguous()?;
                let y = with_cpu_f32(&xf, |xf| q.matmul(xf, rows))?;
                Tensor::from_vec(y, (rows, q.rows()), x.device())?.to_dtype(x.dtype())?
            }
            Some(Quantized::Q8(q)) if many_rows => {
                let w = Tensor::from_vec(q.dequantize(), (q.rows(), q.cols()), x.device())?;
                x2.matmul(&w.to_dtype(x.dtype())?.t()?)?
            }
            Some(Quantized::Q8(q)) => {
                let xf = x2.to_dtype(DType::F32)?.contiguous()?;
                let y = with_cpu_f32(&xf, |xf| q.matmul(xf, rows))?;
                Tensor::from_vec(y, (rows, q.rows()), x.device())?.to_dtype(x.dtype())?
            }
            Some(Quantized::Candle { tensor, .. }) if many_rows => {
                let w = tensor.dequantize(x.device())?.to_dtype(x.dtype())?;
                x2.matmul(&w.t()?)?
            }
            Some(Quantized::Candle { matmul, .. }) => quantized_matmul(matmul, &x2)?,
        };
        let y = match &self.bias {
            Some(b) => y.broadcast_add(b)?,
            None => y,
        };
        let mut out_dims = dims.to_vec();
        out_dims.pop();
        out_dims.push(self.weight.dim(0)?);
        y.reshape(out_dims)
    }
}

/// Runs `f` on the values of a contiguous f32 CPU tensor without copying them.
pub(crate) fn with_cpu_f32<R>(t: &Tensor, f: impl FnOnce(&[f32]) -> R) -> Result<R> {
    let (storage, layout) = t.storage_and_layout();
    match (&*storage, layout.contiguous_offsets()) {
        (candle_core::Storage::Cpu(candle_core::CpuStorage::F32(v)), Some((start, end))) => {
            Ok(f(&v[start..end]))
        }
        _ => candle_core::bail!("expected a contiguous f32 tensor on the CPU"),
    }
}

/// `x · Wᵀ` against a block-quantized weight. candle's CPU kernels take f32/bf16/f16 rows and need them
/// contiguous; the CUDA kernels are surest with f32, so other devices get f32 and the result is cast back.
fn quantized_matmul(q: &QMatMul, x: &Tensor) -> Result<Tensor> {
    let x = x.contiguous()?;
    if x.device().is_cpu() || x.dtype() == DType::F32 {
        return q.forward(&x);
    }
    q.forward(&x.to_dtype(DType::F32)?)?.to_dtype(x.dtype())
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    fn rel_err(a: &Tensor, b: &Tensor) -> Result<f32> {
        let num = (a - b)?.sqr()?.sum_all()?.to_scalar::<f32>()?;
        let den = b.sqr()?.sum_all()?.to_scalar::<f32>()?;
        Ok((num / den).sqrt())
    }

    /// Standard-normal data from a fixed seed: quantization errors are statistical, and a test must not
    /// depend on the draw (candle's CPU `randn` cannot be seeded).
    fn seeded(shape: &[usize], seed: u64) -> Result<Tensor> {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let n = shape.iter().product();
        // Box–Muller: two uniforms give one normal draw.
        let data: Vec<f32> = (0..n)
            .map(|_| {
                let (u, v): (f32, f32) = (rng.random_range(f32::EPSILON..1.0), rng.random());
                (-2.0 * u.ln()).sqrt() * (std::f32::consts::TAU * v).cos()
            })
            .collect();
        Tensor::from_vec(data, shape, &Device::Cpu)
    }

    #[test]
    fn quantized_linear_tracks_dense() -> Result<()> {
        // 96 outputs take the panel kernel (w8a8) for Q8_0 on an AVX2 CPU, 40 the decode kernel (q8) with a
        // dequantized GEMM for many rows.
        for out in [96, 40] {
            quantized_linear_tracks_dense_at(out)?;
        }
        Ok(())
    }

    fn quantized_linear_tracks_dense_at(out: usize) -> Result<()> {
        let w = seeded(&[out, 512], 1)?;
        let b = seeded(&[out], 2)?;
        let x = seeded(&[2, 3, 512], 3)?;
        let dense = Linear::from_weight(w.clone(), Some(b.clone()));
        let want = dense.forward(&x)?;
        // Q8_0 keeps ~2^-8 relative precision per block, Q4_K ~2^-4.
        for (format, tol) in [(GgmlDType::Q8_0, 0.01f32), (GgmlDType::Q4K, 0.15)] {
            // Both paths: few rows (quantized kernel) and many rows (dequantize + GEMM) must agree.
            let mut qd = dense.clone();
            qd.quantize(&[format])?;
            let many = seeded(&[DEQUANTIZE_ROWS + 3, 512], 4)?;
            let (a, b2) = (qd.forward(&many)?, qd.forward(&many.narrow(0, 0, 2)?)?);
            assert!(
                rel_err(&a.narrow(0, 0, 2)?, &b2)? < 0.01,
                "{format:?}, {out} outputs: paths disagree"
            );
            let mut q = dense.clone();
            assert_eq!(q.quantize(&[format])?, Some(format));
            assert!(q.is_quantized());
            let got = q.forward(&x)?;
            assert_eq!(got.dims(), want.dims());
            let e = rel_err(&got, &want)?;
            assert!(
                e < tol && e > 0.0,
                "{format:?}, {out} outputs: relative error {e}"
            );
            // bf16 activations (and bias, as a bf16 model holds it) go through the same kernels.
            let mut q16 =
                Linear::from_weight(w.to_dtype(DType::BF16)?, Some(b.to_dtype(DType::BF16)?));
            q16.quantize(&[format])?;
            let got16 = q16.forward(&x.to_dtype(DType::BF16)?)?;
            assert_eq!(got16.dtype(), DType::BF16);
            assert!(rel_err(&got16.to_dtype(DType::F32)?, &want)? < tol + 0.01);
        }
        Ok(())
    }

    #[test]
    fn w8a8_linear_tracks_dense_and_declines_unfit_shapes() -> Result<()> {
        let w = seeded(&[48, 256], 5)?;
        let b = seeded(&[48], 6)?;
        let dense = Linear::from_weight(w.clone(), Some(b));
        let mut q = dense.clone();
        if !w8a8::available() {
            assert!(!q.quantize_w8a8()?);
            return Ok(());
        }
        assert!(q.quantize_w8a8()?);
        assert!(
            q.is_quantized() && !q.quantize_w8a8()?,
            "converting twice must not happen"
        );
        // Weights round to 8 bits per output channel, activations per 64-block: ≈ 0.9 % relative error
        // together (0.97 % and 0.89 % for these seeds; 0.66 % and 0.75 % with 32-blocks for both, as
        // before round 10).
        for rows in [1, 37] {
            let x = seeded(&[1, rows, 256], 7)?;
            let (got, want) = (q.forward(&x)?, dense.forward(&x)?);
            assert_eq!(got.dims(), want.dims());
            let e = rel_err(&got, &want)?;
            assert!(e < 0.012 && e > 0.0, "{rows} rows: relative error {e}");
        }
        // 40 outputs are not a multiple of the 16-column panel: stays dense.
        let mut l = Linear::from_weight(seeded(&[40, 256], 8)?, None);
        assert!(!l.quantize_w8a8()? && !l.is_quantized());
        Ok(())
    }

    #[test]
    fn widths_without_a_fitting_block_fall_back() -> Result<()> {
        let dev = Device::Cpu;
        // 96 = 3 × 32: Q4_K (256) does not fit, Q4_0 (32) does.
        let mut l = Linear::from_weight(Tensor::randn(0f32, 1., (8, 96), &dev)?, None);
        let formats = quant::Quant::Q4.candidates();
        assert_eq!(l.quantize(formats)?, Some(GgmlDType::Q4_0));
        assert!(l.quantize(formats).is_err(), "quantizing twice must fail");
        // 48 fits no block: the layer stays dense and exact.
        let w = Tensor::randn(0f32, 1., (8, 48), &dev)?;
        let mut l = Linear::from_weight(w.clone(), None);
        assert_eq!(l.quantize(quant::Quant::Q8.candidates())?, None);
        assert!(!l.is_quantized());
        let x = Tensor::randn(0f32, 1., (4, 48), &dev)?;
        let exact = x.matmul(&w.t()?)?;
        assert_eq!(rel_err(&l.forward(&x)?, &exact)?, 0.0);
        Ok(())
    }
}
