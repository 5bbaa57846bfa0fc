//! The provider: everything a running daemon holds (configuration, database, blobs, keeper,
//! runtime, signing key, jobs), assembled once and shared by the HTTP handlers, the job
//! workers and the event dispatcher.

use std::sync::Arc;

use alloy_primitives::Address;
use alloy_signer_local::PrivateKeySigner;
use alloy_sol_types::Eip712Domain;
use anyhow::{Context, Result};
use tidepool_runtime::{Runtime, RuntimeConfig};

use crate::config::ProviderConfig;
use crate::keeper::Keeper;
use crate::keeper::embedded::EmbeddedKeeper;
use crate::store::Db;
use crate::store::blobs::Blobs;

/// A provider's state.
#[derive(Debug)]
pub struct Provider {
    pub config: ProviderConfig,
    pub db: Db,
    pub blobs: Blobs,
    pub keeper: Arc<dyn Keeper>,
    pub runtime: Arc<Runtime>,
    pub signer: PrivateKeySigner,
    pub domain: Eip712Domain,
    pub jobs: crate::jobs::Jobs,
    pub assets: crate::assets::Cache,
}

impl Provider {
    /// Opens the provider's data directory (creating what is missing) with the embedded keeper.
    pub async fn open(config: ProviderConfig) -> Result<Arc<Self>> {
        let data = &config.data_dir;
        std::fs::create_dir_all(data).with_context(|| format!("creating the data directory {}", data.display()))?;
        let (signer, created) = crate::keys::load_or_create(&config.key_path(), config.key_file.is_none())?;
        if created {
            tracing::info!(address = %signer.address(), path = %config.key_path().display(), "created the provider key");
        }
        let db = Db::open(&data.join("tidepool.db")).await.context("opening the database")?;
        let blobs = Blobs::open(data).context("opening the blob store")?;
        let keeper: Arc<dyn Keeper> = Arc::new(EmbeddedKeeper::new(db.clone(), config.chain_id).await?);
        Self::assemble(config, db, blobs, keeper, signer)
    }

    /// Builds a provider around an existing keeper (another keeper implementation, tests).
    pub fn assemble(
        config: ProviderConfig,
        db: Db,
        blobs: Blobs,
        keeper: Arc<dyn Keeper>,
        signer: PrivateKeySigner,
    ) -> Result<Arc<Self>> {
        let runtime = Arc::new(Runtime::new(RuntimeConfig {
            cache_dir: Some(config.data_dir.join("compile-cache")),
            // One instance slot per job that may run at once: the pool is sized, and the
            // daemon's guest memory bounded, by `max_concurrent_jobs`.
            max_instances: config.max_concurrent_jobs,
            ..RuntimeConfig::default()
        }));
        let domain = crate::bindings::domain(keeper.chain_id(), signer.address());
        Ok(Arc::new(Self {
            config,
            db,
            blobs,
            keeper,
            runtime,
            signer,
            domain,
            jobs: crate::jobs::Jobs::default(),
            assets: Default::default(),
        }))
    }

    pub fn address(&self) -> Address {
        self.signer.address()
    }

    /// May `who` publish datasets here?
    pub fn is_operator(&self, who: Address) -> bool {
        who == self.address() || self.config.operators.contains(&who)
    }

    /// Resumes interrupted work and starts the background tasks: the job scheduler and the
    /// event dispatcher.
    pub async fn start(self: &Arc<Self>) -> Result<()> {
        crate::jobs::recover(self).await.context("recovering jobs")?;
        crate::jobs::spawn_scheduler(self.clone());
        crate::agreement::events::spawn_dispatcher(self.clone()).context("starting the event dispatcher")?;
        Ok(())
    }
}
