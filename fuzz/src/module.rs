//! The `wasm_module` target: a module through the runtime, as a provider admits and runs an
//! uploaded algorithm ([`Runtime::check_module`], then [`Runtime::run`] with one small dataset),
//! under small limits drawn from the input (fuel, memory, time, stack, outputs).
//!
//! Most inputs are turned into a module by wasm-smith ([`crate::smith`]'s proposals, the WASI
//! imports of `wasi_imports.wat`, the `_start` and `memory` exports a command has), so that
//! they pass admission and run; the others are the module's bytes as they are.
//!
//! Properties: nothing panics; a refused module is refused as the submitter's fault (never a
//! host failure); whatever a module does ends as an `Outcome` within its limits; a job that did
//! not time out gives the same receipt when run again.

use std::sync::OnceLock;

use arbitrary::{Arbitrary, Unstructured};
use tidepool_runtime::limits::{KIB, MIB};
use tidepool_runtime::{Algorithm, InputSpec, JobSpec, Limits, Outcome, Runtime, RuntimeConfig};

/// The runtime and the files every run uses.
struct Harness {
    runtime: Runtime,
    /// One dataset (`data`, two small files) and the parent of each run's output directory.
    dir: tempfile::TempDir,
    smith: wasm_smith::Config,
}

impl Harness {
    fn new() -> Self {
        let runtime = Runtime::new(RuntimeConfig { max_instances: 2, memory_cache_entries: 16, ..Default::default() });
        let dir = tempfile::tempdir().expect("a temporary directory");
        let data = dir.path().join("data");
        std::fs::create_dir_all(data.join("sub")).expect("the dataset's directory");
        std::fs::write(data.join("a.txt"), "tidepool\n").expect("a dataset file");
        std::fs::write(data.join("sub/b.csv"), "x,y\n1,2\n").expect("a dataset file");

        let imports = wat::parse_str(include_str!("wasi_imports.wat")).expect("the WASI imports parse");
        let exports = wat::parse_str(r#"(module (memory (export "memory") 1) (func (export "_start")))"#)
            .expect("the command's exports parse");
        // Every import the runtime offers, with the signatures written there, is admitted.
        let body = include_str!("wasi_imports.wat").trim_end().strip_suffix(')').expect("a module");
        let command = wat::parse_str(format!(r#"{body} (memory (export "memory") 1) (func (export "_start")))"#))
            .expect("the WASI command parses");
        runtime
            .check_module(&Algorithm::new("wasi-imports", command), &Limits::default())
            .expect("a module importing every WASI function with these signatures is admitted");

        let smith = wasm_smith::Config {
            available_imports: Some(imports),
            exports: Some(exports),
            max_imports: 12,
            min_funcs: 1,
            max_funcs: 12,
            max_instructions: 300,
            max_memories: 1,
            max_memory32_bytes: 32 * MIB,
            max_tables: 1,
            max_table_elements: 2_000,
            max_globals: 8,
            max_data_segments: 8,
            max_element_segments: 8,
            ..crate::smith::config()
        };
        Self { runtime, dir, smith }
    }

    fn run(&self, algorithm: &Algorithm, limits: &Limits) -> tidepool_runtime::Result<tidepool_runtime::JobResult> {
        let out = tempfile::tempdir_in(self.dir.path()).expect("an output directory");
        let inputs = vec![InputSpec::new("data", self.dir.path().join("data"))];
        let mut spec = JobSpec::new(algorithm.clone(), inputs, out.path().join("out"));
        spec.limits = limits.clone();
        spec.args = vec!["--fuzz".into()];
        self.runtime.run(&spec)
    }
}

fn harness() -> &'static Harness {
    static H: OnceLock<Harness> = OnceLock::new();
    H.get_or_init(Harness::new)
}

/// The limits a run gets, from the input: small, so that each run is short.
#[derive(Arbitrary, Debug)]
struct Knobs {
    /// Generate a module (else the rest of the input is the module).
    generate: bool,
    fuel: u32,
    memory_pages: u16,
    timeout_ms: u16,
    stack: u16,
    output_bytes: u16,
    output_files: u8,
    stdio_bytes: u16,
}

impl Knobs {
    fn limits(&self) -> Limits {
        Limits {
            fuel: u64::from(self.fuel % 5_000_000) + 1,
            memory_bytes: u64::from(self.memory_pages % 257) * 64 * KIB,
            timeout_ms: u64::from(self.timeout_ms % 1_000) + 50,
            output_bytes: u64::from(self.output_bytes),
            output_files: u64::from(self.output_files % 17),
            stdout_bytes: u64::from(self.stdio_bytes % 4_097),
            stderr_bytes: u64::from(self.stdio_bytes % 4_097),
            module_bytes: MIB,
            max_stack_height: u64::from(self.stack).max(1024),
            ..Limits::default()
        }
    }
}

/// Runs one input (any bytes).
pub fn run(data: &[u8]) {
    let h = harness();
    let mut u = Unstructured::new(data);
    let Ok(knobs) = Knobs::arbitrary(&mut u) else { return };
    let limits = knobs.limits();
    let bytes = if knobs.generate {
        match wasm_smith::Module::new(h.smith.clone(), &mut u) {
            Ok(module) => module.to_bytes(),
            Err(_) => return,
        }
    } else {
        u.take_rest().to_vec()
    };
    crate::reached(30 + usize::from(knobs.generate));
    let algorithm = Algorithm::new("fuzz", bytes);
    if let Err(e) = h.runtime.check_module(&algorithm, &limits) {
        assert!(e.is_client_error(), "admission failed on the host's side: {e}");
        return;
    }
    let first = match h.run(&algorithm, &limits) {
        Ok(result) => result,
        Err(e) => {
            assert!(e.is_client_error(), "an admitted module made the runtime fail: {e}");
            return;
        }
    };
    let receipt = &first.receipt;
    crate::reached(20 + receipt.outcome.kind().len());
    assert!(receipt.fuel_consumed <= limits.fuel, "fuel {} over its limit {}", receipt.fuel_consumed, limits.fuel);
    if matches!(receipt.outcome, Outcome::Timeout) {
        return;
    }
    let again = h.run(&algorithm, &limits).expect("a job that ran runs again");
    if !matches!(again.receipt.outcome, Outcome::Timeout) {
        assert_eq!(again.receipt.receipt_hash, receipt.receipt_hash, "the same job gave another receipt");
    }
}
