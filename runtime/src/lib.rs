//! The Tidepool sandbox: runs untrusted WebAssembly (WASI preview 1) modules next to the data,
//! under hard limits, and proves what it ran with a deterministic execution receipt.
//!
//! ```no_run
//! use tidepool_runtime::{Algorithm, InputSpec, JobSpec, Runtime, RuntimeConfig};
//! # fn main() -> Result<(), tidepool_runtime::Error> {
//! let runtime = Runtime::new(RuntimeConfig::default());
//! let algorithm = Algorithm::from_file("wordfreq.wasm".as_ref())?;
//! let inputs = vec![InputSpec::new("books", "data/books")];
//! let result = runtime.run(&JobSpec::new(algorithm, inputs, "out"))?;
//! println!("{}: {}", result.receipt.outcome, result.receipt.receipt_hash);
//! # Ok(()) }
//! ```
//!
//! * [`engine`]: wasmtime configurations (v2 and legacy), compile cache, module admission;
//! * [`instrument`]: the admission pass (NaN canonicalization, fuel, stack height);
//! * [`environment`]: pinned modules that run algorithms written for them (Python), and the
//!   set a runtime offers; [`files`]: those algorithms' files, in memory and as an archive;
//! * `wasi` (private): our own `wasi_snapshot_preview1` over a virtual filesystem;
//! * [`job`]: staging, running, outcome, outputs; [`verify`]: re-execution;
//! * [`receipt`]: the receipt schema and its EIP-712 hash; [`tree`]: canonical tree roots;
//! * [`limits`]: limits, defaults and the SIZE/DURATION parsers.

#![warn(missing_docs)]

pub mod engine;
pub mod environment;
pub mod error;
pub mod files;
pub mod instrument;
pub mod job;
pub mod limits;
pub mod receipt;
mod thread;
pub mod tree;
pub mod verify;
mod wasi;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

pub use engine::{CpuFeatures, RuntimeConfig, Semantics};
pub use environment::{Environment, EnvironmentDescription, Environments};
pub use error::{Error, Result};
pub use job::{Algorithm, EventSink, GuestEvent, InputSpec, JobEvent, JobResult, JobSpec, Stage};
pub use limits::Limits;
pub use receipt::{Outcome, Receipt};
pub use verify::{VerifyReport, VerifyRequest};
pub use wasi::{FUEL_PER_BYTE, HOST_CALL_FUEL};

/// This crate's version, recorded in receipts.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Runs jobs. Cheap to share across threads (`Arc<Runtime>`); engines are created on first
/// use, one per semantics and stack limit.
#[derive(Debug)]
pub struct Runtime {
    config: RuntimeConfig,
    engines: Mutex<HashMap<engine::EngineSpec, Arc<engine::EngineState>>>,
    slots: engine::Slots,
}

impl std::fmt::Debug for engine::EngineState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EngineState").field("config_hash", &self.config_hash).finish_non_exhaustive()
    }
}

impl Runtime {
    /// A runtime with `config`. Makes no engine yet: each is made on first use.
    pub fn new(config: RuntimeConfig) -> Self {
        Self { slots: engine::Slots::new(config.max_instances), config, engines: Mutex::new(HashMap::new()) }
    }

    /// The engine for `semantics` and a stack limit (the legacy engine's `max_wasm_stack`, the
    /// v2 engine's `max_stack_height`).
    pub(crate) fn engine(&self, semantics: Semantics, stack: u64) -> Result<Arc<engine::EngineState>> {
        let spec = self.config.spec(semantics, stack);
        let mut engines = self.engines.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(e) = engines.get(&spec) {
            return Ok(e.clone());
        }
        let e = engine::EngineState::new(spec.clone(), &self.config)?;
        engines.insert(spec, e.clone());
        Ok(e)
    }

    /// Compiles and admits a module without running it: the checks a job would fail on
    /// (size, format, proposals, imports, exports). The compiled module is cached, so a later
    /// run of it starts at once.
    pub fn check_module(&self, algorithm: &Algorithm, limits: &Limits) -> Result<()> {
        let size = algorithm.size();
        if size > limits.module_bytes {
            return Err(Error::ModuleTooLarge { size, limit: limits.module_bytes });
        }
        self.engine(Semantics::V2, limits.max_stack_height)?.compile(algorithm.module_hash(), algorithm.bytes())?;
        Ok(())
    }

    /// Makes the engine that jobs under `limits` run on (it depends on `max_stack_height`), so
    /// that the first job does not wait for it. Starts no thread: a process may fork after it
    /// (the sandbox's worker template does).
    pub fn prepare(&self, limits: &Limits) -> Result<()> {
        self.engine(Semantics::V2, limits.max_stack_height).map(drop)
    }

    /// Compiles an environment's module for jobs under `limits` (its engine depends on
    /// `max_stack_height`), or loads it from the compile cache, so that no job waits for it. A
    /// provider calls this for each environment it offers when it starts (rewriting and
    /// compiling CPython takes seconds; loading it from the disk cache, milliseconds). Returns
    /// true when it was already compiled (in memory or on disk).
    pub fn prepare_environment(&self, environment: &Environment, limits: &Limits) -> Result<bool> {
        let engine = self.engine(Semantics::V2, limits.max_stack_height)?;
        Ok(engine.compile(environment.info().module_hash, environment.module())?.1)
    }

    /// The engine configuration hash of the receipts this runtime makes.
    pub fn engine_config_hash(&self) -> alloy_primitives::B256 {
        self.engine_hash(Semantics::V2, 0)
    }

    /// The configuration hash of an engine this runtime would make, without making it.
    pub(crate) fn engine_hash(&self, semantics: Semantics, stack: u64) -> alloy_primitives::B256 {
        engine::settings_hash(&self.config.spec(semantics, stack))
    }
}
