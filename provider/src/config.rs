//! The provider's configuration: one typed struct, passed down explicitly (libraries never read
//! the environment). `tidepool serve` builds it with one precedence rule: command-line flags,
//! then `TIDEPOOL_*` environment variables, then the TOML file given with `--config`, then the
//! defaults below.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use alloy_primitives::{Address, U256};
use serde::{Deserialize, Serialize};

use tidepool_runtime::Limits;

/// Everything `tidepool serve` needs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ProviderConfig {
    /// Database, blobs, dataset views, job directories, the compile cache.
    pub data_dir: PathBuf,
    /// The address the HTTP server listens on.
    pub listen: SocketAddr,
    /// The base URL consumers reach this provider at (for the endpoints in DDOs).
    /// Default: `http://<listen>`.
    pub public_url: Option<String>,
    /// The provider's private key (hex). Default: `<data_dir>/provider.key`, created on first
    /// start.
    pub key_file: Option<PathBuf>,
    /// The chain id signatures are bound to (the embedded keeper's own "chain").
    pub chain_id: u64,
    /// Jobs running at once. Default: the number of CPUs.
    pub max_concurrent_jobs: usize,
    /// Largest algorithm module accepted, in bytes.
    pub max_module_bytes: u64,
    /// Largest single file accepted when publishing, in bytes.
    pub max_file_bytes: u64,
    /// Addresses allowed to publish datasets, besides the provider's own.
    pub operators: Vec<Address>,
    /// Credit tokens to anyone who asks (development only).
    pub dev_faucet: bool,
    /// How much the faucet gives.
    pub faucet_amount: U256,
    /// The largest expiry a signed request may carry, in seconds from now.
    pub max_request_ttl_secs: u64,
    /// The most a published service may allow a job, and the default when publishing.
    pub job_limits: Limits,
    /// How often a job is retried when the provider restarts (or, in a cluster, its worker
    /// stops) in the middle of it, or its worker process dies, before it is given up
    /// (quarantined when its worker process kept dying).
    pub max_job_attempts: u32,
    /// The JSON-RPC URL of the chain the agreements live on. With `contracts`, the provider
    /// runs the EVM keeper; without both, the embedded keeper (the default).
    pub chain_rpc: Option<String>,
    /// The contracts file `tidepool chain deploy` wrote (addresses, chain id).
    pub contracts: Option<PathBuf>,
    /// How many blocks deep an event must be before the provider reads it.
    pub confirmations: u64,
    /// Where the environments this provider offers (Python...) are installed; `tidepool serve`
    /// defaults to where `scripts/setup.sh` installs them. Default: none (modules only).
    pub environments_dir: Option<PathBuf>,
    /// The compiled-module cache. Default: `<data_dir>/compile-cache`.
    pub cache_dir: Option<PathBuf>,
    /// Cluster mode: the database shared by every node (`postgres://USER@HOST:PORT/DB`).
    /// Default: the SQLite file `<data_dir>/tidepool.db` (single-node mode).
    pub database: Option<String>,
    /// Cluster mode: the S3 bucket shared by every node (`http(s)://HOST:PORT/BUCKET`,
    /// path-style); `<data_dir>/blobs` is then this node's cache. Default: `<data_dir>/blobs`.
    pub blobs: Option<String>,
    /// The bucket's region (it goes into request signatures).
    pub blobs_region: String,
    /// The bucket's access key id and secret (from the environment only, never the file).
    #[serde(skip)]
    pub blobs_credentials: Option<(String, String)>,
    /// Whether `serve` runs jobs itself. Default: yes in single-node mode, no with a shared
    /// database (workers run them).
    pub run_jobs: Option<bool>,
    /// Seconds a node's claim on a job lasts unless renewed (renewed every third of it); a job
    /// whose node stopped renewing is run again elsewhere after this.
    pub job_lease_secs: u64,
    /// The HTTP server's limits (the `[http]` table).
    pub http: HttpConfig,
    /// How jobs are isolated (the `[sandbox]` table).
    pub sandbox: SandboxConfig,
    /// How long a write waits for a database locked by another process before it is answered
    /// 503 (milliseconds).
    pub db_busy_timeout_ms: u64,
}

/// The HTTP server's limits: what a stranger's connections and requests may cost. Every limit
/// is a `[http]` key, a flag of `tidepool serve` and a `TIDEPOOL_*` variable (README,
/// "Security").
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpConfig {
    /// A request's line and headers must arrive within this (ms); an idle keep-alive
    /// connection is closed after it too.
    pub header_read_timeout_ms: u64,
    /// A request body that sends nothing for this long is answered 408 (ms).
    pub body_idle_timeout_ms: u64,
    /// Open connections at once; more are closed as soon as they are accepted.
    pub max_connections: usize,
    /// Requests being handled at once; more are answered 503 with `Retry-After`.
    pub max_concurrent_requests: usize,
    /// Longest path and query (414 beyond).
    pub max_uri_bytes: usize,
    /// Most bytes of request headers (431 beyond).
    pub max_header_bytes: usize,
    /// Most request headers (431 beyond).
    pub max_headers: usize,
    /// Largest JSON request body (413 beyond).
    pub max_json_bytes: u64,
    /// Requests per second one peer may make on average (0: no per-peer limit); 429 beyond.
    pub rate_limit_per_sec: f64,
    /// Requests one peer may make in a burst.
    pub rate_limit_burst: u32,
    /// Requests of one peer in progress at once (0: no bound); 429 beyond. Long polls and
    /// slowly sent bodies hold theirs, so one peer cannot take every request slot.
    pub max_requests_per_peer: usize,
    /// Reverse proxies whose `X-Forwarded-For` is believed; from any other peer the header is
    /// ignored and the connection's address is the peer.
    pub trusted_proxies: Vec<IpAddr>,
    /// Uploads (modules, dataset files) received at once; 503 beyond.
    pub max_concurrent_uploads: usize,
    /// Uploads received at once from one address (0: no bound); 429 beyond.
    pub max_uploads_per_address: usize,
    /// Bytes one address may upload per hour (0: no bound); 429 beyond.
    pub upload_bytes_per_address_per_hour: u64,
    /// Bytes one peer (an IP address, an IPv6 /64) may upload per hour, whatever addresses
    /// sign them (0: no bound); 429 beyond.
    pub upload_bytes_per_peer_per_hour: u64,
    /// Serve Prometheus metrics at `/metrics`.
    pub metrics: bool,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            header_read_timeout_ms: 10_000,
            body_idle_timeout_ms: 30_000,
            max_connections: 1024,
            max_concurrent_requests: 256,
            max_uri_bytes: 8 << 10,
            max_header_bytes: 16 << 10,
            max_headers: 64,
            max_json_bytes: 1 << 20,
            rate_limit_per_sec: 100.0,
            rate_limit_burst: 1000,
            max_requests_per_peer: 64,
            trusted_proxies: Vec::new(),
            max_concurrent_uploads: 8,
            max_uploads_per_address: 2,
            upload_bytes_per_address_per_hour: 32 << 30,
            upload_bytes_per_peer_per_hour: 64 << 30,
            metrics: true,
        }
    }
}

/// How jobs are isolated from the daemon.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SandboxConfig {
    /// `process`: each job in a worker process of its own with an OS sandbox (Landlock,
    /// seccomp, no new privileges, rlimits); `in-process`: on a thread of the daemon.
    pub isolation: Isolation,
    /// Fork each worker from a template process (`tidepool job-template`) that has made the
    /// engine, so that a job does not pay for a process start and an engine; false: start
    /// each worker from scratch (and keep `prespawn` of them ready).
    pub fork_workers: bool,
    /// Worker processes kept started and idle, ready for the next jobs (without
    /// `fork_workers`, or when the template cannot fork).
    pub prespawn: usize,
    /// Address space a worker process may map (bytes): the guest's memory limit and the
    /// pooling allocator's reservations fit well within it.
    pub worker_address_space_bytes: u64,
    /// Seconds a worker gets past its job's timeout before it is killed (the job then ends
    /// `algorithm failed`, error `timeout: ...`, and the consumer is refunded).
    pub kill_grace_secs: u64,
}

impl SandboxConfig {
    /// Jobs on threads of the daemon: for a provider embedded in another program (tests),
    /// whose executable is not `tidepool` and cannot be a job's worker.
    pub fn in_process() -> Self {
        Self { isolation: Isolation::InProcess, ..Self::default() }
    }
}

impl Default for SandboxConfig {
    fn default() -> Self {
        Self {
            isolation: Isolation::Process,
            fork_workers: true,
            prespawn: 1,
            worker_address_space_bytes: 64 << 30,
            kill_grace_secs: 5,
        }
    }
}

/// Where jobs run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Isolation {
    /// Each job in a confined worker process (`tidepool job-worker`).
    #[default]
    Process,
    /// Each job on a blocking thread of the daemon, with the runtime's sandbox alone.
    InProcess,
}

impl Default for ProviderConfig {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from("tidepool-data"),
            listen: SocketAddr::from(([127, 0, 0, 1], 8030)),
            public_url: None,
            key_file: None,
            chain_id: 1337,
            max_concurrent_jobs: std::thread::available_parallelism().map_or(2, |n| n.get()),
            max_module_bytes: Limits::DEFAULT_MODULE_BYTES,
            max_file_bytes: 4 << 30,
            operators: Vec::new(),
            dev_faucet: false,
            faucet_amount: U256::from(10u64).pow(U256::from(18)),
            max_request_ttl_secs: 3600,
            job_limits: Limits::default(),
            max_job_attempts: 3,
            chain_rpc: None,
            contracts: None,
            confirmations: 0,
            environments_dir: None,
            cache_dir: None,
            http: HttpConfig::default(),
            sandbox: SandboxConfig::default(),
            db_busy_timeout_ms: 5_000,
            database: None,
            blobs: None,
            blobs_region: "us-east-1".into(),
            blobs_credentials: None,
            run_jobs: None,
            job_lease_secs: 30,
        }
    }
}

/// Who may publish datasets and credit accounts: the provider itself and the configured
/// operators.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Operators {
    provider: Address,
    others: Vec<Address>,
}

impl Operators {
    /// The provider and the configured operators.
    pub fn new(provider: Address, others: Vec<Address>) -> Self {
        Self { provider, others }
    }

    /// The provider's own address (always an operator).
    pub fn provider(&self) -> Address {
        self.provider
    }

    /// Is `who` an operator?
    pub fn contains(&self, who: Address) -> bool {
        who == self.provider || self.others.contains(&who)
    }
}

impl ProviderConfig {
    /// Reads a TOML file; missing keys take their defaults.
    pub fn from_toml(text: &str) -> Result<Self, toml::de::Error> {
        toml::from_str(text)
    }

    /// The base URL of the provider's API.
    pub fn base_url(&self) -> String {
        self.public_url.clone().unwrap_or_else(|| format!("http://{}", self.listen)).trim_end_matches('/').to_string()
    }

    /// Does this node run jobs (see [`run_jobs`](Self::run_jobs))?
    pub fn runs_jobs(&self) -> bool {
        self.run_jobs.unwrap_or(self.database.is_none())
    }

    /// The same configuration with every path made absolute (against the current directory):
    /// job workers run from `/`, and a relative data directory would name another place there.
    pub fn with_absolute_paths(mut self) -> std::io::Result<Self> {
        self.data_dir = std::path::absolute(&self.data_dir)?;
        for path in [&mut self.key_file, &mut self.cache_dir, &mut self.environments_dir].into_iter().flatten() {
            *path = std::path::absolute(&*path)?;
        }
        Ok(self)
    }

    /// The configuration in the TOML file `path`, or the defaults without one.
    pub fn read(path: Option<&std::path::Path>) -> anyhow::Result<Self> {
        use anyhow::Context;
        let Some(path) = path else { return Ok(Self::default()) };
        let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        Self::from_toml(&text).with_context(|| format!("{} is not a valid configuration", path.display()))
    }

    /// The compiled-module cache: `cache_dir`, else `<data_dir>/compile-cache`.
    pub fn cache_path(&self) -> PathBuf {
        self.cache_dir.clone().unwrap_or_else(|| self.data_dir.join("compile-cache"))
    }

    /// The provider key's file: `key_file`, else `<data_dir>/provider.key`.
    pub fn key_path(&self) -> PathBuf {
        self.key_file.clone().unwrap_or_else(|| self.data_dir.join("provider.key"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Job workers run from `/`: every path a node hands them must not depend on its own
    /// current directory.
    #[test]
    fn relative_paths_become_absolute_against_the_current_directory() {
        let c = ProviderConfig {
            data_dir: "data".into(),
            cache_dir: Some("cache".into()),
            environments_dir: Some("/opt/environments".into()),
            ..ProviderConfig::default()
        }
        .with_absolute_paths()
        .unwrap();
        let here = std::env::current_dir().unwrap();
        assert_eq!(c.data_dir, here.join("data"));
        assert_eq!(c.cache_dir, Some(here.join("cache")));
        assert_eq!(c.environments_dir, Some(PathBuf::from("/opt/environments")));
        assert_eq!(c.key_file, None);
        assert_eq!(c.cache_path(), here.join("cache"));
    }

    #[test]
    fn toml_overrides_defaults_and_rejects_typos() {
        let c = ProviderConfig::from_toml(
            r#"
            listen = "0.0.0.0:9000"
            chain_id = 5
            operators = ["0x00000000000000000000000000000000000000aa"]
            [job_limits]
            fuel = 1000
            memory_bytes = 1048576
            timeout_ms = 1000
            output_bytes = 1
            output_files = 1
            stdout_bytes = 1
            stderr_bytes = 1
            module_bytes = 1
            max_wasm_stack = 65536
            "#,
        )
        .unwrap();
        assert_eq!(c.listen.port(), 9000);
        assert_eq!(c.chain_id, 5);
        assert_eq!(c.job_limits.fuel, 1000);
        assert_eq!(c.max_job_attempts, 3, "unset keys keep their defaults");
        assert!(ProviderConfig::from_toml("lisen = \"x\"").is_err(), "unknown keys are errors");
    }

    #[test]
    fn the_base_url_defaults_to_the_listen_address() {
        let c = ProviderConfig::default();
        assert_eq!(c.base_url(), "http://127.0.0.1:8030");
        let c = ProviderConfig { public_url: Some("https://p.example/".into()), ..c };
        assert_eq!(c.base_url(), "https://p.example");
    }
}
