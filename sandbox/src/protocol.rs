//! What the daemon and a worker say to each other: one JSON object per line, the job and
//! stop requests on the worker's stdin, its events and result on its stdout. The worker's
//! stderr is its log. The job's line is followed by the algorithm's bytes
//! ([`JobRequest::module_len`] of them), so no copy of the module is written to disk.
//!
//! After the job starts, the worker runs untrusted code: the daemon reads what it says as a
//! stranger's input (bounded lines, typed parsing, results checked against the files).

use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use tidepool_runtime::tree::Tree;
use tidepool_runtime::{Limits, Receipt};

use crate::confine::{Confined, Policy};

/// The longest line the daemon reads from a worker.
pub const MAX_LINE: usize = 64 << 20;

/// One input dataset, as the worker mounts it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct WireInput {
    /// The name it is mounted under (`/data/inputs/<name>`).
    pub name: String,
    /// The dataset's directory (readable under the policy).
    pub dir: PathBuf,
    /// Its tree, when the daemon already knows it (the worker then does not scan it again).
    pub manifest: Option<Tree>,
}

/// A job for a worker. Every path is inside the policy's paths.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct JobRequest {
    /// The algorithm's name (`argv[0]`).
    pub name: String,
    /// How many bytes follow the request's line on stdin: the module, or, with `environment`,
    /// the algorithm's files as a `tidepool-files-v1` archive. Set by [`crate::Pool::start`].
    pub module_len: u64,
    /// The directory of the environment that runs the algorithm (read only; its module is
    /// checked against the definition's pin as it is loaded), if the algorithm is not a module.
    #[serde(default)]
    pub environment: Option<PathBuf>,
    /// The input datasets.
    pub inputs: Vec<WireInput>,
    /// Receives the outputs (in the job's directory).
    pub output_dir: PathBuf,
    /// Where the worker writes `stdout.log` and `stderr.log` (the kept part of each; no file
    /// for an empty one).
    pub logs_dir: PathBuf,
    /// Extra arguments, after the three standard ones.
    pub args: Vec<String>,
    /// The limits the guest runs under.
    pub limits: Limits,
    /// The compile cache (read only).
    pub cache_dir: Option<PathBuf>,
    /// What the worker confines itself to before it reads anything of the job.
    pub policy: Policy,
}

/// From the daemon to a worker.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ToWorker {
    /// Run this job (the first message, and the only job a worker gets).
    Job(Box<JobRequest>),
    /// Stop the job: it ends with outcome `stopped`.
    Stop,
}

/// A job's stage (the runtime's [`tidepool_runtime::Stage`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WireStage {
    /// Scanning and hashing the input datasets.
    ConfiguringVolumes,
    /// Compiling (or fetching from the cache) and admitting the module.
    Provisioning,
    /// The guest is running.
    Running,
    /// Moving outputs into place and hashing them.
    PublishingResults,
}

/// Why a job could not run, in the runtime's terms.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureKind {
    /// An input dataset cannot be mounted.
    InvalidInput,
    /// What was submitted (module, limits, arguments) cannot run.
    Client,
    /// The host failed.
    Host,
}

/// From a worker to the daemon.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FromWorker {
    /// Confined, about to run.
    Confined(Confined),
    /// The job entered a stage.
    Stage(WireStage),
    /// The guest reported progress.
    Progress {
        /// Units of work done so far.
        done: u64,
        /// Units of work in all, when the guest knows.
        total: Option<u64>,
        /// What the guest is doing, in its own words.
        message: Option<String>,
    },
    /// The job ran: its receipt (unsigned) and outputs tree; the logs are files.
    Done(Box<JobDone>),
    /// The job could not run.
    Failed {
        /// Which kind of failure: an input, what was submitted, or the host.
        kind: FailureKind,
        /// The runtime's error, for the job's record.
        message: String,
    },
}

/// A finished run.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct JobDone {
    /// The sealed, unsigned receipt.
    pub receipt: Receipt,
    /// The outputs tree, as hashed into the receipt (the daemon checks it against the files).
    pub outputs: Tree,
    /// Wall-clock time of the job in the worker, in milliseconds.
    pub wall_time_ms: u64,
    /// True when the module came from the compile cache.
    pub compile_cached: bool,
}
