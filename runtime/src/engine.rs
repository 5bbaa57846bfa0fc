//! The wasmtime engine: its deterministic configuration, the hash that identifies it in
//! receipts, the compile cache, module admission (imports and exports) and the epoch ticker.
//!
//! # Determinism settings
//!
//! * NaN bit patterns are canonicalized (`cranelift_nan_canonicalization`);
//! * relaxed SIMD instructions take their deterministic semantics (`relaxed_simd_deterministic`);
//! * threads, shared memory, multi-memory and memory64 are off;
//! * code is generated for a fixed CPU feature set per architecture, not the host's: on x86-64,
//!   x86-64-v2 (SSE4.2, POPCNT); on aarch64, the base ISA. Frame sizes therefore do not depend on
//!   the machine, and neither does the depth at which `max_wasm_stack` stops a recursion;
//! * fuel is metered; wall-clock time is bounded with epoch interruption, driven by one ticker
//!   thread per engine.
//!
//! Everything above, plus the policy constants of the WASI layer (host-call prices, virtual
//! clock, table bound), goes into [`EngineState::config_hash`], recorded in every receipt.

use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use alloy_primitives::B256;
use wasmtime::{
    Config, Enabled, Engine, ExternType, InstanceAllocationStrategy, InstancePre, Linker, Module, OptLevel,
    PoolingAllocationConfig, WasmFeatures,
};

use crate::error::{Error, Result};
use crate::wasi::{self, StoreState};

/// The wasmtime version this crate is built against (pinned in the workspace).
pub const WASMTIME_VERSION: &str = "48.0.8";

/// How often the epoch ticker advances the engine's epoch.
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
    /// Canonical NaN bit patterns after every float operation, so that a NaN's payload
    /// cannot differ between CPUs. Always on in production (receipts depend on it); benchmarks
    /// turn it off to measure its cost, and receipts from such an engine say so.
    pub nan_canonicalization: bool,
    /// Most guest instances alive at once. Instances come from wasmtime's pooling allocator,
    /// with this many slots reserved up front (address space only: a slot costs memory when
    /// a guest touches it), which makes starting and ending a job several microseconds
    /// cheaper than mapping fresh memory each time. A job that finds every slot taken waits
    /// for one. `0` turns pooling off (memory mapped per instance, no bound).
    pub max_instances: usize,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        let cpus = std::thread::available_parallelism().map_or(4, |n| n.get());
        Self {
            cache_dir: None,
            memory_cache_entries: 64,
            fuel_metering: true,
            nan_canonicalization: true,
            max_instances: (2 * cpus).max(4),
        }
    }
}

/// Tables a module may define (pooled instances reserve this many table slots each).
pub(crate) const MAX_TABLES: usize = 4;
/// Bytes of a pooled table zeroed in place when its job ends (the rest is decommitted).
const TABLE_KEEP_RESIDENT: usize = 64 << 10;

/// The instance slots of a [`Runtime`](crate::Runtime): a counting semaphore over
/// [`RuntimeConfig::max_instances`], shared by all its engines.
#[derive(Debug)]
pub(crate) struct Slots {
    state: Mutex<SlotState>,
    freed: Condvar,
    bounded: bool,
}

#[derive(Debug)]
struct SlotState {
    free: usize,
    /// Jobs waiting for a slot, by ticket, first come first served.
    queue: VecDeque<u64>,
    next_ticket: u64,
}

/// A taken slot, given back when dropped.
pub(crate) struct Slot<'a>(&'a Slots);

impl Slots {
    pub(crate) fn new(max_instances: usize) -> Self {
        Self {
            state: Mutex::new(SlotState { free: max_instances, queue: VecDeque::new(), next_ticket: 0 }),
            freed: Condvar::new(),
            bounded: max_instances > 0,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, SlotState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Waits for a free slot, in order of arrival; `None` if `cancel` is set while waiting.
    pub(crate) fn take(&self, cancel: Option<&AtomicBool>) -> Option<Slot<'_>> {
        if !self.bounded {
            return Some(Slot(self));
        }
        let mut state = self.lock();
        if state.free > 0 && state.queue.is_empty() {
            state.free -= 1;
            return Some(Slot(self));
        }
        let ticket = state.next_ticket;
        state.next_ticket += 1;
        state.queue.push_back(ticket);
        loop {
            if state.free > 0 && state.queue.front() == Some(&ticket) {
                state.queue.pop_front();
                state.free -= 1;
                self.wake_next(&state);
                return Some(Slot(self));
            }
            if cancel.is_some_and(|c| c.load(Ordering::Relaxed)) {
                state.queue.retain(|t| *t != ticket);
                self.wake_next(&state);
                return None;
            }
            state = self.freed.wait_timeout(state, TICK).unwrap_or_else(|p| p.into_inner()).0;
        }
    }

    /// Wakes the waiters when the first of them can go. (All wake, one goes, the others wait
    /// again; waiting happens only when every slot is busy.)
    fn wake_next(&self, state: &SlotState) {
        if state.free > 0 && !state.queue.is_empty() {
            self.freed.notify_all();
        }
    }
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        if self.0.bounded {
            let mut state = self.0.lock();
            state.free += 1;
            // Waking costs a system call: only when someone waits.
            self.0.wake_next(&state);
        }
    }
}

/// A compiled, admitted module, ready to instantiate.
pub(crate) struct Compiled {
    pub pre: InstancePre<StoreState>,
}

/// One engine (per `max_wasm_stack` value) with its linker and caches.
pub(crate) struct EngineState {
    pub engine: Engine,
    linker: Linker<StoreState>,
    pub config_hash: B256,
    pub fuel_metering: bool,
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

/// The canonical description of an engine configuration; its hash goes into receipts.
fn describe(max_wasm_stack: u64, fuel: bool, nan_canonicalization: bool) -> String {
    format!(
        "tidepool-engine-v1\n\
         wasmtime={WASMTIME_VERSION}\n\
         arch={arch}\n\
         isa={isa}\n\
         opt=speed\n\
         fuel={fuel}\n\
         epoch_interruption=true\n\
         nan_canonicalization={nan_canonicalization}\n\
         relaxed_simd_deterministic=true\n\
         threads=false\n\
         multi_memory=false\n\
         memory64=false\n\
         max_wasm_stack={max_wasm_stack}\n\
         max_table_elements={tables}\n\
         host_call_fuel={hcf}\n\
         fuel_per_byte={fpb}\n\
         ns_per_fuel={npf}\n\
         realtime_base_ns={rt}\n\
         file_time_ns={ft}\n",
        arch = std::env::consts::ARCH,
        isa = isa_flags().join(","),
        tables = wasi::MAX_TABLE_ELEMENTS,
        hcf = wasi::HOST_CALL_FUEL,
        fpb = wasi::FUEL_PER_BYTE,
        npf = wasi::ctx::NS_PER_FUEL,
        rt = wasi::ctx::REALTIME_BASE_NS,
        ft = wasi::vfs::FILE_TIME_NS,
    )
}

/// The CPU features code is generated for, whatever the host offers.
fn isa_flags() -> &'static [&'static str] {
    if cfg!(target_arch = "x86_64") { &["has_sse3", "has_ssse3", "has_sse41", "has_sse42", "has_popcnt"] } else { &[] }
}

fn host_triple() -> &'static str {
    if cfg!(all(target_arch = "x86_64", target_os = "linux")) {
        "x86_64-unknown-linux-gnu"
    } else if cfg!(all(target_arch = "aarch64", target_os = "linux")) {
        "aarch64-unknown-linux-gnu"
    } else if cfg!(all(target_arch = "aarch64", target_os = "macos")) {
        "aarch64-apple-darwin"
    } else {
        "x86_64-apple-darwin"
    }
}

impl EngineState {
    pub(crate) fn new(max_wasm_stack: u64, config: &RuntimeConfig) -> Result<Arc<Self>> {
        let mut c = Config::new();
        c.target(host_triple()).map_err(Error::engine)?;
        for flag in isa_flags() {
            // SAFETY: the flags name baseline x86-64-v2 features; wasmtime checks at engine
            // creation that the host supports every enabled flag and refuses otherwise.
            unsafe {
                c.cranelift_flag_enable(flag);
            }
        }
        c.cranelift_opt_level(OptLevel::Speed)
            .consume_fuel(config.fuel_metering)
            .epoch_interruption(true)
            .cranelift_nan_canonicalization(config.nan_canonicalization)
            .relaxed_simd_deterministic(true)
            .wasm_features(WasmFeatures::THREADS | WasmFeatures::SHARED_EVERYTHING_THREADS, false)
            .wasm_multi_memory(false)
            .wasm_memory64(false)
            .wasm_backtrace_max_frames(None)
            .max_wasm_stack(usize::try_from(max_wasm_stack).map_err(Error::engine)?)
            .parallel_compilation(true);
        if std::env::var_os("TIDEPOOL_PERFMAP").is_some() {
            // For profiling guests with `perf`: names compiled functions in /tmp/perf-PID.map.
            c.profiler(wasmtime::ProfilingStrategy::PerfMap);
        }
        let engine = match Self::pooled(&c, config.max_instances) {
            Some(engine) => engine,
            None => Engine::new(&c)
                .map_err(|e| Error::Engine { reason: format!("{e:#} (Tidepool needs an x86-64-v2 or aarch64 CPU)") })?,
        };
        let mut linker = Linker::new(&engine);
        wasi::host::add_to_linker(&mut linker).map_err(Error::engine)?;
        let config_hash = crate::tree::blake3_b256(
            describe(max_wasm_stack, config.fuel_metering, config.nan_canonicalization).as_bytes(),
        );
        spawn_ticker(&engine);
        Ok(Arc::new(Self {
            engine,
            linker,
            config_hash,
            fuel_metering: config.fuel_metering,
            cache: Mutex::new(ModuleCache {
                capacity: config.memory_cache_entries,
                order: VecDeque::new(),
                modules: HashMap::new(),
            }),
            cache_dir: config.cache_dir.clone(),
        }))
    }

    /// An engine whose instances come from a pool of `slots` (none when `slots` is 0, or when
    /// the pool cannot be reserved, e.g. under a tight `ulimit -v`: the caller then maps
    /// memory per instance). Memory slots are 4 GiB, the most a 32-bit memory can
    /// grow to; the job's own limit is enforced by the store's limiter.
    fn pooled(c: &Config, slots: usize) -> Option<Engine> {
        let slots = u32::try_from(slots).ok().filter(|&n| n > 0)?;
        let mut pool = PoolingAllocationConfig::new();
        pool.total_core_instances(slots)
            .total_memories(slots)
            .total_tables(slots.saturating_mul(MAX_TABLES as u32))
            .max_tables_per_module(MAX_TABLES as u32)
            .table_elements(wasi::MAX_TABLE_ELEMENTS)
            .max_memories_per_module(1)
            .max_memory_size(1 << 32)
            .total_component_instances(0)
            // Instance metadata is allocated per instance, not reserved; the default cap
            // (1 MiB) would refuse modules that instances mapped per job accept.
            .max_core_instance_size(1 << 30)
            // Reset a finished job's table by zeroing it in place rather than by
            // `madvise`: small tables are the common case and stay resident.
            .table_keep_resident(TABLE_KEEP_RESIDENT)
            // A finished job's linear memory is decommitted whole (`madvise`), so the next job
            // in the slot finds zeros. Not `PAGEMAP_SCAN` (Linux 6.7+), which would reset only
            // the pages a job dirtied and be faster: wasmtime 48 looks for dirtied pages among
            // those present, so a dirtied page that was swapped out would be neither reset nor
            // released, and the next job in the slot could read it (wasmtime#14357). Zeroing
            // in place instead (`linear_memory_keep_resident`) measured slower for small jobs.
            .linear_memory_keep_resident(0)
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
        let disk = self.cache_dir.as_ref().map(|d| d.join(self.config_hash.to_string()).join(format!("{hash}.cwasm")));
        let (module, from_disk) = match disk.as_deref().and_then(|p| self.load_cached(p)) {
            Some(m) => (m, true),
            None => {
                let m = Module::from_binary(&self.engine, bytes)
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
        // with the same configuration hash (it is in the path), into the operator's cache
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

/// Advances `engine`'s epoch every [`TICK`] until the engine is dropped.
fn spawn_ticker(engine: &Engine) {
    let weak = engine.weak();
    let spawned = std::thread::Builder::new().name("tidepool-epoch".into()).spawn(move || {
        loop {
            std::thread::sleep(TICK);
            match weak.upgrade() {
                Some(engine) => engine.increment_epoch(),
                None => break,
            }
        }
    });
    if let Err(e) = spawned {
        // Without a ticker, timeouts cannot fire; fuel still bounds every job.
        tracing::error!(error = %e, "could not start the epoch ticker thread");
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn instance_slots_go_to_waiters_in_order_of_arrival() {
        use std::sync::mpsc;
        let slots = Arc::new(Slots::new(1));
        let held = slots.take(None).unwrap();
        let (tx, rx) = mpsc::channel();
        let mut waiters = Vec::new();
        for n in 0..3 {
            let (mine, tx) = (slots.clone(), tx.clone());
            waiters.push(std::thread::spawn(move || {
                let slot = mine.take(None).unwrap();
                tx.send(n).unwrap();
                std::thread::sleep(Duration::from_millis(5));
                drop(slot);
            }));
            // Each waiter queues before the next one starts.
            while slots.lock().queue.len() < n + 1 {
                std::thread::yield_now();
            }
        }
        // A newcomer while others wait does not jump the queue, even with a slot free.
        drop(held);
        let newcomer = slots.take(None).unwrap();
        tx.send(3).unwrap();
        drop(newcomer);
        for w in waiters {
            w.join().unwrap();
        }
        assert_eq!(rx.try_iter().collect::<Vec<_>>(), vec![0, 1, 2, 3]);
    }

    use super::*;

    #[test]
    fn the_configuration_hash_covers_the_settings() {
        let a = describe(512 * 1024, true, true);
        assert_ne!(a, describe(256 * 1024, true, true));
        assert_ne!(a, describe(512 * 1024, false, true));
        assert_ne!(a, describe(512 * 1024, true, false));
        assert!(a.contains("nan_canonicalization=true") && a.contains("wasmtime=48.0.8"));
    }

    #[test]
    fn headers_are_checked_before_compiling() {
        assert!(matches!(check_header(b"hello world"), Err(Error::InvalidModule { .. })));
        assert!(
            matches!(check_header(b"\0asm\x0d\0\x01\0"), Err(Error::InvalidModule { reason }) if reason.contains("component"))
        );
        assert!(check_header(b"\0asm\x01\0\0\0").is_ok());
    }

    #[test]
    fn the_cache_evicts_the_least_recently_used() {
        let engine =
            EngineState::new(512 * 1024, &RuntimeConfig { memory_cache_entries: 2, ..Default::default() }).unwrap();
        let wat = |n: u32| {
            wat::parse_str(format!(
                r#"(module (memory (export "memory") 1) (func (export "_start") i32.const {n} drop))"#
            ))
            .unwrap()
        };
        let hashes: Vec<B256> = (0..3).map(|n| crate::tree::blake3_b256(&wat(n))).collect();
        engine.compile(hashes[0], &wat(0)).unwrap();
        engine.compile(hashes[1], &wat(1)).unwrap();
        assert!(engine.compile(hashes[0], &wat(0)).unwrap().1, "hit");
        engine.compile(hashes[2], &wat(2)).unwrap();
        let cache = engine.cache.lock().unwrap();
        assert!(cache.modules.contains_key(&hashes[0]) && !cache.modules.contains_key(&hashes[1]));
    }
}
