//! The `gar` command line.

mod commands;
mod exit;
mod heap;
mod regions;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "gar",
    version,
    about = "Grasp Any Region: region-level image understanding"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Describe each region in detail (streamed).
    Describe(commands::describe::DescribeArgs),
    /// Ask a question about one or several regions (<Prompt0>, <Prompt1>, … in the order given).
    Ask(commands::ask::AskArgs),
    /// A multi-turn conversation about the regions, read from stdin.
    Chat(commands::chat::ChatArgs),
    /// Write the processor's model inputs to a safetensors file.
    Inspect(commands::inspect::InspectArgs),
    /// Turn clicks, a box or a scribble into a mask with SAM.
    Segment(commands::segment::SegmentArgs),
    /// Serve the HTTP API and web demo (describe, segment, OpenAI-compatible chat).
    Serve(commands::serve::ServeArgs),
    /// Score benchmark predictions and replay cached judge verdicts.
    #[command(subcommand)]
    Eval(commands::eval::EvalCommand),
    /// Measure end-to-end speed on synthetic inputs (docs/performance.md).
    Bench(commands::bench::BenchArgs),
    /// Fine-tune GAR (`--config train.toml`), or compute one sample's loss and gradients (`loss`).
    Train(commands::train::TrainArgs),
}

fn main() {
    let _ = heap::keep_freed_memory();
    let matches = Cli::command().get_matches();
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    // Region flags are re-read from the matches to keep their command-line order.
    let sub = matches
        .subcommand()
        .map(|(_, m)| m.clone())
        .unwrap_or_default();
    let result = match cli.command {
        Command::Describe(args) => commands::describe::run(args, &sub),
        Command::Ask(args) => commands::ask::run(args, &sub),
        Command::Chat(args) => commands::chat::run(args, &sub),
        Command::Inspect(args) => commands::inspect::run(args, &sub),
        Command::Segment(args) => commands::segment::run(args),
        Command::Serve(args) => commands::serve::run(args),
        Command::Eval(cmd) => commands::eval::run(cmd),
        Command::Bench(args) => commands::bench::run(args),
        Command::Train(args) => commands::train::run(args),
    };
    if let Err(err) = result {
        eprintln!("error: {}", exit::one_line(&err));
        std::process::exit(exit::exit_code(&err));
    }
}
