//! Averaging gradients over data-parallel ranks (training.md §5.4: sum / world size).
//!
//! `SingleProcess` is world size 1. `LocalGroup` simulates N ranks as N threads of one process
//! that meet at a barrier: each rank publishes its gradients, every rank sums them in rank order
//! (so all ranks compute bit-identical means) and divides by N. A multi-GPU NCCL implementation
//! would sit behind the same trait; it is not part of this build (see docs/training.md).

use candle_core::{DType, Result, Tensor};
use std::sync::{Arc, Barrier, Mutex};

pub trait AllReduce: Send + Sync {
    fn rank(&self) -> usize;
    fn world_size(&self) -> usize;
    /// Replace every gradient by its mean over all ranks (f32).
    fn all_reduce_mean(&self, grads: &mut [Tensor]) -> Result<()>;
}

/// One process, one rank: the mean is the gradient itself.
pub struct SingleProcess;

impl AllReduce for SingleProcess {
    fn rank(&self) -> usize {
        0
    }
    fn world_size(&self) -> usize {
        1
    }
    fn all_reduce_mean(&self, _grads: &mut [Tensor]) -> Result<()> {
        Ok(())
    }
}

struct Shared {
    slots: Mutex<Vec<Option<Vec<Tensor>>>>,
    barrier: Barrier,
}

/// One rank of a group of threads simulating `world_size` ranks.
pub struct LocalGroup {
    rank: usize,
    world: usize,
    shared: Arc<Shared>,
}

impl LocalGroup {
    /// The handles of all ranks; give each to its own thread.
    pub fn new(world_size: usize) -> Vec<LocalGroup> {
        let shared = Arc::new(Shared {
            slots: Mutex::new(vec![None; world_size]),
            barrier: Barrier::new(world_size),
        });
        (0..world_size)
            .map(|rank| LocalGroup {
                rank,
                world: world_size,
                shared: shared.clone(),
            })
            .collect()
    }
}

impl AllReduce for LocalGroup {
    fn rank(&self) -> usize {
        self.rank
    }
    fn world_size(&self) -> usize {
        self.world
    }
    fn all_reduce_mean(&self, grads: &mut [Tensor]) -> Result<()> {
        let mine = grads
            .iter()
            .map(|g| g.to_dtype(DType::F32))
            .collect::<Result<Vec<_>>>()?;
        self.shared.slots.lock().expect("all-reduce lock poisoned")[self.rank] = Some(mine);
        // After this barrier every slot holds this round's gradients; nobody writes again before the
        // second barrier, so the reads below see one consistent round.
        self.shared.barrier.wait();
        let result = (|| -> Result<Vec<Tensor>> {
            let slots = self.shared.slots.lock().expect("all-reduce lock poisoned");
            let mut out = Vec::with_capacity(grads.len());
            for i in 0..grads.len() {
                let mut sum: Option<Tensor> = None;
                for slot in slots.iter() {
                    let Some(g) = slot.as_ref().and_then(|s| s.get(i)) else {
                        candle_core::bail!(
                            "a rank published fewer gradients than rank {}",
                            self.rank
                        )
                    };
                    sum = Some(match sum {
                        Some(s) => (s + g)?,
                        None => g.clone(),
                    });
                }
                out.push((sum.expect("world size ≥ 1") / self.world as f64)?);
            }
            Ok(out)
        })();
        self.shared.barrier.wait();
        let out = result?;
        for (g, m) in grads.iter_mut().zip(out) {
            *g = m;
        }
        Ok(())
    }
}
