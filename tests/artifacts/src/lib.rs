//! Test support: the wasm modules the tests run (the test guests in `tests/guests/src/bin/*.rs`
//! and the example algorithms, built for `wasm32-wasip1` by this crate's build script), and
//! fixtures shared by the test suites.

use std::path::PathBuf;

pub mod cluster;
pub mod daemon;

/// The directory holding every built module.
pub fn dir() -> PathBuf {
    PathBuf::from(env!("TIDEPOOL_GUESTS_DIR"))
}

/// The module built from `tests/guests/src/bin/<name>.rs` or from the example `<name>`.
///
/// Panics when it does not exist: that is a mistake in the test, not a condition to handle.
pub fn module(name: &str) -> PathBuf {
    let path = dir().join(format!("{name}.wasm"));
    assert!(path.exists(), "no guest module {} (is there a tests/guests/src/bin/{name}.rs?)", path.display());
    path
}

/// Writes `files` (relative path, contents) under a new temporary directory.
pub fn dataset(files: &[(&str, &[u8])]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("creating a temporary directory");
    for (path, contents) in files {
        let p = dir.path().join(path);
        std::fs::create_dir_all(p.parent().expect("a file path has a parent")).expect("creating a dataset directory");
        std::fs::write(p, contents).expect("writing a dataset file");
    }
    dir
}
