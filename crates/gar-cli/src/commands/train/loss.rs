//! `gar train loss`: one sample's loss and gradients.

use clap::Args;

#[derive(Args)]
pub struct LossArgs {}

pub fn run(_args: LossArgs) -> anyhow::Result<()> {
    anyhow::bail!("gar train loss is not built yet")
}
