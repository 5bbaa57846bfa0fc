//! `tidepool keygen`: a new key file, and its address.

use std::path::PathBuf;
use std::process::ExitCode;

use alloy_signer_local::PrivateKeySigner;
use anyhow::Result;

#[derive(Debug, clap::Args)]
pub struct KeygenArgs {
    /// Where to write the key (it must not exist).
    #[arg(long, default_value = "tidepool.key", value_name = "FILE")]
    pub out: PathBuf,
}

pub fn run(args: KeygenArgs) -> Result<ExitCode> {
    let key = PrivateKeySigner::random();
    crate::keys::save(&args.out, &key)?;
    println!("{}", key.address());
    eprintln!("key written to {} (keep it secret; it is readable only by you)", args.out.display());
    Ok(ExitCode::SUCCESS)
}
