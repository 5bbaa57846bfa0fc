//! Shared fixtures: the binary, modules, datasets, and a command runner with readable failures.
#![allow(dead_code, reason = "each test module uses its own subset")]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The `tidepool` binary under test.
pub fn tidepool() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tidepool"));
    cmd.env("TIDEPOOL_CACHE_DIR", cache_dir());
    // Assembled on first use: a test binary may start with any test.
    cmd.env("TIDEPOOL_ENVIRONMENTS_DIR", tidepool_test_artifacts::environments());
    cmd.env_remove("RUST_LOG");
    cmd
}

/// One compile cache for every test binary and run (the runtime tests' too); never the user's
/// own.
pub fn cache_dir() -> PathBuf {
    tidepool_test_artifacts::compile_cache()
}

pub fn module(name: &str) -> PathBuf {
    tidepool_test_artifacts::module(name)
}

/// The result of one command, with helpers that show everything when an assertion fails.
pub struct Ran {
    pub out: Output,
    pub what: String,
}

impl Ran {
    pub fn code(&self) -> i32 {
        self.out.status.code().unwrap_or(-1)
    }

    pub fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.out.stdout).into_owned()
    }

    pub fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.out.stderr).into_owned()
    }

    #[track_caller]
    pub fn expect_code(&self, code: i32) -> &Self {
        assert_eq!(
            self.code(),
            code,
            "{}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.what,
            self.stdout(),
            self.stderr()
        );
        // A guest's own panic is echoed from its stderr; any other panic is the host's.
        let host_panic = self.stderr().lines().any(|l| l.contains("panicked at") && !l.contains("tests/guests/"));
        assert!(!host_panic, "the binary panicked:\n{}", self.stderr());
        self
    }
}

pub fn exec(mut cmd: Command) -> Ran {
    let what = format!("{cmd:?}");
    let out = cmd.output().expect("starting tidepool");
    Ran { out, what }
}

/// Runs `tidepool` with `args`.
pub fn tp(args: &[&str]) -> Ran {
    let mut cmd = tidepool();
    cmd.args(args);
    exec(cmd)
}

pub use tidepool_test_artifacts::dataset;

pub fn read_json(path: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

pub fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}
