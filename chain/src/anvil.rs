//! A local chain for tests and demos: an `anvil` process on a free loopback port, killed
//! (SIGKILL) and reaped when dropped.
//!
//! The binary comes from the npm package `@foundry-rs/anvil` that `scripts/setup.sh` installs
//! into `contracts/node_modules`; the native binary is run directly (the package's node
//! wrapper would leave anvil running when killed).

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use alloy::primitives::U256;
use alloy::providers::{Provider, ext::AnvilApi};
use alloy::signers::local::PrivateKeySigner;

use crate::client::Chain;
use crate::error::{ChainError, Result};

/// Anvil's well-known development keys (from its default mnemonic "test test … junk").
/// TEST KEYS ONLY: every one is public; never use them on a real chain.
pub const DEV_KEYS: [&str; 4] = [
    "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80",
    "0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d",
    "0x5de4111afa1a4b94908f83103eb1f1706367c2e68ca870fc3fb9a804cdab365a",
    "0x7c852118294e51e653712a81e05800f419141751be58f605c371e15141b007a6",
];

/// A development key by index (see [`DEV_KEYS`]).
pub fn dev_key(index: usize) -> Result<PrivateKeySigner> {
    let key = DEV_KEYS.get(index).ok_or_else(|| ChainError::Invalid(format!("no dev key {index}")))?;
    key.parse().map_err(|e| ChainError::Invalid(format!("dev key {index}: {e}")))
}

/// The anvil binary `scripts/setup.sh` installs for this platform.
pub fn default_binary() -> PathBuf {
    let package = if cfg!(all(target_os = "linux", target_arch = "aarch64")) {
        "anvil-linux-arm64"
    } else if cfg!(all(target_os = "macos", target_arch = "aarch64")) {
        "anvil-darwin-arm64"
    } else if cfg!(target_os = "macos") {
        "anvil-darwin-amd64"
    } else {
        "anvil-linux-amd64"
    };
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../contracts/node_modules/@foundry-rs").join(package).join("bin/anvil")
}

/// A running anvil.
#[derive(Debug)]
pub struct Anvil {
    child: Child,
    endpoint: String,
}

impl Anvil {
    /// Starts [`default_binary`] on a free loopback port and waits until it answers.
    pub async fn spawn() -> Result<Self> {
        Self::spawn_binary(&default_binary()).await
    }

    /// Starts the anvil at `binary` on a free loopback port and waits until it answers.
    pub async fn spawn_binary(binary: &Path) -> Result<Self> {
        if !binary.exists() {
            return Err(ChainError::Anvil(format!("{} not found; run scripts/setup.sh", binary.display())));
        }
        let mut child = Command::new(binary)
            .args(["--host", "127.0.0.1", "--port", "0", "--chain-id", "31337"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| ChainError::Anvil(format!("starting {}: {e}", binary.display())))?;
        let stdout = child.stdout.take().ok_or_else(|| ChainError::Anvil("no stdout".into()))?;
        // Port 0: anvil binds a free port and says which. The thread then keeps reading, so
        // that anvil never blocks on a full pipe.
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut sent = false;
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if !sent && let Some(address) = line.strip_prefix("Listening on ") {
                    sent = tx.send(address.trim().to_string()).is_ok();
                }
            }
        });
        let mut anvil = Anvil { child, endpoint: String::new() };
        let address = tokio::task::spawn_blocking(move || rx.recv_timeout(Duration::from_secs(20)))
            .await
            .map_err(|e| ChainError::Anvil(e.to_string()))?
            .map_err(|_| ChainError::Anvil("anvil did not say where it listens".into()))?;
        anvil.endpoint = format!("http://{address}");
        anvil.wait_until_ready().await?;
        Ok(anvil)
    }

    async fn wait_until_ready(&self) -> Result<()> {
        let provider = alloy::providers::ProviderBuilder::new().disable_recommended_fillers().connect_client(
            crate::transport::HttpTransport::new(
                self.endpoint.parse().map_err(|e| ChainError::Anvil(format!("{e}")))?,
                Duration::from_secs(2),
            )
            .map_err(|e| ChainError::Anvil(e.to_string()))?
            .into_client(),
        );
        let started = Instant::now();
        loop {
            match provider.get_chain_id().await {
                Ok(_) => return Ok(()),
                Err(e) if started.elapsed() > Duration::from_secs(20) => {
                    return Err(ChainError::Anvil(format!("no answer at {}: {e}", self.endpoint)));
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
    }

    /// The JSON-RPC endpoint, `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// Moves the chain's clock forward and mines a block at the new time.
    pub async fn advance_time(chain: &Chain, seconds: u64) -> Result<()> {
        chain.provider().anvil_increase_time(seconds).await?;
        chain.provider().evm_mine(None).await?;
        Ok(())
    }

    /// Sets an account's ether balance.
    pub async fn set_balance(chain: &Chain, who: alloy::primitives::Address, wei: U256) -> Result<()> {
        Ok(chain.provider().anvil_set_balance(who, wei).await?)
    }
}

impl Drop for Anvil {
    fn drop(&mut self) {
        // `Child::kill` sends SIGKILL; `wait` reaps it, so no zombie is left behind.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
