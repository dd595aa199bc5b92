//! `gar eval`: benchmark scoring (placeholder until the eval crate lands).

use clap::Subcommand;

#[derive(Subcommand)]
pub enum EvalCommand {}

pub fn run(cmd: EvalCommand) -> anyhow::Result<()> {
    match cmd {}
}
