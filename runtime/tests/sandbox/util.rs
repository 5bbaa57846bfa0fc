//! Shared fixtures: one runtime (with an on-disk compile cache shared by every test run), guest
//! modules by name, and a job runner that keeps its output directory alive.
#![allow(dead_code, reason = "each test module uses its own subset")]

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use tidepool_runtime::{Algorithm, InputSpec, JobResult, JobSpec, Limits, Outcome, Runtime, RuntimeConfig};

pub fn runtime() -> &'static Runtime {
    static RUNTIME: OnceLock<Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        Runtime::new(RuntimeConfig {
            cache_dir: Some(tidepool_test_artifacts::compile_cache()),
            ..RuntimeConfig::default()
        })
    })
}

pub fn guest(name: &str) -> Algorithm {
    Algorithm::from_file(&tidepool_test_artifacts::module(name)).expect("reading a built guest")
}

/// A finished job and the directory its outputs are in.
pub struct Ran {
    pub result: JobResult,
    pub dir: tempfile::TempDir,
}

impl Ran {
    pub fn outputs(&self) -> PathBuf {
        self.dir.path().join("out")
    }

    pub fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.result.stdout).into_owned()
    }

    pub fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.result.stderr).into_owned()
    }

    pub fn outcome(&self) -> &Outcome {
        &self.result.receipt.outcome
    }

    /// Asserts the guest exited 0, showing its stderr otherwise.
    #[track_caller]
    pub fn assert_success(&self) -> &Self {
        assert!(
            self.outcome().is_success(),
            "the guest {}\n--- stderr ---\n{}\n--- stdout ---\n{}",
            self.outcome(),
            self.stderr(),
            self.stdout()
        );
        self
    }
}

/// Options of a test job beyond the module.
#[derive(Default, Clone)]
pub struct Opts {
    pub inputs: Vec<(String, PathBuf)>,
    pub args: Vec<String>,
    pub limits: Option<Limits>,
    pub seed: Option<alloy_primitives::B256>,
}

impl Opts {
    pub fn input(mut self, name: &str, dir: &Path) -> Self {
        self.inputs.push((name.to_string(), dir.to_path_buf()));
        self
    }

    pub fn args(mut self, args: &[&str]) -> Self {
        self.args = args.iter().map(|a| a.to_string()).collect();
        self
    }

    pub fn limits(mut self, f: impl FnOnce(&mut Limits)) -> Self {
        let mut l = self.limits.unwrap_or_default();
        f(&mut l);
        self.limits = Some(l);
        self
    }

    pub fn spec(&self, algorithm: Algorithm, out: &Path) -> JobSpec {
        let inputs = self.inputs.iter().map(|(name, dir)| InputSpec::new(name.clone(), dir.clone())).collect();
        let mut spec = JobSpec::new(algorithm, inputs, out);
        spec.args = self.args.clone();
        spec.limits = self.limits.clone().unwrap_or_default();
        spec.seed = self.seed;
        spec
    }
}

/// Runs `algorithm` and returns the result; panics if the job could not run at all.
pub fn run_alg(algorithm: Algorithm, opts: &Opts) -> Ran {
    let dir = tempfile::tempdir().unwrap();
    let spec = opts.spec(algorithm, &dir.path().join("out"));
    let result = runtime().run(&spec).unwrap_or_else(|e| panic!("the job could not run: {e}"));
    // The runtime hashes outputs from what the guest wrote, not by reading the directory back:
    // every job checks that this is exactly what a scan of the materialized directory gives.
    let on_disk = tidepool_runtime::tree::scan(&spec.output_dir).unwrap();
    assert_eq!(result.outputs, on_disk, "the outputs tree differs from the materialized directory");
    assert_eq!(result.receipt.outputs_root, on_disk.root());
    Ran { result, dir }
}

pub fn run(name: &str, opts: &Opts) -> Ran {
    run_alg(guest(name), opts)
}

pub use tidepool_test_artifacts::dataset;
