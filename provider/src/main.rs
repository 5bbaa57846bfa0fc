//! `tidepool`: run algorithms in the sandbox, verify receipts, serve as a provider.
//!
//! Exit status: 0 success; 1 the job ran and failed (or a receipt did not verify); 2 the
//! command could not do its work (bad arguments, invalid module, missing input, I/O failure).

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = tidepool_provider::cli::Cli::parse();
    tidepool_provider::cli::init_tracing(cli.verbose);
    match tidepool_provider::cli::dispatch(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}
