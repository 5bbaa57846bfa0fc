//! `tidepool faucet` and `tidepool balance`: tokens on the embedded keeper.

use std::process::ExitCode;

use alloy_primitives::{Address, U256};
use anyhow::Result;

use super::client_args::ClientArgs;

#[derive(Debug, clap::Args)]
pub struct FaucetArgs {
    #[command(flatten)]
    pub client: ClientArgs,
}

pub async fn faucet(args: FaucetArgs) -> Result<ExitCode> {
    let client = args.client.connect().await?;
    let balance = client.faucet().await?;
    println!("{balance}");
    eprintln!("{} now holds {balance} tokens", client.address());
    Ok(ExitCode::SUCCESS)
}

#[derive(Debug, clap::Args)]
pub struct CreditArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    /// The account to credit.
    #[arg(long)]
    pub address: Address,
    /// Token base units.
    #[arg(long)]
    pub amount: U256,
}

/// An operator credits an account on the embedded keeper.
pub async fn credit(args: CreditArgs) -> Result<ExitCode> {
    let client = args.client.connect().await?;
    let balance = client.credit(args.address, args.amount).await?;
    println!("{balance}");
    eprintln!("{} now holds {balance} tokens", args.address);
    Ok(ExitCode::SUCCESS)
}

#[derive(Debug, clap::Args)]
pub struct BalanceArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    /// Another address than your key's.
    #[arg(long)]
    pub address: Option<Address>,
}

pub async fn balance(args: BalanceArgs) -> Result<ExitCode> {
    let client = args.client.connect().await?;
    println!("{}", client.balance(args.address.unwrap_or(client.address())).await?);
    Ok(ExitCode::SUCCESS)
}
