//! The multi-GPU all-reduce: one NCCL communicator per process on its CUDA device (feature `nccl`).
//!
//! Rank 0 creates the NCCL unique id and hands it to the other ranks through the TCP rendezvous
//! (`tcp::TcpGroup::broadcast`); every rank then joins the communicator with `ncclCommInitRank`.
//! Gradients are cast to f32, concatenated into one flat buffer (one NCCL call per step), summed
//! with `ncclAllReduce` and divided by the world size. NCCL's ring/tree reductions give every rank
//! the same result, but not necessarily the same summation order as the CPU paths.

use crate::allreduce::AllReduce;
use candle_core::cuda_backend::cudarc::nccl::{Comm, Id, ReduceOp};
use candle_core::op::BackpropOp;
use candle_core::{CudaStorage, DType, Device, Result, Storage, Tensor};
use std::sync::Mutex;

/// The bytes of an NCCL unique id (what rank 0 sends to the others).
pub const ID_BYTES: usize = 128;

/// A new NCCL unique id, as bytes to broadcast.
pub fn new_unique_id() -> Result<Vec<u8>> {
    let id = Id::new().map_err(|e| candle_core::Error::Msg(format!("ncclGetUniqueId: {e:?}")))?;
    Ok(id.internal().iter().map(|&c| c as u8).collect())
}

/// `Comm` holds a raw communicator pointer and so is neither Send nor Sync. NCCL allows a
/// communicator to be used from any thread as long as calls on it do not overlap; the mutex in
/// `NcclGroup` guarantees that.
struct CommCell(Comm);
unsafe impl Send for CommCell {}

pub struct NcclGroup {
    comm: Mutex<CommCell>,
    device: candle_core::CudaDevice,
    rank: usize,
    world: usize,
}

impl NcclGroup {
    /// Join the communicator of `world` ranks identified by `id` (from rank 0) on `device`,
    /// which must be a CUDA device. Blocks until every rank has joined.
    pub fn join(device: &Device, rank: usize, world: usize, id: &[u8]) -> Result<Self> {
        let Device::Cuda(cuda) = device else {
            candle_core::bail!("the NCCL all-reduce needs a CUDA device, got {device:?}")
        };
        if id.len() != ID_BYTES {
            candle_core::bail!("NCCL unique id has {} bytes, expected {ID_BYTES}", id.len());
        }
        let mut raw = [0 as core::ffi::c_char; ID_BYTES];
        for (r, b) in raw.iter_mut().zip(id) {
            *r = *b as core::ffi::c_char;
        }
        let comm =
            Comm::from_rank(cuda.cuda_stream(), rank, world, Id::uninit(raw)).map_err(|e| {
                candle_core::Error::Msg(format!("ncclCommInitRank (rank {rank} of {world}): {e:?}"))
            })?;
        Ok(Self {
            comm: Mutex::new(CommCell(comm)),
            device: cuda.clone(),
            rank,
            world,
        })
    }
}

impl AllReduce for NcclGroup {
    fn rank(&self) -> usize {
        self.rank
    }
    fn world_size(&self) -> usize {
        self.world
    }
    fn all_reduce_mean(&self, grads: &mut [Tensor]) -> Result<()> {
        if grads.is_empty() {
            return Ok(());
        }
        let flat: Vec<Tensor> = grads
            .iter()
            .map(|g| g.to_dtype(DType::F32)?.flatten_all())
            .collect::<Result<_>>()?;
        let flat = Tensor::cat(&flat, 0)?.contiguous()?;
        let n = flat.elem_count();
        let mut summed = self.device.alloc_zeros::<f32>(n)?;
        {
            let (storage, layout) = flat.storage_and_layout();
            let Storage::Cuda(storage) = &*storage else {
                candle_core::bail!("gradient is not on the CUDA device of the NCCL communicator")
            };
            let start = layout.start_offset();
            let src = storage.as_cuda_slice::<f32>()?.slice(start..start + n);
            let comm = self.comm.lock().expect("NCCL communicator lock poisoned");
            comm.0
                .all_reduce(&src, &mut summed, &ReduceOp::Sum)
                .map_err(|e| candle_core::Error::Msg(format!("ncclAllReduce: {e:?}")))?;
        }
        let summed = Tensor::from_storage(
            Storage::Cuda(CudaStorage::wrap_cuda_slice(summed, self.device.clone())),
            n,
            BackpropOp::none(),
            false,
        );
        let mean = (summed / self.world as f64)?;
        let mut offset = 0;
        for g in grads.iter_mut() {
            let len = g.elem_count();
            *g = mean.narrow(0, offset, len)?.reshape(g.shape())?;
            offset += len;
        }
        Ok(())
    }
}
