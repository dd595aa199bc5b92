//! One module per `gar` subcommand.

pub mod ask;
pub mod bench;
pub mod chat;
mod common;
pub mod describe;
pub mod eval;
mod eval_judge;
mod eval_run;
pub mod inspect;
mod sam_regions;
pub mod segment;
pub mod serve;
pub mod train;

/// A bare command with only the region flags, for unit tests of their grouping.
#[cfg(test)]
pub fn common_region_args_for_tests() -> clap::Command {
    use clap::Args;
    common::RegionArgs::augment_args(clap::Command::new("t"))
}
