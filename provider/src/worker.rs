//! A worker node (`tidepool worker`): the jobs of a cluster's shared database, run on this
//! machine. It claims due jobs with a lease it renews, stages their datasets and modules from
//! the shared bucket into its own cache, runs them through the same [`Jobs`] path as a
//! single-node provider, and commits their results only while it holds the lease.
//!
//! A worker never holds the provider's key: it serves no requests and signs nothing. The
//! receipts it stores are signed when the job is settled, by an API node (see `jobs/settle.rs`
//! and the README's "Running on several machines"). Like `provider.rs`, this module only wires.

use std::sync::Arc;

use alloy_primitives::Address;
use anyhow::{Context, Result, bail};
use tidepool_runtime::Limits;

use crate::algorithms::Algorithms;
use crate::assets::{Assets, AssetsConfig};
use crate::config::{Operators, ProviderConfig};
use crate::jobs::Jobs;
use crate::keeper::Keeper;
use crate::keeper::embedded::EmbeddedKeeper;
use crate::provider::{environments, jobs_config, open_blobs, open_db, runtime};

/// Why a cluster and a keeper on a chain do not go together (yet): a worker reads agreements
/// from the embedded keeper's tables in the shared database.
pub(crate) const CHAIN_AND_CLUSTER: &str = "a cluster (a shared database, workers) runs with the embedded keeper only: \
     agreements on a chain are served by a single node";

/// A worker: the jobs component of a cluster, without the HTTP API or the key.
#[derive(Debug)]
pub struct Worker {
    algorithms: Arc<Algorithms>,
    jobs: Arc<Jobs>,
    _locks: Vec<crate::store::lock::DataDirLock>,
}

impl Worker {
    /// Connects to the cluster's database and bucket (both required) and builds the jobs
    /// component with its scratch space and caches in `config.data_dir`.
    pub async fn open(config: &ProviderConfig) -> Result<Self> {
        if config.chain_rpc.is_some() || config.contracts.is_some() {
            bail!("{CHAIN_AND_CLUSTER}");
        }
        if config.database.is_none() || config.blobs.is_none() {
            bail!("a worker needs the cluster's shared database and blob store: --database URL --blobs URL");
        }
        std::fs::create_dir_all(&config.data_dir)
            .with_context(|| format!("creating the data directory {}", config.data_dir.display()))?;
        let locks = crate::provider::lock_data(config)?;
        let db = open_db(config).await?;
        if !db.is_shared() {
            bail!("a worker's database must be the cluster's PostgreSQL (postgres://...)");
        }
        let blobs = Arc::new(open_blobs(config).await?);
        // A worker reads agreements and verifies no signature: the domain's provider address
        // is unused here.
        let keeper: Arc<dyn Keeper> = Arc::new(EmbeddedKeeper::new(db.clone(), config.chain_id, Address::ZERO));
        let runtime = runtime(config);
        let job_limits = Limits { module_bytes: config.max_module_bytes, ..config.job_limits.clone() };
        let algorithms = Arc::new(Algorithms::new(
            db.clone(),
            blobs.clone(),
            runtime.clone(),
            job_limits.clone(),
            environments(config)?,
        ));
        let assets = Arc::new(Assets::new(
            db.clone(),
            blobs.clone(),
            keeper.clone(),
            algorithms.clone(),
            AssetsConfig {
                views_dir: config.data_dir.join("views"),
                base_url: config.base_url(),
                // A worker publishes nothing and authorizes no one.
                operators: Operators::new(Address::ZERO, Vec::new()),
                job_limits: config.job_limits.clone(),
                max_file_bytes: config.max_file_bytes,
            },
        ));
        let jobs = Arc::new(Jobs::new(
            db.clone(),
            keeper,
            assets,
            algorithms.clone(),
            blobs,
            runtime,
            None,
            jobs_config(config, &db, job_limits, "worker"),
        ));
        Ok(Self { algorithms, jobs, _locks: locks })
    }

    /// Starts claiming and running jobs in the background (and reaping expired leases).
    pub async fn start(&self) -> Result<()> {
        let algorithms = self.algorithms.clone();
        tokio::spawn(async move { algorithms.prepare_environments().await });
        self.jobs.start().await.context("starting the job scheduler")
    }
}
