//! The provider, wired: every component built once, each given only the handles it needs, and
//! the background work started. This module decides nothing itself; see `ARCHITECTURE.md`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use alloy_primitives::Address;
use alloy_signer_local::PrivateKeySigner;
use alloy_sol_types::Eip712Domain;
use anyhow::{Context, Result};
use tidepool_runtime::{Environments, Limits, Runtime, RuntimeConfig};

use crate::agreement::{Agreements, Dispatcher};
use crate::algorithms::Algorithms;
use crate::assets::{Assets, AssetsConfig};
use crate::config::Isolation;
use crate::config::{Operators, ProviderConfig};
use crate::http::{Api, BodyLimits, Guard, RequestAuth, UploadGate, UploadLimits};
use crate::jobs::{Jobs, JobsConfig, ReceiptSigner, WorkersConfig};
use crate::keeper::Keeper;
use crate::keeper::embedded::EmbeddedKeeper;
use crate::keeper::evm::{EvmConfig, EvmKeeper};
use crate::protocol::api::ProviderView;
use crate::protocol::eip712;
use crate::store::Db;
use crate::store::blobs::Blobs;
use crate::store::lock::{self, DataDirLock};
use crate::store::nonces::Nonces;
use crate::store::s3::{S3, S3Config};

/// A single-node provider's SQLite file in its data directory, unless `--database` names one.
const DB_FILE: &str = "tidepool.db";

/// The SQLite file of a single-node provider; `None` on a cluster's shared database.
pub fn sqlite_file(config: &ProviderConfig) -> Option<PathBuf> {
    match &config.database {
        None => Some(config.data_dir.join(DB_FILE)),
        Some(url) => Db::sqlite_path(url).map(Path::to_path_buf),
    }
}

/// The locks a node holds on its data directory (see `store::lock`): a single-node daemon
/// owns the directory and its SQLite database (recorded there for `tidepool gc`); a cluster
/// node shares the directory with other cluster nodes only.
pub(crate) fn lock_data(config: &ProviderConfig) -> Result<Vec<DataDirLock>> {
    let data = &config.data_dir;
    let Some(db) = sqlite_file(config) else {
        return Ok(vec![DataDirLock::share(data).context("locking the data directory")?]);
    };
    let mut locks = vec![DataDirLock::acquire(data).context("locking the data directory")?];
    let db = std::path::absolute(&db)?;
    locks.extend(lock_database(data, &db)?);
    lock::record_database(data, &db).context("recording the database in the data directory")?;
    Ok(locks)
}

/// The lock of a single-node provider's SQLite file `db` (absolute), when the file is kept
/// outside its data directory `data`; inside, the directory's lock covers it.
pub(crate) fn lock_database(data: &Path, db: &Path) -> Result<Option<DataDirLock>> {
    if db == std::path::absolute(data.join(DB_FILE))? {
        return Ok(None);
    }
    Ok(Some(DataDirLock::acquire_database(db).context("locking the database")?))
}

/// Opens the database the configuration names (SQLite in the data directory by default).
pub(crate) async fn open_db(config: &ProviderConfig) -> Result<Db> {
    match &config.database {
        Some(url) => Db::open_url(url).await.context("connecting to the database"),
        None => {
            let busy = std::time::Duration::from_millis(config.db_busy_timeout_ms);
            Db::open_with_busy_timeout(&config.data_dir.join(DB_FILE), busy).await.context("opening the database")
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

/// A node's runtime: its compile cache, and one instance slot per job that may run at once
/// (the pool is sized, and the node's guest memory bounded, by `max_concurrent_jobs`).
pub(crate) fn runtime(config: &ProviderConfig) -> Arc<Runtime> {
    Arc::new(Runtime::new(RuntimeConfig {
        cache_dir: Some(config.cache_path()),
        max_instances: config.max_concurrent_jobs,
        perf_map: crate::cli::perf_map(),
        ..RuntimeConfig::default()
    }))
}

/// The environments a node offers (none without `environments_dir`).
pub(crate) fn environments(config: &ProviderConfig) -> Result<Arc<Environments>> {
    Ok(Arc::new(match &config.environments_dir {
        Some(dir) => Environments::load(dir)
            .with_context(|| format!("reading the environments offered, in {}", dir.display()))?,
        None => Environments::none(),
    }))
}

/// How jobs run on a node: its role names its leases.
pub(crate) fn jobs_config(config: &ProviderConfig, db: &Db, job_limits: Limits, role: &str) -> JobsConfig {
    let max_stack_height = job_limits.max_stack_height.to_string();
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
                command: worker_command(vec!["job-worker".into()]),
                template: config.sandbox.fork_workers.then(|| {
                    worker_command(vec![
                        "job-template".into(),
                        "--max-stack-height".into(),
                        max_stack_height.into(),
                        "--cache-dir".into(),
                        config.cache_path().into(),
                    ])
                }),
                sandbox: config.sandbox.clone(),
                // The node's own cache, which its runtime fills at admission: a worker that
                // looked elsewhere would compile every module again (CPython: a minute).
                cache_dir: Some(config.cache_path()),
            }),
        },
    }
}

/// How to start a job's worker process, or the template that forks them: this very program
/// with `args` (`job-worker`, `job-template ...`), with only the logging filter of the
/// environment.
fn worker_command(args: Vec<std::ffi::OsString>) -> tidepool_sandbox::WorkerCommand {
    let program = std::env::current_exe().unwrap_or_else(|_| "tidepool".into());
    let env = std::env::var_os("RUST_LOG").map(|v| ("RUST_LOG".into(), v)).into_iter().collect();
    tidepool_sandbox::WorkerCommand { program, args, env }
}

/// A provider: its components, built and connected.
#[derive(Debug)]
pub struct Provider {
    config: ProviderConfig,
    signer: PrivateKeySigner,
    keeper: Arc<dyn Keeper>,
    algorithms: Arc<Algorithms>,
    jobs: Arc<Jobs>,
    dispatcher: Arc<Dispatcher>,
    api: Arc<Api>,
    _locks: Vec<DataDirLock>,
}

impl Provider {
    /// Opens the provider's data directory (creating what is missing) with the embedded keeper.
    pub async fn open(config: ProviderConfig) -> Result<Arc<Self>> {
        let data = &config.data_dir;
        std::fs::create_dir_all(data).with_context(|| format!("creating the data directory {}", data.display()))?;
        let locks = lock_data(&config)?;
        let (signer, created) = crate::keys::load_or_create(&config.key_path(), config.key_file.is_none())?;
        if created {
            tracing::info!(address = %signer.address(), path = %config.key_path().display(), "created the provider key");
        }
        let db = open_db(&config).await?;
        let blobs = open_blobs(&config).await?;
        // What a killed daemon left half written: nothing refers to it. A cluster node may
        // share the directory with nodes writing there now: it removes only what nothing has
        // written to for an hour (an upload in progress writes as its bytes arrive).
        let idle_for = sqlite_file(&config).is_none().then_some(std::time::Duration::from_secs(3600));
        let cleared = blobs.clear_tmp(idle_for).context("clearing the blob store's temporary files")?;
        if cleared > 0 {
            tracing::info!(files = cleared, "removed temporary files left by a previous run");
        }
        let keeper: Arc<dyn Keeper> = match (&config.chain_rpc, &config.contracts) {
            (None, None) => Arc::new(EmbeddedKeeper::new(db.clone(), config.chain_id, signer.address())),
            (Some(_), Some(_)) if db.is_shared() => anyhow::bail!("{}", crate::worker::CHAIN_AND_CLUSTER),
            (Some(rpc), Some(contracts)) => {
                let contracts = tidepool_chain::Contracts::read(contracts)
                    .with_context(|| format!("reading the contracts file {}", contracts.display()))?;
                let evm = EvmConfig {
                    rpc: rpc.clone(),
                    contracts,
                    confirmations: config.confirmations,
                    poll: std::time::Duration::from_millis(250),
                    base_url: config.base_url(),
                };
                EvmKeeper::connect(evm, signer.clone(), db.clone())
                    .await
                    .with_context(|| format!("connecting to the chain at {rpc}"))?
            }
            _ => anyhow::bail!("a keeper on a chain needs both the chain's RPC URL and the contracts file"),
        };
        let environments = environments(&config)?;
        Ok(Self::assemble(config, db, blobs, keeper, signer, environments, locks))
    }

    /// Builds a provider around an existing keeper (another keeper implementation, tests),
    /// holding `locks` (see [`lock_data`]) for as long as it lives.
    pub fn assemble(
        config: ProviderConfig,
        db: Db,
        blobs: Blobs,
        keeper: Arc<dyn Keeper>,
        signer: PrivateKeySigner,
        environments: Arc<Environments>,
        locks: Vec<DataDirLock>,
    ) -> Arc<Self> {
        let blobs = Arc::new(blobs);
        let runtime = runtime(&config);
        let domain = eip712::domain(keeper.chain_id(), signer.address());
        let operators = Operators::new(signer.address(), config.operators.clone());
        // Jobs run under the provider's limits, with its own module size limit.
        let job_limits = Limits { module_bytes: config.max_module_bytes, ..config.job_limits.clone() };

        let algorithms =
            Arc::new(Algorithms::new(db.clone(), blobs.clone(), runtime.clone(), job_limits.clone(), environments));
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
            algorithms.clone(),
            jobs.clone(),
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
                agreement_verifier: keeper.agreement_domain().verifying_contract.unwrap_or_default(),
                consumer_pays_directly: keeper.consumer_pays_directly(),
                template_id: crate::protocol::template::template_id(),
                tidepool_version: tidepool_runtime::VERSION.into(),
                wasmtime_version: tidepool_runtime::engine::WASMTIME_VERSION.into(),
                dev_faucet: config.dev_faucet,
                max_module_bytes: config.max_module_bytes,
                environments: algorithms.environments().describe().into_iter().map(Into::into).collect(),
            },
            limits: BodyLimits { max_file_bytes: config.max_file_bytes, max_module_bytes: config.max_module_bytes },
            faucet: config.dev_faucet.then_some(config.faucet_amount),
            operators,
            guard: Guard::new(config.http.clone()),
            uploads: UploadGate::new(UploadLimits {
                max_concurrent: config.http.max_concurrent_uploads,
                max_per_address: config.http.max_uploads_per_address,
                bytes_per_address_per_hour: config.http.upload_bytes_per_address_per_hour,
                bytes_per_peer_per_hour: config.http.upload_bytes_per_peer_per_hour,
            }),
        });
        Arc::new(Self { config, signer, keeper, algorithms, jobs, dispatcher, api, _locks: locks })
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
        // Compiling CPython takes seconds (a minute in a debug build): in the background, so
        // that the daemon answers at once; a job that needs it meanwhile waits for it.
        let algorithms = self.algorithms.clone();
        tokio::spawn(async move { algorithms.prepare_environments().await });
        self.jobs.start().await.context("recovering jobs")?;
        self.dispatcher.clone().start().context("starting the event dispatcher")?;
        Ok(())
    }
}
