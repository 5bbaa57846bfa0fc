//! The `tidepool` command line: one module per subcommand.

mod args;
mod progress;
mod run;
mod verify;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

pub use args::{InputArg, parse_duration, parse_seed, parse_size};

/// Compute-to-data in a deterministic WebAssembly sandbox.
#[derive(Debug, Parser)]
#[command(name = "tidepool", version, about, propagate_version = true)]
pub struct Cli {
    /// More logging (-v info, -vv debug). `RUST_LOG` overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run an algorithm on local datasets and write its outputs and receipt.
    Run(run::RunArgs),
    /// Re-execute a receipt's job and check that it matches.
    Verify(verify::VerifyArgs),
}

/// Runs the parsed command; the exit code it asks for, or an error (exit code 2).
pub fn dispatch(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Run(args) => run::run(args),
        Command::Verify(args) => verify::run(args),
    }
}

/// Logs go to stderr; `RUST_LOG` wins over `-v`.
pub fn init_tracing(verbose: u8) {
    let default = match verbose {
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).try_init();
}
