//! Arguments every client subcommand takes: the provider and the key to sign with.

use std::path::PathBuf;

use anyhow::Result;

use super::serve::ChainArgs;
use crate::client::Client;

#[derive(Debug, clap::Args)]
pub struct ClientArgs {
    /// The provider's URL.
    #[arg(long, env = "TIDEPOOL_PROVIDER", default_value = "http://127.0.0.1:8030", value_name = "URL")]
    pub provider: String,
    /// Your key file (see `tidepool keygen`).
    #[arg(long, env = "TIDEPOOL_KEY_FILE", value_name = "FILE")]
    pub key: PathBuf,
    /// Your wallet on the provider's chain, when its keeper is on one.
    #[command(flatten)]
    pub chain: ChainArgs,
}

impl ClientArgs {
    pub async fn connect(&self) -> Result<Client> {
        let signer = crate::keys::load(&self.key)?;
        let client = Client::connect(&self.provider, signer).await?;
        Ok(match self.chain.chain()? {
            Some((rpc, contracts)) => client.with_wallet(&rpc, contracts).await?,
            None => client,
        })
    }
}
