//! The `gar` command line.

mod commands;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "gar", version, about = "Grasp Any Region: region-level image understanding")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Score benchmark predictions and replay cached judge verdicts.
    #[command(subcommand)]
    Eval(commands::eval::EvalCommand),
}

fn main() {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Eval(cmd) => commands::eval::run(cmd),
    };
    if let Err(err) = result {
        eprintln!("error: {err:#}");
        std::process::exit(1);
    }
}
