//! The wasmtime engines: their configurations ([`settings`]), the hash that identifies each in
//! receipts, the compile cache, module admission (the instrumentation pass, imports and
//! exports) and the ticker that stops overdue guests ([`watchdog`], and the legacy engine's
//! epochs).
//!
//! Two engines exist ([`Semantics`]): the v2 engine makes every receipt now, and the legacy
//! engine re-executes version-1 receipts. In the v2 engine, determinism comes from the module
//! itself, rewritten at admission ([`crate::instrument`]):
//!
//! * NaN bit patterns are those of eager canonicalization, computed lazily by the module;
//! * relaxed SIMD instructions take their deterministic semantics, and their NaN lanes are
//!   canonicalized by the module (so they do not depend on the CPU having FMA);
//! * fuel is counted by the module; the stack limit is counted in wasm terms by the module;
//! * a guest past its wall-clock limit, or asked to stop, is stopped by the module's own
//!   interrupt check, which the ticker raises (no call on the hot path, as epochs have);
//! * threads, shared memory, multi-memory, memory64, GC and exceptions are refused;
//! * code is generated for the host's CPU features: nothing guest-visible depends on them.
//!
//! The hashed description names the semantics, the pass and the WASI policy constants, never
//! the host, so a receipt made on x86-64 verifies on aarch64 and the other way round.

use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Once};
use std::time::Duration;

use alloy_primitives::B256;
use wasmtime::{
    Config, Enabled, Engine, ExternType, InstanceAllocationStrategy, InstancePre, Linker, Module,
    PoolingAllocationConfig,
};

use crate::error::{Error, Result};
use crate::wasi::{self, StoreState};

mod settings;
mod slots;
mod watchdog;

pub(crate) use settings::EngineSpec;
pub use settings::{CpuFeatures, Semantics, WASMTIME_VERSION};
pub(crate) use slots::Slots;
pub(crate) use watchdog::{Interrupt, Watch, Watchdog};

/// The configuration hash of an engine, without making it.
pub(crate) fn settings_hash(spec: &EngineSpec) -> B256 {
    settings::config_hash(spec)
}

/// How often the ticker checks the watched guests (and advances the epoch of an engine with epochs).
pub(crate) const TICK: Duration = Duration::from_millis(10);

/// Settings of a [`Runtime`](crate::Runtime).
#[derive(Clone, Debug)]
pub struct RuntimeConfig {
    /// Where compiled modules are cached on disk (optional). The directory is trusted: its
    /// files are loaded as native code, so it must be writable only by the operator.
    pub cache_dir: Option<PathBuf>,
    /// Compiled modules kept in memory.
    pub memory_cache_entries: usize,
    /// Fuel metering. Always on in production; benchmarks turn it off to measure its cost.
    /// Receipts from an engine without fuel say so in their engine configuration hash.
    pub fuel_metering: bool,
    /// Canonical NaN bit patterns, so that a NaN's payload cannot differ between CPUs. Always
    /// on in production (receipts depend on it); benchmarks turn it off to measure its cost,
    /// and receipts from such an engine say so.
    pub nan_canonicalization: bool,
    /// Wall-clock timeouts and stops through wasmtime's epoch interruption (a check at every
    /// loop top whose slow path is a call). The legacy engine always has it; the v2 engine
    /// does not need it (see `interrupt_check`): on, for benchmarks that measure its cost.
    /// Not part of any receipt.
    pub epoch_interruption: bool,
    /// Wall-clock timeouts and stops through the module's own interrupt check
    /// ([`crate::instrument::interrupt`]), the v2 engine's way (no call on the hot path). Off,
    /// a v2 job without epochs is bounded by its fuel only and its `timeout_ms` is not
    /// enforced: for benchmarks. Not part of any receipt.
    pub interrupt_check: bool,
    /// The CPU features code is generated for (never part of a v2 receipt's meaning).
    pub cpu_features: CpuFeatures,
    /// Name compiled guest functions in `/tmp/perf-PID.map` for `perf` (the binary sets it
    /// from `TIDEPOOL_PERFMAP`; libraries never read the environment).
    pub perf_map: bool,
    /// Most guest instances alive at once. Instances come from wasmtime's pooling allocator,
    /// with this many slots reserved up front (address space only: a slot costs memory when
    /// a guest touches it), which makes starting and ending a job several microseconds
    /// cheaper than mapping fresh memory each time. A job that finds every slot taken waits
    /// for one. `0` turns pooling off (memory mapped per instance, no bound).
    pub max_instances: usize,
    /// Cranelift's own NaN canonicalization on top of the pass's (v2 engine). Only for the
    /// differential tests: the results are the same either way.
    #[doc(hidden)]
    pub cranelift_nan_canonicalization: bool,
    /// A native stack this many times smaller than the proven bound (v2 engine): only for the
    /// tests that show the wasm-level limit is reached first.
    #[doc(hidden)]
    pub native_stack_divisor: u64,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        let cpus = std::thread::available_parallelism().map_or(4, |n| n.get());
        Self {
            cache_dir: None,
            memory_cache_entries: 64,
            fuel_metering: true,
            nan_canonicalization: true,
            epoch_interruption: false,
            interrupt_check: true,
            cpu_features: CpuFeatures::Host,
            perf_map: false,
            max_instances: (2 * cpus).max(4),
            cranelift_nan_canonicalization: false,
            native_stack_divisor: 1,
        }
    }
}

impl RuntimeConfig {
    /// The engine this configuration makes for `semantics` and a stack limit.
    pub(crate) fn spec(&self, semantics: Semantics, stack: u64) -> EngineSpec {
        let legacy = semantics == Semantics::Legacy;
        EngineSpec {
            semantics,
            stack,
            fuel: self.fuel_metering,
            nan: self.nan_canonicalization,
            cranelift_nan: !legacy && self.cranelift_nan_canonicalization,
            cpu: if legacy { CpuFeatures::Baseline } else { self.cpu_features },
            epochs: legacy || self.epoch_interruption,
            interrupt: !legacy && self.interrupt_check,
            perf_map: self.perf_map,
            native_stack_divisor: if legacy { 1 } else { self.native_stack_divisor },
        }
    }
}

/// Native stack kept for host functions above the deepest wasm frame and for the job's own
/// frames below the first one.
const HOST_STACK: usize = 1 << 20;

/// Tables a module may define (pooled instances reserve this many table slots each).
pub(crate) const MAX_TABLES: usize = 4;
/// Bytes of a pooled table zeroed in place when its job ends (the rest is decommitted).
const TABLE_KEEP_RESIDENT: usize = 64 << 10;
/// Bytes of a pooled memory zeroed in place when its job ends (the rest is decommitted): one
/// host page, so the 16-byte interrupt memory is reset by a store instead of an `madvise`,
/// at the price of zeroing a guest's first page.
const INTERRUPT_KEEP_RESIDENT: usize = 4096;

/// A compiled, admitted module, ready to instantiate.
pub(crate) struct Compiled {
    pub pre: InstancePre<StoreState>,
}

/// One engine (per semantics and stack limit) with its linker and caches.
pub(crate) struct EngineState {
    pub engine: Engine,
    linker: Linker<StoreState>,
    pub spec: EngineSpec,
    /// The running guests the ticker stops at their deadline (with the interrupt check).
    pub watchdog: Arc<Watchdog>,
    /// Started by the first job (see [`EngineState::start_ticker`]).
    ticker: Once,
    pub config_hash: B256,
    cache_key: B256,
    cache: Mutex<ModuleCache>,
    cache_dir: Option<PathBuf>,
}

struct ModuleCache {
    capacity: usize,
    order: VecDeque<B256>,
    modules: HashMap<B256, Arc<Compiled>>,
}

impl ModuleCache {
    fn get(&mut self, hash: &B256) -> Option<Arc<Compiled>> {
        let hit = self.modules.get(hash).cloned()?;
        self.order.retain(|h| h != hash);
        self.order.push_back(*hash);
        Some(hit)
    }

    fn insert(&mut self, hash: B256, compiled: Arc<Compiled>) {
        if self.capacity == 0 {
            return;
        }
        if self.modules.insert(hash, compiled).is_none() {
            self.order.push_back(hash);
        }
        while self.order.len() > self.capacity {
            if let Some(old) = self.order.pop_front() {
                self.modules.remove(&old);
            }
        }
    }
}

impl EngineState {
    pub(crate) fn new(spec: EngineSpec, config: &RuntimeConfig) -> Result<Arc<Self>> {
        let c = settings::config(&spec).map_err(Error::engine)?;
        let engine = match Self::pooled(&c, config.max_instances) {
            Some(engine) => engine,
            None => Engine::new(&c)
                .map_err(|e| Error::Engine { reason: format!("{e:#} (Tidepool needs an x86-64-v2 or aarch64 CPU)") })?,
        };
        let mut linker = Linker::new(&engine);
        wasi::host::add_to_linker(&mut linker).map_err(Error::engine)?;
        Ok(Arc::new(Self {
            engine,
            linker,
            watchdog: Arc::new(Watchdog::default()),
            ticker: Once::new(),
            config_hash: settings::config_hash(&spec),
            cache_key: settings::cache_key(&spec),
            spec,
            cache: Mutex::new(ModuleCache {
                capacity: config.memory_cache_entries,
                order: VecDeque::new(),
                modules: HashMap::new(),
            }),
            cache_dir: config.cache_dir.clone(),
        }))
    }

    /// Starts the engine's ticker, if it needs one and has none yet. Called by each job, not
    /// when the engine is made: an engine with no job yet starts no thread, so a process that
    /// has made one can still fork (a job worker's template, `tidepool_sandbox::template`),
    /// and the forked child starts its own ticker with its first job.
    pub(crate) fn start_ticker(&self) {
        if self.spec.epochs || self.spec.interrupt {
            self.ticker.call_once(|| spawn_ticker(&self.engine, self.spec.epochs, self.watchdog.clone()));
        }
    }

    /// Whether the module counts its own fuel and stack (the v2 engine).
    pub(crate) fn instrumented(&self) -> bool {
        self.spec.semantics == Semantics::V2
    }

    /// Whether fuel is metered at all.
    pub(crate) fn fuel_metering(&self) -> bool {
        self.spec.fuel
    }

    /// The native stack a thread needs to run this engine's jobs: wasmtime's limit for wasm
    /// frames, plus room for the host functions above them and the job's own frames below.
    pub(crate) fn thread_stack(&self) -> usize {
        usize::try_from(settings::native_stack(&self.spec)).unwrap_or(usize::MAX).saturating_add(HOST_STACK)
    }

    /// An engine whose instances come from a pool of `slots` (none when `slots` is 0, or when
    /// the pool cannot be reserved, e.g. under a tight `ulimit -v`: the caller then maps
    /// memory per instance). Memory slots are 4 GiB, the most a 32-bit memory can
    /// grow to; the job's own limit is enforced by the store's limiter.
    fn pooled(c: &Config, slots: usize) -> Option<Engine> {
        let slots = u32::try_from(slots).ok().filter(|&n| n > 0)?;
        let mut pool = PoolingAllocationConfig::new();
        pool.total_core_instances(slots)
            .total_memories(slots.saturating_mul(2))
            .total_tables(slots.saturating_mul(MAX_TABLES as u32))
            .max_tables_per_module(MAX_TABLES as u32)
            .table_elements(wasi::MAX_TABLE_ELEMENTS)
            // The guest's memory and the interrupt memory (`instrument::interrupt`).
            .max_memories_per_module(2)
            .max_memory_size(1 << 32)
            .total_component_instances(0)
            // Jobs run synchronously, on their own threads: no fiber stacks. (wasmtime's
            // default reserves 1 000 of them, each behind a guard page: 2 000 mappings that
            // every forked worker would copy and unmap again.)
            .total_stacks(0)
            // Instance metadata is allocated per instance, not reserved; the default cap
            // (1 MiB) would refuse modules that instances mapped per job accept.
            .max_core_instance_size(1 << 30)
            // Reset a finished job's table by zeroing it in place rather than by
            // `madvise`: small tables are the common case and stay resident.
            .table_keep_resident(TABLE_KEEP_RESIDENT)
            // A finished job's linear memory is decommitted (`madvise`) but for its first page,
            // zeroed in place, so the next job in the slot finds zeros. Not `PAGEMAP_SCAN`
            // (Linux 6.7+), which would reset only the pages a job dirtied and be faster:
            // wasmtime 48 looks for dirtied pages among those present, so a dirtied page that
            // was swapped out would be neither reset nor released, and the next job in the slot
            // could read it (wasmtime#14357). Zeroing more in place measured slower for small
            // jobs.
            .linear_memory_keep_resident(INTERRUPT_KEEP_RESIDENT)
            .pagemap_scan(Enabled::No);
        let mut pooled = c.clone();
        pooled.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        match Engine::new(&pooled) {
            Ok(engine) => Some(engine),
            Err(e) => {
                tracing::warn!(error = %format!("{e:#}"), slots, "no instance pool; mapping memory per instance");
                None
            }
        }
    }

    /// Compiles and admits `bytes` (whose BLAKE3 is `hash`), or returns the cached result.
    /// The second value tells whether the compile was avoided.
    pub(crate) fn compile(&self, hash: B256, bytes: &[u8]) -> Result<(Arc<Compiled>, bool)> {
        if let Some(hit) = self.cache.lock().unwrap_or_else(|p| p.into_inner()).get(&hash) {
            return Ok((hit, true));
        }
        check_header(bytes)?;
        check_functions(bytes)?;
        let disk = self.cache_dir.as_ref().map(|d| d.join(self.cache_key.to_string()).join(format!("{hash}.cwasm")));
        let (module, from_disk) = match disk.as_deref().and_then(|p| self.load_cached(p)) {
            Some(m) => (m, true),
            None => {
                let rewritten;
                let code = if self.instrumented() {
                    rewritten = crate::instrument::instrument(bytes, &settings::pass_options(&self.spec))
                        .map_err(|e| Error::InvalidModule { reason: format!("{e}") })?;
                    &rewritten[..]
                } else {
                    bytes
                };
                let m = Module::from_binary(&self.engine, code)
                    .map_err(|e| Error::InvalidModule { reason: format!("{e:#}") })?;
                (m, false)
            }
        };
        admit(&module)?;
        let pre =
            self.linker.instantiate_pre(&module).map_err(|e| Error::InvalidModule { reason: format!("{e:#}") })?;
        if let (Some(path), false) = (&disk, from_disk) {
            // A failed cache write only costs a recompile later.
            if let Err(e) = store_cached(&module, path) {
                tracing::warn!(path = %path.display(), error = %e, "could not write the compile cache");
            }
        }
        let compiled = Arc::new(Compiled { pre });
        self.cache.lock().unwrap_or_else(|p| p.into_inner()).insert(hash, compiled.clone());
        Ok((compiled, from_disk))
    }

    fn load_cached(&self, path: &Path) -> Option<Module> {
        if !path.exists() {
            return None;
        }
        // SAFETY: the file was written by `store_cached` from `Module::serialize` of an engine
        // with the same cache key (it is in the path), into the operator's cache
        // directory, which is trusted (see `RuntimeConfig::cache_dir`). wasmtime still checks
        // the artifact's header and compatibility with this engine.
        match unsafe { Module::deserialize_file(&self.engine, path) } {
            Ok(m) => Some(m),
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %format!("{e:#}"), "discarding an unusable cache entry");
                let _ = std::fs::remove_file(path);
                None
            }
        }
    }
}

fn store_cached(module: &Module, path: &Path) -> std::io::Result<()> {
    let bytes = module.serialize().map_err(std::io::Error::other)?;
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
    std::io::Write::write_all(&mut tmp, &bytes)?;
    tmp.persist(path).map_err(|e| e.error)?;
    Ok(())
}

/// Most functions a module may define. Compiling costs time and memory per function, whatever
/// its size: a module of a million empty functions is a few megabytes that would keep a core
/// and gigabytes busy for minutes. (CPython for WASI defines about 10,000.)
pub const MAX_FUNCTIONS: u32 = 100_000;

/// Refuses a module that defines more than [`MAX_FUNCTIONS`] functions, from its function
/// section's count, before anything is compiled or validated.
fn check_functions(bytes: &[u8]) -> Result<()> {
    for payload in wasmparser::Parser::new(0).parse_all(bytes) {
        match payload {
            Ok(wasmparser::Payload::FunctionSection(reader)) => {
                if reader.count() > MAX_FUNCTIONS {
                    return Err(Error::InvalidModule {
                        reason: format!(
                            "the module defines {} functions; at most {MAX_FUNCTIONS} are allowed",
                            reader.count()
                        ),
                    });
                }
                return Ok(());
            }
            // The function section comes before the code: nothing after it matters here.
            Ok(wasmparser::Payload::CodeSectionStart { .. }) | Err(_) => return Ok(()),
            Ok(_) => {}
        }
    }
    Ok(())
}

/// Refuses what is not a core WebAssembly module before spending time compiling it.
fn check_header(bytes: &[u8]) -> Result<()> {
    if bytes.len() < 8 || &bytes[..4] != b"\0asm" {
        return Err(Error::InvalidModule { reason: "not a WebAssembly binary (bad magic number)".into() });
    }
    if bytes[4..8] != [1, 0, 0, 0] {
        return Err(Error::InvalidModule {
            reason: "this is a WebAssembly component or an unknown version; build a core module for wasm32-wasip1"
                .into(),
        });
    }
    Ok(())
}

/// Admits a module: only known `wasi_snapshot_preview1` functions may be imported, and it must
/// export `_start` and `memory` (a WASI command).
fn admit(module: &Module) -> Result<()> {
    // The instance limits, checked here so that a module is refused the same way whether
    // instances are pooled (wasmtime then checks them when loading) or not (the store's
    // limiter would only refuse it when instantiating, as a failed run).
    let needs = module.resources_required();
    if needs.num_tables as usize > MAX_TABLES
        || needs.max_initial_table_size.is_some_and(|n| n > wasi::MAX_TABLE_ELEMENTS as u64)
    {
        return Err(Error::InvalidModule {
            reason: format!(
                "the module defines {} tables of up to {} elements; at most {MAX_TABLES} tables of {} elements \
                 are allowed",
                needs.num_tables,
                needs.max_initial_table_size.unwrap_or(0),
                wasi::MAX_TABLE_ELEMENTS
            ),
        });
    }
    for import in module.imports() {
        let known = import.module() == wasi::host::MODULE
            && wasi::host::IMPORTS.contains(&import.name())
            && matches!(import.ty(), ExternType::Func(_));
        if !known {
            return Err(Error::ForbiddenImport {
                module: import.module().to_string(),
                name: import.name().to_string(),
            });
        }
    }
    match module.get_export("_start") {
        Some(ExternType::Func(f)) if f.params().len() == 0 && f.results().len() == 0 => {}
        Some(_) => {
            return Err(Error::InvalidModule {
                reason: "`_start` must be a function taking and returning nothing".into(),
            });
        }
        None => {
            return Err(Error::InvalidModule {
                reason:
                    "the module exports no `_start`: build a command (a `bin` crate) for wasm32-wasip1, not a library"
                        .into(),
            });
        }
    }
    if !matches!(module.get_export("memory"), Some(ExternType::Memory(_))) {
        return Err(Error::InvalidModule { reason: "the module exports no `memory`".into() });
    }
    Ok(())
}

/// Every [`TICK`] until the engine is dropped: advances its epoch (when it has epochs) and
/// stops the guests its watchdog finds overdue or asked to stop.
fn spawn_ticker(engine: &Engine, epochs: bool, watchdog: Arc<Watchdog>) {
    let weak = engine.weak();
    let spawned = std::thread::Builder::new().name("tidepool-epoch".into()).spawn(move || {
        loop {
            std::thread::sleep(TICK);
            let Some(engine) = weak.upgrade() else { break };
            if epochs {
                engine.increment_epoch();
            }
            watchdog.tick();
        }
    });
    if let Err(e) = spawned {
        // Without a ticker, timeouts cannot fire; fuel still bounds every job.
        tracing::error!(error = %e, "could not start the ticker thread");
    }
}

#[cfg(test)]
mod tests;
