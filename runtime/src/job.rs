//! Running one job: stage the inputs, instantiate, run `_start` under the limits, classify the
//! outcome, materialize the outputs, hash everything and seal the receipt.
//!
//! An algorithm is a module of its own, or files for an [`Environment`] (a Python script): then
//! the environment's module runs, with its argv, variables and mounts, and the files are the
//! `/algorithm` mount.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use alloy_primitives::B256;
use serde::Deserialize;
use tracing::instrument;
use wasmtime::{Store, Trap, UpdateDeadline};

use crate::Runtime;
use crate::engine::{Compiled, EngineState};
use crate::environment::Environment;
use crate::error::{Error, Result};
use crate::files::{FileKind, FileTree};
use crate::limits::Limits;
use crate::receipt::{
    EnvironmentInfo, InputRoot, Outcome, RECEIPT_VERSION, Receipt, ReceiptMeta, RuntimeInfo, derive_seed,
};
use crate::tree::{self, EntryKind, Tree};
use crate::wasi::ctx::{Capture, WasiCtx};
use crate::wasi::vfs::{Mount, Scratch, Vfs};
use crate::wasi::{GuestStop, Limiter, StoreState};

/// The guest path of the algorithm directory.
pub const ALGORITHM_DIR: &str = "/algorithm";
/// The guest path of the inputs directory (argv\[1\]).
pub const INPUTS_DIR: &str = "/data/inputs";
/// The guest path of the outputs directory (argv\[2\]).
pub const OUTPUTS_DIR: &str = "/data/outputs";
/// Lines of stderr starting with this are structured guest events (see [`GuestEvent`]).
pub const EVENT_PREFIX: &str = "@tidepool ";

/// An algorithm and the name it runs under: a WebAssembly module (run as `argv[0]`, readable at
/// `/algorithm/<name>.wasm`), or files run by an [`Environment`] (mounted at `/algorithm`). Its
/// hash is computed once, when it is made, so running the same `Algorithm` (or clones of it)
/// many times hashes it once.
#[derive(Clone, Debug)]
pub struct Algorithm {
    pub name: String,
    program: Program,
    hash: B256,
}

/// What an algorithm is made of.
#[derive(Clone, Debug)]
enum Program {
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
    pub name: String,
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

/// A structured event a guest reported on stderr (see the guest SDK).
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum GuestEvent {
    /// `done` of `total` units of work (total unknown when absent).
    Progress { done: u64, total: Option<u64>, message: Option<String> },
    /// A named measurement.
    Metric { name: String, value: f64 },
}

impl GuestEvent {
    /// Parses one stderr line; `None` when it is not an event.
    pub fn parse(line: &[u8]) -> Option<Self> {
        let rest = line.strip_prefix(EVENT_PREFIX.as_bytes())?;
        serde_json::from_slice(rest).ok()
    }
}

/// The phases of a job, in order (named after Ocean's compute statuses).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stage {
    /// Scanning and hashing the input datasets.
    ConfiguringVolumes,
    /// Compiling (or fetching from the cache) and admitting the module.
    Provisioning,
    /// The guest is running.
    Running,
    /// Moving outputs into place and hashing them.
    PublishingResults,
}

/// Something that happened during a job.
#[derive(Clone, Debug, PartialEq)]
pub enum JobEvent {
    Stage(Stage),
    Guest(GuestEvent),
}

/// Receives job events as they happen, on the job's thread.
pub type EventSink = Arc<dyn Fn(JobEvent) + Send + Sync>;

/// Everything that defines a job.
#[derive(Clone)]
pub struct JobSpec {
    pub algorithm: Algorithm,
    pub inputs: Vec<InputSpec>,
    /// Receives the outputs; created if missing, must be empty.
    pub output_dir: PathBuf,
    /// Extra arguments, after the three standard ones.
    pub args: Vec<String>,
    pub limits: Limits,
    /// The seed of the guest's random stream; derived from the job when `None`.
    pub seed: Option<B256>,
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
    /// The kept part of stdout and stderr (the logs).
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    /// The outputs tree, as hashed into `receipt.outputs_root`.
    pub outputs: Tree,
    pub wall_time: Duration,
    /// True when the module came from the compile cache.
    pub compile_cached: bool,
}

fn check_spec(spec: &JobSpec) -> Result<()> {
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

/// Makes sure `dir` exists and is empty; never touches what is already in it.
fn prepare_output(dir: &Path) -> Result<()> {
    let bad = |reason: String| Error::InvalidOutput { path: dir.to_path_buf(), reason };
    match std::fs::create_dir(dir) {
        // Made just now, so empty.
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            let mut entries = std::fs::read_dir(dir).map_err(|e| bad(format!("cannot be read: {e}")))?;
            if entries.next().is_some() {
                return Err(bad("is not empty; refusing to mix new outputs with existing files".into()));
            }
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::create_dir_all(dir).map_err(|e| bad(format!("cannot be created: {e}")))
        }
        Err(e) => Err(bad(format!("cannot be created: {e}"))),
    }
}

/// Where output blobs go until the job ends: next to the output directory when possible (so
/// moving them into place is a hard link), created only if the guest writes a file.
fn scratch_for(output: &Path) -> Scratch {
    Scratch::in_dir(output.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new(".")))
}

/// A staged input: its entries and an open handle on its directory.
struct Staged {
    name: String,
    tree: Arc<Tree>,
    dir: Rc<cap_std::fs::Dir>,
}

fn stage_input(input: &InputSpec) -> Result<Staged> {
    let invalid = |reason: String| Error::InvalidInput { name: input.name.clone(), reason };
    let dir = cap_std::fs::Dir::open_ambient_dir(&input.dir, cap_std::ambient_authority())
        .map_err(|e| invalid(format!("cannot open {}: {e}", input.dir.display())))?;
    let tree = match &input.manifest {
        Some(tree) => tree.clone(),
        None => Arc::new(tree::scan_dir(&dir).map_err(|e| invalid(format!("{} ({})", e, input.dir.display())))?),
    };
    Ok(Staged { name: input.name.clone(), tree, dir: Rc::new(dir) })
}

/// Adds a staged dataset under `root` in the guest's tree.
fn mount_input(vfs: &Vfs, root: &crate::wasi::vfs::DirRef, staged: &Staged) {
    let top = vfs.stage_dir(root, &staged.name);
    let mut dirs: HashMap<&str, crate::wasi::vfs::DirRef> = HashMap::new();
    for entry in &staged.tree.entries {
        let (parent, name) = match entry.path.rsplit_once('/') {
            Some((p, n)) => (dirs.get(p).cloned().unwrap_or_else(|| top.clone()), n),
            None => (top.clone(), entry.path.as_str()),
        };
        match &entry.kind {
            EntryKind::Dir => {
                let d = vfs.stage_dir(&parent, name);
                dirs.insert(&entry.path, d);
            }
            EntryKind::File { size, .. } => {
                vfs.stage_input_file(&parent, name, *size, staged.dir.clone(), PathBuf::from(&entry.path))
            }
            EntryKind::Symlink { target } => vfs.stage_symlink(&parent, name, target),
        }
    }
}

/// Adds an environment algorithm's files (or an environment's mount) under `root`.
fn mount_files(vfs: &Vfs, root: &crate::wasi::vfs::DirRef, files: &FileTree) {
    let mut dirs: HashMap<&str, crate::wasi::vfs::DirRef> = HashMap::new();
    for (path, kind) in files.entries() {
        let (parent, name) = match path.rsplit_once('/') {
            Some((p, n)) => (dirs.get(p).cloned().unwrap_or_else(|| root.clone()), n),
            None => (root.clone(), path),
        };
        match kind {
            FileKind::Dir => {
                let d = vfs.stage_dir(&parent, name);
                dirs.insert(path, d);
            }
            FileKind::File(contents) => vfs.stage_memory_file(&parent, name, contents.clone()),
            FileKind::Symlink(target) => vfs.stage_symlink(&parent, name, target),
        }
    }
}

/// A store for one job: the WASI state, the memory limiter, and the fuel.
fn new_store(engine: &EngineState, wasi: WasiCtx, limits: &Limits) -> Result<Store<StoreState>> {
    let state = StoreState { wasi, limiter: Limiter::new(limits.memory_bytes), memory: None, fuel_limit: limits.fuel };
    let mut store = Store::new(&engine.engine, state);
    store.limiter(|s| &mut s.limiter);
    if engine.fuel_metering {
        store.set_fuel(limits.fuel).map_err(Error::engine)?;
    }
    Ok(store)
}

/// Instantiates the module and runs `_start`.
fn start(compiled: &Compiled, store: &mut Store<StoreState>) -> wasmtime::Result<()> {
    let instance = compiled.pre.instantiate(&mut *store)?;
    store.data_mut().memory = instance.get_memory(&mut *store, "memory");
    instance.get_typed_func::<(), ()>(&mut *store, "_start")?.call(&mut *store, ())
}

fn classify(result: wasmtime::Result<()>, memory_denied: bool) -> Result<Outcome> {
    let Err(e) = result else { return Ok(Outcome::Exited { code: 0 }) };
    if let Some(stop) = e.downcast_ref::<GuestStop>() {
        return match stop {
            // Refused memory, then failed: a guest that handles the refusal (Python raises
            // `MemoryError`, C code checks `malloc`) and exits non-zero hit the memory limit
            // as surely as one that traps.
            GuestStop::Exit(code) if *code != 0 && memory_denied => Ok(Outcome::MemoryLimit),
            GuestStop::Exit(code) => Ok(Outcome::Exited { code: *code }),
            GuestStop::OutputQuota(_) => Ok(Outcome::OutputQuota),
            GuestStop::Cancelled => Ok(Outcome::Stopped),
            GuestStop::HostFailure(reason) => Err(Error::Engine { reason: reason.clone() }),
        };
    }
    if let Some(trap) = e.downcast_ref::<Trap>() {
        return Ok(match trap {
            Trap::OutOfFuel => Outcome::OutOfFuel,
            Trap::Interrupt => Outcome::Timeout,
            _ if memory_denied => Outcome::MemoryLimit,
            other => Outcome::Trap { message: other.to_string() },
        });
    }
    if memory_denied {
        // The initial memory did not fit the limit: instantiation was refused.
        return Ok(Outcome::MemoryLimit);
    }
    Err(Error::Engine { reason: format!("{e:#}") })
}

impl Runtime {
    /// Runs a job to completion and returns its sealed receipt, logs and outputs.
    ///
    /// `Err` means the job could not run (bad module, inputs or limits; a host failure; or it
    /// was cancelled). Everything the guest did, including failing, is an [`Outcome`].
    #[instrument(skip_all, fields(algorithm = %spec.algorithm.name))]
    pub fn run(&self, spec: &JobSpec) -> Result<JobResult> {
        let started = Instant::now();
        check_spec(spec)?;
        let stage = |s: Stage| {
            if let Some(sink) = &spec.events {
                sink(JobEvent::Stage(s));
            }
        };
        let algorithm_hash = spec.algorithm.hash();

        stage(Stage::ConfiguringVolumes);
        let mut inputs: Vec<&InputSpec> = spec.inputs.iter().collect();
        inputs.sort_by(|a, b| a.name.cmp(&b.name));
        let staged = inputs.into_iter().map(stage_input).collect::<Result<Vec<_>>>()?;
        let input_roots: Vec<InputRoot> =
            staged.iter().map(|s| InputRoot { name: s.name.clone(), root: s.tree.root() }).collect();
        let environment = spec.algorithm.environment_info();
        let seed = spec.seed.unwrap_or_else(|| derive_seed(&environment, &algorithm_hash, &input_roots, &spec.args));

        stage(Stage::Provisioning);
        let engine = self.engine(spec.limits.max_wasm_stack)?;
        let (compiled, compile_cached) = engine.compile(spec.algorithm.module_hash(), spec.algorithm.bytes())?;

        prepare_output(&spec.output_dir)?;
        let limits = &spec.limits;
        let vfs = Vfs::new(scratch_for(&spec.output_dir), limits.output_bytes, limits.output_files);
        let algorithm_root = vfs.new_root(Mount::Algorithm);
        match &spec.algorithm.program {
            Program::Module(bytes) => {
                vfs.stage_memory_file(&algorithm_root, &format!("{}.wasm", spec.algorithm.name), bytes.clone())
            }
            Program::Files { files, .. } => mount_files(&vfs, &algorithm_root, files),
        }
        let inputs_root = vfs.new_root(Mount::Inputs);
        for s in &staged {
            mount_input(&vfs, &inputs_root, s);
        }
        let outputs_root = vfs.new_root(Mount::Outputs);
        let mut preopens = vec![
            (ALGORITHM_DIR.to_string(), algorithm_root, false),
            (INPUTS_DIR.to_string(), inputs_root, false),
            (OUTPUTS_DIR.to_string(), outputs_root.clone(), true),
        ];
        // An environment's own mounts come after the standard three (descriptors 6 and up).
        for (path, files) in spec.algorithm.environment().map(|e| e.mounts()).unwrap_or_default() {
            let root = vfs.new_root(Mount::Environment);
            mount_files(&vfs, &root, files);
            preopens.push((path.clone(), root, false));
        }

        let mut args = environment.argv.clone();
        args.extend(spec.args.iter().cloned());
        let mut stderr = Capture::new(limits.stderr_bytes);
        if let Some(sink) = spec.events.clone() {
            stderr = stderr.with_line_sink(Box::new(move |line| {
                if let Some(event) = GuestEvent::parse(line) {
                    sink(JobEvent::Guest(event));
                }
            }));
        }
        let mut wasi = WasiCtx::new(args, vfs, preopens, seed.0, Capture::new(limits.stdout_bytes), stderr);
        wasi.env = environment.env.clone();

        // Taken before the store exists, so it is given back only after the store (and its
        // instance) is gone, on every path. The timeout counts from here: waiting for a free
        // slot is not the guest's time.
        let slot = self.slots.take(spec.cancel.as_deref());
        let mut store = new_store(&engine, wasi, limits)?;
        let deadline = Instant::now() + limits.timeout();
        let cancel = spec.cancel.clone();
        store.set_epoch_deadline(1);
        store.epoch_deadline_callback(move |_| {
            if cancel.as_ref().is_some_and(|c| c.load(Ordering::Relaxed)) {
                return Err(wasmtime::Error::new(GuestStop::Cancelled));
            }
            if Instant::now() >= deadline {
                return Ok(UpdateDeadline::Interrupt);
            }
            Ok(UpdateDeadline::Continue(1))
        });

        stage(Stage::Running);
        let result = match &slot {
            Some(_) => start(&compiled, &mut store),
            None => Err(wasmtime::Error::new(GuestStop::Cancelled)),
        };
        let fuel_consumed = if engine.fuel_metering { limits.fuel - store.get_fuel().unwrap_or(0) } else { 0 };
        let outcome = classify(result, store.data().limiter.memory_denied)?;
        tracing::debug!(%outcome, fuel_consumed, "guest finished");

        stage(Stage::PublishingResults);
        let state = store.into_data();
        drop(slot);
        let WasiCtx { vfs, stdout, stderr, fds, .. } = state.wasi;
        drop(fds);
        let outputs = vfs.output_tree(&outputs_root).map_err(Error::io("hashing the outputs"))?;
        if !outputs.entries.is_empty() {
            let writing = || format!("writing the outputs to {}", spec.output_dir.display());
            let out_dir = cap_std::fs::Dir::open_ambient_dir(&spec.output_dir, cap_std::ambient_authority())
                .map_err(Error::io(writing()))?;
            vfs.materialize(&outputs_root, &out_dir).map_err(Error::io(writing()))?;
        }
        drop((vfs, outputs_root));

        let (stdout, stdout_len) = stdout.finish();
        let (stderr, stderr_len) = stderr.finish();
        let wall_time = started.elapsed();
        let receipt = Receipt {
            version: RECEIPT_VERSION,
            receipt_hash: B256::ZERO,
            environment: Some(environment),
            algorithm_hash,
            algorithm_name: spec.algorithm.name.clone(),
            args: spec.args.clone(),
            inputs: input_roots,
            outputs_root: outputs.root(),
            stdout_hash: tree::blake3_b256(&stdout),
            stdout_len,
            stderr_hash: tree::blake3_b256(&stderr),
            stderr_len,
            deterministic: outcome.is_deterministic(),
            outcome,
            fuel_consumed,
            limits: spec.limits.clone(),
            runtime: RuntimeInfo {
                tidepool_version: crate::VERSION.to_string(),
                wasmtime_version: crate::engine::WASMTIME_VERSION.to_string(),
                engine_config_hash: engine.config_hash,
            },
            seed,
            signatures: Vec::new(),
            meta: Some(ReceiptMeta { wall_time_ms: wall_time.as_millis() as u64, compile_cached }),
        }
        .seal();
        Ok(JobResult { receipt, stdout, stderr, outputs, wall_time, compile_cached })
    }
}

impl Runtime {
    /// Instantiates `algorithm` and runs `_start` with empty read-only mounts, recording
    /// nothing: the cost of the WASI layer alone, for the benchmarks that chose it. Returns
    /// the guest's stdout. Not part of the supported API.
    #[doc(hidden)]
    pub fn bench_bare_run(&self, algorithm: &Algorithm, limits: &Limits) -> Result<Vec<u8>> {
        let engine = self.engine(limits.max_wasm_stack)?;
        let (compiled, _) = engine.compile(algorithm.module_hash(), algorithm.bytes())?;
        let vfs = Vfs::read_only();
        let roots = [Mount::Algorithm, Mount::Inputs, Mount::Outputs].map(|m| vfs.new_root(m));
        let preopens =
            [ALGORITHM_DIR, INPUTS_DIR, OUTPUTS_DIR].into_iter().zip(roots).map(|(p, r)| (p.to_string(), r, false));
        let wasi = WasiCtx::new(
            vec![algorithm.name.clone()],
            vfs,
            preopens.collect(),
            [0; 32],
            Capture::new(limits.stdout_bytes),
            Capture::new(limits.stderr_bytes),
        );
        let _slot = self.slots.take(None);
        let mut store = new_store(&engine, wasi, limits)?;
        store.set_epoch_deadline(u64::MAX / 2);
        match classify(start(&compiled, &mut store), false)? {
            Outcome::Exited { code: 0 } => Ok(store.into_data().wasi.stdout.finish().0),
            other => Err(Error::Engine { reason: format!("the guest {other}") }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guest_events_parse_and_other_lines_do_not() {
        let e = GuestEvent::parse(br#"@tidepool {"event":"progress","done":3,"total":10,"message":"reading"}"#);
        assert_eq!(e, Some(GuestEvent::Progress { done: 3, total: Some(10), message: Some("reading".into()) }));
        assert_eq!(GuestEvent::parse(b"plain stderr"), None);
        assert_eq!(GuestEvent::parse(br#"@tidepool {"event":"nope"}"#), None);
    }

    #[test]
    fn names_are_sanitized() {
        assert_eq!(sanitize_name("word freq!"), "word_freq_");
        assert_eq!(sanitize_name(".."), "algorithm");
    }

    #[test]
    fn non_empty_output_directories_are_refused() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(tmp.path().join("keep.txt"), b"precious").unwrap();
        assert!(matches!(prepare_output(tmp.path()), Err(Error::InvalidOutput { .. })));
        std::fs::write(tmp.path().join("file"), b"").unwrap();
        assert!(matches!(prepare_output(&tmp.path().join("file")), Err(Error::InvalidOutput { .. })));
        std::fs::create_dir(tmp.path().join("empty")).unwrap();
        prepare_output(&tmp.path().join("empty")).unwrap();
        assert_eq!(std::fs::read(tmp.path().join("keep.txt")).unwrap(), b"precious");
        prepare_output(&tmp.path().join("new/deeper")).unwrap();
        assert!(tmp.path().join("new/deeper").is_dir());
    }
}
