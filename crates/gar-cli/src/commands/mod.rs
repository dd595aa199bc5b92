//! One module per `gar` subcommand.

pub mod ask;
pub mod bench;
pub mod chat;
mod common;
pub mod describe;
pub mod eval;
pub mod inspect;
pub mod segment;
pub mod serve;
pub mod train;
