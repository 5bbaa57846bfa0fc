//! `tidepool chain`: the agreement contracts on an EVM chain.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};

/// `tidepool chain deploy --rpc URL --key FILE --out FILE`
#[derive(Debug, clap::Args)]
pub struct ChainArgs {
    #[command(subcommand)]
    pub command: ChainCommand,
}

#[derive(Debug, clap::Subcommand)]
pub enum ChainCommand {
    /// Deploy the agreement contracts (store, conditions, escrow, DID registry, and a test token
    /// whose deployer alone mints) and write their addresses to a contracts file.
    Deploy(DeployArgs),
}

#[derive(Debug, clap::Args)]
pub struct DeployArgs {
    /// The chain's JSON-RPC URL.
    #[arg(long, env = "TIDEPOOL_CHAIN_RPC", value_name = "URL")]
    pub rpc: String,
    /// The deployer's key file (it pays the gas; on a development chain it also mints tokens).
    #[arg(long, value_name = "FILE")]
    pub key: PathBuf,
    /// Where to write the contracts file (what `--contracts` takes); refuses to overwrite.
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,
}

pub async fn run(args: ChainArgs) -> Result<ExitCode> {
    match args.command {
        ChainCommand::Deploy(args) => deploy(args).await,
    }
}

async fn deploy(args: DeployArgs) -> Result<ExitCode> {
    if args.out.exists() {
        anyhow::bail!("{} exists; refusing to overwrite a contracts file", args.out.display());
    }
    let key = crate::keys::load(&args.key)?;
    eprintln!("deploying the agreement contracts to {} as {}", args.rpc, key.address());
    let (contracts, report) = tidepool_chain::deploy(&args.rpc, key, tidepool_chain::ChainConfig::default())
        .await
        .with_context(|| format!("deploying to {}", args.rpc))?;
    contracts.write(&args.out).with_context(|| format!("writing {}", args.out.display()))?;
    for (name, address) in contracts.all() {
        eprintln!("  {name:<24} {address}");
    }
    eprintln!(
        "chain {}, block {}, {} gas in all; contracts written to {}",
        contracts.chain_id,
        contracts.deployed_at_block,
        report.steps.iter().map(|(_, gas)| gas).sum::<u64>(),
        args.out.display()
    );
    Ok(ExitCode::SUCCESS)
}
