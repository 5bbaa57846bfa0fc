//! The `tidepool` command line: one module per subcommand.

mod args;
mod chain;
mod client_args;
mod compute;
mod demo;
mod gc;
mod keygen;
mod progress;
mod publish;
mod run;
mod serve;
mod verify;
mod wallet;
mod worker;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Compute-to-data in a deterministic WebAssembly sandbox.
#[derive(Debug, Parser)]
#[command(name = "tidepool", version, about, propagate_version = true)]
pub struct Cli {
    /// More logging (-v info, -vv debug). `RUST_LOG` overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Run an algorithm on local datasets and write its outputs and receipt.
    Run(run::RunArgs),
    /// Re-execute a receipt's job and check that it matches.
    Verify(verify::VerifyArgs),
    /// Run the provider daemon (an API node, with --database and --blobs).
    Serve(Box<serve::ServeArgs>),
    /// Run a worker node of a cluster: jobs from the shared database (--database, --blobs).
    Worker(worker::WorkerArgs),
    /// The whole story on one machine: a provider, a dataset, a consumer, a receipt, an auditor.
    Demo(demo::DemoArgs),
    /// Create a key file and print its address.
    Keygen(keygen::KeygenArgs),
    /// Remove the blobs no row of a stopped single-node provider names.
    Gc(gc::GcArgs),
    /// Publish datasets (operators) or an algorithm on a provider.
    Publish(publish::PublishArgs),
    /// Run an algorithm on a provider's dataset: the whole consumer flow.
    Compute(compute::ComputeArgs),
    /// Show a job.
    Status(compute::JobArgs),
    /// Stop a job.
    Stop(compute::JobArgs),
    /// Take back the payment of an agreement whose provider missed its deadline.
    Refund(compute::RefundArgs),
    /// Get tokens from a development provider's faucet.
    Faucet(wallet::FaucetArgs),
    /// Show a token balance on the provider's keeper.
    Balance(wallet::BalanceArgs),
    /// Credit tokens to an account (the provider's operators, embedded keeper).
    Credit(wallet::CreditArgs),
    /// The agreement contracts on an EVM chain (deploy).
    Chain(chain::ChainArgs),
    /// A job's worker process, started by `tidepool serve` (internal).
    #[command(hide = true)]
    JobWorker,
    /// The template that forks jobs' worker processes, started by `tidepool serve` (internal).
    #[command(hide = true)]
    JobTemplate(JobTemplateArgs),
}

/// What a worker template makes before it forks.
#[derive(Debug, clap::Args)]
pub struct JobTemplateArgs {
    /// The stack limit of the jobs' engine.
    #[arg(long)]
    max_stack_height: u64,
    /// The compile cache.
    #[arg(long, value_name = "DIR")]
    cache_dir: Option<std::path::PathBuf>,
}

/// Stack of the daemon's threads (see `dispatch`).
const JOB_THREAD_STACK: usize = 8 << 20;

/// Runs the parsed command; the exit code it asks for, or an error (exit code 2).
pub fn dispatch(cli: Cli) -> anyhow::Result<ExitCode> {
    // Jobs run on blocking threads; with this much stack a job at the default stack limit runs
    // on the thread it was given instead of one the runtime would start for it.
    let rt = || tokio::runtime::Builder::new_multi_thread().enable_all().thread_stack_size(JOB_THREAD_STACK).build();
    match cli.command {
        Command::Run(args) => run::run(args),
        Command::Verify(args) => verify::run(args),
        Command::Keygen(args) => keygen::run(args),
        Command::Gc(args) => rt()?.block_on(gc::run(args)),
        Command::Serve(args) => rt()?.block_on(serve::run(*args)),
        Command::Worker(args) => rt()?.block_on(worker::run(args)),
        Command::Demo(args) => rt()?.block_on(demo::run(args)),
        Command::Publish(args) => rt()?.block_on(publish::run(args)),
        Command::Compute(args) => rt()?.block_on(compute::run(args)),
        Command::Status(args) => rt()?.block_on(compute::status(args)),
        Command::Stop(args) => rt()?.block_on(compute::stop(args)),
        Command::Refund(args) => rt()?.block_on(compute::refund(args)),
        Command::Faucet(args) => rt()?.block_on(wallet::faucet(args)),
        Command::Balance(args) => rt()?.block_on(wallet::balance(args)),
        Command::Credit(args) => rt()?.block_on(wallet::credit(args)),
        Command::Chain(args) => rt()?.block_on(chain::run(args)),
        // The worker starts no async runtime: it confines itself before any thread starts.
        Command::JobWorker => Ok(ExitCode::from(u8::try_from(tidepool_sandbox::child::main()).unwrap_or(4))),
        // Nor does the template: it forks, which copies only the calling thread.
        Command::JobTemplate(args) => {
            let limits = tidepool_runtime::Limits { max_stack_height: args.max_stack_height, ..Default::default() };
            let config = tidepool_sandbox::TemplateConfig { cache_dir: args.cache_dir, limits };
            Ok(ExitCode::from(u8::try_from(tidepool_sandbox::template::main(config)).unwrap_or(4)))
        }
    }
}

/// Whether `TIDEPOOL_PERFMAP` (set, not `0`) asks for compiled guest functions to be named in
/// `/tmp/perf-PID.map`, for profiling guests with `perf`.
pub(crate) fn perf_map() -> bool {
    std::env::var_os("TIDEPOOL_PERFMAP").is_some_and(|v| !v.is_empty() && v != "0")
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
