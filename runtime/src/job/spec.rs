//! What defines a job: the algorithm (a module, or files for an environment), its input
//! datasets, arguments and limits; the names they may use; and what a job produced.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use alloy_primitives::B256;

use super::EventSink;
use crate::environment::Environment;
use crate::error::{Error, Result};
use crate::files::FileTree;
use crate::limits::Limits;
use crate::receipt::{EnvironmentInfo, Receipt};
use crate::tree::{self, Tree};

/// An algorithm and the name it runs under: a WebAssembly module (run as `argv[0]`, readable at
/// `/algorithm/<name>.wasm`), or files run by an [`Environment`] (mounted at `/algorithm`). Its
/// hash is computed once, when it is made, so running the same `Algorithm` (or clones of it)
/// many times hashes it once.
#[derive(Clone, Debug)]
pub struct Algorithm {
    /// The name it runs under: `argv[0]` of a module, and the receipt's `algorithm_name`.
    pub name: String,
    pub(super) program: Program,
    hash: B256,
}

/// What an algorithm is made of.
#[derive(Clone, Debug)]
pub(super) enum Program {
    Module(Arc<[u8]>),
    Files { environment: Arc<Environment>, files: Arc<FileTree> },
}

impl Algorithm {
    /// A module under `name` (used as is: [`JobSpec`] checks that it is a valid entry name).
    pub fn new(name: impl Into<String>, bytes: impl Into<Arc<[u8]>>) -> Self {
        let bytes = bytes.into();
        Self { name: name.into(), hash: tree::blake3_b256(&bytes), program: Program::Module(bytes) }
    }

    /// Files run by `environment` (see [`Environment::algorithm`], which checks them).
    pub(crate) fn in_environment(name: String, environment: Arc<Environment>, files: Arc<FileTree>) -> Self {
        Self { name, hash: files.root(), program: Program::Files { environment, files } }
    }

    /// Reads a module from a file; its name is the file stem.
    pub fn from_file(path: &Path) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(Error::io(format!("reading the module {}", path.display())))?;
        let name = path.file_stem().and_then(|s| s.to_str()).unwrap_or("algorithm").to_string();
        Ok(Self::new(sanitize_name(&name), bytes))
    }

    /// The module that runs: the algorithm itself, or its environment's module.
    pub fn bytes(&self) -> &Arc<[u8]> {
        match &self.program {
            Program::Module(bytes) => bytes,
            Program::Files { environment, .. } => environment.module(),
        }
    }

    /// The receipt's `algorithm_hash`: BLAKE3 of a module, or the tree root of an environment
    /// algorithm's files.
    pub fn hash(&self) -> B256 {
        self.hash
    }

    /// BLAKE3 of [`bytes`](Self::bytes), the module that runs (what compiled code is cached by).
    pub fn module_hash(&self) -> B256 {
        match &self.program {
            Program::Module(_) => self.hash,
            Program::Files { environment, .. } => environment.info().module_hash,
        }
    }

    /// The environment that runs the algorithm, if it is not a module itself.
    pub fn environment(&self) -> Option<&Arc<Environment>> {
        match &self.program {
            Program::Module(_) => None,
            Program::Files { environment, .. } => Some(environment),
        }
    }

    /// An environment algorithm's files.
    pub fn files(&self) -> Option<&Arc<FileTree>> {
        match &self.program {
            Program::Module(_) => None,
            Program::Files { files, .. } => Some(files),
        }
    }

    /// What counts against [`Limits::module_bytes`]: a module's size, or the total size of an
    /// environment algorithm's files (the environment's own module is the provider's).
    pub fn size(&self) -> u64 {
        match &self.program {
            Program::Module(bytes) => bytes.len() as u64,
            Program::Files { files, .. } => files.bytes(),
        }
    }

    /// The environment as receipts record it.
    pub fn environment_info(&self) -> EnvironmentInfo {
        match &self.program {
            Program::Module(_) => EnvironmentInfo::module(&self.name),
            Program::Files { environment, .. } => environment.info().clone(),
        }
    }
}

/// Longest name of an input dataset or of the algorithm (a directory entry's limit).
pub const MAX_NAME_BYTES: usize = 255;

/// Is `name` usable as a dataset or algorithm name: 1 to [`MAX_NAME_BYTES`] bytes of
/// `[A-Za-z0-9._-]`, and not `.` or `..`? (What [`sanitize_name`] always produces.)
pub fn is_valid_name(name: &str) -> bool {
    !name.is_empty()
        && name != "."
        && name != ".."
        && name.len() <= MAX_NAME_BYTES
        && name.chars().all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
}

/// Replaces characters outside `[A-Za-z0-9._-]` with `_`, so a name is always a valid entry.
pub fn sanitize_name(name: &str) -> String {
    let cleaned: String =
        name.chars().map(|c| if c.is_ascii_alphanumeric() || "._-".contains(c) { c } else { '_' }).collect();
    if cleaned.is_empty() || cleaned == "." || cleaned == ".." { "algorithm".into() } else { cleaned }
}

/// One input dataset: mounted at `/data/inputs/<name>`, read from `dir` on the host.
#[derive(Clone, Debug)]
pub struct InputSpec {
    /// The name it is mounted under, a valid entry name (see [`is_valid_name`]).
    pub name: String,
    /// The dataset's directory on the host, read-only to the job.
    pub dir: PathBuf,
    /// The dataset's tree, when already known (e.g. hashed when it was published into an
    /// immutable store). Staging then trusts it instead of scanning and hashing `dir` again.
    /// Leave `None` unless `dir` cannot have changed since the tree was computed.
    pub manifest: Option<Arc<Tree>>,
}

impl InputSpec {
    /// A dataset to be scanned and hashed when the job starts.
    pub fn new(name: impl Into<String>, dir: impl Into<PathBuf>) -> Self {
        Self { name: name.into(), dir: dir.into(), manifest: None }
    }
}

/// Everything that defines a job.
#[derive(Clone)]
pub struct JobSpec {
    /// What runs.
    pub algorithm: Algorithm,
    /// The input datasets, each name once (mounted in name order, whatever the order here).
    pub inputs: Vec<InputSpec>,
    /// Receives the outputs; created if missing, must be empty.
    pub output_dir: PathBuf,
    /// Extra arguments, after the three standard ones.
    pub args: Vec<String>,
    /// The limits the guest runs under, recorded in the receipt.
    pub limits: Limits,
    /// The seed of the guest's random stream; derived from the job when `None`.
    pub seed: Option<B256>,
    /// Receives the job's stages and the guest's events as they happen.
    pub events: Option<EventSink>,
    /// Set to stop the job: it ends with outcome `stopped` (the fuel used so far is recorded).
    pub cancel: Option<Arc<AtomicBool>>,
}

impl std::fmt::Debug for JobSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JobSpec")
            .field("algorithm", &self.algorithm.name)
            .field("inputs", &self.inputs)
            .field("output_dir", &self.output_dir)
            .field("args", &self.args)
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

impl JobSpec {
    /// A job with default limits and no extra arguments.
    pub fn new(algorithm: Algorithm, inputs: Vec<InputSpec>, output_dir: impl Into<PathBuf>) -> Self {
        Self {
            algorithm,
            inputs,
            output_dir: output_dir.into(),
            args: Vec::new(),
            limits: Limits::default(),
            seed: None,
            events: None,
            cancel: None,
        }
    }
}

/// What a job produced.
#[derive(Debug)]
pub struct JobResult {
    /// The sealed receipt.
    pub receipt: Receipt,
    /// The kept part of stdout (at most `limits.stdout_bytes`): the log.
    pub stdout: Vec<u8>,
    /// The kept part of stderr (at most `limits.stderr_bytes`), guest events included.
    pub stderr: Vec<u8>,
    /// The outputs tree, as hashed into `receipt.outputs_root`.
    pub outputs: Tree,
    /// Wall-clock time of the whole job, staging to sealing.
    pub wall_time: Duration,
    /// True when the module came from the compile cache.
    pub compile_cached: bool,
}

/// Checks what [`JobSpec`] cannot express: valid limits, names and arguments, the size limit.
pub(super) fn check_spec(spec: &JobSpec) -> Result<()> {
    spec.limits.validate()?;
    let invalid = |reason: String| Err(Error::InvalidJob { reason });
    if sanitize_name(&spec.algorithm.name) != spec.algorithm.name {
        return invalid(format!("algorithm name `{}` may only use A-Z a-z 0-9 . _ -", spec.algorithm.name));
    }
    let mut seen = BTreeSet::new();
    for input in &spec.inputs {
        if !is_valid_name(&input.name) {
            return Err(Error::InvalidInput {
                name: input.name.clone(),
                reason: "names may only use A-Z a-z 0-9 . _ - (and not be `.` or `..`)".into(),
            });
        }
        if !seen.insert(&input.name) {
            return Err(Error::InvalidInput { name: input.name.clone(), reason: "given twice".into() });
        }
    }
    if let Some(arg) = spec.args.iter().find(|a| a.contains('\0')) {
        return invalid(format!("argument {arg:?} contains a NUL byte"));
    }
    let size = spec.algorithm.size();
    if size > spec.limits.module_bytes {
        return Err(Error::ModuleTooLarge { size, limit: spec.limits.module_bytes });
    }
    Ok(())
}
