//! Running one job: stage the inputs, instantiate, run `_start` under the limits, classify the
//! outcome, materialize the outputs, hash everything and seal the receipt.
//!
//! An algorithm is a module of its own, or files for an [`Environment`](crate::Environment) (a
//! Python script): then the environment's module runs, with its argv, variables and mounts, and
//! the files are the `/algorithm` mount.
//!
//! This file runs the steps in order; `spec` holds what defines a job (and checks it), `stage`
//! builds the guest's filesystem, `guest` instantiates the module and reads how it stopped,
//! `events` is what a job reports while it runs.

use std::sync::atomic::Ordering;
use std::time::Instant;

use alloy_primitives::B256;
use tracing::instrument;
use wasmtime::UpdateDeadline;

use crate::Runtime;
use crate::engine::{EngineState, Semantics, Watch};
use crate::error::{Error, Result};
use crate::limits::Limits;
use crate::receipt::{InputRoot, Outcome, RECEIPT_VERSION, Receipt, ReceiptMeta, RuntimeInfo, derive_seed};
use crate::tree;
use crate::wasi::GuestStop;
use crate::wasi::ctx::{Capture, WasiCtx};
use crate::wasi::vfs::{Mount, Vfs};

mod events;
mod guest;
mod spec;
mod stage;
#[cfg(test)]
mod tests;

pub use events::{EVENT_PREFIX, EventSink, GuestEvent, JobEvent, Stage};
use guest::{Counters, Left, StopWhen, classify, fuel_used, new_store, start};
pub use spec::{Algorithm, InputSpec, JobResult, JobSpec, MAX_NAME_BYTES, is_valid_name, sanitize_name};
use spec::{Program, check_spec};
use stage::{mount_files, mount_input, prepare_output, scratch_for, stage_input};

/// The guest path of the algorithm directory.
pub const ALGORITHM_DIR: &str = "/algorithm";
/// The guest path of the inputs directory (argv\[1\]).
pub const INPUTS_DIR: &str = "/data/inputs";
/// The guest path of the outputs directory (argv\[2\]).
pub const OUTPUTS_DIR: &str = "/data/outputs";

impl Runtime {
    /// Runs a job to completion and returns its sealed receipt, logs and outputs.
    ///
    /// `Err` means the job could not run (bad module, inputs or limits; a host failure; or it
    /// was cancelled). Everything the guest did, including failing, is an [`Outcome`].
    ///
    /// The guest runs on this thread when it has the native stack the job's stack limit needs,
    /// else on a thread made for it.
    #[instrument(skip_all, fields(algorithm = %spec.algorithm.name))]
    pub fn run(&self, spec: &JobSpec) -> Result<JobResult> {
        self.run_with(spec, Semantics::V2)
    }

    /// Runs a job on the engine of `semantics`: the legacy one re-executes version-1 receipts
    /// (and lets tests compare the two engines). Not part of the supported API.
    #[doc(hidden)]
    pub fn run_with(&self, spec: &JobSpec, semantics: Semantics) -> Result<JobResult> {
        let started = Instant::now();
        check_spec(spec)?;
        let stack = match semantics {
            Semantics::Legacy => spec.limits.max_wasm_stack,
            Semantics::V2 => spec.limits.max_stack_height,
        };
        let engine = self.engine(semantics, stack)?;
        crate::thread::with_stack(engine.thread_stack(), || self.execute(spec, &engine, started))
    }

    fn execute(&self, spec: &JobSpec, engine: &EngineState, started: Instant) -> Result<JobResult> {
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
        let mut store = new_store(engine, wasi, limits)?;
        engine.start_ticker();
        let deadline = Instant::now() + limits.timeout();
        let cancel = spec.cancel.clone();
        if engine.spec.epochs {
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
        }

        stage(Stage::Running);
        let mut counters = Counters::default();
        let mut watch = None;
        let result = match &slot {
            Some(_) => {
                let stop = StopWhen { deadline, cancel: spec.cancel.clone() };
                start(engine, &compiled, &mut store, limits, &mut counters, Some(stop), &mut watch)
            }
            None => Err(wasmtime::Error::new(GuestStop::Cancelled)),
        };
        // Unwatched before anything else: the watchdog must not touch the store once it goes.
        let interrupted = watch.take().and_then(Watch::end);
        let left = Left {
            fuel: Counters::read(counters.fuel, &mut store).filter(|_| engine.fuel_metering()),
            stack: Counters::read(counters.stack, &mut store),
        };
        let fuel_consumed = fuel_used(store.data().meter, limits.fuel, &mut store, left);
        let outcome = classify(result, store.data().limiter.memory_denied, left, interrupted)?;
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

        let legacy = engine.spec.semantics == Semantics::Legacy;
        let (stdout, stdout_len) = stdout.finish();
        let (stderr, stderr_len) = stderr.finish();
        let wall_time = started.elapsed();
        let receipt = Receipt {
            // The legacy engine re-executes version-1 receipts, which had no environment.
            version: if legacy { 1 } else { RECEIPT_VERSION },
            receipt_hash: B256::ZERO,
            environment: (!legacy).then_some(environment),
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
        let engine = self.engine(Semantics::V2, limits.max_stack_height)?;
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
        // Never stopped from outside: a benchmark's guest runs to its end.
        let result = start(&engine, &compiled, &mut store, limits, &mut Counters::default(), None, &mut None);
        match classify(result, false, Left::default(), None)? {
            Outcome::Exited { code: 0 } => Ok(store.into_data().wasi.stdout.finish().0),
            other => Err(Error::Engine { reason: format!("the guest {other}") }),
        }
    }
}
