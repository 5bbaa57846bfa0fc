//! `tidepool serve`: the provider daemon.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use alloy_primitives::Address;
use anyhow::{Context, Result};

use super::args::{parse_duration, parse_size};
use crate::config::{Isolation, ProviderConfig};
use crate::provider::Provider;

/// Settings; each overrides the `TIDEPOOL_*` environment variable of the same name, which
/// overrides the `--config` file, which overrides the defaults.
#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// TOML configuration file (keys as in `ProviderConfig`).
    #[arg(long, env = "TIDEPOOL_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Database, blobs, views, jobs, compile cache [default: ./tidepool-data].
    #[arg(long, env = "TIDEPOOL_DATA_DIR", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Address to listen on (port 0: any free port) [default: 127.0.0.1:8030].
    #[arg(long, env = "TIDEPOOL_LISTEN", value_name = "ADDR")]
    pub listen: Option<SocketAddr>,
    /// The URL consumers reach this provider at [default: http://LISTEN].
    #[arg(long, env = "TIDEPOOL_PUBLIC_URL", value_name = "URL")]
    pub public_url: Option<String>,
    /// The provider's key file [default: DATA_DIR/provider.key, created if missing].
    #[arg(long, env = "TIDEPOOL_KEY_FILE", value_name = "FILE")]
    pub key: Option<PathBuf>,
    /// Chain id signatures are bound to [default: 1337].
    #[arg(long, env = "TIDEPOOL_CHAIN_ID")]
    pub chain_id: Option<u64>,
    /// Jobs run at once [default: the number of CPUs].
    #[arg(long, env = "TIDEPOOL_MAX_CONCURRENT_JOBS", value_name = "N")]
    pub max_concurrent_jobs: Option<usize>,
    /// Another address allowed to publish datasets (repeatable, or comma-separated).
    #[arg(long = "operator", env = "TIDEPOOL_OPERATORS", value_delimiter = ',', value_name = "ADDRESS")]
    pub operators: Vec<Address>,
    /// Give tokens to anyone who asks (development only).
    #[arg(long, env = "TIDEPOOL_DEV_FAUCET")]
    pub dev_faucet: bool,
    #[command(flatten)]
    pub chain: ChainArgs,
    /// Blocks an event must be under the chain's head before the provider acts on it [default: 0].
    #[arg(long, env = "TIDEPOOL_CONFIRMATIONS", value_name = "N")]
    pub confirmations: Option<u64>,
    #[command(flatten)]
    pub cluster: ClusterArgs,
    #[command(flatten)]
    pub environments: super::run::EnvironmentArgs,
    /// The compiled-module cache [default: DATA_DIR/compile-cache].
    #[arg(long, env = "TIDEPOOL_CACHE_DIR", value_name = "DIR")]
    pub cache_dir: Option<PathBuf>,
    /// Run jobs on this node too [default: yes, unless --database names a shared database].
    #[arg(long, env = "TIDEPOOL_RUN_JOBS", value_name = "BOOL")]
    pub run_jobs: Option<bool>,
    /// Run each job in a worker process with an OS sandbox (`process`), or on a thread of
    /// the daemon (`in-process`) [default: process].
    #[arg(long, env = "TIDEPOOL_ISOLATION", value_name = "MODE", value_parser = parse_isolation)]
    pub isolation: Option<Isolation>,
    #[command(flatten)]
    pub http: HttpArgs,
}

/// Where the agreement contracts are: the chain's JSON-RPC URL and the contracts file
/// `tidepool chain deploy` wrote. Both, or neither (the embedded keeper).
#[derive(Debug, Clone, clap::Args)]
pub struct ChainArgs {
    /// The chain's JSON-RPC URL (with --contracts: agreements on chain).
    #[arg(long = "chain-rpc", env = "TIDEPOOL_CHAIN_RPC", value_name = "URL", requires = "contracts")]
    pub rpc: Option<String>,
    /// The contracts file written by `tidepool chain deploy`.
    #[arg(long, env = "TIDEPOOL_CONTRACTS", value_name = "FILE", requires = "rpc")]
    pub contracts: Option<PathBuf>,
}

impl ChainArgs {
    /// The chain, when both are given.
    pub fn chain(&self) -> Result<Option<(String, tidepool_chain::Contracts)>> {
        match (&self.rpc, &self.contracts) {
            (Some(rpc), Some(path)) => {
                let contracts = tidepool_chain::Contracts::read(path)
                    .with_context(|| format!("reading the contracts file {}", path.display()))?;
                Ok(Some((rpc.clone(), contracts)))
            }
            _ => Ok(None),
        }
    }
}

/// Cluster mode: what every node of a cluster shares.
#[derive(Debug, clap::Args)]
pub struct ClusterArgs {
    /// The shared database, `postgres://USER@HOST:PORT/DB` [default: DATA_DIR/tidepool.db].
    #[arg(long, env = "TIDEPOOL_DATABASE", value_name = "URL")]
    pub database: Option<String>,
    /// The shared blob bucket, `http(s)://HOST:PORT/BUCKET` [default: DATA_DIR/blobs].
    #[arg(long, env = "TIDEPOOL_BLOBS", value_name = "URL")]
    pub blobs: Option<String>,
    /// The bucket's region [default: us-east-1].
    #[arg(long, env = "TIDEPOOL_BLOBS_REGION", value_name = "REGION")]
    pub blobs_region: Option<String>,
    /// The bucket's access key id (with TIDEPOOL_S3_SECRET_ACCESS_KEY; anonymous without).
    #[arg(long = "s3-access-key-id", env = "TIDEPOOL_S3_ACCESS_KEY_ID", hide_env_values = true, value_name = "ID")]
    pub access_key_id: Option<String>,
    /// The bucket's secret key (environment only).
    #[arg(skip = std::env::var("TIDEPOOL_S3_SECRET_ACCESS_KEY").ok())]
    pub secret_access_key: Option<String>,
    /// Seconds a claim on a job lasts unless renewed [default: 30].
    #[arg(long, env = "TIDEPOOL_JOB_LEASE_SECS", value_name = "SECONDS")]
    pub job_lease_secs: Option<u64>,
}

impl ClusterArgs {
    /// Applies these settings over `c`.
    pub fn apply(&self, c: &mut ProviderConfig) -> Result<()> {
        if let Some(v) = &self.database {
            c.database = Some(v.clone());
        }
        if let Some(v) = &self.blobs {
            c.blobs = Some(v.clone());
        }
        if let Some(v) = &self.blobs_region {
            c.blobs_region = v.clone();
        }
        if let Some(v) = self.job_lease_secs {
            anyhow::ensure!(v > 0, "--job-lease-secs must be at least 1");
            c.job_lease_secs = v;
        }
        c.blobs_credentials = match (&self.access_key_id, &self.secret_access_key) {
            (Some(id), Some(secret)) => Some((id.clone(), secret.clone())),
            (None, None) => None,
            _ => anyhow::bail!("set both TIDEPOOL_S3_ACCESS_KEY_ID and TIDEPOOL_S3_SECRET_ACCESS_KEY, or neither"),
        };
        Ok(())
    }
}

/// The HTTP server's limits (README, "Security"); each overrides its `[http]` key.
#[derive(Debug, Default, clap::Args)]
pub struct HttpArgs {
    /// Time to send a request's line and headers; idle keep-alive connections close after it
    /// [default: 10s].
    #[arg(long, env = "TIDEPOOL_HEADER_READ_TIMEOUT", value_name = "DURATION", value_parser = parse_duration)]
    pub header_read_timeout: Option<Duration>,
    /// A request body silent this long is answered 408 [default: 30s].
    #[arg(long, env = "TIDEPOOL_BODY_IDLE_TIMEOUT", value_name = "DURATION", value_parser = parse_duration)]
    pub body_idle_timeout: Option<Duration>,
    /// Open connections at once; more are closed at once [default: 1024].
    #[arg(long, env = "TIDEPOOL_MAX_CONNECTIONS", value_name = "N")]
    pub max_connections: Option<usize>,
    /// Requests handled at once; more are answered 503 with Retry-After [default: 256].
    #[arg(long, env = "TIDEPOOL_MAX_CONCURRENT_REQUESTS", value_name = "N")]
    pub max_concurrent_requests: Option<usize>,
    /// Longest path and query, 414 beyond [default: 8KiB].
    #[arg(long, env = "TIDEPOOL_MAX_URI_BYTES", value_name = "SIZE", value_parser = parse_size)]
    pub max_uri_bytes: Option<u64>,
    /// Most header bytes, 431 beyond [default: 16KiB].
    #[arg(long, env = "TIDEPOOL_MAX_HEADER_BYTES", value_name = "SIZE", value_parser = parse_size)]
    pub max_header_bytes: Option<u64>,
    /// Most headers, 431 beyond [default: 64].
    #[arg(long, env = "TIDEPOOL_MAX_HEADERS", value_name = "N")]
    pub max_headers: Option<usize>,
    /// Largest JSON body, 413 beyond [default: 1MiB].
    #[arg(long, env = "TIDEPOOL_MAX_JSON_BYTES", value_name = "SIZE", value_parser = parse_size)]
    pub max_json_bytes: Option<u64>,
    /// Requests per second per peer on average, 429 beyond; 0 turns the limit off [default: 100].
    #[arg(long, env = "TIDEPOOL_RATE_LIMIT", value_name = "N")]
    pub rate_limit: Option<f64>,
    /// Requests per peer in a burst [default: 1000].
    #[arg(long, env = "TIDEPOOL_RATE_BURST", value_name = "N")]
    pub rate_burst: Option<u32>,
    /// Requests of one peer in progress at once, 429 beyond; 0: no bound [default: 64].
    #[arg(long, env = "TIDEPOOL_MAX_REQUESTS_PER_PEER", value_name = "N")]
    pub max_requests_per_peer: Option<usize>,
    /// A reverse proxy whose X-Forwarded-For is believed (repeatable, or comma-separated).
    #[arg(long = "trusted-proxy", env = "TIDEPOOL_TRUSTED_PROXIES", value_delimiter = ',', value_name = "IP")]
    pub trusted_proxies: Vec<IpAddr>,
    /// Uploads received at once, 503 beyond [default: 8].
    #[arg(long, env = "TIDEPOOL_MAX_CONCURRENT_UPLOADS", value_name = "N")]
    pub max_concurrent_uploads: Option<usize>,
    /// Uploads received at once from one address, 429 beyond; 0: no bound [default: 2].
    #[arg(long, env = "TIDEPOOL_MAX_UPLOADS_PER_ADDRESS", value_name = "N")]
    pub max_uploads_per_address: Option<usize>,
    /// Bytes one address may upload per hour, 429 beyond; 0: no bound [default: 32GiB].
    #[arg(long, env = "TIDEPOOL_UPLOAD_QUOTA", value_name = "SIZE", value_parser = parse_size)]
    pub upload_quota: Option<u64>,
    /// Bytes one peer (an IP address, an IPv6 /64) may upload per hour whatever addresses sign
    /// them, 429 beyond; 0: no bound [default: 64GiB].
    #[arg(long, env = "TIDEPOOL_UPLOAD_QUOTA_PER_PEER", value_name = "SIZE", value_parser = parse_size)]
    pub upload_quota_per_peer: Option<u64>,
}

fn parse_isolation(s: &str) -> Result<Isolation, String> {
    match s {
        "process" => Ok(Isolation::Process),
        "in-process" => Ok(Isolation::InProcess),
        other => Err(format!("`{other}` is not an isolation mode (process, in-process)")),
    }
}

impl HttpArgs {
    /// Puts the flags that were given over `c`.
    fn apply(&self, c: &mut crate::config::HttpConfig) {
        let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        let size = |n: u64| usize::try_from(n).unwrap_or(usize::MAX);
        if let Some(v) = self.header_read_timeout {
            c.header_read_timeout_ms = ms(v);
        }
        if let Some(v) = self.body_idle_timeout {
            c.body_idle_timeout_ms = ms(v);
        }
        if let Some(v) = self.max_connections {
            c.max_connections = v;
        }
        if let Some(v) = self.max_concurrent_requests {
            c.max_concurrent_requests = v;
        }
        if let Some(v) = self.max_uri_bytes {
            c.max_uri_bytes = size(v);
        }
        if let Some(v) = self.max_header_bytes {
            c.max_header_bytes = size(v);
        }
        if let Some(v) = self.max_headers {
            c.max_headers = v;
        }
        if let Some(v) = self.max_json_bytes {
            c.max_json_bytes = v;
        }
        if let Some(v) = self.rate_limit {
            c.rate_limit_per_sec = v;
        }
        if let Some(v) = self.rate_burst {
            c.rate_limit_burst = v;
        }
        if let Some(v) = self.max_requests_per_peer {
            c.max_requests_per_peer = v;
        }
        c.trusted_proxies.extend(self.trusted_proxies.iter().copied());
        if let Some(v) = self.max_concurrent_uploads {
            c.max_concurrent_uploads = v;
        }
        if let Some(v) = self.max_uploads_per_address {
            c.max_uploads_per_address = v;
        }
        if let Some(v) = self.upload_quota {
            c.upload_bytes_per_address_per_hour = v;
        }
        if let Some(v) = self.upload_quota_per_peer {
            c.upload_bytes_per_peer_per_hour = v;
        }
    }
}

impl ServeArgs {
    /// The configuration: flags and environment over the file over the defaults.
    pub fn config(&self) -> Result<ProviderConfig> {
        let mut c = ProviderConfig::read(self.config.as_deref())?;
        if let Some(v) = &self.data_dir {
            c.data_dir = v.clone();
        }
        if let Some(v) = self.listen {
            c.listen = v;
        }
        if let Some(v) = &self.public_url {
            c.public_url = Some(v.clone());
        }
        if let Some(v) = &self.key {
            c.key_file = Some(v.clone());
        }
        if let Some(v) = self.chain_id {
            c.chain_id = v;
        }
        if let Some(v) = self.max_concurrent_jobs {
            c.max_concurrent_jobs = v;
        }
        c.operators.extend(self.operators.iter().copied());
        c.dev_faucet |= self.dev_faucet;
        if let Some(v) = &self.chain.rpc {
            c.chain_rpc = Some(v.clone());
        }
        if let Some(v) = &self.chain.contracts {
            c.contracts = Some(v.clone());
        }
        if let Some(v) = self.confirmations {
            c.confirmations = v;
        }
        self.cluster.apply(&mut c)?;
        self.environments.apply(&mut c);
        if let Some(v) = &self.cache_dir {
            c.cache_dir = Some(v.clone());
        }
        if let Some(v) = self.run_jobs {
            c.run_jobs = Some(v);
        }
        if let Some(v) = self.isolation {
            c.sandbox.isolation = v;
        }
        self.http.apply(&mut c.http);
        Ok(c.with_absolute_paths()?)
    }
}

pub async fn run(args: ServeArgs) -> Result<ExitCode> {
    let config = args.config()?;
    let (provider, listener) = start(config).await?;
    println!(
        "tidepool provider {} listening on {} (data in {}, {} keeper, chain {}{})",
        provider.address(),
        provider.config().base_url(),
        provider.config().data_dir.display(),
        provider.keeper().kind(),
        provider.keeper().chain_id(),
        if crate::provider::sqlite_file(provider.config()).is_none() {
            if provider.config().runs_jobs() { ", cluster API node running jobs" } else { ", cluster API node" }
        } else {
            ""
        },
    );
    crate::http::serve(provider.api(), listener, shutdown_signal()).await.context("serving HTTP")?;
    eprintln!("tidepool provider stopped");
    // Its data directory's lock is released by the process's end, not here: the runtime,
    // dropped after this returns, still waits for blocking work (blob writes, the database's
    // last commits) that a gc or a new daemon must not run beside.
    std::mem::forget(provider);
    Ok(ExitCode::SUCCESS)
}

/// Binds, opens the provider (the public URL defaults to the bound address, so `:0` works) and
/// starts its background work.
pub async fn start(mut config: ProviderConfig) -> Result<(std::sync::Arc<Provider>, tokio::net::TcpListener)> {
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("listening on {}", config.listen))?;
    config.listen = listener.local_addr()?;
    let provider = Provider::open(config).await?;
    provider.start().await?;
    Ok((provider, listener))
}

pub(super) async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(s) => s,
            Err(_) => return ctrl_c.await.unwrap_or(()),
        };
        tokio::select! {
            _ = ctrl_c => {},
            _ = term.recv() => {},
        }
    }
    #[cfg(not(unix))]
    ctrl_c.await.unwrap_or(());
}
