//! The launch environment of `gar train`: torchrun's variables (RANK, WORLD_SIZE, LOCAL_RANK,
//! MASTER_ADDR, MASTER_PORT), the training device, and the all-reduce that goes with them.
//!
//! WORLD_SIZE > 1: rank 0 listens on MASTER_ADDR:MASTER_PORT and the others connect
//! (`gar_train::tcp`). On a CUDA device in a build with the `nccl` feature, that connection only
//! carries NCCL's unique id and the gradients go through NCCL; otherwise they go through the TCP
//! star all-reduce (CPU training, or CUDA without NCCL: correct, slow).

use anyhow::{bail, Context};
use candle_core::Device;
use gar_train::allreduce::{AllReduce, SingleProcess};
use gar_train::tcp::{Listener, TcpGroup};
use std::time::Duration;

/// Seconds a rank waits for the others (rendezvous, and each all-reduce) before failing.
const DEFAULT_TIMEOUT_S: u64 = 1800;

pub struct Launch {
    pub rank: usize,
    pub world: usize,
    pub local_rank: usize,
}

fn env_number(name: &str, default: Option<usize>) -> anyhow::Result<usize> {
    match std::env::var(name) {
        Ok(v) => v
            .trim()
            .parse()
            .with_context(|| format!("{name}={v:?} is not a number")),
        Err(_) => {
            default.with_context(|| format!("{name} is not set (needed when WORLD_SIZE > 1)"))
        }
    }
}

impl Launch {
    pub fn from_env() -> anyhow::Result<Self> {
        let world = env_number("WORLD_SIZE", Some(1))?;
        if world == 0 {
            bail!("WORLD_SIZE=0: use at least 1");
        }
        let single = (world == 1).then_some(0);
        let rank = env_number("RANK", single)?;
        if rank >= world {
            bail!("RANK={rank} is out of range for WORLD_SIZE={world}");
        }
        let local_rank = env_number("LOCAL_RANK", Some(rank))?;
        Ok(Self {
            rank,
            world,
            local_rank,
        })
    }

    /// The device of this rank: the CPU, or GPU LOCAL_RANK.
    pub fn device(&self, name: &str) -> anyhow::Result<Device> {
        match name {
            "cuda" => Device::new_cuda(self.local_rank).with_context(|| {
                format!(
                    "[model] device = \"cuda\": cannot open GPU {} (LOCAL_RANK); is this a cuda build?",
                    self.local_rank
                )
            }),
            _ => Ok(Device::Cpu),
        }
    }

    /// The all-reduce between the ranks (blocks until all have joined). `GAR_ALLREDUCE=tcp|nccl`
    /// forces an implementation, also at WORLD_SIZE=1 (a one-rank group: the GPU smoke check).
    pub fn process_group(&self, device: &Device) -> anyhow::Result<Box<dyn AllReduce>> {
        let forced = std::env::var("GAR_ALLREDUCE").unwrap_or_default();
        match forced.as_str() {
            "" | "auto" | "tcp" | "nccl" => {}
            other => bail!("GAR_ALLREDUCE={other:?}: use auto, tcp or nccl"),
        }
        if forced == "nccl" && !device.is_cuda() {
            bail!("GAR_ALLREDUCE=nccl needs [model] device = \"cuda\"");
        }
        if self.world == 1 && !matches!(forced.as_str(), "tcp" | "nccl") {
            return Ok(Box::new(SingleProcess));
        }
        let addr =
            std::env::var("MASTER_ADDR").context("MASTER_ADDR is not set (WORLD_SIZE > 1)")?;
        let port: u16 = env_number("MASTER_PORT", None)?
            .try_into()
            .context("MASTER_PORT is not a port number")?;
        let timeout = Duration::from_secs(env_number(
            "GAR_DIST_TIMEOUT",
            Some(DEFAULT_TIMEOUT_S as usize),
        )? as u64);
        eprintln!(
            "rank {} of {}: meeting the other ranks at {addr}:{port}",
            self.rank, self.world
        );
        let group = if self.rank == 0 {
            Listener::bind(&addr, port, self.world, timeout)?.accept()?
        } else {
            TcpGroup::connect(&addr, port, self.rank, self.world, timeout)?
        };
        if device.is_cuda() && forced != "tcp" {
            return nccl_group(group, device, self.rank, self.world);
        }
        eprintln!("rank {} of {}: all-reduce over TCP", self.rank, self.world);
        Ok(Box::new(group))
    }
}

#[cfg(feature = "nccl")]
fn nccl_group(
    group: TcpGroup,
    device: &Device,
    rank: usize,
    world: usize,
) -> anyhow::Result<Box<dyn AllReduce>> {
    use gar_train::nccl::{new_unique_id, NcclGroup};
    let id = if rank == 0 {
        new_unique_id()?
    } else {
        Vec::new()
    };
    let id = group.broadcast(&id)?;
    eprintln!("rank {rank} of {world}: all-reduce over NCCL");
    Ok(Box::new(NcclGroup::join(device, rank, world, &id)?))
}

#[cfg(not(feature = "nccl"))]
fn nccl_group(
    group: TcpGroup,
    _device: &Device,
    rank: usize,
    world: usize,
) -> anyhow::Result<Box<dyn AllReduce>> {
    if std::env::var("GAR_ALLREDUCE").is_ok_and(|v| v == "nccl") {
        bail!("GAR_ALLREDUCE=nccl: this build has no NCCL (build with the `nccl` feature)");
    }
    eprintln!(
        "rank {rank} of {world}: this build has no NCCL (feature `nccl`); gradients go through the \
         TCP all-reduce via host memory"
    );
    Ok(Box::new(group))
}
