//! `gar train`: run a training config, or one sample's loss and gradients (`gar train loss`).

pub mod dist;
pub mod loss;
pub mod run;

use clap::{Args, Subcommand};
use std::path::PathBuf;

#[derive(Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct TrainArgs {
    /// The training configuration (TOML).
    #[arg(long)]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub action: Option<TrainAction>,
}

#[derive(Subcommand)]
pub enum TrainAction {
    /// Build one training sample and run forward + backward in f32 (no optimiser step).
    Loss(loss::LossArgs),
}

pub fn run(args: TrainArgs) -> anyhow::Result<()> {
    match (args.action, args.config) {
        (Some(TrainAction::Loss(loss_args)), _) => loss::run(loss_args),
        (None, Some(config)) => run::run(&config),
        (None, None) => anyhow::bail!("gar train needs --config FILE, or the `loss` subcommand"),
    }
}
