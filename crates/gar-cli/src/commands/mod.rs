//! One module per `gar` subcommand.

pub mod eval;
