//! The provider, wired: every component built once, each given only the handles it needs, and
//! the background work started. This module decides nothing itself; see `ARCHITECTURE.md`.

use std::sync::Arc;

use alloy_primitives::Address;
use alloy_signer_local::PrivateKeySigner;
use alloy_sol_types::Eip712Domain;
use anyhow::{Context, Result};
use tidepool_runtime::{Limits, Runtime, RuntimeConfig};

use crate::agreement::{Agreements, Dispatcher};
use crate::algorithms::Algorithms;
use crate::assets::{Assets, AssetsConfig};
use crate::config::Isolation;
use crate::config::{Operators, ProviderConfig};
use crate::http::{Api, BodyLimits, Guard, RequestAuth, UploadGate, UploadLimits};
use crate::jobs::{Jobs, JobsConfig, ReceiptSigner, WorkersConfig};
use crate::keeper::Keeper;
use crate::keeper::embedded::EmbeddedKeeper;
use crate::protocol::api::ProviderView;
use crate::protocol::eip712;
use crate::store::Db;
use crate::store::blobs::Blobs;
use crate::store::nonces::Nonces;
use crate::store::s3::{S3, S3Config};

/// Opens the database the configuration names (SQLite in the data directory by default).
pub(crate) async fn open_db(config: &ProviderConfig) -> Result<Db> {
    match &config.database {
        Some(url) => Db::open_url(url).await.context("connecting to the database"),
        None => {
            let busy = std::time::Duration::from_millis(config.db_busy_timeout_ms);
            Db::open_with_busy_timeout(&config.data_dir.join("tidepool.db"), busy).await.context("opening the database")
        }
    }
}

/// Opens the blob store the configuration names: the data directory's, or a bucket cached in it.
pub(crate) async fn open_blobs(config: &ProviderConfig) -> Result<Blobs> {
    let Some(url) = &config.blobs else {
        return Blobs::open(&config.data_dir).context("opening the blob store");
    };
    let s3 = S3Config::from_url(url, &config.blobs_region, config.blobs_credentials.clone())
        .map_err(anyhow::Error::msg)
        .context("--blobs")?;
    let s3 = S3::new(s3).context("the blob store's client")?;
    // Convenient on a fresh test server; a production bucket exists already (and a key that may
    // not create buckets is refused here harmlessly).
    if let Err(e) = s3.create_bucket().await {
        tracing::warn!(error = %e, "could not create the bucket (it may exist already)");
    }
    Blobs::open_remote(&config.data_dir, s3).context("opening the blob cache")
}

/// How jobs run on a node: its role names its leases.
pub(crate) fn jobs_config(config: &ProviderConfig, db: &Db, job_limits: Limits, role: &str) -> JobsConfig {
    JobsConfig {
        jobs_dir: config.data_dir.join("jobs"),
        max_concurrent_jobs: config.max_concurrent_jobs,
        max_job_attempts: config.max_job_attempts,
        job_limits,
        run_jobs: role == "worker" || config.runs_jobs(),
        cluster: db.is_shared(),
        lease: std::time::Duration::from_secs(config.job_lease_secs.max(1)),
        node: crate::jobs::node_name(role),
        workers: match config.sandbox.isolation {
            Isolation::InProcess => None,
            Isolation::Process => Some(WorkersConfig {
                command: worker_command(),
                sandbox: config.sandbox.clone(),
                cache_dir: Some(config.data_dir.join("compile-cache")),
            }),
        },
    }
}

/// How to start a job's worker process: this very program, `tidepool job-worker`, with only
/// the logging filter of the environment.
fn worker_command() -> tidepool_sandbox::WorkerCommand {
    let program = std::env::current_exe().unwrap_or_else(|_| "tidepool".into());
    let env = std::env::var_os("RUST_LOG").map(|v| ("RUST_LOG".into(), v)).into_iter().collect();
    tidepool_sandbox::WorkerCommand { program, args: vec!["job-worker".into()], env }
}

/// A provider: its components, built and connected.
#[derive(Debug)]
pub struct Provider {
    config: ProviderConfig,
    signer: PrivateKeySigner,
    keeper: Arc<dyn Keeper>,
    jobs: Arc<Jobs>,
    dispatcher: Arc<Dispatcher>,
    api: Arc<Api>,
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
        let db = open_db(&config).await?;
        let blobs = open_blobs(&config).await?;
        // What a killed daemon left half written: nothing refers to it.
        let cleared = blobs.clear_tmp().context("clearing the blob store's temporary files")?;
        if cleared > 0 {
            tracing::info!(files = cleared, "removed temporary files left by a previous run");
        }
        let keeper: Arc<dyn Keeper> = Arc::new(EmbeddedKeeper::new(db.clone(), config.chain_id));
        Ok(Self::assemble(config, db, blobs, keeper, signer))
    }

    /// Builds a provider around an existing keeper (another keeper implementation, tests).
    pub fn assemble(
        config: ProviderConfig,
        db: Db,
        blobs: Blobs,
        keeper: Arc<dyn Keeper>,
        signer: PrivateKeySigner,
    ) -> Arc<Self> {
        let blobs = Arc::new(blobs);
        let runtime = Arc::new(Runtime::new(RuntimeConfig {
            cache_dir: Some(config.data_dir.join("compile-cache")),
            // One instance slot per job that may run at once: the pool is sized, and the
            // daemon's guest memory bounded, by `max_concurrent_jobs`.
            max_instances: config.max_concurrent_jobs,
            ..RuntimeConfig::default()
        }));
        let domain = eip712::domain(keeper.chain_id(), signer.address());
        let operators = Operators::new(signer.address(), config.operators.clone());
        // Jobs run under the provider's limits, with its own module size limit.
        let job_limits = Limits { module_bytes: config.max_module_bytes, ..config.job_limits.clone() };

        let algorithms = Arc::new(Algorithms::new(db.clone(), blobs.clone(), runtime.clone(), job_limits.clone()));
        let assets = Arc::new(Assets::new(
            db.clone(),
            blobs.clone(),
            keeper.clone(),
            algorithms.clone(),
            AssetsConfig {
                views_dir: config.data_dir.join("views"),
                base_url: config.base_url(),
                operators: operators.clone(),
                job_limits: config.job_limits.clone(),
                max_file_bytes: config.max_file_bytes,
            },
        ));
        let jobs = Arc::new(Jobs::new(
            db.clone(),
            keeper.clone(),
            assets.clone(),
            algorithms.clone(),
            blobs,
            runtime,
            Some(ReceiptSigner { signer: signer.clone(), domain: domain.clone() }),
            jobs_config(&config, &db, job_limits, "api"),
        ));
        let agreements = Arc::new(Agreements::new(
            keeper.clone(),
            assets.clone(),
            algorithms,
            jobs.clone(),
            domain.clone(),
            signer.address(),
        ));
        let dispatcher = Arc::new(Dispatcher::new(keeper.clone(), db.clone(), signer.address()));
        let api = Arc::new(Api {
            agreements,
            assets,
            jobs: jobs.clone(),
            keeper: keeper.clone(),
            auth: RequestAuth::new(Nonces::new(db), domain, config.max_request_ttl_secs),
            view: ProviderView {
                address: signer.address(),
                chain_id: keeper.chain_id(),
                keeper: keeper.kind().into(),
                template_id: crate::protocol::template::template_id(),
                tidepool_version: tidepool_runtime::VERSION.into(),
                wasmtime_version: tidepool_runtime::engine::WASMTIME_VERSION.into(),
                dev_faucet: config.dev_faucet,
                max_module_bytes: config.max_module_bytes,
            },
            limits: BodyLimits { max_file_bytes: config.max_file_bytes, max_module_bytes: config.max_module_bytes },
            faucet: config.dev_faucet.then_some(config.faucet_amount),
            operators,
            guard: Guard::new(config.http.clone()),
            uploads: UploadGate::new(UploadLimits {
                max_concurrent: config.http.max_concurrent_uploads,
                max_per_address: config.http.max_uploads_per_address,
                bytes_per_address_per_hour: config.http.upload_bytes_per_address_per_hour,
            }),
        });
        Arc::new(Self { config, signer, keeper, jobs, dispatcher, api })
    }

    /// The provider's address: its identity, and what its receipts are signed by.
    pub fn address(&self) -> Address {
        self.signer.address()
    }

    /// The provider's key.
    pub fn signer(&self) -> &PrivateKeySigner {
        &self.signer
    }

    /// The configuration it was opened with.
    pub fn config(&self) -> &ProviderConfig {
        &self.config
    }

    /// The keeper it runs agreements on.
    pub fn keeper(&self) -> &Arc<dyn Keeper> {
        &self.keeper
    }

    /// The signing domain of this provider (requests and receipts).
    pub fn domain(&self) -> &Eip712Domain {
        self.api.auth.domain()
    }

    /// What the HTTP API serves.
    pub fn api(&self) -> Arc<Api> {
        self.api.clone()
    }

    /// Resumes interrupted work and starts the background tasks: the job scheduler and the
    /// event dispatcher.
    pub async fn start(&self) -> Result<()> {
        self.jobs.start().await.context("recovering jobs")?;
        self.dispatcher.clone().start().context("starting the event dispatcher")?;
        Ok(())
    }
}
