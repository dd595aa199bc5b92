//! Per-request decoder state: post-RoPE keys and values of every layer, kept outside the (immutable, shared)
//! model. Backed by candle's growable [`candle_nn::kv_cache::KvCache`] so decoding appends in place instead of
//! re-concatenating the whole history each step.

use candle_core::{Result, Tensor};

/// Keys/values of all decoder layers for one sequence.
#[derive(Debug, Clone)]
pub struct KvCache {
    layers: Vec<candle_nn::kv_cache::KvCache>,
    seq_len: usize,
}

/// Capacity reserved when none is given; the cache grows by this many positions when full.
pub const DEFAULT_CAPACITY: usize = 512;

impl KvCache {
    /// An empty cache for `num_layers` layers with room for `capacity` positions before it grows.
    pub fn new(num_layers: usize, capacity: usize) -> Self {
        let capacity = capacity.max(1);
        Self {
            // Tensors are (batch, kv_heads, seq, head_dim): the sequence axis is 2.
            layers: (0..num_layers)
                .map(|_| candle_nn::kv_cache::KvCache::new(2, capacity))
                .collect(),
            seq_len: 0,
        }
    }

    /// Number of positions already processed (the position of the next token).
    pub fn seq_len(&self) -> usize {
        self.seq_len
    }

    pub fn num_layers(&self) -> usize {
        self.layers.len()
    }

    /// Drops all stored positions (keeps nothing allocated).
    pub fn reset(&mut self) {
        for l in &mut self.layers {
            l.reset();
        }
        self.seq_len = 0;
    }

    /// Keeps only the first `len` positions (a chat turn that diverges from the cached history).
    pub fn truncate(&mut self, len: usize) -> Result<()> {
        if len >= self.seq_len {
            return Ok(());
        }
        for layer in &mut self.layers {
            let kept = match (layer.k()?, layer.v()?) {
                (Some(k), Some(v)) => Some((k.narrow(2, 0, len)?, v.narrow(2, 0, len)?)),
                _ => None,
            };
            layer.reset();
            if let Some((k, v)) = kept {
                if len > 0 {
                    layer.append(&k.contiguous()?, &v.contiguous()?)?;
                }
            }
        }
        self.seq_len = len;
        Ok(())
    }

    /// Appends this step's `k`, `v` of `layer` and returns the full history of that layer.
    pub(crate) fn append(
        &mut self,
        layer: usize,
        k: &Tensor,
        v: &Tensor,
    ) -> Result<(Tensor, Tensor)> {
        let cache = self
            .layers
            .get_mut(layer)
            .ok_or_else(|| candle_core::Error::msg(format!("kv cache has no layer {layer}")))?;
        let first = cache.current_seq_len() == 0;
        let stored = cache.append(&k.contiguous()?, &v.contiguous()?)?;
        // The cache copies into its buffer in place, which autograd cannot see through. A training forward
        // runs the whole sequence in one append, where the stored tensors equal the inputs: hand those back
        // so gradients reach the keys and values.
        if first && (k.track_op() || v.track_op()) {
            return Ok((k.clone(), v.clone()));
        }
        Ok(stored)
    }

    /// Called by the decoder once every layer has appended `n` new positions.
    pub(crate) fn advance(&mut self, n: usize) {
        self.seq_len += n;
    }
}
