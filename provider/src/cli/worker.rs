//! `tidepool worker`: a worker node of a cluster (see `crate::worker`).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;

use super::serve::ClusterArgs;
use crate::config::ProviderConfig;
use crate::worker::Worker;

/// Settings, with the precedence of `serve`'s: flags, then `TIDEPOOL_*` variables, then the
/// `--config` file, then defaults.
#[derive(Debug, clap::Args)]
pub struct WorkerArgs {
    /// TOML configuration file (keys as in `ProviderConfig`; a worker reads those it uses).
    #[arg(long, env = "TIDEPOOL_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Scratch space of jobs, the blob cache, dataset views, the compile cache
    /// [default: ./tidepool-data].
    #[arg(long, env = "TIDEPOOL_DATA_DIR", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Chain id of the embedded keeper [default: 1337].
    #[arg(long, env = "TIDEPOOL_CHAIN_ID")]
    pub chain_id: Option<u64>,
    /// Jobs run at once [default: the number of CPUs].
    #[arg(long, env = "TIDEPOOL_MAX_CONCURRENT_JOBS", value_name = "N")]
    pub max_concurrent_jobs: Option<usize>,
    #[command(flatten)]
    pub cluster: ClusterArgs,
    #[command(flatten)]
    pub environments: super::run::EnvironmentArgs,
    /// The compiled-module cache [default: DATA_DIR/compile-cache].
    #[arg(long, env = "TIDEPOOL_CACHE_DIR", value_name = "DIR")]
    pub cache_dir: Option<PathBuf>,
}

impl WorkerArgs {
    pub fn config(&self) -> Result<ProviderConfig> {
        let mut c = ProviderConfig::read(self.config.as_deref())?;
        if let Some(v) = &self.data_dir {
            c.data_dir = v.clone();
        }
        if let Some(v) = self.chain_id {
            c.chain_id = v;
        }
        if let Some(v) = self.max_concurrent_jobs {
            c.max_concurrent_jobs = v;
        }
        self.cluster.apply(&mut c)?;
        self.environments.apply(&mut c);
        if let Some(v) = &self.cache_dir {
            c.cache_dir = Some(v.clone());
        }
        Ok(c.with_absolute_paths()?)
    }
}

pub async fn run(args: WorkerArgs) -> Result<ExitCode> {
    let config = args.config()?;
    let worker = Worker::open(&config).await?;
    worker.start().await?;
    println!(
        "tidepool worker running up to {} jobs at once (data in {})",
        config.max_concurrent_jobs,
        config.data_dir.display()
    );
    super::serve::shutdown_signal().await;
    eprintln!("tidepool worker stopped");
    // Its lock goes with the process (see `serve::run`).
    std::mem::forget(worker);
    Ok(ExitCode::SUCCESS)
}
